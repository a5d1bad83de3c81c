"""Dark Experience Replay (Buzzega et al. 2020): match stored logits on replayed examples."""

from __future__ import annotations

import dataclasses

import torch

from raycl.buffer import BufferSample
from raycl.hparams import hp
from raycl.methods.base import Members, ReplayConfig, ReplayPopulationMethod, cross_entropy, mse


@dataclasses.dataclass
class DerConfig(ReplayConfig):
    alpha: float = hp(0.3, "weight of the MSE between replayed and stored logits", low=0.0, per_member=True,
                       most_stable=1.0)


class Der(ReplayPopulationMethod):
    name = "der"
    Config = DerConfig
    stores_logits = True

    def replay_draws(self):
        """The buffer minibatches replayed at one step, as the buffer gives them (one sample, a list
        of them, or a RaggedSample of either)."""
        return self.buffer.sample(self.config.minibatch_size)

    def replay_loss(self, on: Members, outputs: torch.Tensor, draws: list[BufferSample]) -> torch.Tensor:
        (for_logits,) = draws
        return on.values("alpha") * mse(outputs, for_logits.logits)

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        replay = None if self.buffer.is_empty() else self.replay_draws()
        losses, current = self.per_group(replay, lambda on, rows: self.losses(on, on.rows(x), on.rows(y), rows))
        self.step(losses)
        # The logits stored are those computed before this step's update, as in the paper.
        self.buffer.add(x, y, logits=current, task=task)
        return losses.detach()

    def losses(self, on: Members, x: torch.Tensor, y: torch.Tensor, replay) -> tuple[torch.Tensor, torch.Tensor]:
        """The members' losses and their logits of the current examples."""
        n = x.shape[1]
        draws = [] if replay is None else replay if isinstance(replay, list) else [replay]
        outputs = on.forward_parts([on.augment(x), *(on.augment(d.x) for d in draws)])
        losses = cross_entropy(outputs[:, :n], y)
        if draws:
            losses = losses + self.replay_loss(on, outputs[:, n:], draws)
        return losses, outputs[:, :n].detach()
