"""CLS-ER (Arani et al., ICLR 2022, "Learning Fast, Learning Slow").

A working model learns from the current batch and a reservoir minibatch. Two EMA copies of it
act as complementary memories: a plastic one (updated often, short memory) and a stable one
(updated rarely, long memory), each updated after a step with its own probability. On buffer
examples the working model is pulled (MSE on logits, ``reg_weight``) towards whichever memory
gives the true label the higher probability. The stable model is the one evaluated.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from raycl.hparams import hp
from raycl.methods.base import ReplayConfig, ReplayMethod
from raycl.methods.ema import EmaModel
from raycl.population.random import Stream, stream_generator


@dataclasses.dataclass
class ClserConfig(ReplayConfig):
    # Defaults: the paper's rot-mnist arguments, the published setting at hand (see the search space).
    reg_weight: float = hp(0.75, "weight of the MSE between buffer logits and the memories' targets", low=0.0,
                           per_member=True, most_stable=2.0)  # the top of its search range
    plastic_update_freq: float = hp(1.0, "probability of updating the plastic model after a step",
                                    low=0.0, high=1.0)
    plastic_alpha: float = hp(0.99, "decay of the plastic model's moving average", low=0.0, high=1.0)
    stable_update_freq: float = hp(1.0, "probability of updating the stable model after a step",
                                   low=0.0, high=1.0)
    stable_alpha: float = hp(0.999, "decay of the stable model's moving average", low=0.0, high=1.0)
    eval_model: str = hp("stable", "model evaluated (the others are for inspection)",
                         choices=("stable", "plastic", "working"))


class Clser(ReplayMethod):
    name = "clser"
    Config = ClserConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.plastic = EmaModel(self.net, self.config.plastic_alpha)
        self.stable = EmaModel(self.net, self.config.stable_alpha)
        self.coin = stream_generator(self.seed, Stream.CLSER_COINS)
        self.global_step = 0

    @torch.no_grad()
    def memory_targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per example, the logits of the memory more confident in the true label."""
        stable, plastic = self.stable(x), self.plastic(x)
        p_stable = F.softmax(stable, 1).gather(1, y[:, None])
        p_plastic = F.softmax(plastic, 1).gather(1, y[:, None])
        return torch.where(p_stable > p_plastic, stable, plastic)

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        n = x.shape[0]
        inputs, labels = self.augment(x), y
        replay = None if self.buffer.is_empty() else self.buffer.sample(self.config.minibatch_size)
        if replay is not None:
            replay_x = self.augment(replay.x)
            inputs, labels = torch.cat([inputs, replay_x]), torch.cat([y, replay.y])
        outputs = self.net(inputs)
        loss = F.cross_entropy(outputs, labels)
        if replay is not None:
            loss = loss + self.config.reg_weight * F.mse_loss(outputs[n:], self.memory_targets(replay_x, replay.y))
        self.step(loss)
        self.buffer.add(x, y, task=task)
        self.global_step += 1
        if torch.rand((), generator=self.coin) < self.config.plastic_update_freq:
            self.plastic.update(self.net, self.global_step)
        if torch.rand((), generator=self.coin) < self.config.stable_update_freq:
            self.stable.update(self.net, self.global_step)
        return loss.detach()

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task: int) -> torch.Tensor:
        model = {"stable": self.stable, "plastic": self.plastic, "working": self.net}[self.config.eval_model]
        return model(x)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "plastic": self.plastic.state_dict(), "stable": self.stable.state_dict(),
                "coin": self.coin.get_state(), "global_step": self.global_step}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.plastic.load_state_dict(state["plastic"])
        self.stable.load_state_dict(state["stable"])
        self.coin.set_state(state["coin"])
        self.global_step = state["global_step"]
