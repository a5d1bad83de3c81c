"""Averaged GEM (Chaudhry et al., ICLR 2019): one constraint, on the mean memory gradient.

At the end of each task ``buffer_size // n_tasks`` of its examples join the memory (each member's
own buffer size). Each step
computes the gradient ``g_ref`` on ``minibatch_size`` memories drawn at random; if the current
gradient ``g`` points against it (g . g_ref < 0), the conflicting component is removed:
g <- g - (g . g_ref / g_ref . g_ref) g_ref, so the step does not increase the memory loss to
first order. Vectorised: every member projects its own gradient on its own reference.
"""

from __future__ import annotations

import torch

from raycl.buffer import BufferSample
from raycl.device import to_device
from raycl.methods.base import Members, ReplayConfig, ReplayPopulationMethod, cross_entropy
from raycl.methods.state import Transient
from raycl.population.nets import member_sum, per_member_view
from raycl.population.random import MemberRandom, Stream


def project_agem(grads: list[torch.Tensor], refs: list[torch.Tensor]) -> torch.Tensor:
    """Every member's gradient (a list of stacked [P, ...] tensors) with its component against its
    reference removed where the two conflict, in place; returns the [P] coefficients removed."""
    dot = member_sum([g * r for g, r in zip(grads, refs)])
    norm = member_sum([r * r for r in refs]).clamp_min(1e-12)
    coefficient = torch.where(dot < 0, dot / norm, torch.zeros_like(dot))
    for g, r in zip(grads, refs):
        g.sub_(per_member_view(coefficient, g) * r)
    return coefficient


class Agem(ReplayPopulationMethod):
    name = "agem"
    Config = ReplayConfig
    sgd_only_reason = "projects its SGD gradient"

    def __init__(self, configs: list, seeds: list[int], benchmark, device, dtype=torch.float32,
                 member_benchmarks=None):
        super().__init__(configs, seeds, benchmark, device, dtype, member_benchmarks)
        self.register("samples", MemberRandom(seeds, Stream.AGEM_SAMPLES, device))
        self.register("g_ref", None, Transient())  # the last step's reference gradients, for inspection

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        refs = None
        if not self.buffer.is_empty():
            replay = self.buffer.sample(self.config.minibatch_size)
            # A member whose memory is still empty (a buffer smaller than the tasks) gets a zero
            # reference, which removes nothing from its gradient.
            refs = self.opt.backward(self.per_group(replay, self.reference_losses).sum())
        losses = cross_entropy(self.net(self.augment(x)), y)
        grads = self.opt.backward(losses.sum())
        if refs is not None:
            project_agem(grads, refs)
            self.g_ref = refs
        self.opt.step(grads)
        return losses.detach()

    def reference_losses(self, on: Members, replay: BufferSample | None) -> torch.Tensor:
        if replay is None:
            return torch.zeros(on.size, device=self.device, dtype=self.dtype)
        return cross_entropy(on(self.net, on.augment(replay.x)), replay.y)

    def end_task(self, task: int, data) -> None:
        counts = [min(c.buffer_size // self.benchmark.n_tasks, data.n) for c in self.configs]
        n = max(counts)
        x, y = data.gather(to_device(self.samples.permutation(data.n)[:, :n], self.device))
        self.buffer.add(x, y, task=task, counts=None if len(set(counts)) == 1 else counts)
