"""Declared hyperparameters: dataclass fields with help text and bounds.

Every method declares its hyperparameters as a dataclass built from :func:`hp` fields. Search
spaces, command-line flags and best-args files are all checked against that declaration, so a
misspelt or mistyped key is an error rather than a silently ignored value.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any

from raycl.errors import RayclError, unknown

_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def hp(default: Any, help: str, *, low: float | None = None, high: float | None = None,
       choices: tuple | None = None, per_member: bool = False, fixed_in_run: bool = False,
       most_stable: float | None = None) -> Any:
    """A declared hyperparameter: a dataclass field with a one-line help and optional bounds.

    ``low``/``high`` are inclusive bounds for numbers; ``choices`` the allowed values.
    ``per_member``: members of one population may differ in it (learning rates, loss weights,
    moving-average rates, buffer sizes); every other hyperparameter is structural and shared by a
    population. ``fixed_in_run``: a per-member value a member keeps from its first task to its last
    (a reservoir's capacity): it may not change between tasks, so per-task selection and PBT leave
    it alone.
    ``most_stable``: a stability hyperparameter (a weight on what protects earlier tasks: replay,
    distillation, a penalty) and its most stable value, where per-task selection starts its
    stability decay; 0 turns the mechanism off.
    """
    meta = {"help": help, "low": low, "high": high, "choices": choices, "per_member": per_member,
            "fixed_in_run": fixed_in_run, "most_stable": most_stable}
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    name: str
    type: type
    default: Any
    help: str
    low: float | None
    high: float | None
    choices: tuple | None
    per_member: bool = False
    fixed_in_run: bool = False
    most_stable: float | None = None

    @property
    def changes_between_tasks(self) -> bool:
        """Whether a run may change it between tasks (per-task selection, PBT): per-member values
        not fixed for the run."""
        return self.per_member and not self.fixed_in_run

    def describe_allowed(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.type is bool:
            return "true or false"
        name = self.type.__name__
        kind = f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
        if self.low is None and self.high is None:
            return kind
        lo = "-inf" if self.low is None else self.low
        hi = "inf" if self.high is None else self.high
        return f"{kind} in [{lo}, {hi}]"


def param_specs(config_cls: type) -> dict[str, ParamSpec]:
    """The declared hyperparameters of a config dataclass, by name."""
    hints = typing.get_type_hints(config_cls)
    specs = {}
    for f in dataclasses.fields(config_cls):
        meta = f.metadata
        specs[f.name] = ParamSpec(
            name=f.name, type=hints[f.name], default=f.default, help=meta.get("help", ""),
            low=meta.get("low"), high=meta.get("high"), choices=meta.get("choices"),
            per_member=bool(meta.get("per_member", False)), fixed_in_run=bool(meta.get("fixed_in_run", False)),
            most_stable=meta.get("most_stable"),
        )
    return specs


def coerce_value(spec: ParamSpec, value: Any, where: str = "") -> Any:
    """Convert ``value`` to the declared type and check its bounds, or raise RayclError."""
    place = f" ({where})" if where else ""
    kind = spec.type
    try:
        if kind is bool:
            if isinstance(value, bool):
                converted = value
            elif isinstance(value, str) and value.lower() in _BOOL_WORDS:
                converted = _BOOL_WORDS[value.lower()]
            else:
                raise ValueError
        elif kind is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                converted = int(value)
            else:
                converted = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise ValueError
            converted = float(value)
            if math.isnan(converted):
                raise ValueError
        else:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            converted = kind(value)
    except (TypeError, ValueError):
        raise RayclError(
            f"hyperparameter {spec.name!r}{place} must be {spec.describe_allowed()}, got {value!r}"
        ) from None
    if spec.choices is not None and converted not in spec.choices:
        raise RayclError(
            f"hyperparameter {spec.name!r}{place} must be {spec.describe_allowed()}, got {value!r}"
        )
    if (spec.low is not None and converted < spec.low) or (spec.high is not None and converted > spec.high):
        raise RayclError(
            f"hyperparameter {spec.name!r}{place} must be {spec.describe_allowed()}, got {value!r}"
        )
    return converted


def check_names(config_cls: type, names, owner: str, where: str = "") -> None:
    """Raise RayclError naming the first name that ``config_cls`` does not declare."""
    specs = param_specs(config_cls)
    for name in names:
        if name not in specs:
            raise unknown(f"hyperparameter for {owner}", name, specs, where)


def build_config(config_cls: type, values: Mapping[str, Any], owner: str, where: str = ""):
    """An instance of ``config_cls`` from defaults overridden by ``values``, each checked."""
    check_names(config_cls, values, owner, where)
    specs = param_specs(config_cls)
    converted = {name: coerce_value(specs[name], value, where) for name, value in values.items()}
    return config_cls(**converted)


def stability_hyperparameters(config_cls: type) -> dict[str, float]:
    """The declared stability hyperparameters and their most stable values."""
    return {name: spec.most_stable for name, spec in param_specs(config_cls).items() if spec.most_stable is not None}


def structural_names(config_cls: type) -> list[str]:
    """The hyperparameters every member of a population must share (not declared per-member)."""
    return [name for name, spec in param_specs(config_cls).items() if not spec.per_member]


# What every population shares whatever the method: its members step in lockstep.
SCHEDULE = ("batch_size", "n_epochs")


def check_population(configs: list, owner: str, shared: list[str]) -> None:
    """Raise RayclError if the configs of one population differ in a hyperparameter of ``shared``."""
    for name in shared:
        values = {repr(getattr(c, name)) for c in configs}
        if len(values) > 1:
            free = [n for n in param_specs(type(configs[0])) if n not in shared]
            raise RayclError(f"members of one {owner} population must share {name!r} (it shapes tensors or the "
                             f"step schedule), got {', '.join(sorted(values))}; per-member hyperparameters: "
                             f"{', '.join(free) or '(none)'}")


def check_changes(current: list, new: list, owner: str) -> None:
    """Raise RayclError unless ``new`` (one config per member) differs from ``current`` only in
    per-member hyperparameters not fixed for the run: what may change between the tasks of one run."""
    if len(current) != len(new):
        raise RayclError(f"{len(new)} configs for {len(current)} members")
    specs = param_specs(type(current[0]))
    for before, after in zip(current, new):
        for name, spec in specs.items():
            if not spec.changes_between_tasks and getattr(before, name) != getattr(after, name):
                free = [n for n, s in specs.items() if s.changes_between_tasks]
                raise RayclError(f"{owner}: {name!r} cannot change between tasks (it shapes tensors or the step "
                                 f"schedule), {getattr(before, name)!r} -> {getattr(after, name)!r}; what may: "
                                 f"{', '.join(free) or '(nothing)'}")
