"""Dark Experience Replay (Buzzega et al. 2020): match stored logits on replayed examples."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from raycl.hparams import hp
from raycl.methods.base import ReplayConfig, ReplayMethod


@dataclasses.dataclass
class DerConfig(ReplayConfig):
    alpha: float = hp(0.3, "weight of the MSE between replayed and stored logits", low=0.0)


class Der(ReplayMethod):
    name = "der"
    Config = DerConfig
    stores_logits = True

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        n = x.shape[0]
        if self.buffer.is_empty():
            outputs = self.net(self.augment(x))
            loss = F.cross_entropy(outputs, y)
        else:
            # No batch norm in the MNIST MLP, so one forward pass over current and replayed
            # examples equals the separate passes of the paper's code, at a third of the calls.
            replay = self.buffer.sample(self.config.minibatch_size)
            outputs = self.net(torch.cat([self.augment(x), self.augment(replay.x)]))
            loss = F.cross_entropy(outputs[:n], y) + self.config.alpha * F.mse_loss(outputs[n:], replay.logits)
        self.step(loss)
        # The logits stored are those computed before this step's update, as in the paper.
        self.buffer.add(x, y, logits=outputs[:n], task=task)
        return loss.detach()
