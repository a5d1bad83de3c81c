"""Dark Experience Replay (Buzzega et al. 2020): match stored logits on replayed examples."""

from __future__ import annotations

import dataclasses

import torch

from raycl.buffer import BufferSample
from raycl.hparams import hp
from raycl.methods.base import ReplayConfig, ReplayPopulationMethod, cross_entropy, mse


@dataclasses.dataclass
class DerConfig(ReplayConfig):
    alpha: float = hp(0.3, "weight of the MSE between replayed and stored logits", low=0.0, per_member=True,
                       most_stable=1.0)


class Der(ReplayPopulationMethod):
    name = "der"
    Config = DerConfig
    stores_logits = True

    def replay_draws(self) -> list[BufferSample]:
        """The buffer minibatches replayed at one step."""
        return [self.buffer.sample(self.config.minibatch_size)]

    def replay_loss(self, outputs: torch.Tensor, draws: list[BufferSample]) -> torch.Tensor:
        (for_logits,) = draws
        return self.member_values("alpha") * mse(outputs, for_logits.logits)

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        n = x.shape[1]
        draws = [] if self.buffer.is_empty() else self.replay_draws()
        outputs = self.forward_parts([self.augment(x), *(self.augment(d.x) for d in draws)])
        losses = cross_entropy(outputs[:, :n], y)
        if draws:
            losses = losses + self.replay_loss(outputs[:, n:], draws)
        self.step(losses)
        # The logits stored are those computed before this step's update, as in the paper.
        self.buffer.add(x, y, logits=outputs[:, :n], task=task)
        return losses.detach()
