"""Benchmarks by name. ``load_benchmark`` is the one way in."""

from __future__ import annotations

import os

from collections.abc import Mapping

from raycl.data.base import SETTINGS, Benchmark, Task, resolve_data_root, stratified_split
from raycl.data.options import describe, parse_options
from raycl.errors import RayclError, unknown

BENCHMARK_NAMES = ("seq-digits", "seq-mnist", "perm-mnist", "rot-mnist", "seq-cifar10", "seq-cifar100",
                   "seq-tinyimg", "gcil-cifar100", "mer-rotations", "mer-permutations", "mer-many-permutations")


def benchmark_names() -> tuple[str, ...]:
    """Every benchmark name: the built-in ones, then those installed plugins register."""
    from raycl.data.plugin import plugin_benchmark_names

    return BENCHMARK_NAMES + plugin_benchmark_names(BENCHMARK_NAMES)


def options_class(name: str) -> type | None:
    """The dataclass declaring benchmark ``name``'s options, or None if it takes none."""
    if name == "seq-cifar100":
        from raycl.data.cifar100 import SeqCifar100Options

        return SeqCifar100Options
    if name == "gcil-cifar100":
        from raycl.data.gcil import GcilOptions

        return GcilOptions
    return None


def check_benchmark(name: str, options: Mapping | None = None, backbone: str | None = None):
    """Check a benchmark's name, options and backbone without loading any data (a search's flags
    fail at once): the parsed options (None for a benchmark without options; a plugin's benchmark
    takes none)."""
    if name not in BENCHMARK_NAMES and name not in benchmark_names():
        raise unknown("dataset", name, benchmark_names())
    if backbone is not None:
        from raycl.models import MODEL_NAMES

        if backbone not in MODEL_NAMES:
            raise unknown("backbone", backbone, MODEL_NAMES)
    return parse_options(name, options_class(name), options)


def describe_benchmark_options() -> str:
    """Every benchmark's options in one line each, for ``--benchmark-option``'s help."""
    lines = [f"{name}: {', '.join(describe(cls))}" for name in BENCHMARK_NAMES
             if (cls := options_class(name)) is not None]
    return "; ".join(lines)


def load_benchmark(name: str, data_root: str | os.PathLike | None = None, val_fraction: float = 0.1,
                   seed: int = 0, samples_per_task: int | None = None, backbone: str | None = None,
                   options: Mapping | None = None) -> Benchmark:
    """Build benchmark ``name``; ``seed`` fixes the validation split, permutations and angles.

    ``samples_per_task`` sets the training examples per task of the mer-* benchmarks (default:
    their protocol's); other benchmarks reject it. ``backbone`` replaces the network the
    benchmark's code uses (:data:`raycl.models.MODEL_NAMES`). ``options`` are the benchmark's own
    options (e.g. ``{"n_tasks": 5}`` for seq-cifar100; strings are converted to the declared
    types): an unknown key or a bad value is one RayclError naming the allowed ones.
    """
    parsed = check_benchmark(name, options, backbone)
    benchmark = _build(name, data_root, val_fraction, seed, samples_per_task, parsed)
    if backbone is not None:
        from raycl.models import check_backbone

        check_backbone(backbone, benchmark.input_shape, name)
        benchmark.model = backbone
    return benchmark


def _build(name: str, data_root, val_fraction: float, seed: int, samples_per_task: int | None,
           options) -> Benchmark:
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
    if name == "seq-cifar100":
        from raycl.data.cifar100 import seq_cifar100

        return seq_cifar100(root, val_fraction, seed, options)
    if name == "seq-tinyimg":
        from raycl.data.tinyimg import seq_tinyimg

        return seq_tinyimg(root, val_fraction, seed)
    if name == "gcil-cifar100":
        from raycl.data.gcil import gcil_cifar100

        return gcil_cifar100(root, val_fraction, seed, options)
    if name.startswith("mer-"):
        from raycl.data.mer import mer_benchmark

        return mer_benchmark(name, root, val_fraction, seed, samples_per_task)
    from raycl.data import mnist

    builder = {"seq-mnist": mnist.seq_mnist, "perm-mnist": mnist.perm_mnist, "rot-mnist": mnist.rot_mnist}[name]
    return builder(root, val_fraction, seed)


__all__ = ["BENCHMARK_NAMES", "SETTINGS", "Benchmark", "Task", "benchmark_names", "check_benchmark",
           "describe_benchmark_options", "load_benchmark", "options_class", "resolve_data_root", "stratified_split"]
