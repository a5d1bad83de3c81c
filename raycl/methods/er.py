"""Experience Replay: current batch plus a reservoir minibatch, one cross-entropy."""

from __future__ import annotations

import torch

from raycl.methods.base import ReplayConfig, ReplayPopulationMethod, cross_entropy


class Er(ReplayPopulationMethod):
    name = "er"
    Config = ReplayConfig

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        parts, labels = [self.augment(x)], y
        if not self.buffer.is_empty():
            replay = self.buffer.sample(self.config.minibatch_size)
            parts.append(self.augment(replay.x))
            labels = torch.cat([labels, replay.y], 1)
        losses = cross_entropy(self.forward_parts(parts), labels)
        self.step(losses)
        self.buffer.add(x, y, task=task)
        return losses.detach()
