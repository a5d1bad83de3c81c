"""Helpers shared by the ``launch/`` entry points: flags from declared hyperparameters, errors."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable

from raycl.errors import RayclError
from raycl.hparams import coerce_value, param_specs
from raycl.methods import get_method, method_names


def requested_method(argv: list[str] | None) -> str | None:
    """The ``--method`` value of a command line (``sys.argv[1:]`` for None), or None: read before the
    parser is built, which then shows that method's hyperparameters."""

    class Lenient(argparse.ArgumentParser):
        def error(self, message):  # the full parser reports it
            raise ValueError(message)

    pre = Lenient(add_help=False)
    pre.add_argument("--method")
    try:
        return pre.parse_known_args(argv)[0].method
    except ValueError:
        return None


def hyperparameter_index(methods: list[str] | None = None) -> dict[str, list[str]]:
    """Every hyperparameter that ``methods`` (default: every method, plugins included) declare ->
    the methods declaring it. A plugin that does not load is left out: it is reported when named."""
    index: dict[str, list[str]] = {}
    for method in method_names() if methods is None else methods:
        try:
            declared = param_specs(get_method(method).Config)
        except RayclError:
            continue
        for name in declared:
            index.setdefault(name, []).append(method)
    return index


def _flag(name: str) -> str:
    """The command-line flag of hyperparameter ``name`` (``batch_size`` -> ``--batch-size``)."""
    return "--" + name.replace("_", "-")


def add_hyperparameter_flags(parser: argparse.ArgumentParser, method: str | None = None, note: str = "",
                             description: str = "override its defaults (and any --load-best-args values)") -> None:
    """One ``--name-with-dashes`` flag per declared hyperparameter of any method, values checked
    later; the help shows only ``method``'s (with ``note`` after each, under ``description``), and
    without a method none.

    Every method's flags are accepted whichever is chosen, so that a flag of another method is the
    clear error of :func:`given_hyperparameters`, not argparse's "unrecognized arguments".
    """
    shown = param_specs(get_method(method).Config) if method else {}
    if method:
        group = parser.add_argument_group(f"hyperparameters of method {method}", description)
    else:
        group = parser.add_argument_group(
            "method hyperparameters", "each method declares its own: --method M --help lists M's")
    taken = {option for action in parser._actions for option in action.option_strings}
    for name in sorted(set(hyperparameter_index()) | set(shown)):
        if _flag(name) in taken:
            # A plugin's hyperparameter named like one of the launcher's own flags (--seed, --backbone):
            # an error for the method that declares it, nothing for the others.
            if name in shown:
                raise RayclError(f"hyperparameter {name!r} of method {method!r} has the name of the launcher's own "
                                 f"flag {_flag(name)}; rename it")
            continue
        if name in shown:
            spec = shown[name]
            help_text = f"{spec.help} ({spec.describe_allowed()}){note}"
        else:
            help_text = argparse.SUPPRESS
        group.add_argument(_flag(name), dest=f"hp_{name}", default=None, metavar="V", help=help_text)


HELP_ALL = "--help-all"


class _HelpAll(argparse.Action):
    """``--help-all``: the parser's help (built with every flag shown), then exit."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.print_help()
        parser.exit()


def help_all_requested(argv: list[str] | None) -> bool:
    """Whether the command line asks for ``--help-all`` (read before the parser is built)."""
    return HELP_ALL in (sys.argv[1:] if argv is None else argv)


def short_help(parser: argparse.ArgumentParser, shown: dict[str, str | None], method: str | None,
               launcher: str) -> None:
    """Make ``--help`` short: only the flags in ``shown`` (flag -> a shorter help, or None to keep
    its own) and ``method``'s hyperparameters are listed (every flag is still accepted), the usage
    is one line, and the help ends with a one-line pointer to ``--help-all``, which lists everything."""
    hyperparameters = {_flag(n) for n in param_specs(get_method(method).Config)} if method else set()
    keep = set(shown) | hyperparameters | {"-h", "--help", HELP_ALL}
    for action in parser._actions:
        flags = set(action.option_strings)
        if flags and not flags & keep:
            action.help = argparse.SUPPRESS
        for flag in flags & set(shown):
            if shown[flag] is not None:
                action.help = shown[flag]
                if action.choices:  # the choices are in the short help's words, not the metavar
                    action.metavar = action.dest.upper() if action.type is not int else "N"
    parser.usage = "%(prog)s --method M [flags]"
    pointer = f"every flag: python launch/{launcher}{f' --method {method}' if method else ''} {HELP_ALL}"
    parser.epilog = f"{parser.epilog}\n\n{pointer}" if parser.epilog else pointer


def add_help_all(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(HELP_ALL, action=_HelpAll, help="list every flag and exit")


def method_help() -> str:
    """The ``--method`` flag's help: the methods a user can name."""
    return (f"method: {', '.join(method_names())}, or a plugin's package.module:Class; --method M --help lists "
            "M's hyperparameters")


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


def given_buffer_sizes(args: argparse.Namespace, method: str) -> int | list[int] | None:
    """``--buffer-size``: one size, or a comma-separated list of them (a search of a paper's table),
    each checked against ``method``'s declaration; taken off ``args`` so that
    :func:`given_hyperparameters` does not read it again."""
    raw = getattr(args, "hp_buffer_size", None)
    if raw is None:
        return None
    args.hp_buffer_size = None
    declared = param_specs(get_method(method).Config)
    if "buffer_size" not in declared:
        raise RayclError(f"--buffer-size does not apply to method {method!r} (it has no buffer)")
    sizes = [coerce_value(declared["buffer_size"], part.strip(), "--buffer-size") for part in str(raw).split(",")]
    return sizes[0] if len(sizes) == 1 else sizes


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
