"""Exponential-moving-average copies of a population network, shared by the dual-memory methods
(CLS-ER, SYNERgy): every member with its own decay and its own decision to update."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from raycl.device import to_device
from raycl.models import frozen_copy
from raycl.population.members import joined_rows, member_rows
from raycl.population.nets import joined_network_state, network_member_states, per_member_view, select_members
from raycl.population.random import from_host_state, host_state


class PopulationEma:
    """A frozen copy of a population network whose member p tracks it as
    ``ema_p <- a_p * ema_p + (1 - a_p) * net_p`` when told to, ``a_p = min(1 - 1 / (step + 1), alpha_p)``
    (early updates follow the network closely instead of averaging in its random initialisation;
    batch-norm statistics are copied as they are). The copy stays in eval mode: it only supplies
    targets and predictions. The decays are the method's per-member values, given at each update."""

    def __init__(self, net: nn.Module):
        self.model = frozen_copy(net)
        self.updates = torch.zeros(next(net.parameters()).shape[0], dtype=torch.long)  # per member, on the host

    def update(self, net: nn.Module, step: int, members: torch.Tensor, alphas: torch.Tensor) -> None:
        """Move the members flagged in ``members`` [P] (a CPU bool tensor: the host's decision, from
        the members' coins) towards the network, each at its decay ``alphas`` [P] (on the device);
        the others stay as they are."""
        warm = 1.0 - 1.0 / (step + 1)
        flagged = to_device(members, alphas.device)  # copied to the device, never read back
        weight = torch.where(flagged, 1.0 - alphas.clamp(max=warm), torch.zeros_like(alphas))
        with torch.no_grad():
            for mine, theirs in zip(self.model.parameters(), net.parameters()):
                mine.lerp_(theirs, per_member_view(weight.to(mine), mine))
            for mine, theirs in zip(self.model.buffers(), net.buffers()):
                if mine.dim() > 0:
                    mine.copy_(torch.where(per_member_view(flagged.to(mine.device), mine), theirs, mine))
        self.updates += members.long()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def select(self, keep: torch.Tensor) -> None:
        select_members(self.model, keep)
        self.updates = self.updates[keep.cpu()]

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": host_state(self.updates)}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])  # copied into the model's tensors, on its device
        self.updates = from_host_state(state["updates"])

    def member_states(self, positions: list[int]) -> list[dict]:
        """Each member's moving average at ``positions`` as the state of that member's alone."""
        models = network_member_states(self.model, positions)
        return [{"model": model, "updates": host_state(row)}
                for model, row in zip(models, member_rows(self.updates, positions))]

    def joined_state(self, states: list[dict]) -> dict:
        """The state of one moving average of the members of ``states``, in order."""
        device = next(self.model.parameters()).device
        return {"model": joined_network_state([s["model"] for s in states], device),
                "updates": joined_rows("counts of updates", [np.asarray(s["updates"]) for s in states])}
