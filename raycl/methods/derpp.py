"""DER++: DER plus cross-entropy on a second, independent buffer minibatch."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from raycl.hparams import hp
from raycl.methods.base import ReplayMethod
from raycl.methods.der import DerConfig


@dataclasses.dataclass
class DerppConfig(DerConfig):
    beta: float = hp(0.5, "weight of the cross-entropy on replayed labels", low=0.0)


class Derpp(ReplayMethod):
    name = "derpp"
    Config = DerppConfig
    stores_logits = True

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        n = x.shape[0]
        if self.buffer.is_empty():
            outputs = self.net(self.augment(x))
            loss = F.cross_entropy(outputs, y)
        else:
            for_logits = self.buffer.sample(self.config.minibatch_size)
            for_labels = self.buffer.sample(self.config.minibatch_size)
            m = for_logits.x.shape[0]
            outputs = self.net(torch.cat([self.augment(x), self.augment(for_logits.x), self.augment(for_labels.x)]))
            loss = (F.cross_entropy(outputs[:n], y)
                    + self.config.alpha * F.mse_loss(outputs[n:n + m], for_logits.logits)
                    + self.config.beta * F.cross_entropy(outputs[n + m:], for_labels.y))
        self.step(loss)
        self.buffer.add(x, y, logits=outputs[:n], task=task)
        return loss.detach()
