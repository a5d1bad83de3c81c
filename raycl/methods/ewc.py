"""Online EWC (Schwarz et al., ICML 2018): one running Fisher penalty anchored at the last task.

After each task the diagonal Fisher information of its training data is estimated from
per-example gradients of log p(y|x), weighted by p(y|x), and folded into a running estimate
``F <- gamma * F + F_task``; the anchor moves to the current weights. Training adds
``ewc_lambda * sum(F * (theta - anchor)^2)`` to the cross-entropy.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch.nn.utils import parameters_to_vector

from raycl.hparams import hp
from raycl.methods.base import ContinualMethod, TrainConfig
from raycl.population.random import Stream, stream_generator

# Examples of a task used to estimate its Fisher information (all of them on the MER benchmarks).
FISHER_EXAMPLES = 1000


@dataclasses.dataclass
class EwcConfig(TrainConfig):
    ewc_lambda: float = hp(10.0, "strength of the quadratic penalty (EWC's lambda)", low=0.0, per_member=True,
                           most_stable=10000.0)  # FACIL's starting value for its stability decay
    gamma: float = hp(1.0, "decay of the running Fisher estimate at each task boundary", low=0.0, high=1.0,
                      per_member=True)


class Ewc(ContinualMethod):
    name = "ewc"
    Config = EwcConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fisher: torch.Tensor | None = None
        self.anchor: torch.Tensor | None = None
        self.fisher_generator = stream_generator(self.seed, Stream.FISHER_SAMPLES)

    def penalty(self) -> torch.Tensor:
        if self.fisher is None:
            return torch.zeros((), device=self.device)
        theta = parameters_to_vector(self.net.parameters())
        return (self.fisher * (theta - self.anchor).pow(2)).sum()

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        loss = F.cross_entropy(self.net(self.augment(x)), y)
        total = loss + self.config.ewc_lambda * self.penalty() if self.fisher is not None else loss
        self.step(total)
        return loss.detach()

    def task_fisher(self, train_x: torch.Tensor, train_y: torch.Tensor) -> torch.Tensor:
        """Mean over examples of p(y|x) * (d log p(y|x) / d theta)^2, one backward per example."""
        n = min(FISHER_EXAMPLES, len(train_y))
        idx = torch.randperm(len(train_y), generator=self.fisher_generator)[:n].to(self.device)
        params = [p for p in self.net.parameters() if p.requires_grad]
        fisher = torch.zeros_like(parameters_to_vector(params))
        was_training = self.net.training
        self.net.eval()
        for i in idx:
            log_p = F.log_softmax(self.net(train_x[i:i + 1]), 1)[0, train_y[i]]
            grads = torch.autograd.grad(log_p, params)
            fisher.add_(torch.cat([g.flatten() for g in grads]).pow_(2), alpha=float(log_p.detach().exp()))
        self.net.train(was_training)
        return fisher.div_(n)

    def end_task(self, task: int, train_x: torch.Tensor, train_y: torch.Tensor) -> None:
        fisher = self.task_fisher(train_x, train_y)
        self.fisher = fisher if self.fisher is None else self.fisher.mul_(self.config.gamma).add_(fisher)
        self.anchor = parameters_to_vector(self.net.parameters()).detach().clone()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "fisher": self.fisher, "anchor": self.anchor,
                "fisher_rng": self.fisher_generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.fisher, self.anchor = state["fisher"], state["anchor"]
        self.fisher_generator.set_state(state["fisher_rng"])
