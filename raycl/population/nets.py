"""Networks of a population: every parameter stacked on a leading member dimension [P, ...].

Networks made only of linear layers and parameter-free modules (the MLPs) become the same module
tree with each ``nn.Linear`` replaced by a :class:`StackedLinear`: one batched matrix product
(``baddbmm``) per layer for all members, inputs shaped [P, batch, features]. The ResNet becomes a
:class:`~raycl.population.convnet.StackedResNet` (grouped convolutions, batch norm over every
member's channels): one pass per part for all members. Any other network runs each member's slice
of the stacked tensors through the original module with ``torch.func.functional_call``
(:class:`MemberLoop`): the same stacked state, without the speed-up; the tests also keep it as the
reference the stacked forms are checked against.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call

from raycl.population.convnet import StackedResNet, stackable_resnet
from raycl.population.members import agreed, joined_rows, member_rows
from raycl.population.layers import StackedLinear


def _only_linear(module: nn.Module) -> bool:
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            continue
        if any(True for _ in sub.parameters(recurse=False)) or any(True for _ in sub.buffers(recurse=False)):
            return False
    return True


def _stack_linears(template: nn.Module, members: list[nn.Module]) -> nn.Module:
    stacked = copy.deepcopy(template)
    names = [name for name, sub in template.named_modules() if isinstance(sub, nn.Linear)]
    for name in names:
        layers = [m.get_submodule(name) for m in members]
        parent_name, _, child = name.rpartition(".")
        parent = stacked.get_submodule(parent_name) if parent_name else stacked
        setattr(parent, child, StackedLinear(layers))
    return stacked


class MemberLoop(nn.Module):
    """Any network as a population: stacked parameters and buffers, each member's slice run through
    the original module in turn. Only ``forward`` is stacked."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        # Not a registered submodule: its own tensors are never used (every call passes a member's
        # slices), so they stay out of parameters(), state_dict() and the optimiser.
        self._template = [copy.deepcopy(members[0]).requires_grad_(False)]
        self._param_names = [name for name, _ in members[0].named_parameters()]
        self._buffer_names = [name for name, _ in members[0].named_buffers()]
        self.stacked_params = nn.ParameterList(
            [nn.Parameter(torch.stack([dict(m.named_parameters())[n].detach() for m in members]))
             for n in self._param_names])
        for i, name in enumerate(self._buffer_names):
            self.register_buffer(f"stacked_buffer_{i}", torch.stack([dict(m.named_buffers())[name] for m in members]))

    @property
    def template(self) -> nn.Module:
        return self._template[0]

    def _member_state(self, p: int) -> dict[str, torch.Tensor]:
        state = {n: t[p] for n, t in zip(self._param_names, self.stacked_params)}
        for i, name in enumerate(self._buffer_names):
            state[name] = getattr(self, f"stacked_buffer_{i}")[p]
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        template = self._template[0].train(self.training)
        return torch.stack([functional_call(template, self._member_state(p), (x[p],)) for p in range(x.shape[0])])


def stack_members(members: list[nn.Module]) -> nn.Module:
    """The population network of ``members`` (identical architectures, own initial weights)."""
    if _only_linear(members[0]):
        return _stack_linears(members[0], members)
    if stackable_resnet(members[0]):
        return StackedResNet(members)
    return MemberLoop(members)


def member_template(net: nn.Module) -> nn.Module:
    """A module with one member's architecture, for questions about it (which layers it has): the
    template of a stacked ResNet or member loop (not to be trained), else ``net`` itself, whose
    module tree is a member's with stacked layers in place of linear ones."""
    if isinstance(net, (StackedResNet, MemberLoop)):
        return net.template
    return net


def only_stacked_linear(net: nn.Module) -> bool:
    """Whether every layer with parameters in the population network ``net`` is a :class:`StackedLinear`."""
    return all(isinstance(sub, StackedLinear) for sub in net.modules()
               if any(True for _ in sub.parameters(recurse=False)))


def per_member_view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values`` [P] as [P, 1, ..., 1], to broadcast one value per member against a stacked
    [P, ...] tensor ``like``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


# Long per-member reductions are summed in chunks of this many elements, each below the size from
# which torch splits one reduction over threads: a member's sum then comes out in the same order
# whatever the number of members or threads.
SUM_CHUNK = 8192


def member_sum(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The sum of every element of each member's slice, over a list of stacked [P, ...] tensors: [P]."""
    total = None
    for t in tensors:
        flat = t.reshape(t.shape[0], -1)
        pad = -flat.shape[1] % SUM_CHUNK
        if pad:
            flat = torch.nn.functional.pad(flat, (0, pad))
        part = flat.view(t.shape[0], -1, SUM_CHUNK).sum(2).sum(1)
        total = part if total is None else total + part
    return total


def select_members(net: nn.Module, keep: torch.Tensor) -> None:
    """Keep only members ``keep`` in every stacked parameter and buffer of ``net`` (a population
    network, trained or frozen; an optimiser selects its own state)."""
    for tensor in (*net.parameters(), *net.buffers()):
        if tensor.dim() > 0:
            tensor.data = tensor.data[keep.to(tensor.device)]


def network_member_states(net: nn.Module, positions: list[int]) -> list[dict[str, torch.Tensor]]:
    """The state dicts of the members at ``positions`` as networks of that member alone ([1, ...]
    rows, copies of their own; a tensor without a member dimension as it is)."""
    state = net.state_dict()
    rows = {name: member_rows(t, positions) if t.dim() > 0 else [t.clone() for _ in positions]
            for name, t in state.items()}
    return [{name: rows[name][k] for name in state} for k in range(len(positions))]


def joined_network_state(states: list[dict[str, torch.Tensor]], device: torch.device) -> dict[str, torch.Tensor]:
    """One population network's state dict from its members' (made by :func:`network_member_states`),
    on ``device``."""
    agreed("the tensors of the networks", [list(s) for s in states])
    return {name: joined_rows(f"network tensor {name}", [s[name] for s in states], device) if first.dim() > 0
            else agreed(f"network tensor {name}", [s[name] for s in states]).to(device)
            for name, first in states[0].items()}
