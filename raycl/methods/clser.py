"""CLS-ER (Arani et al., ICLR 2022, "Learning Fast, Learning Slow").

A working model learns from the current batch and a reservoir minibatch. Two EMA copies of it
act as complementary memories: a plastic one (updated often, short memory) and a stable one
(updated rarely, long memory), each updated after a step with its own probability. On buffer
examples the working model is pulled (MSE on logits, ``reg_weight``) towards whichever memory
gives the true label the higher probability. The stable model is the one evaluated.
Vectorised: the memories are stacked copies of the population network, each member with its own
decays and its own coins (drawn in lockstep from its stream).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from raycl.hparams import hp
from raycl.buffer import BufferSample
from raycl.methods.base import Members, ReplayConfig, ReplayPopulationMethod, cross_entropy, mse
from raycl.methods.ema import PopulationEma
from raycl.population.random import MemberRandom, Stream


@dataclasses.dataclass
class ClserConfig(ReplayConfig):
    # Defaults: the paper's rot-mnist arguments, the published setting at hand (see the search space).
    reg_weight: float = hp(0.75, "weight of the MSE between buffer logits and the memories' targets", low=0.0,
                           per_member=True, most_stable=2.0)  # the top of its search range
    plastic_update_freq: float = hp(1.0, "probability of updating the plastic model after a step",
                                    low=0.0, high=1.0, per_member=True)
    plastic_alpha: float = hp(0.99, "decay of the plastic model's moving average", low=0.0, high=1.0,
                              per_member=True)
    stable_update_freq: float = hp(1.0, "probability of updating the stable model after a step",
                                   low=0.0, high=1.0, per_member=True)
    stable_alpha: float = hp(0.999, "decay of the stable model's moving average", low=0.0, high=1.0,
                             per_member=True)
    eval_model: str = hp("stable", "model evaluated (the others are for inspection)",
                         choices=("stable", "plastic", "working"))


class Clser(ReplayPopulationMethod):
    name = "clser"
    Config = ClserConfig

    def __init__(self, configs: list, seeds: list[int], benchmark, device, dtype=torch.float32,
                 member_benchmarks=None):
        super().__init__(configs, seeds, benchmark, device, dtype, member_benchmarks)
        self.register("plastic", PopulationEma(self.net))
        self.register("stable", PopulationEma(self.net))
        # Drawn on the host: whether a memory updates is decided without reading the device.
        self.register("coins", MemberRandom(seeds, Stream.CLSER_COINS, "cpu"))
        self.register("global_step", 0)

    @torch.no_grad()
    def memory_targets(self, x: torch.Tensor, y: torch.Tensor, on: Members | None = None) -> torch.Tensor:
        """Per member (of ``on``: every member) and example, the logits of the memory more confident
        in the true label."""
        on = on or self.everyone
        stable, plastic = on(self.stable.model, x), on(self.plastic.model, x)
        p_stable = F.softmax(stable, -1).gather(2, y[..., None])
        p_plastic = F.softmax(plastic, -1).gather(2, y[..., None])
        return torch.where(p_stable > p_plastic, stable, plastic)

    def losses(self, on: Members, x: torch.Tensor, y: torch.Tensor, replay: BufferSample | None) -> torch.Tensor:
        n = x.shape[1]
        parts, labels = [on.augment(x)], y
        if replay is not None:
            parts.append(on.augment(replay.x))
            labels = torch.cat([y, replay.y], 1)
        outputs = on.forward_parts(parts)
        losses = cross_entropy(outputs, labels)
        if replay is not None:
            losses = losses + on.values("reg_weight") * mse(outputs[:, n:], self.memory_targets(parts[1], replay.y, on))
        return losses

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        replay = None if self.buffer.is_empty() else self.buffer.sample(self.config.minibatch_size)
        losses = self.per_group(replay, lambda on, rows: self.losses(on, on.rows(x), on.rows(y), rows))
        self.step(losses)
        self.buffer.add(x, y, task=task)
        self.global_step += 1
        coins = self.coins.uniform(2, dtype=torch.float64)
        plastic = coins[:, 0] < self.host_member_values("plastic_update_freq").double()
        stable = coins[:, 1] < self.host_member_values("stable_update_freq").double()
        self.plastic.update(self.net, self.global_step, plastic, self.member_values("plastic_alpha"))
        self.stable.update(self.net, self.global_step, stable, self.member_values("stable_alpha"))
        return losses.detach()

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task: int) -> torch.Tensor:
        model = {"stable": self.stable, "plastic": self.plastic, "working": self.net}[self.config.eval_model]
        return model(x)
