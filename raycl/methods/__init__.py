"""Methods by name. Each lives in its own module and declares its hyperparameters; plugins
(:mod:`raycl.methods.plugin`) add their own by entry point or as ``package.module:Class``."""

from __future__ import annotations

import importlib

from raycl.errors import RayclError, unknown
from raycl.plugins import METHOD_GROUP, plugin_names

# name -> "module:Class"; modules are imported on first use so a run pays only for its method.
METHODS = {
    "sgd": "raycl.methods.sgd:Sgd",
    "joint": "raycl.methods.joint:Joint",
    "er": "raycl.methods.er:Er",
    "der": "raycl.methods.der:Der",
    "derpp": "raycl.methods.derpp:Derpp",
    "mer": "raycl.methods.mer:Mer",
    "gem": "raycl.methods.gem:Gem",
    "agem": "raycl.methods.agem:Agem",
    "ewc": "raycl.methods.ewc:Ewc",
    "online": "raycl.methods.online:Online",
    "independent": "raycl.methods.independent:Independent",
    "taskinput": "raycl.methods.taskinput:TaskInput",
    "vib": "raycl.methods.vib:Vib",
    "synergy": "raycl.methods.synergy:Synergy",
    "clser": "raycl.methods.clser:Clser",
    "gen_replay": "raycl.methods.gen_replay:GenReplay",
}


def method_names() -> list[str]:
    """Every method a user can name: the built-in ones, then the installed plugins' (not loaded)."""
    return [*METHODS, *plugin_names(METHOD_GROUP, METHODS)]


def get_method(name: str) -> type:
    """The method class named ``name`` (built-in, plugin entry point or ``package.module:Class``), or
    RayclError listing the known names or saying what is wrong with the plugin."""
    if name in METHODS:
        module, cls = METHODS[name].split(":")
        return getattr(importlib.import_module(module), cls)
    from raycl.methods.plugin import load_plugin_method

    found = load_plugin_method(name)
    if found is None:
        raise RayclError(f"{unknown('method', name, method_names())}, or a plugin's package.module:Class")
    return found


def builtin_ancestor(cls: type) -> str | None:
    """The name of the nearest built-in method ``cls`` derives from (not ``cls`` itself), or None."""
    builtins = {target: name for name, target in METHODS.items()}
    for ancestor in cls.__mro__[1:]:
        name = builtins.get(f"{ancestor.__module__}:{ancestor.__qualname__}")
        if name is not None:
            return name
    return None


def get_population_method(name: str) -> type:
    """The population form of method ``name``: its vectorised class, or its solo class run
    member by member (:class:`raycl.methods.base.MemberwiseMethod`)."""
    from raycl.methods.base import population_class

    return population_class(get_method(name))


def make_config(method: str, values: dict | None = None, protocol_defaults: dict | None = None):
    """The method's config: declared defaults, then the benchmark's protocol defaults for the
    names the method declares, then ``values`` (each checked against the declaration)."""
    from raycl.hparams import build_config, param_specs

    cls = get_method(method).Config
    declared = param_specs(cls)
    merged = {k: v for k, v in (protocol_defaults or {}).items() if k in declared}
    merged.update(values or {})
    return build_config(cls, merged, owner=f"method {method!r}")
