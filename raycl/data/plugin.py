"""A benchmark from outside the package: a builder an installed distribution registers in the
entry-point group ``raycl.benchmarks`` (:mod:`raycl.plugins`)."""

from __future__ import annotations

from raycl.data.base import Benchmark, resolve_data_root
from raycl.errors import RayclError
from raycl.plugins import BENCHMARK_GROUP, installed, load_object, plugin_names


def plugin_benchmark_names(builtins) -> tuple[str, ...]:
    """The benchmark names installed distributions register, except the built-in ones."""
    return plugin_names(BENCHMARK_GROUP, builtins)


def build_plugin_benchmark(name: str, data_root, val_fraction: float, seed: int,
                           samples_per_task: int | None) -> Benchmark | None:
    """Benchmark ``name`` from its plugin's ``builder(data_root, val_fraction, seed)``, checked; None
    where no plugin has that name; RayclError for a failed import or a builder that returns
    something else."""
    ep = installed(BENCHMARK_GROUP).get(name)
    if ep is None:
        return None
    if not 0 <= val_fraction < 1:
        raise RayclError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if samples_per_task is not None:
        raise RayclError(f"samples_per_task applies only to the mer-* benchmarks, not {name!r}")
    label = f"benchmark plugin {name!r} ({ep.value})"
    builder = load_object(ep.value, label)
    if not callable(builder):
        raise RayclError(f"{label}: {builder!r} is not callable (a builder(data_root, val_fraction, seed))")
    benchmark = builder(resolve_data_root(data_root), val_fraction, seed)
    if not isinstance(benchmark, Benchmark):
        raise RayclError(f"{label}: returned {type(benchmark).__name__}, not a raycl.data.Benchmark")
    return benchmark
