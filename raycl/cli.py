"""Helpers shared by the ``launch/`` entry points: flags from declared hyperparameters, errors."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable

from raycl.errors import RayclError
from raycl.hparams import coerce_value, param_specs
from raycl.methods import METHODS, get_method


def hyperparameter_index() -> dict[str, str]:
    """Every declared hyperparameter -> its flag help, naming the methods that declare it.

    A name several methods declare with different meanings (``beta`` of DER++ and of MER) gets
    each meaning with its methods.
    """
    meanings: dict[str, dict[str, list[str]]] = {}
    for method in METHODS:
        for name, spec in param_specs(get_method(method).Config).items():
            text = f"{spec.help} ({spec.describe_allowed()})"
            meanings.setdefault(name, {}).setdefault(text, []).append(method)
    index = {}
    for name, by_text in meanings.items():
        parts = []
        for text, users in by_text.items():
            who = "all methods" if len(users) == len(METHODS) else ", ".join(users)
            parts.append(f"{who}: {text}")
        index[name] = "; ".join(parts)
    return index


def _flag(name: str) -> str:
    """The command-line flag of hyperparameter ``name`` (``batch_size`` -> ``--batch-size``)."""
    return "--" + name.replace("_", "-")


def add_hyperparameter_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--name-with-dashes`` flag per declared hyperparameter, values checked later."""
    group = parser.add_argument_group(
        "method hyperparameters",
        "override the method's defaults (and any --load-best-args values); each flag names the "
        "methods it applies to",
    )
    for name, help_text in sorted(hyperparameter_index().items()):
        group.add_argument(_flag(name), dest=f"hp_{name}", default=None, metavar="V",
                           help=help_text)


def given_hyperparameters(args: argparse.Namespace, method: str) -> dict:
    """The hyperparameter flags set on the command line, checked against ``method``'s declaration
    and converted to the declared types (a search fixing ``--lr 0.2`` exports the number 0.2)."""
    declared = param_specs(get_method(method).Config)
    given = {k[3:]: v for k, v in vars(args).items() if k.startswith("hp_") and v is not None}
    for name in given:
        if name not in declared:
            allowed = ", ".join(_flag(n) for n in sorted(declared))
            raise RayclError(f"{_flag(name)} does not apply to method {method!r}; its "
                             f"hyperparameters: {allowed}")
    return {name: coerce_value(declared[name], value, _flag(name))
            for name, value in given.items()}


def add_benchmark_flags(parser) -> None:
    """``--benchmark-option KEY=VALUE`` (repeatable) and ``--backbone NAME`` on ``parser`` (or a group)."""
    from raycl.data import describe_benchmark_options
    from raycl.models import MODEL_NAMES

    parser.add_argument("--benchmark-option", action="append", default=[], metavar="KEY=VALUE",
                        dest="benchmark_option",
                        help="an option of the benchmark, repeatable; "
                             f"{describe_benchmark_options()} (default: the benchmark's own)")
    parser.add_argument("--backbone", default=None, metavar="NAME",
                        help=f"network replacing the benchmark's: {', '.join(MODEL_NAMES)} (default: the "
                             "benchmark's, e.g. resnet18 for the image streams)")


def given_benchmark_options(args: argparse.Namespace) -> dict[str, str]:
    """The ``--benchmark-option`` values as a mapping (checked against the benchmark later)."""
    from raycl.data.options import parse_assignments

    return parse_assignments(args.benchmark_option)


def entry_point(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Run ``main``; a RayclError becomes one line on stderr and exit status 2, no traceback."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        try:
            return main(argv)
        except RayclError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper
