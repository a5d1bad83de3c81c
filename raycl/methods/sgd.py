"""Fine-tuning with plain SGD: the lower bound, forgetting everything it does not see."""

from __future__ import annotations

import torch

from raycl.methods.base import PopulationMethod, TrainConfig, cross_entropy


class Sgd(PopulationMethod):
    name = "sgd"
    stability_task = 1  # fine-tuning: nothing acts for stability
    Config = TrainConfig

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        losses = cross_entropy(self.net(self.augment(x)), y)
        self.step(losses)
        return losses.detach()
