"""Search spaces: ``search_spaces/<method>.yaml`` files (a plugin's own file, see
:func:`raycl.methods.plugin.method_space_file`), checked against the method's declaration.

File format::

    method: derpp                 # must match the method searched
    params:
      lr: {loguniform: [0.005, 0.3]}
      alpha: {uniform: [0.1, 1.0]}
      minibatch_size: {choice: [10, 32, 128]}
      n_epochs: 1                 # a fixed value
      beta: {uniform: [0.0, 1.0], when: {use_ce: true}}   # conditional on another parameter
    datasets:                     # optional per-dataset replacements of entries of params
      perm-mnist:
        batch_size: 128

Distributions: ``loguniform: [low, high]``, ``uniform: [low, high]``, ``int: [low, high]`` (with
optional ``log: true``), ``choice: [values...]``, or a plain value to fix the parameter.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

from raycl.data import benchmark_names
from raycl.errors import RayclError, unknown
from raycl.files import read_yaml
from raycl.hparams import ParamSpec, coerce_value, param_specs
from raycl.methods import get_method
from raycl.methods.plugin import method_space_file

log = logging.getLogger(__name__)

DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
SPACE_DIR = Path(__file__).resolve().parents[2] / "search_spaces"


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searched or fixed hyperparameter."""

    name: str
    kind: str  # one of DISTRIBUTIONS, or "fixed"
    low: Any = None
    high: Any = None
    values: tuple = ()
    log: bool = False
    when: tuple[tuple[str, tuple], ...] = ()

    def active(self, chosen: dict) -> bool:
        return all(chosen.get(name) in allowed for name, allowed in self.when)

    def suggest(self, trial) -> Any:
        """Ask an Optuna trial for this dimension's value."""
        if self.kind == "fixed":
            return self.values[0]
        if self.kind in ("loguniform", "uniform"):
            return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "loguniform")
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log)
        return trial.suggest_categorical(self.name, list(self.values))

    def distribution(self):
        """This dimension as an Optuna distribution (searched dimensions only)."""
        import optuna.distributions as d

        if self.kind in ("loguniform", "uniform"):
            return d.FloatDistribution(self.low, self.high, log=self.kind == "loguniform")
        if self.kind == "int":
            return d.IntDistribution(self.low, self.high, log=self.log)
        if self.kind == "choice":
            return d.CategoricalDistribution(self.values)
        raise ValueError(f"{self.name} is fixed, not searched")


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    method: str
    dimensions: tuple[Dimension, ...]
    source: str

    @property
    def searched(self) -> list[str]:
        return [d.name for d in self.dimensions if d.kind != "fixed"]

    def fix(self, values: dict) -> SearchSpace:
        """The space with ``values`` fixed (command-line flags win over the file)."""
        kept = [d for d in self.dimensions if d.name not in values]
        fixed = [Dimension(name, "fixed", values=(v,)) for name, v in values.items()]
        return dataclasses.replace(self, dimensions=tuple(fixed + kept))

    def to_dict(self) -> dict:
        """The ``params`` section of a search-space file that gives this space back."""
        out = {}
        for d in self.dimensions:
            if d.kind == "fixed":
                out[d.name] = d.values[0]
                continue
            out[d.name] = {"choice": list(d.values)} if d.kind == "choice" else {d.kind: [d.low, d.high]}
            if d.log and d.kind == "int":
                out[d.name]["log"] = True
            if d.when:
                out[d.name]["when"] = {k: list(v) for k, v in d.when}
        return out


# A searched value this close to a bound of its range, as a share of the range on the space's own
# scale (log for loguniform), is at the edge: the best may lie beyond the bound.
EDGE_SHARE = 0.05


def edge_warnings(space: SearchSpace, config: dict, share: float = EDGE_SHARE) -> list[str]:
    """One line per searched range whose bound ``config`` (the winner's values) lies at or near."""
    out = []
    for dim in space.dimensions:
        if dim.kind not in ("uniform", "loguniform", "int") or config.get(dim.name) is None:
            continue
        log = dim.kind == "loguniform" or dim.log
        scale = math.log if log else float
        value = float(config[dim.name])
        low, high = scale(dim.low), scale(dim.high)
        position = (scale(value) - low) / (high - low)
        for bound, distance in ((dim.low, position), (dim.high, 1.0 - position)):
            if distance <= share:
                where = "at" if distance <= 1e-9 else f"within {max(distance, 0.0):.0%} of"
                side = "lower" if bound == dim.low else "upper"
                out.append(f"the winner's {dim.name} = {value:.4g} lies {where} the {side} bound {bound:g} of its "
                           f"range [{dim.low:g}, {dim.high:g}]{' (log scale)' if log else ''}: the best value may "
                           f"lie beyond it; widen its range in the search space (--space FILE)")
    return out


class DefineByRun:
    """Optuna define-by-run function for a search space (a class so that Tune can pickle it)."""

    def __init__(self, space: SearchSpace):
        self.space = space

    def __call__(self, trial) -> dict:
        chosen: dict[str, Any] = {}
        for dim in self.space.dimensions:
            if dim.active(chosen):
                chosen[dim.name] = dim.suggest(trial)
        # Fixed values are returned too, so every trial's config is complete.
        return {d.name: chosen[d.name] for d in self.space.dimensions if d.kind == "fixed" and d.name in chosen}


def _parse_dimension(name: str, raw: Any, spec: ParamSpec, where: str) -> Dimension:
    place = f"{where}: parameter {name!r}"
    if not isinstance(raw, dict):
        return Dimension(name, "fixed", values=(coerce_value(spec, raw, where),))
    raw = dict(raw)
    when_raw = raw.pop("when", None)
    log = raw.pop("log", False)
    kinds = [k for k in raw if k in DISTRIBUTIONS]
    extra = [k for k in raw if k not in DISTRIBUTIONS]
    if extra or len(kinds) != 1:
        bad = extra[0] if extra else "+".join(kinds) or "(nothing)"
        raise RayclError(f"{place}: unknown distribution {bad!r}; allowed: {', '.join(DISTRIBUTIONS)}, "
                         "or a plain value (optional keys: when, log)")
    if not isinstance(log, bool):
        raise RayclError(f"{place}: log must be true or false, got {log!r}")
    kind = kinds[0]
    args = raw[kind]
    when = ()
    if when_raw is not None:
        if not isinstance(when_raw, dict) or not when_raw:
            raise RayclError(f"{place}: 'when' must map parameter names to a value or list of values")
        when = tuple((k, tuple(v) if isinstance(v, list) else (v,)) for k, v in when_raw.items())
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise RayclError(f"{place}: choice needs a non-empty list of values")
        values = tuple(coerce_value(spec, v, where) for v in args)
        return Dimension(name, kind, values=values, when=when)
    if not isinstance(args, list) or len(args) != 2:
        raise RayclError(f"{place}: {kind} needs [low, high]")
    if kind == "int" and spec.type is not int:
        raise RayclError(f"{place}: int distribution on a {spec.type.__name__} hyperparameter")
    if kind != "int" and spec.type is not float:
        raise RayclError(f"{place}: {kind} needs a float hyperparameter, {name!r} is {spec.type.__name__}")
    low, high = (coerce_value(spec, v, where) for v in args)
    if not low < high:
        raise RayclError(f"{place}: empty range [{low}, {high}] (low must be below high)")
    if (kind == "loguniform" or log) and low <= 0:
        raise RayclError(f"{place}: a log scale needs low > 0, got {low}")
    if not (math.isfinite(low) and math.isfinite(high)):
        raise RayclError(f"{place}: range must be finite")
    return Dimension(name, kind, low=low, high=high, log=bool(log), when=when)


def parse_space(data: Any, method: str, dataset: str, source: str, inherited_from: str | None = None) -> SearchSpace:
    """Validate a loaded search-space document for ``method`` on ``dataset`` (a space of the
    built-in method ``inherited_from``, which ``method`` derives from, is one of its own)."""
    if not isinstance(data, dict):
        raise RayclError(f"{source}: expected a mapping with keys method, params, datasets")
    allowed_top = ("method", "params", "datasets")
    for key in data:
        if key not in allowed_top:
            raise unknown("key", key, allowed_top, where=source)
    # A plugin's own file names it as its class does, whether searched by entry point or module:Class.
    if data.get("method", method) not in (method, get_method(method).name, inherited_from):
        raise RayclError(f"{source} is a search space for method {data['method']!r}, not {method!r}")
    params = data.get("params") or {}
    overrides = data.get("datasets") or {}
    if not isinstance(params, dict) or not isinstance(overrides, dict):
        raise RayclError(f"{source}: 'params' and 'datasets' must be mappings")
    datasets = benchmark_names()
    for name, block in overrides.items():
        if name not in datasets:
            raise unknown("dataset", name, datasets, where=f"{source} datasets")
        if block is not None and not isinstance(block, dict):
            raise RayclError(f"{source}: datasets.{name} must map hyperparameters to values or distributions, "
                             f"not be a {type(block).__name__}")
    merged = dict(params)
    merged.update(overrides.get(dataset) or {})
    specs = param_specs(get_method(method).Config)
    dims = []
    for name, raw in merged.items():
        if name not in specs:
            raise unknown(f"hyperparameter for method {method!r}", name, specs, where=source)
        dims.append(_parse_dimension(name, raw, specs[name], source))
    names = [d.name for d in dims]
    for d in dims:
        for parent, values in d.when:
            if parent not in names or names.index(parent) > names.index(d.name):
                raise RayclError(f"{source}: parameter {d.name!r} depends on {parent!r}, which must be "
                                 "listed before it")
            parent_spec = specs[parent]
            for v in values:
                coerce_value(parent_spec, v, f"{source} when of {d.name!r}")
    # Also check every file's dataset overrides, so a typo in another dataset's block is caught too.
    for other, block in overrides.items():
        for name, raw in (block or {}).items():
            if name not in specs:
                raise unknown(f"hyperparameter for method {method!r}", name, specs,
                              where=f"{source} datasets.{other}")
            _parse_dimension(name, raw, specs[name], f"{source} datasets.{other}")
    return SearchSpace(method=method, dimensions=tuple(dims), source=source)


def load_space(method: str, dataset: str, path: str | Path | None = None) -> SearchSpace:
    """The search space of ``method`` from ``path``, else the file its class (or an ancestor) ships,
    else ``search_spaces/<method>.yaml``, else that of the nearest built-in method it derives from
    (said in one line)."""
    method_cls = get_method(method)
    inherited = None
    if path is None:
        path = method_space_file(method_cls) or SPACE_DIR / f"{method}.yaml"
        if not path.is_file():
            from raycl.methods import builtin_ancestor

            inherited = builtin_ancestor(method_cls)
            if inherited is None or not (SPACE_DIR / f"{inherited}.yaml").is_file():
                available = sorted(p.stem for p in SPACE_DIR.glob("*.yaml"))
                raise RayclError(f"{unknown('search space for method', method, available, where=str(SPACE_DIR))}; "
                                 "a plugin ships its own (search_space = 'file.yaml' next to its module) or derives "
                                 "from a built-in method, whose space it then searches; or give --space FILE")
            path = SPACE_DIR / f"{inherited}.yaml"
            log.info("method %s has no search space of its own: it searches that of %s, which it derives from (%s); "
                     "--space FILE gives another", method, inherited, path)
    return parse_space(read_yaml(path), method, dataset, str(path), inherited_from=inherited)
