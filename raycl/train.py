"""The one training loop: a stream of tasks, evaluated after every task on val (and test).

``StreamRun`` trains one task at a time so that the Tune trainable can report and checkpoint
between tasks; ``run`` drives it to the end for ``launch/train.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from raycl.data import Benchmark
from raycl.metrics import summarize
from raycl.methods import get_method
from raycl.models import build_model

log = logging.getLogger(__name__)

EVAL_CHUNK = 8192
# How many steps pass between checks for a non-finite loss (each check is a device sync on GPU).
DIVERGENCE_CHECK_EVERY = 50


class DivergedError(Exception):
    """The loss became NaN or infinite: the run cannot continue."""

    def __init__(self, task: int, step: int):
        super().__init__(f"loss diverged (non-finite) in task {task + 1} near step {step}")
        self.task = task
        self.step = step


@dataclasses.dataclass
class TaskReport:
    """What the loop knows after training task ``task`` (0-based). Accuracies are percent."""

    task: int
    n_tasks: int
    val: dict[str, list[float]]
    test: dict[str, list[float]] | None
    loss: float
    seconds: float

    def mean_val(self, setting: str) -> float:
        return float(np.mean(self.val[setting])) if self.val[setting] else float("nan")


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_device() -> torch.device:
    """CUDA when this process was given a GPU (Ray hides it otherwise), else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _accuracies(logits: torch.Tensor, y: torch.Tensor, classes: tuple[int, ...], settings) -> dict[str, int]:
    correct = {}
    for setting in settings:
        if setting == "task_il":
            cls = torch.tensor(classes, device=logits.device)
            pred = cls[logits[:, cls].argmax(1)]
        else:
            pred = logits.argmax(1)
        correct[setting] = int((pred == y).sum())
    return correct


class StreamRun:
    """A method learning a benchmark's tasks in order, one ``run_task`` call per task."""

    def __init__(self, benchmark: Benchmark, method: str, config, seed: int = 0,
                 device: torch.device | str | None = None, test_every_task: bool = True):
        self.benchmark = benchmark
        self.method_name = method
        self.config = config
        self.seed = seed
        self.device = torch.device(device) if device is not None else default_device()
        self.test_every_task = test_every_task
        # Denormal floats appear in small gradients and slow CPU matrix products several-fold.
        torch.set_flush_denormal(True)
        seed_everything(seed)
        method_cls = get_method(method)
        self.method = method_cls(config, build_model(benchmark), benchmark, self.device, seed)
        self.shuffle_generator = torch.Generator().manual_seed(seed)
        t = benchmark.n_tasks
        nan = np.full((t, t), np.nan)
        self.val = {s: nan.copy() for s in benchmark.settings}
        self.test = {s: nan.copy() for s in benchmark.settings}
        self.val_loss = nan.copy()  # mean cross-entropy on val: breaks ties between equal accuracies
        self.next_task = 0
        self.train_s = 0.0
        self.val_baseline, self.test_baseline = self._baselines()

    # ----- evaluation -------------------------------------------------------------------------
    def evaluate(self, task: int, split: str) -> dict[str, float]:
        """Accuracy (percent) of the current model on one task's ``split`` ("val" or "test"), per
        setting, and under the key ``loss`` the mean cross-entropy over all outputs."""
        data = self.benchmark.tasks[task]
        x_all, y_all = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
        if len(y_all) == 0:
            return {s: float("nan") for s in (*self.benchmark.settings, "loss")}
        totals = dict.fromkeys(self.benchmark.settings, 0)
        loss = 0.0
        self.method.train(False)
        with torch.no_grad():
            for start in range(0, len(y_all), EVAL_CHUNK):
                x = self.benchmark.to_tensor(x_all[start:start + EVAL_CHUNK], self.device)
                y = torch.from_numpy(y_all[start:start + EVAL_CHUNK]).to(self.device)
                logits = self.method.predict(x, task)
                loss += float(F.cross_entropy(logits, y, reduction="sum"))
                for s, c in _accuracies(logits, y, data.classes, self.benchmark.settings).items():
                    totals[s] += c
        self.method.train(True)
        return {**{s: 100.0 * c / len(y_all) for s, c in totals.items()}, "loss": loss / len(y_all)}

    def _baselines(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Accuracy of the untrained network on every task (the reference of FWT)."""
        t = self.benchmark.n_tasks
        val = {s: np.full(t, np.nan) for s in self.benchmark.settings}
        test = {s: np.full(t, np.nan) for s in self.benchmark.settings}
        for j in range(1, t):
            for split, table in (("val", val), ("test", test)):
                if split == "test" and not self.test_every_task:
                    continue
                accuracies = self.evaluate(j, split)
                for s in self.benchmark.settings:
                    table[s][j] = accuracies[s]
        return val, test

    # ----- training ---------------------------------------------------------------------------
    def _train_task(self, task: int) -> float:
        data = self.benchmark.tasks[task]
        train_x = self.benchmark.to_tensor(data.train_x, self.device)
        train_y = torch.from_numpy(data.train_y).to(self.device)
        batch = self.config.batch_size
        n = len(train_y)
        self.method.train(True)
        self.method.begin_task(task)
        loss_sum = torch.zeros((), device=self.device)
        steps = 0
        for _ in range(self.config.n_epochs):
            order = torch.randperm(n, generator=self.shuffle_generator).to(self.device)
            xs, ys = train_x[order], train_y[order]
            for start in range(0, n, batch):
                loss_sum += self.method.observe(xs[start:start + batch], ys[start:start + batch], task)
                steps += 1
                if steps % DIVERGENCE_CHECK_EVERY == 0 and not torch.isfinite(loss_sum):
                    raise DivergedError(task, steps)
        if not torch.isfinite(loss_sum):
            raise DivergedError(task, steps)
        self.method.end_task(task, train_x, train_y)
        return float(loss_sum) / max(steps, 1)

    def run_task(self) -> TaskReport:
        """Train the next task, then evaluate on every task seen and the one after it."""
        task = self.next_task
        if task >= self.benchmark.n_tasks:
            raise RuntimeError("every task of the stream has been trained")
        start = time.perf_counter()
        loss = self._train_task(task)
        self.train_s += time.perf_counter() - start
        last = task == self.benchmark.n_tasks - 1
        evaluated = range(min(task + 2, self.benchmark.n_tasks))  # the next task feeds FWT
        for j in evaluated:
            val = self.evaluate(j, "val")
            self.val_loss[task, j] = val["loss"]
            for s in self.benchmark.settings:
                self.val[s][task, j] = val[s]
            if self.test_every_task or last:
                test = self.evaluate(j, "test")
                for s in self.benchmark.settings:
                    self.test[s][task, j] = test[s]
        self.next_task += 1
        seen = task + 1
        report = TaskReport(
            task=task, n_tasks=self.benchmark.n_tasks,
            val={s: self.val[s][task, :seen].tolist() for s in self.benchmark.settings},
            test=({s: self.test[s][task, :seen].tolist() for s in self.benchmark.settings}
                  if self.test_every_task or last else None),
            loss=loss, seconds=time.perf_counter() - start,
        )
        return report

    def __iter__(self) -> Iterator[TaskReport]:
        while self.next_task < self.benchmark.n_tasks:
            yield self.run_task()

    def result(self, wall_s: float = float("nan")) -> RunResult:
        settings = self.benchmark.settings
        return RunResult(
            method=self.method_name, dataset=self.benchmark.name, config=dataclasses.asdict(self.config),
            seed=self.seed, settings=settings, val=self.val, test=self.test,
            val_metrics={s: summarize(self.val[s], self.val_baseline[s]) for s in settings},
            test_metrics={s: summarize(self.test[s], self.test_baseline[s]) for s in settings},
            train_s=self.train_s, wall_s=wall_s,
        )

    # ----- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "method": self.method.state_dict(), "next_task": self.next_task, "train_s": self.train_s,
            "val": self.val, "test": self.test, "val_loss": self.val_loss, "shuffle_rng": self.shuffle_generator.get_state(),
            "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.method.load_state_dict(state["method"])
        self.next_task = state["next_task"]
        self.train_s = state["train_s"]
        self.val, self.test, self.val_loss = state["val"], state["test"], state["val_loss"]
        self.shuffle_generator.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])


def run(benchmark: Benchmark, method: str, config, seed: int = 0, device=None,
        on_task: Callable[[TaskReport], None] | None = None) -> RunResult:
    """Train ``method`` over the whole stream and return its accuracy matrices and metrics."""
    start = time.perf_counter()
    stream = StreamRun(benchmark, method, config, seed, device)
    for report in stream:
        if on_task is not None:
            on_task(report)
    return stream.result(wall_s=time.perf_counter() - start)
