"""Online EWC (Schwarz et al., ICML 2018): one running Fisher penalty anchored at the last task.

After each task the diagonal Fisher information of its training data is estimated from
per-example gradients of log p(y|x), weighted by p(y|x), and folded into a running estimate
``F <- gamma * F + F_task``; the anchor moves to the current weights. Training adds
``ewc_lambda * sum(F * (theta - anchor)^2)`` to the cross-entropy. Vectorised: the Fisher and the
anchor are stacked per member, and each per-example backward serves every member.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from raycl.device import to_device
from raycl.hparams import hp
from raycl.methods.base import PopulationMethod, TrainConfig, cross_entropy
from raycl.methods.state import Tensors
from raycl.population.nets import member_sum, per_member_view
from raycl.population.random import MemberRandom, Stream

# Examples of a task used to estimate its Fisher information (all of them on the MER benchmarks).
FISHER_EXAMPLES = 1000


@dataclasses.dataclass
class EwcConfig(TrainConfig):
    ewc_lambda: float = hp(10.0, "strength of the quadratic penalty (EWC's lambda)", low=0.0, per_member=True,
                           most_stable=10000.0)  # FACIL's starting value for its stability decay
    gamma: float = hp(1.0, "decay of the running Fisher estimate at each task boundary", low=0.0, high=1.0,
                      per_member=True)


class Ewc(PopulationMethod):
    name = "ewc"
    Config = EwcConfig

    def __init__(self, configs: list, seeds: list[int], benchmark, device, dtype=torch.float32,
                 member_benchmarks=None):
        super().__init__(configs, seeds, benchmark, device, dtype, member_benchmarks)
        self.register("fisher", None, Tensors())  # per parameter, stacked [P, ...], from the first task's end
        self.register("anchor", None, Tensors())
        self.register("samples", MemberRandom(seeds, Stream.FISHER_SAMPLES, device))

    def params(self) -> list[torch.Tensor]:
        return [p for p in self.net.parameters() if p.requires_grad]

    def penalty(self) -> torch.Tensor:
        """sum(F * (theta - anchor)^2) per member: [P]."""
        return member_sum([f * (p - a).pow(2) for f, p, a in zip(self.fisher, self.params(), self.anchor)])

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        losses = cross_entropy(self.net(self.augment(x)), y)
        total = losses + self.member_values("ewc_lambda") * self.penalty() if self.fisher is not None else losses
        self.step(total)
        return losses.detach()

    def task_fisher(self, data) -> list[torch.Tensor]:
        """Mean over each member's examples of p(y|x) * (d log p(y|x) / d theta)^2: one backward per
        example, for every member at once."""
        n = min(FISHER_EXAMPLES, data.n)
        x, y = data.gather(to_device(self.samples.permutation(data.n)[:, :n], self.device))
        params = self.params()
        fisher = [torch.zeros_like(p) for p in params]
        was_training = self.net.training
        self.net.train(False)
        for i in range(n):
            log_p = F.log_softmax(self.net(x[:, i:i + 1]), -1)[:, 0].gather(1, y[:, i:i + 1])[:, 0]  # [P]
            grads = torch.autograd.grad(log_p.sum(), params)
            weight = log_p.detach().exp()
            for f, g in zip(fisher, grads):
                f.add_(g.pow(2) * per_member_view(weight, g))
        self.net.train(was_training)
        return [f.div_(n) for f in fisher]

    def end_task(self, task: int, data) -> None:
        fisher = self.task_fisher(data)
        if self.fisher is None:
            self.fisher = fisher
        else:
            gamma = self.member_values("gamma")
            self.fisher = [old.mul_(per_member_view(gamma, old)).add_(new)
                           for old, new in zip(self.fisher, fisher)]
        self.anchor = [p.detach().clone() for p in self.params()]
