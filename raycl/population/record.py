"""A population's accuracy record: what every member scored on every task after every task.

``val[setting]`` and ``test[setting]`` are [P, T, T] arrays in percent (row i: after training task
i, column j: on task j; NaN where not evaluated), ``val_loss`` is [P, T] x T of mean validation
cross-entropy (it breaks ties between equal accuracies), and the baselines are the untrained
networks' accuracies [P, T] (the reference of forward transfer). Members are indexed by their id
in the population as built; a member's rows stay when it is dropped.

The search, the per-task selection and the launch scripts read the record through its queries
(the tasks seen after a task, the current task, a member's final row, a member's matrices), never
by slicing the arrays themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from raycl.errors import RayclError
from raycl.metrics import summarize

SPLITS = ("val", "test")
# Member ids: one (int) or several (a list or an integer array), or ALL of them.
Members = int | Sequence[int] | np.ndarray | slice
ALL = slice(None)


class AccuracyRecord:
    """The val/test accuracy matrices, the validation loss and the baselines of ``size`` members over
    ``n_tasks`` tasks, per evaluation setting."""

    def __init__(self, size: int, n_tasks: int, settings: Sequence[str]):
        self.settings = tuple(settings)
        nan = np.full((size, n_tasks, n_tasks), np.nan)
        self.val = {s: nan.copy() for s in self.settings}
        self.test = {s: nan.copy() for s in self.settings}
        self.val_loss = nan.copy()
        baseline = np.full((size, n_tasks), np.nan)
        self.val_baseline = {s: baseline.copy() for s in self.settings}
        self.test_baseline = {s: baseline.copy() for s in self.settings}

    def _split(self, split: str) -> dict[str, np.ndarray]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
        return self.val if split == "val" else self.test

    # ----- writing ------------------------------------------------------------------------------------
    def write(self, split: str, members: np.ndarray, task: int, on: int, accuracies: dict[str, np.ndarray]) -> None:
        """The accuracies of ``members`` on task ``on`` after training ``task`` (and, for val, their
        mean cross-entropy under ``loss``)."""
        table = self._split(split)
        for s in self.settings:
            table[s][members, task, on] = accuracies[s]
        if split == "val":
            self.val_loss[members, task, on] = accuracies["loss"]

    def write_baseline(self, split: str, on: int, accuracies: dict[str, np.ndarray]) -> None:
        """Every member's accuracy on task ``on`` before any training."""
        table = self.val_baseline if split == "val" else self.test_baseline
        for s in self.settings:
            table[s][:, on] = accuracies[s]

    # ----- queries ------------------------------------------------------------------------------------
    def seen(self, members: Members, task: int, setting: str, split: str = "val") -> np.ndarray:
        """Accuracies after training ``task`` on every task seen (0 .. ``task``): [members, task + 1],
        or [task + 1] for one member."""
        return self._split(split)[setting][members, task, :task + 1]

    def seen_loss(self, members: Members, task: int) -> np.ndarray:
        """Validation cross-entropy after training ``task`` on every task seen."""
        return self.val_loss[members, task, :task + 1]

    def current(self, member: int, task: int, setting: str, split: str = "val") -> float:
        """Accuracy on the task just trained (``task``), after training it."""
        return float(self._split(split)[setting][member, task, task])

    def learning(self, members: Members, task: int, setting: str) -> np.ndarray:
        """Validation accuracy on each task seen right after training it (the diagonal up to ``task``):
        [members, task + 1]; the MER paper's learning accuracy is its mean."""
        members = [members] if isinstance(members, int) else list(members)
        return np.stack([self.val[setting][m].diagonal()[:task + 1] for m in members])

    def row(self, members: Members, task: int, setting: str, split: str = "val") -> np.ndarray:
        """Accuracies after training ``task`` on every task (NaN where not evaluated)."""
        return self._split(split)[setting][members, task, :]

    def matrices(self, member: int, split: str = "val") -> dict[str, np.ndarray]:
        """Member ``member``'s [T, T] matrix per setting."""
        return {s: self._split(split)[s][member] for s in self.settings}

    def mean_matrices(self, members: Members, split: str = "val") -> dict[str, np.ndarray]:
        """The mean over ``members`` of their [T, T] matrices, per setting."""
        return {s: self._split(split)[s][members].mean(0) for s in self.settings}

    def metrics(self, member: int, split: str = "val") -> dict[str, dict[str, float]]:
        """Member ``member``'s summary metrics (accuracy, forgetting, transfer ...) per setting."""
        baseline = self.val_baseline if split == "val" else self.test_baseline
        return {s: summarize(self._split(split)[s][member], baseline[s][member]) for s in self.settings}

    # ----- members ------------------------------------------------------------------------------------
    def broadcast(self, member: int, size: int) -> None:
        """Member ``member``'s rows (matrices, loss and baselines) as the rows of members 0 .. size-1."""
        def copies(array: np.ndarray) -> np.ndarray:
            return np.repeat(array[member][None], size, axis=0)

        for table in (self.val, self.test, self.val_baseline, self.test_baseline):
            for setting in table:
                table[setting] = copies(table[setting])
        self.val_loss = copies(self.val_loss)

    def member_rows(self, member: int) -> dict:
        """Member ``member``'s rows ``[1, ...]`` of every array (matrices, loss and baselines), copies:
        what it takes to another population."""
        def rows(array: np.ndarray) -> np.ndarray:
            return array[member:member + 1].copy()

        return {"val": {s: rows(a) for s, a in self.val.items()}, "test": {s: rows(a) for s, a in self.test.items()},
                "val_loss": rows(self.val_loss),
                "val_baseline": {s: rows(a) for s, a in self.val_baseline.items()},
                "test_baseline": {s: rows(a) for s, a in self.test_baseline.items()}}

    def load_member_rows(self, rows: list[dict]) -> None:
        """The rows of the members of this record, in order, from their :meth:`member_rows`."""
        size, n_tasks = self.val_loss.shape[:2]
        if len(rows) != size:
            raise ValueError(f"{len(rows)} members' rows for a record of {size}")

        def joined(what: str, pieces: list[np.ndarray], shape: tuple) -> np.ndarray:
            if any(p.shape != shape for p in pieces):
                raise RayclError(f"the members' {what} rows are shaped {sorted({p.shape for p in pieces})}, not "
                                 f"{shape}: they come from a stream of another length")
            return np.concatenate(pieces)

        def tables(key: str, shape: tuple) -> dict[str, np.ndarray]:
            for r in rows:
                if sorted(r[key]) != sorted(self.settings):
                    raise RayclError(f"the members' {key} rows are for the settings {sorted(r[key])}, not "
                                     f"{sorted(self.settings)}")
            return {s: joined(f"{key} {s}", [r[key][s] for r in rows], shape) for s in self.settings}

        matrix, vector = (1, n_tasks, n_tasks), (1, n_tasks)
        self.val, self.test = tables("val", matrix), tables("test", matrix)
        self.val_loss = joined("val_loss", [r["val_loss"] for r in rows], matrix)
        self.val_baseline, self.test_baseline = tables("val_baseline", vector), tables("test_baseline", vector)

    # ----- checkpoints (the keys a population's state has always had) --------------------------------
    def state_dict(self) -> dict:
        return {"val": self.val, "test": self.test, "val_loss": self.val_loss}

    def load_state_dict(self, state: dict) -> None:
        self.val, self.test, self.val_loss = state["val"], state["test"], state["val_loss"]
