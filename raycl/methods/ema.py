"""Exponential-moving-average copies of a network, shared by the dual-memory methods (CLS-ER, SYNERgy)."""

from __future__ import annotations

import torch
from torch import nn

from raycl.models import frozen_copy


class EmaModel:
    """A frozen copy of ``net`` that tracks it as ``ema <- a * ema + (1 - a) * net``.

    ``a = min(1 - 1 / (step + 1), alpha)``, so early updates follow the network closely instead of
    averaging in its random initialisation. Buffers (batch-norm statistics) are copied as they are.
    The copy stays in eval mode: it only supplies targets and predictions.
    """

    def __init__(self, net: nn.Module, alpha: float):
        self.alpha = alpha
        self.model = frozen_copy(net)
        self.updates = 0

    def update(self, net: nn.Module, step: int) -> None:
        alpha = min(1.0 - 1.0 / (step + 1), self.alpha)
        with torch.no_grad():
            for mine, theirs in zip(self.model.parameters(), net.parameters()):
                mine.lerp_(theirs, 1.0 - alpha)
            for mine, theirs in zip(self.model.buffers(), net.buffers()):
                mine.copy_(theirs)
        self.updates += 1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = state["updates"]
