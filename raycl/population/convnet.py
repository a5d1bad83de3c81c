"""The ResNet as a population: P members' convolutions, batch norms and classifiers stacked, each
part of a step one pass for every member.

Three shapes were measured for this (reduced-resnet18, P = 4, forward and backward of 32 images
of 32x32, float32, one thread, CPU time on a CPU shared with other work): the member-by-member
loop (:class:`raycl.population.nets.MemberLoop`), ``torch.func.vmap`` over ``functional_call`` of
the solo network with stacked parameters and buffers, and HFTA-style stacked layers (Wang et al.,
MLSys 2021): grouped convolutions over activations [n, P * C, H, W], batch norm over P x C
channels. vmap (which lowers each convolution to a grouped one too) and the stacked layers in the
default memory format were both slower than the loop; the stacked layers in channels-last format
were the fastest of all, so they are what the forward pass uses. They also keep batch norm's
running statistics as plain [P, C] buffers updated in place, where vmap has to be handed them
as batched inputs. The layers are in :mod:`raycl.population.layers`.

The solo network's own ``features`` runs unchanged on the stacked layers: none of its operations
(grouped convolution, batch norm, ReLU, the residual sum, the spatial mean) mixes one member's
channels with another's. Only the entry (inputs [P, n, C, H, W] to [n, P * C, H, W]) and the exit
(features [n, P * F] to [P, n, F] for the stacked classifier) are the population's own.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from raycl.models import ResNet18
from raycl.population.layers import StackedBatchNorm2d, StackedConv2d, StackedLinear

STACKED_LAYER = {nn.Conv2d: StackedConv2d, nn.BatchNorm2d: StackedBatchNorm2d, nn.Linear: StackedLinear}


def stackable_resnet(module: nn.Module) -> bool:
    """Whether ``module`` is a ResNet whose every layer with tensors has a stacked form."""
    return isinstance(module, ResNet18) and all(
        type(sub) in STACKED_LAYER for sub in module.modules()
        if any(True for _ in sub.parameters(recurse=False)) or any(True for _ in sub.buffers(recurse=False)))


class StackedResNet(nn.Module):
    """P ResNets (identical architectures, own weights) as one module: inputs [P, n, C, H, W],
    logits [P, n, classes]; every parameter and buffer stacked [P, ...] under the solo network's
    layer names (``resnet.stages.0.conv1.weight`` is [P, out, in, 3, 3])."""

    def __init__(self, members: list[ResNet18]):
        super().__init__()
        # One member's structure without its tensors: what asks about the architecture (is there
        # batch norm?) looks at it; it never computes.
        self._template = [copy.deepcopy(members[0]).to("meta").requires_grad_(False)]
        self.resnet = copy.deepcopy(self._template[0])
        for name, sub in members[0].named_modules():
            if type(sub) in STACKED_LAYER:
                parent_name, _, child = name.rpartition(".")
                parent = self.resnet.get_submodule(parent_name) if parent_name else self.resnet
                setattr(parent, child, STACKED_LAYER[type(sub)]([m.get_submodule(name) for m in members]))

    @property
    def template(self) -> nn.Module:
        return self._template[0]

    def member_state_dict(self, p: int) -> dict[str, torch.Tensor]:
        """Member ``p`` as a solo network's state dict (views of the stacked tensors)."""
        state = {}
        for name, sub in self.resnet.named_modules():
            if hasattr(sub, "member_state"):
                state.update({f"{name}.{key}": value for key, value in sub.member_state(p).items()})
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, n, channels = x.shape[:3]
        # [n, P * C, H, W] in channels-last layout: grouped convolutions on the CPU are markedly
        # faster so (the layout changes no member's numbers relative to its solo run, which takes
        # the same path, as long as a solo run's layout is channels-last too: hence a copy even at
        # P = 1, where a reshape would have been a view of the contiguous layout). Made by
        # permutes and a copy, not by contiguous(memory_format=torch.channels_last), which
        # torch.func.vmap (per-example gradients) does not support.
        grouped = x.permute(1, 3, 4, 0, 2).contiguous().view(n, *x.shape[3:], p * channels).permute(0, 3, 1, 2)
        features = self.resnet.features(grouped)  # [n, P * F]
        return self.resnet.classifier(features.view(n, p, -1).transpose(0, 1))
