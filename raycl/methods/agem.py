"""Averaged GEM (Chaudhry et al., ICLR 2019): one constraint, on the mean memory gradient.

At the end of each task ``buffer_size // n_tasks`` of its examples join the memory. Each step
computes the gradient ``g_ref`` on ``minibatch_size`` memories drawn at random; if the current
gradient ``g`` points against it (g . g_ref < 0), the conflicting component is removed:
g <- g - (g . g_ref / g_ref . g_ref) g_ref, so the step does not increase the memory loss to
first order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raycl.methods.base import ReplayConfig, ReplayMethod
from raycl.population.random import Stream, stream_generator


def project_agem(g: torch.Tensor, g_ref: torch.Tensor) -> torch.Tensor:
    """``g`` with its component against ``g_ref`` removed when the two conflict (in place)."""
    dot = torch.dot(g, g_ref)
    if dot < 0:
        g.sub_(g_ref, alpha=float(dot / torch.dot(g_ref, g_ref).clamp_min(1e-12)))
    return g


class Agem(ReplayMethod):
    name = "agem"
    Config = ReplayConfig
    flat_sgd_reason = "projects one flat SGD gradient"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.g_ref = torch.zeros_like(self.opt.flat_grad)
        self.sample_generator = stream_generator(self.seed, Stream.AGEM_SAMPLES)

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        if not self.buffer.is_empty():
            replay = self.buffer.sample(self.config.minibatch_size)
            self.opt.zero_grad()
            F.cross_entropy(self.net(self.augment(replay.x)), replay.y).backward()
            self.g_ref.copy_(self.opt.flat_grad)
        self.opt.zero_grad()
        loss = F.cross_entropy(self.net(self.augment(x)), y)
        loss.backward()
        if not self.buffer.is_empty():
            project_agem(self.opt.flat_grad, self.g_ref)
        self.opt.step()
        return loss.detach()

    def end_task(self, task: int, train_x: torch.Tensor, train_y: torch.Tensor) -> None:
        n = min(self.config.buffer_size // self.n_tasks, len(train_y))
        idx = torch.randperm(len(train_y), generator=self.sample_generator)[:n].to(self.device)
        self.buffer.add(train_x[idx], train_y[idx], task=task)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "sample_rng": self.sample_generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.sample_generator.set_state(state["sample_rng"])
