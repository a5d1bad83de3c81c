"""Stacked layers: P members' copies of one layer, their tensors stacked on a leading member dimension.

:class:`StackedLinear` takes inputs [P, batch, in]. The convolutional layers take activations laid
out as HFTA does, [batch, P * channels, H, W] (member p's channels at p * C ... (p + 1) * C - 1), so
that one grouped convolution (``groups=P``) or one batch norm over P x C channels serves every
member, each seeing only its own channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StackedLinear(nn.Module):
    """P linear layers applied to [P, batch, in] at once: weight [P, in, out], bias [P, 1, out].

    The weight is stored transposed from ``nn.Linear``'s layout so that its gradient comes out of
    the batched product contiguous, which keeps the optimiser's update on the fast path.
    """

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach().t() for layer in layers]).contiguous())
        self.bias = nn.Parameter(torch.stack([layer.bias.detach()[None] for layer in layers]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)

    def member_state(self, p: int) -> dict[str, torch.Tensor]:
        """Member ``p``'s tensors in ``nn.Linear``'s layout."""
        return {"weight": self.weight[p].t(), "bias": self.bias[p, 0]}


class StackedConv2d(nn.Module):
    """P ungrouped ``nn.Conv2d`` as one convolution with ``groups=P``: weight [P, out, in, k, k],
    bias [P, out] or None; [n, P * in, H, W] -> [n, P * out, H', W']. The member count is read from
    the weight at every call, so selecting members is selecting rows of the weight."""

    def __init__(self, layers: list[nn.Conv2d]):
        super().__init__()
        first = layers[0]
        if first.groups != 1 or first.padding_mode != "zeros" or isinstance(first.padding, str):
            raise ValueError("StackedConv2d stacks ungrouped convolutions with numeric zero padding")
        self.stride, self.padding, self.dilation = first.stride, first.padding, first.dilation
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = None if first.bias is None else nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.flatten()
        return F.conv2d(x, self.weight.flatten(0, 1), bias, self.stride, self.padding, self.dilation,
                        groups=self.weight.shape[0])

    def member_state(self, p: int) -> dict[str, torch.Tensor]:
        """Member ``p``'s tensors in ``nn.Conv2d``'s layout."""
        return {"weight": self.weight[p]} | ({} if self.bias is None else {"bias": self.bias[p]})


class StackedBatchNorm2d(nn.Module):
    """P ``nn.BatchNorm2d`` of C channels as one batch norm over P x C channels of [n, P * C, H, W].

    Affine parameters and running statistics are stored [P, C] (``num_batches_tracked`` [P]), so
    every per-member operation (learning rates, moving averages, selection, checkpoints) sees one
    row per member; the batch-norm call reads and updates them through flat views of those rows.
    Per channel, the statistics are those each member's own layer computes: batch norm never mixes
    channels.
    """

    def __init__(self, layers: list[nn.BatchNorm2d]):
        super().__init__()
        first = layers[0]
        if not (first.affine and first.track_running_stats) or first.momentum is None:
            raise ValueError("StackedBatchNorm2d stacks affine batch norms with running statistics and a momentum")
        self.eps, self.momentum = first.eps, first.momentum
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))
        self.register_buffer("running_mean", torch.stack([layer.running_mean for layer in layers]))
        self.register_buffer("running_var", torch.stack([layer.running_var for layer in layers]))
        self.register_buffer("num_batches_tracked", torch.stack([layer.num_batches_tracked for layer in layers]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)
        # view, not reshape: the running statistics must be updated in place in their [P, C] rows.
        return F.batch_norm(x, self.running_mean.view(-1), self.running_var.view(-1), self.weight.flatten(),
                            self.bias.flatten(), self.training, self.momentum, self.eps)

    def member_state(self, p: int) -> dict[str, torch.Tensor]:
        """Member ``p``'s tensors in ``nn.BatchNorm2d``'s layout."""
        return {name: getattr(self, name)[p]
                for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
