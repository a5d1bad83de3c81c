"""Benchmarks by name. ``load_benchmark`` is the one way in."""

from __future__ import annotations

import os

from raycl.data.base import SETTINGS, Benchmark, Task, resolve_data_root, stratified_split
from raycl.errors import RayclError, unknown

BENCHMARK_NAMES = ("seq-digits", "seq-mnist", "perm-mnist", "rot-mnist", "seq-cifar10",
                   "mer-rotations", "mer-permutations", "mer-many-permutations")


def benchmark_names() -> tuple[str, ...]:
    """Every benchmark name: the built-in ones, then those installed plugins register."""
    from raycl.data.plugin import plugin_benchmark_names

    return BENCHMARK_NAMES + plugin_benchmark_names(BENCHMARK_NAMES)


def load_benchmark(name: str, data_root: str | os.PathLike | None = None, val_fraction: float = 0.1,
                   seed: int = 0, samples_per_task: int | None = None, backbone: str | None = None) -> Benchmark:
    """Build benchmark ``name``; ``seed`` fixes the validation split, permutations and angles.

    ``samples_per_task`` sets the training examples per task of the mer-* benchmarks (default:
    their protocol's); other benchmarks reject it. ``backbone`` replaces the network the
    benchmark's code uses (:data:`raycl.models.MODEL_NAMES`).
    """
    benchmark = _build(name, data_root, val_fraction, seed, samples_per_task)
    if backbone is not None:
        from raycl.models import MODEL_NAMES

        if backbone not in MODEL_NAMES:
            raise unknown("backbone", backbone, MODEL_NAMES)
        benchmark.model = backbone
    return benchmark


def _build(name: str, data_root, val_fraction: float, seed: int, samples_per_task: int | None) -> Benchmark:
    if name not in BENCHMARK_NAMES:
        from raycl.data.plugin import build_plugin_benchmark

        benchmark = build_plugin_benchmark(name, data_root, val_fraction, seed, samples_per_task)
        if benchmark is None:
            raise unknown("dataset", name, benchmark_names())
        return benchmark
    if not 0 <= val_fraction < 1:
        raise RayclError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if samples_per_task is not None and not name.startswith("mer-"):
        raise RayclError(f"samples_per_task applies only to the mer-* benchmarks, not {name!r}")
    if name == "seq-digits":
        from raycl.data.digits import seq_digits

        return seq_digits(val_fraction, seed)
    root = resolve_data_root(data_root)
    if name == "seq-cifar10":
        from raycl.data.cifar import seq_cifar10

        return seq_cifar10(root, val_fraction, seed)
    if name.startswith("mer-"):
        from raycl.data.mer import mer_benchmark

        return mer_benchmark(name, root, val_fraction, seed, samples_per_task)
    from raycl.data import mnist

    builder = {"seq-mnist": mnist.seq_mnist, "perm-mnist": mnist.perm_mnist, "rot-mnist": mnist.rot_mnist}[name]
    return builder(root, val_fraction, seed)


__all__ = ["BENCHMARK_NAMES", "SETTINGS", "Benchmark", "Task", "benchmark_names", "load_benchmark",
           "resolve_data_root", "stratified_split"]
