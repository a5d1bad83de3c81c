"""The text of a search's summaries and progress: plain columns, short values, the top configurations
and the final evaluation's line. Plain Python: the progress callback, the stream summary and the
per-task summary all print through it."""

from __future__ import annotations


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Plain text columns, left-aligned, two spaces apart."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in [header, *rows])


def short_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def config_table(header: list[str], leads: list[list[str]], configs: list[dict], params: list[str]) -> str:
    """Configurations one a row: the ``leads`` columns (named by ``header``), then each of ``params``."""
    return format_table([*header, *params], [[*lead, *[short_value(config.get(p)) for p in params]]
                                             for lead, config in zip(leads, configs)])


def final_eval_line(final_eval: dict, what: str) -> str:
    return f"final evaluation of {what} over {len(final_eval['seeds'])} seeds (test): " + ", ".join(
        f"{s} {v['mean']:.2f} ± {v['std']:.2f}" for s, v in final_eval["test"].items())
