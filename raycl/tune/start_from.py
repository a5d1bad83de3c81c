"""``--start-from FILE``: the values a file holds for the search's method, benchmark and buffer size,
enqueued as the first configuration Optuna evaluates.

FILE is mammoth's ``utils/best_args.py``, a mammoth ``models/config/<model>.yaml`` (both read by
:mod:`raycl.tune.mammoth`, names mapped) or raycl's own best-args YAML (:mod:`raycl.files`); which
one is told by its suffix and, for YAML, by its shape. Only searched values inside the space go to
Optuna; a value the search fixes otherwise (a flag, the space, the method's default) is kept as the
search has it, and every value not used is named in one warning.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

from raycl.data import Benchmark
from raycl.errors import RayclError
from raycl.files import load_best_args, read_yaml
from raycl.hparams import coerce_value, param_specs
from raycl.methods import get_method, make_config
from raycl.tune import mammoth
from raycl.tune.options import SearchOptions
from raycl.tune.space import Dimension, SearchSpace

log = logging.getLogger(__name__)

MAMMOTH_BEST_ARGS = "mammoth utils/best_args.py"
MAMMOTH_MODEL_CONFIG = "mammoth models/config/<model>.yaml"
RAYCL_BEST_ARGS = "raycl best-args"


@dataclasses.dataclass(frozen=True)
class StartFile:
    """What a start file holds for one search, in raycl's names (values as the file wrote them)."""

    path: str
    format: str
    values: dict[str, Any]
    unmapped: dict[str, Any] = dataclasses.field(default_factory=dict)


def _is_raycl_best_args(data: dict) -> bool:
    """raycl's best-args shape: dataset -> method -> buffer size -> {config: {...}, provenance}."""
    entries = [entry for methods in data.values() if isinstance(methods, dict)
               for sizes in methods.values() if isinstance(sizes, dict) for entry in sizes.values()]
    return bool(entries) and all(isinstance(e, dict) and isinstance(e.get("config"), dict) for e in entries)


def read_start_file(path: str, dataset: str, method: str, buffer_size: int | None) -> StartFile:
    """The entry of ``path`` for ``method`` on ``dataset`` with ``buffer_size`` (None: the method's
    default), or RayclError naming what the file has."""
    size = mammoth.entry_buffer_size(method, buffer_size)
    if path.endswith(".py"):
        data = mammoth.read_best_args_py(path)
        mapped = mammoth.to_raycl(method, mammoth.best_args_py_entry(data, path, dataset, method, size))
        return StartFile(path, MAMMOTH_BEST_ARGS, mapped.values, mapped.unmapped)
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise RayclError(f"--start-from {path}: expected raycl's best-args YAML, mammoth's utils/best_args.py or "
                         "a mammoth models/config/<model>.yaml")
    if _is_raycl_best_args(data):
        return StartFile(path, RAYCL_BEST_ARGS, load_best_args(path, dataset, method, 0 if size is None else size))
    mapped = mammoth.to_raycl(method, mammoth.model_config_entry(data, path, dataset, method, size))
    return StartFile(path, MAMMOTH_MODEL_CONFIG, mapped.values, mapped.unmapped)


@dataclasses.dataclass(frozen=True)
class StartPoint:
    """The configuration Optuna evaluates first (searched hyperparameters only) and, by name, the
    file's values not used and why."""

    point: dict[str, Any]
    ignored: dict[str, str]
    source: StartFile

    def warning(self) -> str | None:
        if not self.ignored:
            return None
        return (f"--start-from {self.source.path}: not used: "
                + "; ".join(f"{name} ({why})" for name, why in self.ignored.items()))


def _within(dim: Dimension, value: Any) -> bool:
    if dim.kind == "choice":
        return value in dim.values
    return isinstance(value, (int, float)) and math.isfinite(value) and dim.low <= value <= dim.high


def _describe(dim: Dimension) -> str:
    return f"one of {list(dim.values)}" if dim.kind == "choice" else f"[{dim.low:g}, {dim.high:g}]"


def start_point(start: StartFile, space: SearchSpace, flags: dict[str, Any], trained: dict[str, Any]) -> StartPoint:
    """``start``'s values against the search: ``flags`` (fixed on the command line, they win),
    ``space`` and ``trained`` (what a trial trains a hyperparameter the space does not name with)."""
    specs = param_specs(get_method(space.method).Config)
    dims = {d.name: d for d in space.dimensions}
    point, ignored = {}, {}
    for name, raw in start.values.items():
        if name not in specs:
            ignored[name] = f"{raw!r}: no raycl hyperparameter of {space.method}"
            continue
        try:
            value = coerce_value(specs[name], raw)
        except RayclError:
            ignored[name] = f"{raw!r} is not {specs[name].describe_allowed()}"
            continue
        dim = dims.get(name)
        if name in flags:
            if value != flags[name]:
                ignored[name] = f"{value!r}: the flag --{name.replace('_', '-')} gives {flags[name]!r}"
        elif dim is None or dim.kind == "fixed":
            kept = trained[name] if dim is None else dim.values[0]
            if value != kept:
                ignored[name] = f"{value!r}: not searched, the search trains with {kept!r}"
        elif dim.kind == "choice" and value in dim.values:
            point[name] = dim.values[dim.values.index(value)]
        elif dim.kind != "choice" and _within(dim, value):
            point[name] = value
        else:
            ignored[name] = f"{value!r} is outside the search space's {_describe(dim)}"
    for name, value in start.unmapped.items():
        ignored[name] = f"{value!r}: no raycl hyperparameter of {space.method}"
    return StartPoint(point, ignored, start)


def with_start_point(options: SearchOptions, space: SearchSpace, benchmark: Benchmark) -> SearchOptions:
    """``options`` with ``--start-from``'s configuration first among its start points; logs what
    is used and, in one warning, what is not."""
    start = read_start_file(options.start_from, options.dataset, options.method, options.buffer_size)
    flags = dict(options.fixed)
    if options.buffer_size is not None:
        flags["buffer_size"] = options.buffer_size
    flags = {d.name: d.values[0] for d in space.dimensions if d.kind == "fixed" and d.name in flags}
    trained = dataclasses.asdict(make_config(options.method, {}, benchmark.defaults_for(options.method)))
    found = start_point(start, space, flags, trained)
    warning = found.warning()
    if warning:
        log.warning(warning)
    if not found.point:
        return options
    log.info("--start-from %s (%s): the first configuration evaluated has %s", start.path, start.format,
             ", ".join(f"{k}={v}" for k, v in found.point.items()))
    return dataclasses.replace(options, start_points=[found.point, *options.start_points])
