"""One split of one task for every member of a population, gathered per batch on the device."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch

from raycl.data import Benchmark
from raycl.errors import RayclError


class MemberInputs:
    """One split of one task for every member, each from its own benchmark, on the device as uint8.

    Members that share a benchmark share its arrays; pixel maps are applied once per task (or, with
    ``arrays`` from the caller's cache, once per run).
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
