"""Gradient Episodic Memory (Lopez-Paz & Ranzato, NeurIPS 2017).

Each task keeps its last ``buffer_size // n_tasks`` examples in a ring. Before every step the
gradient of the loss on each earlier task's memories is computed; if the current gradient ``g``
has a negative dot product with any of them, ``g`` is replaced by the closest vector (in L2) whose
dot product with every memory gradient is non-negative, found by solving the dual quadratic
program: min_v 1/2 v'GG'v + g'G'v subject to v >= margin, then g~ = G'v + g (GEM's
``memory_strength`` is that margin).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from raycl.errors import RayclError
from raycl.hparams import hp
from raycl.methods.base import ContinualMethod, TrainConfig

# Added to the diagonal of GG' (relative to its mean) so the QP stays strictly convex. The result
# points against a memory gradient by about eps * v, so eps is as small as quadprog accepts: the
# first that works of these (GEM's code adds an absolute 1e-3).
QP_EPS = (1e-10, 1e-6, 1e-3)


@dataclasses.dataclass
class GemConfig(TrainConfig):
    buffer_size: int = hp(500, "total memories, split evenly over the tasks", low=1, per_member=True,
                          fixed_in_run=True)
    memory_strength: float = hp(0.5, "margin of the QP: how far past orthogonal the step is pushed", low=0.0)


def project_to_cone(gradient: torch.Tensor, memories: torch.Tensor, margin: float) -> torch.Tensor:
    """The gradient closest to ``gradient`` with non-negative dot product with every row of
    ``memories`` (up to ``margin``), via GEM's dual QP solved by quadprog.

    Only the small t x t problem goes to float64 NumPy; the products with the long gradient
    vectors stay in torch.
    """
    import quadprog

    t = memories.shape[0]
    p = (memories @ memories.T).double().cpu().numpy()
    p = 0.5 * (p + p.T)
    scale = max(float(np.trace(p)) / t, 1e-12)
    q = -(memories @ gradient).double().cpu().numpy()
    for eps in QP_EPS:
        try:
            v = quadprog.solve_qp(p + np.eye(t) * eps * scale, q, np.eye(t), np.zeros(t) + margin)[0]
            break
        except ValueError:  # "matrix G is not positive definite": nearly parallel memory gradients
            if eps == QP_EPS[-1]:
                raise
    weights = torch.from_numpy(v).to(memories.dtype).to(memories.device)
    return weights @ memories + gradient


class Gem(ContinualMethod):
    name = "gem"
    Config = GemConfig
    sgd_only_reason = "projects one flat SGD gradient"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        per_task = self.config.buffer_size // self.n_tasks
        if per_task < 1:
            raise RayclError(f"gem needs buffer_size >= the {self.n_tasks} tasks, got {self.config.buffer_size}")
        shape = self.benchmark.input_shape
        self.per_task = per_task
        self.mem_x = torch.zeros((self.n_tasks, per_task, *shape), device=self.device)
        self.mem_y = torch.zeros((self.n_tasks, per_task), dtype=torch.long, device=self.device)
        self.mem_count = [0] * self.n_tasks  # examples written into each task's ring so far
        n_params = self.opt.flat.numel()
        self.grads = torch.zeros((self.n_tasks, n_params), device=self.device)

    def _remember(self, x: torch.Tensor, y: torch.Tensor, task: int) -> None:
        n = min(x.shape[0], self.per_task)
        start = self.mem_count[task] % self.per_task
        idx = torch.arange(start, start + n, device=self.device) % self.per_task
        self.mem_x[task, idx] = x[-n:]
        self.mem_y[task, idx] = y[-n:]
        self.mem_count[task] += n

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        self._remember(x, y, task)
        if task > 0:
            self._memory_gradients(task)
        self.opt.zero_grad()
        loss = F.cross_entropy(self.net(self.augment(x)), y)
        loss.backward()
        if task > 0:
            g = self.opt.flat_grad
            past_grads = self.grads[:task]
            if bool((past_grads @ g < 0).any()):
                g.copy_(project_to_cone(g, past_grads, self.config.memory_strength))
        self.opt.step()
        return loss.detach()

    def _memory_gradients(self, task: int) -> None:
        """Fill ``self.grads[:task]`` with each earlier task's memory-loss gradient."""
        for past in range(task):
            filled = min(self.mem_count[past], self.per_task)
            if filled == 0:
                continue
            self.opt.zero_grad()
            F.cross_entropy(self.net(self.augment(self.mem_x[past, :filled])), self.mem_y[past, :filled]).backward()
            self.grads[past].copy_(self.opt.flat_grad)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "mem_x": self.mem_x, "mem_y": self.mem_y, "mem_count": list(self.mem_count)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.mem_x.copy_(state["mem_x"])
        self.mem_y.copy_(state["mem_y"])
        self.mem_count = list(state["mem_count"])
