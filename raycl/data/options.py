"""Benchmark options: what a benchmark lets a user change (``--benchmark-option KEY=VALUE``).

A benchmark declares its options as a frozen dataclass whose fields are made with :func:`option`
(type, default, allowed values, one line of help) and whose ``check`` method, if any, tests how
the fields go together. :func:`parse_options` turns a mapping of given values (strings from the
command line, or typed values from a best-args file) into that dataclass, or one RayclError naming
the problem and what is allowed.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping

from raycl.errors import RayclError, unknown


def option(default, help: str, choices: tuple | None = None, low: float | None = None,
           high: float | None = None):
    """A declared benchmark option: its default, one line of help, and allowed values or bounds."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "low": low, "high": high})


def describe(declared: type) -> list[str]:
    """Each option of ``declared`` as ``name=default (type; allowed)``, for errors and help."""
    hints = typing.get_type_hints(declared)
    out = []
    for field in dataclasses.fields(declared):
        meta = field.metadata
        kind = hints[field.name].__name__
        if meta.get("choices"):
            allowed = "one of " + ", ".join(str(c) for c in meta["choices"])
        elif meta.get("low") is not None or meta.get("high") is not None:
            low = meta.get("low") if meta.get("low") is not None else "-inf"
            high = meta.get("high") if meta.get("high") is not None else "inf"
            allowed = f"in [{low}, {high}]"
        else:
            allowed = "any"
        out.append(f"{field.name}={field.default} ({kind}, {allowed})")
    return out


def _coerce(benchmark: str, name: str, kind: type, value):
    where = f"benchmark option {name} of {benchmark}"
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise RayclError(f"{where} must be a whole number, got {value!r}")
        try:
            return int(value) if not isinstance(value, str) else int(value.strip())
        except ValueError:
            raise RayclError(f"{where} must be a whole number, got {value!r}") from None
    if kind is float:
        if isinstance(value, bool):
            raise RayclError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise RayclError(f"{where} must be a number, got {value!r}") from None
    if kind is str:
        return str(value)
    raise TypeError(f"benchmark option {name}: unsupported type {kind}")  # a declaration bug, not the user's


def parse_options(benchmark: str, declared: type | None, given: Mapping | None):
    """``given`` checked against ``declared`` (a dataclass of :func:`option` fields; None when the
    benchmark takes no options): the options instance, defaults filled in."""
    given = dict(given or {})
    if declared is None:
        if given:
            raise RayclError(f"{benchmark} takes no benchmark options, got {', '.join(sorted(given))}")
        return None
    hints = typing.get_type_hints(declared)
    fields = {f.name: f for f in dataclasses.fields(declared)}
    values = {}
    for name, raw in given.items():
        if name not in fields:
            raise unknown(f"benchmark option of {benchmark}", name, describe(declared))
        value = _coerce(benchmark, name, hints[name], raw)
        meta = fields[name].metadata
        where = f"benchmark option {name} of {benchmark}"
        if meta.get("choices") and value not in meta["choices"]:
            raise unknown(f"value of {where}", value, meta["choices"])
        if meta.get("low") is not None and value < meta["low"]:
            raise RayclError(f"{where} must be at least {meta['low']}, got {value}")
        if meta.get("high") is not None and value > meta["high"]:
            raise RayclError(f"{where} must be at most {meta['high']}, got {value}")
        values[name] = value
    options = declared(**values)
    check = getattr(options, "check", None)
    if check is not None:
        check()
    return options


def parse_assignments(items: list[str] | None, flag: str = "--benchmark-option") -> dict[str, str]:
    """``["KEY=VALUE", ...]`` (command-line text) as a mapping; a key given twice is an error."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RayclError(f"{flag} takes KEY=VALUE, got {item!r}")
        if key in out:
            raise RayclError(f"{flag} {key} given twice")
        out[key] = value.strip()
    return out
