"""Batched image augmentation on tensors (no per-sample PIL)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_flip(x: torch.Tensor, uniforms: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Crop after zero padding plus horizontal flip, per image of an (N, C, H, W) batch, chosen by
    ``uniforms`` (N, 3) in [0, 1): row offset, column offset, flip."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dev = x.device
    uniforms = uniforms.to(dev)
    oy = (uniforms[:, 0] * (2 * padding + 1)).long()
    ox = (uniforms[:, 1] * (2 * padding + 1)).long()
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
    batch = torch.arange(n, device=dev)[:, None, None, None]
    chans = torch.arange(c, device=dev)[None, :, None, None]
    cropped = padded[batch, chans, rows, cols]
    flip = (uniforms[:, 2] < 0.5)[:, None, None, None]
    return torch.where(flip, cropped.flip(3), cropped)


def random_crop_flip(x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop after zero padding plus random horizontal flip, per image of an (N, C, H, W) batch."""
    return crop_flip(x, torch.rand(x.shape[0], 3, generator=generator), padding)
