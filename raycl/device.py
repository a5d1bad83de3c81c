"""Where a run trains and at what precision: the one device rule and the GPU options.

A run trains on the device it is given and nothing else. Inside a Ray task or actor that device
is the GPU Ray assigned it (``ray.get_gpu_ids``), or the CPU when it was given none: since Ray
no longer hides the GPUs from a task given none, "CUDA is visible" says nothing about what the
task may use.
"""

from __future__ import annotations

import contextlib
import os

import torch

from raycl.errors import RayclError

PRECISIONS = ("fp32", "tf32", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise RayclError(f"unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    return precision


def resolve_device(device: torch.device | str | None) -> torch.device:
    """A device given by name; ``"auto"`` (or None) is CUDA where this process can see a GPU, else
    CPU: for command-line runs outside Ray."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise RayclError(f"unknown device {device!r}; allowed: auto, cpu, cuda, cuda:N ({error})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RayclError(f"device {device!r} asked for, but this machine has no CUDA device; use cpu")
    return resolved


def assigned_device(gpu_ids: list | None = None) -> torch.device:
    """The device of the Ray task or actor this runs in: the first GPU Ray assigned it, else the CPU.

    Ray sets CUDA_VISIBLE_DEVICES to the assigned GPUs, so the assigned id is found among the
    visible ones; ``gpu_ids`` defaults to ``ray.get_gpu_ids()``.
    """
    if gpu_ids is None:
        import ray

        gpu_ids = ray.get_gpu_ids()
    if not gpu_ids:
        return torch.device("cpu")
    first = str(gpu_ids[0])
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    index = visible.index(first) if first in visible else int(first)
    return torch.device("cuda", index)


def cap_memory(device: torch.device, share: float) -> None:
    """Limit this process's CUDA allocations on ``device`` to ``share`` of its memory (a trial
    given a fraction of a GPU); nothing to do on other devices or for a whole GPU."""
    if device.type == "cuda" and 0 < share < 1:
        torch.cuda.set_per_process_memory_fraction(share, device)


def apply_precision(precision: str, device: torch.device, convolutional: bool = False) -> None:
    """Process-wide settings of ``precision`` on ``device``: TF32 matrix products and convolutions
    for ``tf32`` and off otherwise (fp32 stays exact), cuDNN's autotuner for convolutional nets."""
    check_precision(precision)
    if device.type != "cuda":
        return
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = convolutional


def autocast(precision: str, device: torch.device):
    """The context forward passes run in: bf16 autocast for ``bf16`` (weights and optimiser state
    stay float32), nothing otherwise."""
    if precision != "bf16" or device.type not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def full_precision(device: torch.device):
    """The context backward passes and optimiser steps run in (autocast off)."""
    if device.type not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)
