"""DER++: DER plus cross-entropy on a second, independent buffer minibatch."""

from __future__ import annotations

import dataclasses

import torch

from raycl.buffer import BufferSample
from raycl.hparams import hp
from raycl.methods.base import Members, cross_entropy, mse
from raycl.methods.der import Der, DerConfig


@dataclasses.dataclass
class DerppConfig(DerConfig):
    beta: float = hp(0.5, "weight of the cross-entropy on replayed labels", low=0.0, per_member=True,
                      most_stable=1.0)


class Derpp(Der):
    name = "derpp"
    Config = DerppConfig

    def replay_draws(self):
        return self.buffer.sample(self.config.minibatch_size, draws=2)

    def replay_loss(self, on: Members, outputs: torch.Tensor, draws: list[BufferSample]) -> torch.Tensor:
        for_logits, for_labels = draws
        m = for_logits.y.shape[1]
        return (on.values("alpha") * mse(outputs[:, :m], for_logits.logits)
                + on.values("beta") * cross_entropy(outputs[:, m:], for_labels.y))
