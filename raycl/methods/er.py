"""Experience Replay: current batch plus a reservoir minibatch, one cross-entropy."""

from __future__ import annotations

import torch

from raycl.buffer import BufferSample
from raycl.methods.base import Members, ReplayConfig, ReplayPopulationMethod, cross_entropy


class Er(ReplayPopulationMethod):
    name = "er"
    Config = ReplayConfig

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        replay = None if self.buffer.is_empty() else self.buffer.sample(self.config.minibatch_size)
        losses = self.per_group(replay, lambda on, rows: self.losses(on, on.rows(x), on.rows(y), rows))
        self.step(losses)
        self.buffer.add(x, y, task=task)
        return losses.detach()

    @staticmethod
    def losses(on: Members, x: torch.Tensor, y: torch.Tensor, replay: BufferSample | None) -> torch.Tensor:
        parts, labels = [on.augment(x)], y
        if replay is not None:
            parts.append(on.augment(replay.x))
            labels = torch.cat([labels, replay.y], 1)
        return cross_entropy(on.forward_parts(parts), labels)
