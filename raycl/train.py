"""The one training loop: a population of members of one method learning a stream of tasks.

A population is P members (configuration, seed, benchmark) trained in lockstep: every step
gathers one batch per member from that member's own data order, the method takes one step for
all of them, and evaluation runs all members in one batched pass per chunk. A solo run is a
population of one. ``PopulationRun`` trains one task at a time so that the Tune trainable can
report and checkpoint between tasks; ``run`` and ``run_population`` drive it to the end.

A member whose loss turns non-finite is marked diverged and removed from every stacked tensor;
the others go on, their numbers unchanged.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from raycl.data import Benchmark
from raycl.device import autocast, check_precision
from raycl.errors import DivergedError, RayclError
from raycl.methods import get_population_method
from raycl.metrics import summarize
from raycl.population.random import MemberRandom, Stream

log = logging.getLogger(__name__)

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


def _accuracies(logits: torch.Tensor, y: torch.Tensor, classes: torch.Tensor, settings) -> dict[str, torch.Tensor]:
    """Correct predictions per member: logits [P, n, C], labels [P, n], the task's ``classes`` on the
    device -> setting -> [P]."""
    correct = {}
    for setting in settings:
        if setting == "task_il":
            pred = classes[logits[..., classes].argmax(-1)]
        else:
            pred = logits.argmax(-1)
        correct[setting] = (pred == y).sum(-1)
    return correct


class MemberInputs:
    """One split of one task for every member, each from its own benchmark, on the device as uint8.

    Members that share a benchmark share its arrays; pixel maps are applied once per task (or, with
    ``arrays`` from the caller's cache, once per stream).
    """

    def __init__(self, benchmarks: Sequence[Benchmark], member_data: list[int], task: int, split: str,
                 device: torch.device, dtype: torch.dtype,
                 arrays: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None):
        used = sorted(set(member_data))
        load = arrays or (lambda b: split_arrays(benchmarks[b], task, split, device))
        parts = [load(b) for b in used]
        self.n = len(parts[0][1])
        if any(len(y) != self.n for _, y in parts):
            raise RayclError(f"members of one population need {split} sets of one size; task {task + 1} has "
                             f"{sorted({len(y) for _, y in parts})} examples across their data seeds")
        self.x = parts[0][0] if len(parts) == 1 else torch.cat([x for x, _ in parts])
        self.y = parts[0][1] if len(parts) == 1 else torch.cat([y for _, y in parts])
        self.offsets = [used.index(b) * self.n for b in member_data]  # host copy: no device read per member
        self.offset = torch.tensor(self.offsets, device=device)
        self.scale = benchmarks[0].scaler(device, dtype)

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Examples ``rows`` [P, k] of each member's split: inputs [P, k, ...], labels [P, k]."""
        flat = (rows + self.offset[:, None]).flatten()
        x = self.x.index_select(0, flat).view(*rows.shape, *self.x.shape[1:])
        return self.scale(x), self.y.index_select(0, flat).view(rows.shape)

    def member(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split of the member at ``position``."""
        start = self.offsets[position]
        return self.scale(self.x[start:start + self.n]), self.y[start:start + self.n]

    def select(self, keep: torch.Tensor) -> None:
        positions = keep.tolist()
        self.offsets = [self.offsets[i] for i in positions]
        self.offset = self.offset[keep.to(self.offset.device)]


def split_arrays(benchmark: Benchmark, task: int, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One task's ``split`` of ``benchmark`` on ``device``: uint8 inputs (pixel map applied) and labels."""
    data = benchmark.tasks[task]
    with warnings.catch_warnings():
        # Arrays from the object store are read-only; nothing writes through these views.
        warnings.simplefilter("ignore", UserWarning)
        return (torch.from_numpy(data.inputs(split)).to(device),
                torch.from_numpy(getattr(data, f"{split}_y")).to(device))


class PopulationRun:
    """Members of one method learning a benchmark's tasks in lockstep, one ``run_task`` call per task.

    ``configs`` (one per member, or one for all) must share their structural hyperparameters;
    ``benchmarks[member_data[i]]`` is member i's benchmark (default: all share a single benchmark,
    or member i trains on ``benchmarks[i]`` when there is one per member).
    """

    def __init__(self, benchmarks: Benchmark | Sequence[Benchmark], method: str, configs, seeds: Sequence[int],
                 member_data: Sequence[int] | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, test_every_task: bool = True, precision: str = "fp32"):
        self.benchmarks = [benchmarks] if isinstance(benchmarks, Benchmark) else list(benchmarks)
        self.benchmark = self.benchmarks[0]
        self.seeds = [int(s) for s in seeds]
        size = len(self.seeds)
        if size < 1:
            raise RayclError("a population needs at least one member")
        self.configs = list(configs) if isinstance(configs, (list, tuple)) else [configs] * size
        if member_data is None:
            if len(self.benchmarks) not in (1, size):
                raise RayclError(f"{len(self.benchmarks)} benchmarks for {size} members: say which member trains "
                                 "on which (member_data)")
            member_data = range(size) if len(self.benchmarks) == size else [0] * size
        self.member_data = list(member_data)
        if len(self.configs) != size or len(self.member_data) != size:
            raise RayclError(f"{size} seeds but {len(self.configs)} configs and {len(self.member_data)} data entries")
        for other in self.benchmarks[1:]:
            if (other.name, other.n_tasks, other.settings) != (self.benchmark.name, self.benchmark.n_tasks,
                                                               self.benchmark.settings):
                raise RayclError("members of one population must train on one benchmark (data seeds may differ)")
        self.method_name = method
        self.device = torch.device(device)
        self.dtype = dtype
        self.precision = check_precision(precision)
        self.test_every_task = test_every_task
        # Denormal floats appear in small gradients and slow CPU matrix products several-fold.
        torch.set_flush_denormal(True)
        keep_freed_memory()
        cls = get_population_method(method)
        self.method = cls(self.configs, self.seeds, self.benchmark, self.device, dtype,
                          member_benchmarks=[self.benchmarks[i] for i in self.member_data])
        self.order_random = MemberRandom(self.seeds, Stream.ORDER, self.device)
        self.alive = list(range(size))
        self.diverged: dict[int, DivergedError] = {}
        t = self.benchmark.n_tasks
        nan = np.full((size, t, t), np.nan)
        self.val = {s: nan.copy() for s in self.benchmark.settings}
        self.test = {s: nan.copy() for s in self.benchmark.settings}
        self.val_loss = nan.copy()  # mean cross-entropy on val: breaks ties between equal accuracies
        self.next_task = 0
        self.train_s = 0.0
        self._eval_arrays: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self._task_classes: dict[int, torch.Tensor] = {}
        self.val_baseline, self.test_baseline = self._baselines()

    @property
    def size(self) -> int:
        return len(self.seeds)

    @property
    def finished(self) -> bool:
        return self.next_task >= self.benchmark.n_tasks or not self.alive

    def _inputs(self, task: int, split: str) -> MemberInputs:
        """A task's split for the live members. Evaluation splits are uploaded once and stay on the
        device for the whole stream; a training split is uploaded when its task starts."""
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
        self.method.train(False)
        with torch.no_grad(), autocast(self.precision, self.device):
            for start in range(0, data.n, chunk):
                rows = torch.arange(start, min(start + chunk, data.n), device=self.device).expand(live, -1)
                x, y = data.gather(rows)
                logits = self.method.predict(x, task)
                loss += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none") \
                    .view(live, -1).sum(1).double()
                for s, c in _accuracies(logits, y, classes, settings).items():
                    totals[s] += c
        self.method.train(True)
        counts = torch.stack([totals[s].double() for s in settings] + [loss]).cpu().numpy()  # the one read
        out = {s: 100.0 * counts[i] / data.n for i, s in enumerate(settings)}
        out["loss"] = counts[-1] / data.n
        return out

    def _baselines(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Accuracy of the untrained networks on every task (the reference of FWT): [P, T]."""
        t = self.benchmark.n_tasks
        val = {s: np.full((self.size, t), np.nan) for s in self.benchmark.settings}
        test = {s: np.full((self.size, t), np.nan) for s in self.benchmark.settings}
        for j in range(1, t):
            for split, table in (("val", val), ("test", test)):
                if split == "test" and not self.test_every_task:
                    continue
                accuracies = self.evaluate(j, split)
                for s in self.benchmark.settings:
                    table[s][:, j] = accuracies[s]
        return val, test

    # ----- training ---------------------------------------------------------------------------
    def _select(self, keep: torch.Tensor) -> None:
        """Keep only the live members at positions ``keep`` (none: the population is finished and
        its stacked state is left as it was)."""
        if len(keep) == len(self.alive):
            return
        if len(keep):
            self.method.select(keep)
            self.order_random.select(keep)
        self.alive = [self.alive[i] for i in keep.tolist()]

    def drop(self, members) -> None:
        """Stop training the members ``members`` (ids as built): every stacked tensor is compacted,
        so they cost nothing from now on. Their accuracy rows so far stay."""
        gone = set(members)
        self._select(torch.tensor([i for i, m in enumerate(self.alive) if m not in gone], dtype=torch.long))

    def set_configs(self, configs) -> None:
        """Train the live members with ``configs`` (one per live member, in order) from the next task
        on. They may differ from the members' current configs only in per-member hyperparameters: a
        per-task schedule, or the candidates of a branch."""
        configs = list(configs)
        if len(configs) != len(self.alive):
            raise RayclError(f"{len(configs)} configs for {len(self.alive)} live members")
        self.method.set_configs(configs)
        for member, config in zip(self.alive, configs):
            self.configs[member] = config

    def broadcast(self, member: int, size: int) -> None:
        """Make ``size`` copies of live member ``member`` (its id): network, optimiser, buffer, random
        streams and accuracy record, so each continues exactly as ``member`` would. The copies are
        the members 0 .. size-1 from now on: the candidates of the next branch."""
        position = self.alive.index(member)
        self.method.select(torch.full((size,), position, dtype=torch.long))
        self.order_random.select(torch.full((size,), position, dtype=torch.long))
        for name in ("seeds", "configs", "member_data"):
            setattr(self, name, [getattr(self, name)[member]] * size)

        def copies(array: np.ndarray) -> np.ndarray:
            return np.repeat(array[member][None], size, axis=0)

        for table in (self.val, self.test, self.val_baseline, self.test_baseline):
            for setting in table:
                table[setting] = copies(table[setting])
        self.val_loss = copies(self.val_loss)
        self.alive = list(range(size))
        self.diverged = {}

    def _drop_diverged(self, failed: torch.Tensor, task: int, step: int) -> torch.Tensor | None:
        """Mark the members flagged in ``failed`` [live] diverged; returns the positions kept, or
        None when every member is still fine."""
        if not bool(failed.any()):
            return None
        for position in torch.nonzero(failed).flatten().tolist():
            member = self.alive[position]
            self.diverged[member] = DivergedError(task, step)
            log.info("member %d (seed %d) %s", member, self.seeds[member], self.diverged[member])
        keep = torch.nonzero(~failed.cpu()).flatten()
        self._select(keep)
        return keep

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
        if self.alive:
            for j in range(min(task + 2, self.benchmark.n_tasks)):  # the next task feeds FWT
                val = self.evaluate(j, "val")
                self.val_loss[rows, task, j] = val["loss"]
                for s in self.benchmark.settings:
                    self.val[s][rows, task, j] = val[s]
                if self.test_every_task or last:
                    test = self.evaluate(j, "test")
                    for s in self.benchmark.settings:
                        self.test[s][rows, task, j] = test[s]
        self.next_task += 1
        seen = task + 1
        settings = self.benchmark.settings
        return TaskReport(
            task=task, n_tasks=self.benchmark.n_tasks, members=list(self.alive),
            val={s: self.val[s][rows, task, :seen] for s in settings},
            test=({s: self.test[s][rows, task, :seen] for s in settings} if self.test_every_task or last else None),
            loss=loss, seconds=time.perf_counter() - start,
            diverged={m: str(e) for m, e in self.diverged.items() if m not in before},
        )

    def __iter__(self) -> Iterator[TaskReport]:
        while not self.finished:
            yield self.run_task()

    # ----- results ----------------------------------------------------------------------------
    def result(self, member: int = 0, wall_s: float = float("nan")) -> RunResult:
        """The accuracy matrices and metrics of member ``member`` (its id in the population as built)."""
        settings = self.benchmark.settings
        val = {s: self.val[s][member] for s in settings}
        test = {s: self.test[s][member] for s in settings}
        return RunResult(
            method=self.method_name, dataset=self.benchmark.name, config=dataclasses.asdict(self.configs[member]),
            seed=self.seeds[member], settings=settings, val=val, test=test,
            val_metrics={s: summarize(val[s], self.val_baseline[s][member]) for s in settings},
            test_metrics={s: summarize(test[s], self.test_baseline[s][member]) for s in settings},
            train_s=self.train_s, wall_s=wall_s,
        )

    # ----- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "method": self.method.state_dict(), "order": self.order_random.state_dict(), "alive": list(self.alive),
            "diverged": {m: (e.task, e.step) for m, e in self.diverged.items()}, "next_task": self.next_task, "train_s": self.train_s,
            "val": self.val, "test": self.test, "val_loss": self.val_loss,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` of a population built the same way (same members, same order)."""
        self._select(torch.tensor([self.alive.index(m) for m in state["alive"]], dtype=torch.long))
        if self.alive:
            self.method.load_state_dict(state["method"])
            self.order_random.load_state_dict(state["order"])
        self.diverged = {m: DivergedError(*where) for m, where in state["diverged"].items()}
        self.next_task = state["next_task"]
        self.train_s = state["train_s"]
        self.val, self.test, self.val_loss = state["val"], state["test"], state["val_loss"]


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
