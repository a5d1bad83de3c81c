"""Checks that a run is the same on any device, and that its state moves between devices.

Shared by ``launch/benchmark.py --gpu`` and ``tests/test_cuda.py``; every function takes the
devices it compares, so the same code runs CPU against CPU in the ordinary suite.
"""

from __future__ import annotations

import dataclasses
import io
import traceback
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from raycl.data import Benchmark
from raycl.methods import make_config
from raycl.train import PopulationRun


def state_tensors(state) -> Iterator[torch.Tensor]:
    """Every tensor in a nested state (dicts, lists, tuples)."""
    if isinstance(state, torch.Tensor):
        yield state
    elif isinstance(state, dict):
        for value in state.values():
            yield from state_tensors(value)
    elif isinstance(state, (list, tuple)):
        for value in state:
            yield from state_tensors(value)


def state_devices(state) -> set[str]:
    """The device types the tensors of ``state`` live on."""
    return {t.device.type for t in state_tensors(state)}


def population(benchmark: Benchmark, method: str, device: torch.device | str, seeds=(0, 1),
               dtype: torch.dtype = torch.float32, precision: str = "fp32", values: dict | None = None) -> PopulationRun:
    """A population of ``method`` (its defaults on ``benchmark``, then ``values``) on ``device``."""
    config = make_config(method, values or {}, benchmark.defaults_for(method))
    return PopulationRun(benchmark, method, config, list(seeds), device=device, dtype=dtype, precision=precision)


def train_tasks(run: PopulationRun, tasks: int) -> PopulationRun:
    for _ in range(min(tasks, run.benchmark.n_tasks - run.next_task)):
        run.run_task()
    return run


def largest_gap(first: PopulationRun, second: PopulationRun) -> float:
    """The largest difference (accuracy points) between two runs' val and test matrices, over the
    cells both evaluated; infinite where one has cells the other lacks."""
    gap = 0.0
    for split in ("val", "test"):
        for setting in first.benchmark.settings:
            a, b = getattr(first, split)[setting], getattr(second, split)[setting]
            if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
                return float("inf")
            both = ~np.isnan(a)
            if both.any():
                gap = max(gap, float(np.abs(a[both] - b[both]).max()))
    return gap


def moved(run: PopulationRun, device: torch.device | str) -> tuple[PopulationRun, set[str]]:
    """``run``'s checkpoint, written as a trial writes it and loaded with ``map_location`` into a new
    run of the same members on ``device``; and the devices of the restored run's state."""
    buffer = io.BytesIO()
    torch.save(run.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, map_location=torch.device(device), weights_only=False)
    twin = PopulationRun(run.benchmarks, run.method_name, run.configs, run.seeds, run.member_data, device=device,
                         dtype=run.dtype, precision=run.precision)
    twin.load_state_dict(state)
    return twin, state_devices(twin.state_dict())


def resumed_gap(benchmark: Benchmark, method: str, source: torch.device | str, target: torch.device | str,
                tasks: int = 2, dtype: torch.dtype = torch.float64, values: dict | None = None) -> tuple[float, set[str]]:
    """Train task 1 on ``source``, move the state to ``target`` and train the rest of ``tasks`` there;
    returns the largest gap to the same run trained on ``source`` throughout, and the devices of the
    state restored on ``target``."""
    whole = train_tasks(population(benchmark, method, source, dtype=dtype, values=values), tasks)
    first = train_tasks(population(benchmark, method, source, dtype=dtype, values=values), 1)
    second, devices = moved(first, target)
    train_tasks(second, tasks - 1)
    return largest_gap(whole, second), devices


@dataclasses.dataclass(frozen=True)
class HostCopy:
    """One copy of a host tensor to another device: whether the host went on without waiting for
    it (``non_blocking``), whether its source was page-locked, and the raycl line that made it."""

    non_blocking: bool
    pinned: bool
    shape: tuple[int, ...]
    where: str


def _raycl_caller() -> str:
    """The innermost raycl line on the stack outside this module (where a copy was asked for)."""
    for frame in reversed(traceback.extract_stack()):
        if "/raycl/" in frame.filename and not frame.filename.endswith("device_checks.py"):
            return f"{frame.filename.rsplit('/raycl/', 1)[1]}:{frame.lineno} {frame.line}"
    return "outside raycl"


class HostCopies(TorchDispatchMode):
    """While active, records every copy of a host (CPU) tensor to another device (``.to``,
    ``copy_``) as a :class:`HostCopy`: on a GPU a copy that is not ``non_blocking`` from pinned
    memory makes the host wait for the device."""

    def __init__(self):
        super().__init__()
        self.copies: list[HostCopy] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and kwargs.get("device") is not None:
            source, target, non_blocking = args[0], torch.device(kwargs["device"]), kwargs.get("non_blocking", False)
        elif func is torch.ops.aten.copy_.default:
            source, target = args[1], args[0].device
            non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
        else:
            return func(*args, **kwargs)
        if source.device.type == "cpu" and target.type != "cpu":
            self.copies.append(HostCopy(bool(non_blocking), source.is_pinned(), tuple(source.shape), _raycl_caller()))
        return func(*args, **kwargs)

    def waiting(self, pinned: bool) -> list[HostCopy]:
        """The copies the host waits for: not ``non_blocking`` or, with ``pinned``, from pageable memory."""
        return [c for c in self.copies if not c.non_blocking or (pinned and not c.pinned)]
