"""The optimisers of solo learners (one network each, :class:`raycl.methods.base.ContinualMethod`):
plain SGD over one flat parameter tensor, the optimiser of the DER protocol made cheap, or Adam.
A population's optimiser, one learning rate per member over stacked parameters, is
:class:`raycl.population.optim.PopulationOptimizer`.

Why not ``torch.optim.SGD``: it imports ``torch._dynamo`` on first use (over a second of
start-up here) and loops over parameters in Python at every step. The DER protocol's MLP takes
thousands of tiny steps, where both dominate. Here the parameters and their gradients are views
into two flat tensors, so a step is one fused multiply-add and zeroing the gradients is one fill.
"""

from __future__ import annotations

import torch


class FlatSGD:
    """SGD without momentum or weight decay, with the ``torch.optim`` calls the methods use."""

    def __init__(self, params, lr: float):
        self.params = [p for p in params if p.requires_grad]
        self.lr = lr
        first = self.params[0]
        total = sum(p.numel() for p in self.params)
        self.flat = torch.empty(total, device=first.device, dtype=first.dtype)
        self.flat_grad = torch.zeros(total, device=first.device, dtype=first.dtype)
        self._grad_views = []
        offset = 0
        for p in self.params:
            n = p.numel()
            self.flat[offset:offset + n].copy_(p.detach().flatten())
            p.data = self.flat[offset:offset + n].view_as(p)
            # Backward accumulates into an existing .grad in place, so these stay views.
            p.grad = self.flat_grad[offset:offset + n].view_as(p)
            self._grad_views.append(p.grad)
            offset += n

    def __deepcopy__(self, memo: dict) -> FlatSGD:
        """A copy over copies of the parameters (the ones a copy of their network holds, through
        ``memo``), as views into a flat tensor of its own: a plain copy would leave them apart."""
        import copy

        params = [copy.deepcopy(p, memo) for p in self.params]
        copied = FlatSGD(params, self.lr)
        copied.flat_grad.copy_(self.flat_grad)
        memo[id(self)] = copied
        return copied

    def zero_grad(self, set_to_none: bool = False) -> None:
        self.flat_grad.zero_()

    def step(self) -> None:
        for p, view in zip(self.params, self._grad_views):
            if p.grad is not view:
                raise RuntimeError("a parameter's .grad was replaced; FlatSGD needs zero_grad() from itself")
        self.flat.add_(self.flat_grad, alpha=-self.lr)

    def state_dict(self) -> dict:
        return {"lr": self.lr}

    def load_state_dict(self, state: dict) -> None:
        self.lr = state["lr"]


def solo_optimizer(name: str, params, lr: float):
    """A solo learner's optimiser over ``params``: ``sgd`` (FlatSGD) or ``adam`` (torch.optim.Adam)."""
    params = list(params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return FlatSGD(params, lr)


