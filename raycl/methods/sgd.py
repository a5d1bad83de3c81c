"""Fine-tuning with plain SGD: the lower bound, forgetting everything it does not see."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raycl.methods.base import ContinualMethod, TrainConfig


class Sgd(ContinualMethod):
    name = "sgd"
    Config = TrainConfig

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        loss = F.cross_entropy(self.net(self.augment(x)), y)
        self.step(loss)
        return loss.detach()
