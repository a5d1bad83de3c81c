"""Experience Replay: current batch plus a reservoir minibatch, one cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raycl.methods.base import ReplayConfig, ReplayMethod


class Er(ReplayMethod):
    name = "er"
    Config = ReplayConfig

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        inputs, labels = self.augment(x), y
        if not self.buffer.is_empty():
            replay = self.buffer.sample(self.config.minibatch_size)
            inputs = torch.cat([inputs, self.augment(replay.x)])
            labels = torch.cat([labels, replay.y])
        loss = F.cross_entropy(self.net(inputs), labels)
        self.step(loss)
        self.buffer.add(x, y, task=task)
        return loss.detach()
