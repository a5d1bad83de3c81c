"""Where the trials of a search go: the --gpus-per-trial rule, how many trials the cluster packs at
once, and the device a trial trains on once Ray has placed it.

A trial trains on one device (``raycl.device``): the GPU Ray assigned it, else the CPU. So a trial
takes no GPU (0), a share of one (a fraction in (0, 1): Ray packs floor(1/g) such trials on each
GPU) or one whole GPU (1); more would be GPUs it never uses.
"""

from __future__ import annotations

import math

from raycl.errors import RayclError

# Ray keeps resource amounts to four decimals; this absorbs the rounding of 1/g and of the amounts.
EPSILON = 1e-6
GPU_ALLOWED = "0 (no GPU), a fraction in (0, 1) (trials share a GPU) or 1 (a whole GPU: a trial trains on one device)"


def check_gpus_per_trial(value, flag: str = "--gpus-per-trial") -> float:
    """``value`` if it is 0, a fraction in (0, 1) or 1; else one RayclError naming it and the allowed values."""
    number = None if isinstance(value, bool) else value
    if not isinstance(number, (int, float)) or not 0 <= number <= 1:  # NaN fails both comparisons
        shown = f"{value:g}" if isinstance(number, (int, float)) else repr(value)
        raise RayclError(f"{flag} must be >= 0 and at most 1, got {shown}; allowed: {GPU_ALLOWED}")
    return float(number)


def alive_nodes(nodes: list[dict] | None = None) -> list[dict]:
    """The alive nodes of the cluster (``ray.nodes()`` by default), each with its "Resources"."""
    if nodes is None:
        import ray

        nodes = ray.nodes()
    return [n for n in nodes if n.get("Alive", n.get("alive", True))]


def _fits(amount: float, per_trial: float) -> int:
    """How many trials of ``per_trial`` of a resource fit in ``amount`` of it, whole units apart
    (a trial's share of a GPU never spans two GPUs)."""
    if per_trial >= 1:
        return int(math.floor(amount / per_trial + EPSILON))
    whole = int(math.floor(amount + EPSILON))
    per_unit = int(math.floor(1 / per_trial + EPSILON))
    left = max(0.0, amount - whole)  # a node declaring a fraction of a GPU
    return whole * per_unit + int(math.floor(left / per_trial + EPSILON))


def gpu_slots_per_node(resources: dict, gpus_per_trial: float) -> int:
    """Trials of ``gpus_per_trial`` GPUs one node holds: floor(1/g) per GPU for a fraction g, one per GPU for 1."""
    return _fits(float(resources.get("GPU", 0.0)), gpus_per_trial)


def node_slots(resources: dict, cpus_per_trial: float, gpus_per_trial: float) -> int:
    """Trials one node holds at once: by its CPUs, and by its GPUs when a trial takes some."""
    slots = int(math.floor(float(resources.get("CPU", 0.0)) / cpus_per_trial + EPSILON))
    if gpus_per_trial > 0:
        slots = min(slots, gpu_slots_per_node(resources, gpus_per_trial))
    return slots


def cluster_slots(nodes: list[dict], cpus_per_trial: float, gpus_per_trial: float) -> int:
    """Trials the alive ``nodes`` hold at once, as Ray packs them (a trial's CPUs and GPUs on one node)."""
    return sum(node_slots(n.get("Resources") or {}, cpus_per_trial, gpus_per_trial) for n in alive_nodes(nodes))


def check_cluster_has_gpus(gpus_per_trial: float, nodes: list[dict] | None = None,
                           flag: str = "--gpus-per-trial") -> None:
    """A RayclError when no alive node has ``gpus_per_trial`` GPUs: such a search would wait forever."""
    if gpus_per_trial <= 0:
        return
    alive = alive_nodes(nodes)
    largest = max((float((n.get("Resources") or {}).get("GPU", 0.0)) for n in alive), default=0.0)
    if largest + EPSILON < gpus_per_trial:
        raise RayclError(
            f"{flag} {gpus_per_trial:g}: no node of the Ray cluster has that much GPU (largest: {largest:g} GPUs on "
            f"{len(alive)} node(s)); use {flag} 0, or --wait-for-resources if the cluster is still scaling up")


def share_scaled_limit(limit: int, gpus_per_trial: float) -> int:
    """A per-trial member limit set for a whole GPU, for a trial given ``gpus_per_trial`` of one: a
    share g in (0, 1) has about g of the GPU's memory (less its CUDA context, see
    ``raycl.device.CONTEXT_MARGIN_BYTES``), so it holds floor(limit x g) members, at least one; a
    whole GPU and a CPU trial (0) keep ``limit``."""
    if 0 < gpus_per_trial < 1:
        return max(1, int(math.floor(limit * gpus_per_trial + EPSILON)))
    return limit


def trial_device(gpus_per_trial: float, precision: str, benchmark):
    """The device of the trial (or Ray task) this runs in, made ready: the GPU Ray assigned it, else
    the CPU (never "whatever CUDA shows": Ray no longer hides GPUs from a task given none); its
    memory capped at the trial's share of a GPU, and ``precision``'s settings applied."""
    from raycl.device import apply_precision, assigned_device, cap_memory

    device = assigned_device()
    cap_memory(device, gpus_per_trial)
    apply_precision(precision, device, convolutional=benchmark.model != "mlp")
    return device
