"""DER++: DER plus cross-entropy on a second, independent buffer minibatch."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from raycl.buffer import BufferSample
from raycl.hparams import hp
from raycl.methods.der import Der, DerConfig


@dataclasses.dataclass
class DerppConfig(DerConfig):
    beta: float = hp(0.5, "weight of the cross-entropy on replayed labels", low=0.0)


class Derpp(Der):
    name = "derpp"
    Config = DerppConfig

    def replay_draws(self) -> list[BufferSample]:
        size = self.config.minibatch_size
        return [self.buffer.sample(size), self.buffer.sample(size)]

    def replay_loss(self, outputs: torch.Tensor, draws: list[BufferSample]) -> torch.Tensor:
        for_logits, for_labels = draws
        m = len(for_logits.y)
        return (self.config.alpha * F.mse_loss(outputs[:m], for_logits.logits)
                + self.config.beta * F.cross_entropy(outputs[m:], for_labels.y))
