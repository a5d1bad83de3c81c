"""The one training loop: a population of members of one method learning a benchmark's tasks.

A population is P members (configuration, seed, benchmark) trained in lockstep: every step
gathers one batch per member from that member's own data order, the method takes one step for
all of them, and evaluation runs all members in one batched pass per chunk. A solo run is a
population of one. ``PopulationRun`` trains one task at a time so that the Tune trainable can
report and checkpoint between tasks; ``run`` and ``run_population`` drive it to the end.

A member whose loss turns non-finite is marked diverged and removed from every stacked tensor;
the others go on, their numbers unchanged.

Three units: the population's members and state (:mod:`raycl.population.state`), its accuracy
record with the queries the search and selection read (:mod:`raycl.population.record`), and here
the loop (the step, divergence checks and evaluation).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from raycl.data import Benchmark
from raycl.device import autocast
from raycl.population.inputs import MemberInputs, split_arrays
from raycl.population.members import MemberState
from raycl.population.state import Population, check_members

# Examples per member and evaluation chunk are EVAL_CHUNK // P (at least MIN_EVAL_CHUNK).
EVAL_CHUNK = 8192
MIN_EVAL_CHUNK = 256
# How many steps pass between checks for a non-finite loss (each check is a device sync on GPU).
DIVERGENCE_CHECK_EVERY = 50
# Training batches are gathered this many steps at a time (bounded by GATHER_ELEMENTS floats),
# so a step takes a slice instead of a handful of indexing calls.
GATHER_STEPS = 64
GATHER_ELEMENTS = 2**24


@dataclasses.dataclass
class TaskReport:
    """What the loop knows after training task ``task`` (0-based). Accuracies are percent.

    ``members`` are the ids (positions in the population as built) of the members still trained;
    ``val[setting]`` has one row per such member over the tasks seen; ``diverged`` maps the
    members that diverged during this task to the reason.
    """

    task: int
    n_tasks: int
    members: list[int]
    val: dict[str, np.ndarray]
    test: dict[str, np.ndarray] | None
    loss: np.ndarray
    seconds: float
    diverged: dict[int, str]

    def mean_val(self, setting: str) -> float:
        """Mean over the live members of their mean validation accuracy over the tasks seen."""
        rows = self.val[setting]
        return float(rows.mean()) if rows.size else float("nan")


@dataclasses.dataclass
class RunResult:
    method: str
    dataset: str
    config: dict
    seed: int
    settings: tuple[str, ...]
    val: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    val_metrics: dict[str, dict[str, float]]
    test_metrics: dict[str, dict[str, float]]
    train_s: float
    wall_s: float


@functools.cache
def keep_freed_memory() -> None:
    """Ask glibc's malloc to keep large freed blocks instead of handing them back to the system.

    A population's gradients are fresh tensors of tens of MB every step; by default glibc maps
    each from the system and unmaps it when freed, so every step pays page faults on all of them
    (a quarter of a 25-member VIB step). Keeping them costs no more memory than the peak a step
    needs anyway. A no-op where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 1 << 30)
    mallopt(m_trim_threshold, (1 << 31) - 1)


def _accuracies(logits: torch.Tensor, y: torch.Tensor, classes: torch.Tensor, settings,
                seen: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Correct predictions per member: logits [P, n, C], labels [P, n], the task's ``classes`` and the
    classes of the tasks up to it (``seen``, for masked Class-IL) on the device -> setting -> [P]."""
    correct = {}
    for setting in settings:
        if setting == "task_il":
            pred = classes[logits[..., classes].argmax(-1)]
        elif setting == "masked_class_il":
            pred = seen[logits[..., seen].argmax(-1)]
        else:
            pred = logits.argmax(-1)
        correct[setting] = (pred == y).sum(-1)
    return correct


class PopulationRun(Population):
    """The loop: a :class:`~raycl.population.state.Population` learning its benchmark's tasks in
    lockstep, one ``run_task`` call per task (the step, divergence checks, then evaluation into the
    population's accuracy record). Test accuracy is evaluated after every task, or with
    ``test_every_task`` False after the last one only.
    """

    def __init__(self, benchmarks: Benchmark | Sequence[Benchmark], method: str, configs, seeds: Sequence[int],
                 member_data: Sequence[int] | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, test_every_task: bool = True, precision: str = "fp32"):
        self._build(benchmarks, method, configs, seeds, member_data, device, dtype, test_every_task, precision)
        self._baselines()

    def _build(self, benchmarks, method, configs, seeds, member_data, device, dtype, test_every_task,
               precision) -> None:
        # Denormal floats appear in small gradients and slow CPU matrix products several-fold.
        torch.set_flush_denormal(True)
        keep_freed_memory()
        super().__init__(benchmarks, method, configs, seeds, member_data, device, dtype, precision)
        self.test_every_task = test_every_task
        self._eval_arrays: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self._task_classes: dict[int, torch.Tensor] = {}
        self._seen_classes_of: dict[int, torch.Tensor] = {}

    @classmethod
    def from_members(cls, benchmarks: Benchmark | Sequence[Benchmark], method: str, states: Sequence[MemberState],
                     device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                     test_every_task: bool = True, precision: str = "fp32") -> PopulationRun:
        """A population of the members ``states`` (:meth:`export_members` of populations of ``method``
        on ``benchmarks``, the list their benchmark indices refer to), in that order, each continuing
        exactly as it would have where it was: its streams' positions, buffer, optimiser state and
        accuracy record are its own, and nothing is evaluated anew (the members bring their
        baselines). ``dtype`` None: the members'. RayclError (one line) unless they are at one next
        task, of one dtype, and share the structural hyperparameters and every value shared by
        construction."""
        benchmarks = [benchmarks] if isinstance(benchmarks, Benchmark) else list(benchmarks)
        dtype = check_members(method, states, benchmarks, dtype)
        run = cls.__new__(cls)
        run._build(benchmarks, method, [s.config for s in states], [s.seed for s in states],
                   [s.benchmark for s in states], device, dtype, test_every_task, precision)
        run._load_members(states)
        return run

    def _inputs(self, task: int, split: str) -> MemberInputs:
        """A task's split for the live members. Evaluation splits are uploaded once and stay on the
        device for the whole run; a training split is uploaded when its task starts."""
        def cached(b: int) -> tuple[torch.Tensor, torch.Tensor]:
            key = (b, task, split)
            if key not in self._eval_arrays:
                self._eval_arrays[key] = split_arrays(self.benchmarks[b], task, split, self.device)
            return self._eval_arrays[key]

        return MemberInputs(self.benchmarks, [self.member_data[m] for m in self.alive], task, split, self.device,
                            self.dtype, arrays=None if split == "train" else cached)

    def _classes(self, task: int) -> torch.Tensor:
        if task not in self._task_classes:
            self._task_classes[task] = torch.tensor(self.benchmark.tasks[task].classes, device=self.device)
        return self._task_classes[task]

    def _seen_classes(self, task: int) -> torch.Tensor:
        """The classes of tasks 0 .. ``task``, what masked Class-IL scores task ``task`` over."""
        if task not in self._seen_classes_of:
            seen = sorted({c for t in self.benchmark.tasks[:task + 1] for c in t.classes})
            self._seen_classes_of[task] = torch.tensor(seen, device=self.device)
        return self._seen_classes_of[task]

    # ----- evaluation -------------------------------------------------------------------------
    def evaluate(self, task: int, split: str) -> dict[str, np.ndarray]:
        """Accuracy (percent) of every live member on one task's ``split`` ("val" or "test"), per
        setting, and under ``loss`` the mean cross-entropy: arrays with one value per live member."""
        settings = self.benchmark.settings
        data = self._inputs(task, split)
        live = len(self.alive)
        if data.n == 0:
            return {s: np.full(live, np.nan) for s in (*settings, "loss")}
        totals = {s: torch.zeros(live, dtype=torch.long, device=self.device) for s in settings}
        loss = torch.zeros(live, dtype=torch.float64, device=self.device)
        chunk = max(MIN_EVAL_CHUNK, EVAL_CHUNK // live)
        classes = self._classes(task)
        seen = self._seen_classes(task) if "masked_class_il" in settings else None
        self.method.train(False)
        with torch.no_grad(), autocast(self.precision, self.device):
            for start in range(0, data.n, chunk):
                rows = torch.arange(start, min(start + chunk, data.n), device=self.device).expand(live, -1)
                x, y = data.gather(rows)
                logits = self.method.predict(x, task)
                loss += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none") \
                    .view(live, -1).sum(1).double()
                for s, c in _accuracies(logits, y, classes, settings, seen).items():
                    totals[s] += c
        self.method.train(True)
        counts = torch.stack([totals[s].double() for s in settings] + [loss]).cpu().numpy()  # the one read
        out = {s: 100.0 * counts[i] / data.n for i, s in enumerate(settings)}
        out["loss"] = counts[-1] / data.n
        return out

    def _baselines(self) -> None:
        """Record the untrained networks' accuracy on every task after the first (the reference of FWT)."""
        for j in range(1, self.benchmark.n_tasks):
            for split in ("val", "test"):
                if split == "test" and not self.test_every_task:
                    continue
                self.record.write_baseline(split, j, self.evaluate(j, split))

    # ----- training ---------------------------------------------------------------------------
    def _train_task(self, task: int) -> np.ndarray:
        data = self._inputs(task, "train")
        config = self.method.config
        self.method.train(True)
        self.method.begin_task(task)
        loss_sum = torch.zeros(len(self.alive), dtype=torch.float64, device=self.device)
        steps = 0
        batch = config.batch_size
        per_example = max(1, len(self.alive) * batch * int(np.prod(self.benchmark.input_shape)))
        chunk = batch * max(1, min(GATHER_STEPS, GATHER_ELEMENTS // per_example))
        for _ in range(config.n_epochs):
            order = self.order_random.permutation(data.n).to(self.device)
            for start in range(0, data.n, batch):
                if start % chunk == 0:
                    xs, ys = data.gather(order[:, start:start + chunk])
                offset = start % chunk
                x, y = xs[:, offset:offset + batch], ys[:, offset:offset + batch]
                with autocast(self.precision, self.device):
                    loss_sum += self.method.observe(x, y, task)
                steps += 1
                if steps % DIVERGENCE_CHECK_EVERY == 0:
                    keep = self._drop_diverged(~torch.isfinite(loss_sum), task, steps)
                    if keep is not None:
                        if not self.alive:
                            return np.zeros(0)
                        kept = keep.to(self.device)
                        order, loss_sum, xs, ys = order[kept], loss_sum[kept], xs[kept], ys[kept]
                        data.select(keep)
        keep = self._drop_diverged(~torch.isfinite(loss_sum), task, steps)
        if keep is not None:
            if not self.alive:
                return np.zeros(0)
            loss_sum = loss_sum[keep.to(self.device)]
            data.select(keep)
        failed = self.method.end_task(task, data)
        if failed is not None:
            keep = self._drop_diverged(failed, task, steps)
            if keep is not None and self.alive:
                loss_sum = loss_sum[keep.to(self.device)]
        return loss_sum.cpu().numpy() / max(steps, 1)

    def run_task(self) -> TaskReport:
        """Train the next task, then evaluate on every task seen and the one after it."""
        task = self.next_task
        if self.finished:
            raise RuntimeError("every task of the stream has been trained" if self.alive else "every member diverged")
        before = set(self.diverged)
        start = time.perf_counter()
        loss = self._train_task(task)
        self.train_s += time.perf_counter() - start
        last = task == self.benchmark.n_tasks - 1
        rows = np.asarray(self.alive, dtype=np.int64)
        tested = self.test_every_task or last
        if self.alive:
            for j in range(min(task + 2, self.benchmark.n_tasks)):  # the next task feeds FWT
                self.record.write("val", rows, task, j, self.evaluate(j, "val"))
                if tested:
                    self.record.write("test", rows, task, j, self.evaluate(j, "test"))
        self.next_task += 1
        settings = self.benchmark.settings
        return TaskReport(
            task=task, n_tasks=self.benchmark.n_tasks, members=list(self.alive),
            val={s: self.record.seen(rows, task, s) for s in settings},
            test={s: self.record.seen(rows, task, s, "test") for s in settings} if tested else None,
            loss=loss, seconds=time.perf_counter() - start,
            diverged={m: str(e) for m, e in self.diverged.items() if m not in before},
        )

    def __iter__(self) -> Iterator[TaskReport]:
        while not self.finished:
            yield self.run_task()

    # ----- results ----------------------------------------------------------------------------
    def result(self, member: int = 0, wall_s: float = float("nan")) -> RunResult:
        """The accuracy matrices and metrics of member ``member`` (its id in the population as built)."""
        return RunResult(
            method=self.method_name, dataset=self.benchmark.name, config=dataclasses.asdict(self.configs[member]),
            seed=self.seeds[member], settings=self.benchmark.settings, val=self.record.matrices(member, "val"),
            test=self.record.matrices(member, "test"), val_metrics=self.record.metrics(member, "val"),
            test_metrics=self.record.metrics(member, "test"), train_s=self.train_s, wall_s=wall_s,
        )


def run_population(benchmarks, method: str, configs, seeds: Sequence[int], member_data: Sequence[int] | None = None,
                   device: torch.device | str = "cpu", on_task: Callable[[TaskReport], None] | None = None,
                   dtype: torch.dtype = torch.float32, precision: str = "fp32") -> PopulationRun:
    """Train a population over the whole stream; returns the finished run (``result(m)`` per member)."""
    population = PopulationRun(benchmarks, method, configs, seeds, member_data, device, dtype, precision=precision)
    for report in population:
        if on_task is not None:
            on_task(report)
    return population


def run(benchmark: Benchmark, method: str, config, seed: int = 0, device: torch.device | str = "cpu",
        on_task: Callable[[TaskReport], None] | None = None, dtype: torch.dtype = torch.float32,
        precision: str = "fp32") -> RunResult:
    """Train ``method`` alone (a population of one) over the whole stream; raises DivergedError if it diverges."""
    start = time.perf_counter()
    population = run_population(benchmark, method, config, [seed], device=device, on_task=on_task, dtype=dtype,
                                precision=precision)
    if population.diverged:
        raise population.diverged[0]
    return population.result(0, wall_s=time.perf_counter() - start)
