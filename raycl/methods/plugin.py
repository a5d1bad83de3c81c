"""A method from outside the package (:mod:`raycl.plugins`): loaded by entry-point name or as
``package.module:Class`` and checked against the method contract before anything trains it.

A method class may name its search space with ``search_space = "file.yaml"``: a file next to its
module (package data), used when no ``--space`` is given.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from raycl.errors import RayclError
from raycl.hparams import param_specs
from raycl.methods.base import ContinualMethod, PopulationMethod
from raycl.plugins import METHOD_GROUP, installed, load_object

CONTRACT = "subclass raycl.methods.base.PopulationMethod, or ContinualMethod for a solo learner"


def is_class_path(name: str) -> bool:
    """Whether ``name`` names a class directly (``package.module:Class``)."""
    return ":" in name


def load_plugin_method(name: str) -> type | None:
    """The checked method class of plugin ``name`` (an entry-point name or ``module:Class``), None
    where no plugin has that name, or RayclError: a failed import, or not a method class."""
    if is_class_path(name):
        label, target = f"method plugin {name!r}", name
    else:
        ep = installed(METHOD_GROUP).get(name)
        if ep is None:
            return None
        label, target = f"method plugin {name!r} ({ep.value})", ep.value
    return check_method_class(load_object(target, label), label)


def check_method_class(cls, label: str) -> type:
    """``cls`` if it is a method class whose ``Config`` declares every hyperparameter with a default."""
    if not isinstance(cls, type):
        raise RayclError(f"{label}: {getattr(cls, '__qualname__', repr(cls))} is not a method class ({CONTRACT})")
    config = getattr(cls, "Config", None)
    if config is None:
        raise RayclError(f"{label}: {cls.__name__} has no Config, the dataclass of hp() fields that declares "
                         "its hyperparameters")
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
        raise RayclError(f"{label}: {cls.__name__}.Config is not a dataclass; declare the hyperparameters as hp() "
                         "fields of a @dataclasses.dataclass")
    if not issubclass(cls, (PopulationMethod, ContinualMethod)):
        raise RayclError(f"{label}: {cls.__name__} is not a method class ({CONTRACT})")
    if not isinstance(getattr(cls, "name", None), str):
        raise RayclError(f"{label}: {cls.__name__} has no name (a class attribute, the method's name in messages)")
    for field in dataclasses.fields(config):
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise RayclError(f"{label}: hyperparameter {field.name!r} of {config.__name__} has no default; declare "
                             "it with hp(default, help)")
    try:
        param_specs(config)
    except Exception as exc:  # annotations that do not resolve
        raise RayclError(f"{label}: cannot read the hyperparameters of {config.__name__}: {exc}") from exc
    return cls


def method_space_file(cls: type) -> Path | None:
    """The search-space file a method class ships (``search_space``, next to the module of the class
    that declares it: its own, or an ancestor's), or None."""
    owner = next((c for c in cls.__mro__ if c.__dict__.get("search_space") is not None), None)
    if owner is None:
        return None
    declared = owner.__dict__["search_space"]
    module_file = getattr(sys.modules.get(owner.__module__), "__file__", None)
    path = Path(module_file).parent / declared if module_file else Path(declared)
    if not path.is_file():
        raise RayclError(f"method {cls.name!r}: its search space {declared!r} is not at {path}")
    return path
