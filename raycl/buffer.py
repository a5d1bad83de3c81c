"""The reservoir buffer shared by every replay method."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch


@dataclasses.dataclass
class BufferSample:
    x: torch.Tensor
    y: torch.Tensor
    logits: torch.Tensor | None
    task: torch.Tensor


class ReservoirBuffer:
    """Fixed-size reservoir over the stream (Vitter's algorithm R), stored as device tensors.

    The i-th example seen (0-based) takes slot i while the buffer fills; afterwards it draws
    r ~ U{0..i} and replaces slot r if r < capacity, so every example seen so far is held with
    equal probability. Each slot keeps x, y, the logits given at insertion (if any) and the task.
    """

    def __init__(self, capacity: int, x_shape: tuple[int, ...], n_logits: int, device: torch.device | str,
                 seed: int, store_logits: bool = True):
        self.capacity = capacity
        self.device = torch.device(device)
        self.examples = torch.zeros((capacity, *x_shape), device=self.device)
        self.labels = torch.zeros(capacity, dtype=torch.long, device=self.device)
        self.logits = torch.zeros((capacity, n_logits), device=self.device) if store_logits else None
        self.tasks = torch.zeros(capacity, dtype=torch.long, device=self.device)
        self.seen = 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def is_empty(self) -> bool:
        return self.seen == 0

    def _slots(self, n: int) -> tuple[np.ndarray | None, np.ndarray]:
        """(batch rows or None for all, buffer slots) for the next ``n`` examples.

        Later rows win a slot two rows of one batch drew, as sequential insertion would.
        """
        start = self.seen
        if start + n <= self.capacity:
            return None, np.arange(start, start + n)
        positions = np.arange(start, start + n)
        slots = (self.rng.random(n) * (positions + 1)).astype(np.int64)
        filling = max(self.capacity - start, 0)
        slots[:filling] = positions[:filling]
        rows = np.flatnonzero(slots < self.capacity)
        slots = slots[rows]
        if len(slots) > 1 and len(set(slots.tolist())) < len(slots):
            _, last_from_end = np.unique(slots[::-1], return_index=True)
            keep = np.sort(len(slots) - 1 - last_from_end)
            rows, slots = rows[keep], slots[keep]
        return rows, slots

    def add(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None = None,
            task: int | torch.Tensor = 0) -> None:
        """Offer a batch to the reservoir (detached copies are stored)."""
        n = x.shape[0]
        rows, slots = self._slots(n)
        self.seen += n
        if len(slots) == 0:
            return
        if rows is None:
            rows_t, slots_t = slice(None), slice(int(slots[0]), int(slots[-1]) + 1)
        else:
            rows_t = torch.from_numpy(rows).to(self.device)
            slots_t = torch.from_numpy(slots).to(self.device)
        self.examples[slots_t] = x.detach()[rows_t]
        self.labels[slots_t] = y[rows_t]
        if self.logits is not None and logits is not None:
            self.logits[slots_t] = logits.detach()[rows_t]
        self.tasks[slots_t] = task[rows_t] if isinstance(task, torch.Tensor) else task

    def sample_indices(self, size: int) -> torch.Tensor:
        n = len(self)
        picked = self.rng.choice(n, size=min(size, n), replace=False)
        return torch.from_numpy(picked).to(self.device)

    def sample(self, size: int) -> BufferSample:
        """Up to ``size`` distinct stored examples, uniformly at random."""
        idx = self.sample_indices(size)
        return BufferSample(
            x=self.examples[idx], y=self.labels[idx],
            logits=None if self.logits is None else self.logits[idx], task=self.tasks[idx],
        )

    def all(self) -> BufferSample:
        n = len(self)
        return BufferSample(x=self.examples[:n], y=self.labels[:n],
                            logits=None if self.logits is None else self.logits[:n], task=self.tasks[:n])

    def state_dict(self) -> dict:
        return {"examples": self.examples, "labels": self.labels, "logits": self.logits, "tasks": self.tasks,
                "seen": self.seen, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.examples.copy_(state["examples"])
        self.labels.copy_(state["labels"])
        if self.logits is not None:
            self.logits.copy_(state["logits"])
        self.tasks.copy_(state["tasks"])
        self.seen = state["seen"]
        self.rng.bit_generator.state = state["rng"]
