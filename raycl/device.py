"""Where a run trains and at what precision: the one device rule and the GPU options.

A run trains on the device it is given and nothing else. Inside a Ray task or actor that device
is the GPU Ray assigned it (``ray.get_gpu_ids``), or the CPU when it was given none: since Ray
no longer hides the GPUs from a task given none, "CUDA is visible" says nothing about what the
task may use.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from pathlib import Path

import torch

from raycl.errors import RayclError

PRECISIONS = ("fp32", "tf32", "bf16")
# Set to 1 where CUDA must work (``launch/benchmark.py --gpu`` sets it; so does whoever runs
# tests/test_cuda.py on a GPU host): a missing or unusable CUDA is then an error, not a skip.
REQUIRE_CUDA = "RAYCL_REQUIRE_CUDA"
# The oldest Linux NVIDIA driver each CUDA major version runs on (NVIDIA's compatibility table,
# with minor-version compatibility), and the PyTorch wheel index for a driver of that age.
DRIVER_FOR_CUDA = {11: (450, 80), 12: (525, 60), 13: (580, 65)}
WHEEL_INDEX = {11: "https://download.pytorch.org/whl/cu118", 12: "https://download.pytorch.org/whl/cu126",
               13: "https://download.pytorch.org/whl/cu130"}
# Left out of a GPU share's cap: set_per_process_memory_fraction bounds PyTorch's allocator only,
# while each process's CUDA context and cuBLAS/cuDNN workspaces take memory of their own on top.
# A stated margin until a GPU has measured it (``launch/benchmark.py --gpu`` prints the context).
CONTEXT_MARGIN_BYTES = 1 << 30


def driver_version() -> str | None:
    """The NVIDIA kernel driver's version ("550.54.15"), None where there is no NVIDIA driver."""
    try:
        found = re.search(r"Kernel Module\s+(?:for \S+\s+)?([0-9][0-9.]*)",
                          Path("/proc/driver/nvidia/version").read_text())
        if found:
            return found.group(1)
    except OSError:
        pass
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.split()
    return lines[0] if done.returncode == 0 and lines else None


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


def wheel_fix(driver: str | None, built_for: str | None = None, torch_version: str | None = None) -> str:
    """How to get a PyTorch that runs on ``driver`` (None: no NVIDIA driver installed), for a torch
    ``torch_version`` built for CUDA ``built_for`` (None: a CPU-only build)."""
    release = (torch_version or torch.__version__).split("+")[0]
    newest = max(DRIVER_FOR_CUDA)
    if driver is None:
        return (f"install the NVIDIA driver (>= {DRIVER_FOR_CUDA[newest][0]} for CUDA {newest} wheels; >= "
                f"{DRIVER_FOR_CUDA[12][0]} for CUDA 12 ones: pip install torch=={release} --index-url "
                f"{WHEEL_INDEX[12]})")
    fitting = [major for major, oldest in sorted(DRIVER_FOR_CUDA.items()) if _version_tuple(driver) >= oldest]
    if not fitting:
        return (f"upgrade the NVIDIA driver to >= {DRIVER_FOR_CUDA[12][0]} (CUDA 12 wheels) or >= "
                f"{DRIVER_FOR_CUDA[newest][0]} (CUDA {newest})")
    best = fitting[-1]
    if built_for is not None and int(built_for.split(".")[0]) <= best:
        return ("the driver fits this torch: check that the GPU is visible to this process (nvidia-smi, "
                "CUDA_VISIBLE_DEVICES)")
    return (f"pip install torch=={release} --index-url {WHEEL_INDEX[best]} (CUDA {best} wheels run on driver >= "
            f"{DRIVER_FOR_CUDA[best][0]}; where that index lacks {release}, its newest torch), or upgrade the "
            f"driver to >= {DRIVER_FOR_CUDA[newest][0]}")


def _first_sentence(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text.split(". ")[0].rstrip(".")


def _probe_cuda() -> None:
    """Make a tensor on CUDA, run a kernel on it and read it back: raises where CUDA cannot."""
    torch.ones(1, device="cuda").add_(1).item()


def cuda_problem() -> str | None:
    """Why this process cannot train on CUDA, in one line naming the NVIDIA driver, torch's CUDA
    version and the fix; None where CUDA works (a tensor made on it and read back)."""
    built_for = torch.version.cuda
    if built_for is None:
        driver = driver_version()
        return (f"CUDA unusable: torch {torch.__version__} is built without CUDA (torch.version.cuda None); NVIDIA "
                f"driver {driver or 'not found'}; fix: {wheel_fix(driver)}")
    if torch.cuda.is_available():
        try:
            _probe_cuda()
            return None
        except RuntimeError as error:  # e.g. no kernels in this wheel for the GPU's architecture
            reason = _first_sentence(error)
    else:
        try:
            torch.cuda.init()
            reason = "torch sees no CUDA device"
        except (RuntimeError, AssertionError) as error:
            reason = _first_sentence(error)
    driver = driver_version()
    major = int(built_for.split(".")[0])
    needs = DRIVER_FOR_CUDA.get(major, (0, 0))[0]
    return (f"CUDA unusable: {reason}; NVIDIA driver {driver or 'not found'}, torch {torch.__version__} built for "
            f"CUDA {built_for} (torch.version.cuda; needs driver >= {needs}); fix: {wheel_fix(driver, built_for)}")


def cuda_required() -> bool:
    """Whether ``$RAYCL_REQUIRE_CUDA`` is 1: CUDA must work here."""
    return os.environ.get(REQUIRE_CUDA, "").strip() == "1"


def require_cuda() -> None:
    """A RayclError naming the driver, torch's CUDA and the fix where CUDA does not work."""
    problem = cuda_problem()
    if problem is not None:
        raise RayclError(problem)


def auto_device() -> tuple[torch.device, str]:
    """``--device auto``'s choice and why, in one line: CUDA where it works, else the CPU (with what
    stops CUDA; an error instead with ``$RAYCL_REQUIRE_CUDA`` 1)."""
    problem = cuda_problem()
    if problem is None:
        device = torch.device("cuda")
        return device, (f"device auto: {device} ({torch.cuda.get_device_name(device)}, torch {torch.__version__} "
                        f"CUDA {torch.version.cuda})")
    if cuda_required():
        raise RayclError(problem)
    return torch.device("cpu"), f"device auto: cpu ({problem})"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise RayclError(f"unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    return precision


def resolve_device(device: torch.device | str | None) -> torch.device:
    """A device given by name; ``"auto"`` (or None) is CUDA where this process can see a GPU, else
    CPU: for command-line runs outside Ray."""
    if device is None or device == "auto":
        return auto_device()[0]
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise RayclError(f"unknown device {device!r}; allowed: auto, cpu, cuda, cuda:N ({error})") from None
    problem = cuda_problem() if resolved.type == "cuda" else None
    if problem is not None:
        raise RayclError(f"device {device!r} asked for, but {problem}; or use cpu")
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


def capped_fraction(share: float, total_bytes: int, margin_bytes: int = CONTEXT_MARGIN_BYTES) -> float:
    """The fraction of a GPU of ``total_bytes`` that PyTorch's allocator may fill for a process given
    ``share`` of it: the share less ``margin_bytes`` for the process's CUDA context and library
    handles, which the allocator's cap does not count."""
    allowed = share * total_bytes - margin_bytes
    if allowed <= 0:
        raise RayclError(f"a share of {share:g} of a GPU of {total_bytes / 2**30:.1f} GiB leaves nothing for PyTorch "
                         f"after the {margin_bytes / 2**30:.1f} GiB a process's CUDA context takes; use a larger "
                         "--gpus-per-trial")
    return allowed / total_bytes


def cap_memory(device: torch.device, share: float) -> None:
    """Limit this process's CUDA allocations on ``device`` so that they, with its context, fit its
    ``share`` of the GPU's memory (a trial given a fraction of a GPU); nothing to do on other
    devices or for a whole GPU."""
    if device.type == "cuda" and 0 < share < 1:
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(capped_fraction(share, total), device)


def to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor (drawn or decided on the host) on ``device`` without the host waiting for the
    copy: on CUDA through page-locked memory and a ``non_blocking`` copy (from pageable memory the
    copy blocks); elsewhere the plain copy (on the CPU the tensor itself)."""
    if device.type == "cuda" and host.device.type == "cpu":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device, non_blocking=device.type != "cpu")


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
