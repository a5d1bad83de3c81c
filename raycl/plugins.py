"""Methods and benchmarks from outside the package.

A method is named on the command line as a built-in name, a name a distribution registers in the
entry-point group ``raycl.methods`` (name -> ``"package.module:Class"``), or ``package.module:Class``
itself. A benchmark comes from the group ``raycl.benchmarks`` (name -> a callable
``builder(data_root, val_fraction, seed) -> Benchmark``). Whatever names a method is what a search
records and what Ray workers and ``launch/train.py --load-best-args`` resolve again, so a plugin
must be importable wherever it trains.

A method class may name its search space with ``search_space = "file.yaml"``: a file next to its
module (package data), used when no ``--space`` is given.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from raycl.errors import RayclError, unknown

log = logging.getLogger(__name__)

METHOD_GROUP = "raycl.methods"
BENCHMARK_GROUP = "raycl.benchmarks"


@functools.cache
def installed(group: str) -> dict[str, EntryPoint]:
    """The entry points of ``group`` by name, read once per process: the installed distributions
    do not change under a running program (tests that install one call ``installed.cache_clear()``)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        found.setdefault(ep.name, ep)  # the first on sys.path wins, as for an import
    return found


def is_class_path(name: str) -> bool:
    """Whether ``name`` names a class directly (``package.module:Class``)."""
    return ":" in name


def load_object(target: str, label: str):
    """The object ``module:attribute`` names; a failed import is one RayclError naming the plugin."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise RayclError(f"{label}: {target!r} is not of the form package.module:Class")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a plugin's import may fail in any way; the user needs its message
        raise RayclError(f"{label}: cannot import {module_name}: {type(exc).__name__}: {exc}") from exc
    try:
        return functools.reduce(getattr, attribute.split("."), module)
    except AttributeError:
        raise RayclError(f"{label}: module {module_name} has no {attribute!r}") from None


# ----- methods -----------------------------------------------------------------------------------
def plugin_method_names(builtins) -> list[str]:
    """The names installed distributions register as methods, without the built-in ones (a
    built-in name wins over a plugin's)."""
    names = []
    for name, ep in installed(METHOD_GROUP).items():
        if name in builtins:
            log.warning("ignoring method plugin %r (%s): a built-in method has that name", name, ep.value)
        else:
            names.append(name)
    return sorted(names)


def load_plugin_method(name: str) -> type | None:
    """The checked method class of plugin ``name`` (an entry-point name or ``module:Class``), None
    where no plugin has that name, or RayclError: failed import, or not a method class."""
    if is_class_path(name):
        label = f"method plugin {name!r}"
        target = name
    else:
        ep = installed(METHOD_GROUP).get(name)
        if ep is None:
            return None
        label = f"method plugin {name!r} ({ep.value})"
        target = ep.value
    return check_method_class(load_object(target, label), label)


def check_method_class(cls, label: str) -> type:
    """``cls`` if it is a method class whose ``Config`` declares every hyperparameter with a default."""
    from raycl.hparams import param_specs
    from raycl.methods.base import ContinualMethod, PopulationMethod

    contract = "subclass raycl.methods.base.PopulationMethod, or ContinualMethod for a solo learner"
    if not isinstance(cls, type):
        raise RayclError(f"{label}: {cls!r} is not a method class ({contract})")
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
        raise RayclError(f"{label}: {cls.__name__} has no Config, the dataclass of hp() fields that declares "
                         "its hyperparameters")
    if not issubclass(cls, (PopulationMethod, ContinualMethod)):
        raise RayclError(f"{label}: {cls.__name__} is not a method class ({contract})")
    if not isinstance(getattr(cls, "name", None), str):
        raise RayclError(f"{label}: {cls.__name__} has no name (a class attribute, the method's name in messages)")
    for field in dataclasses.fields(config):
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise RayclError(f"{label}: hyperparameter {field.name!r} of {config.__name__} has no default; declare "
                             "it with hp(default, help)")
    try:
        param_specs(config)
    except Exception as exc:  # unresolvable annotations
        raise RayclError(f"{label}: cannot read the hyperparameters of {config.__name__}: {exc}") from exc
    return cls


def method_space_file(cls: type) -> Path | None:
    """The search-space file a method class ships (``search_space``, next to its module), or None."""
    declared = getattr(cls, "search_space", None)
    if declared is None:
        return None
    module_file = getattr(sys.modules.get(cls.__module__), "__file__", None)
    path = Path(module_file).parent / declared if module_file else Path(declared)
    if not path.is_file():
        raise RayclError(f"method {cls.name!r}: its search space {declared!r} is not at {path}")
    return path


# ----- benchmarks --------------------------------------------------------------------------------
def benchmark_names() -> tuple[str, ...]:
    """Every benchmark name: the built-in ones, then those installed distributions register."""
    from raycl.data import BENCHMARK_NAMES

    return BENCHMARK_NAMES + tuple(sorted(n for n in installed(BENCHMARK_GROUP) if n not in BENCHMARK_NAMES))


def build_plugin_benchmark(name: str, data_root, val_fraction: float, seed: int, samples_per_task: int | None):
    """Benchmark ``name`` from its plugin's builder, checked, or RayclError (unknown name, failed
    import, a builder that fails or returns something else)."""
    from raycl.data import Benchmark, resolve_data_root

    ep = installed(BENCHMARK_GROUP).get(name)
    if ep is None:
        raise unknown("dataset", name, benchmark_names())
    if not 0 <= val_fraction < 1:
        raise RayclError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if samples_per_task is not None:
        raise RayclError(f"samples_per_task applies only to the mer-* benchmarks, not {name!r}")
    label = f"benchmark plugin {name!r} ({ep.value})"
    builder: Callable = load_object(ep.value, label)
    if not callable(builder):
        raise RayclError(f"{label}: {builder!r} is not callable (a builder(data_root, val_fraction, seed))")
    benchmark = builder(resolve_data_root(data_root), val_fraction, seed)
    if not isinstance(benchmark, Benchmark):
        raise RayclError(f"{label}: returned {type(benchmark).__name__}, not a raycl.data.Benchmark")
    return benchmark
