"""Methods and benchmarks from outside the package: the entry points installed distributions declare.

A method is named on the command line as a built-in name, a name a distribution registers in the
entry-point group ``raycl.methods`` (name -> ``"package.module:Class"``), or ``package.module:Class``
itself (:mod:`raycl.methods.plugin` loads and checks it). A benchmark comes from the group
``raycl.benchmarks`` (name -> a callable ``builder(data_root, val_fraction, seed) -> Benchmark``,
:mod:`raycl.data.plugin`). Whatever names a method is what a search records and what Ray workers and
``launch/train.py --load-best-args`` resolve again, so a plugin must be importable wherever it trains.
"""

from __future__ import annotations

import functools
import importlib
import logging
from importlib.metadata import EntryPoint, entry_points

from raycl.errors import RayclError

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


def plugin_names(group: str, builtins) -> tuple[str, ...]:
    """The names installed distributions register in ``group``, except the built-in ones (a built-in
    name wins over a plugin's)."""
    names = []
    for name, ep in installed(group).items():
        if name in builtins:
            log.warning("ignoring plugin %r (%s) of %s: a built-in has that name", name, ep.value, group)
        else:
            names.append(name)
    return tuple(sorted(names))


def load_object(target: str, label: str):
    """The object ``module:attribute`` names; a failed import is one RayclError naming the plugin."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise RayclError(f"{label}: {target!r} is not of the form package.module:Class")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a plugin's import may fail in any way; the user needs its message
        hint = ""
        if isinstance(exc, TypeError) and "non-default argument" in str(exc):
            hint = " (every hyperparameter needs a default: declare it with hp(default, help))"
        raise RayclError(f"{label}: cannot import {module_name}: {type(exc).__name__}: {exc}{hint}") from exc
    try:
        return functools.reduce(getattr, attribute.split("."), module)
    except AttributeError:
        raise RayclError(f"{label}: module {module_name} has no {attribute!r}") from None
