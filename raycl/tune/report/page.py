"""The report's HTML page: the summary, each section's text and figure, the rung-signal table and
the table of the top configurations."""

from __future__ import annotations

import dataclasses
import html
import math
from pathlib import Path

from raycl.tune import rung_signal
from raycl.tune.report.draw import STATUS_COLORS
from raycl.tune.report.experiment import Experiment

PAGE = "index.html"
TOP = 10


@dataclasses.dataclass
class ReportFiles:
    """What a report wrote: its page, its figures and the notes the page shows."""

    page: Path
    figures: list[Path]
    notes: list[str]


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)

def top_table(experiment: Experiment, limit: int = TOP) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the top configurations: objective, test in every setting (the objective's
    first), searched params, per-task val."""
    setting = experiment.settings[0]
    params = experiment.params
    header = ["#", "trial", "objective", *[f"test {s}" for s in experiment.settings], *params,
              *[f"val task {j}" for j in range(1, experiment.n_tasks + 1)]]
    rows = []
    for rank, trial in enumerate(experiment.completed[:limit], start=1):
        rows.append([str(rank), trial.trial_id, f"{trial.objective:.2f}",
                     *[fmt(trial.row.get(f"test_{s}")) if trial.row.get(f"test_{s}") is None
                       else f"{trial.row[f'test_{s}']:.2f}" for s in experiment.settings],
                     *[fmt(trial.config.get(p)) for p in params],
                     *[fmt(trial.row.get(f"val_{setting}_task{j}")) if trial.row.get(f"val_{setting}_task{j}")
                       is None else f"{trial.row[f'val_{setting}_task{j}']:.1f}"
                       for j in range(1, experiment.n_tasks + 1)]])
    return header, rows


def sizes_table(experiment: Experiment) -> tuple[list[str], list[list[str]]] | None:
    """For a search of a paper's table (several buffer sizes): each size's configurations, winner and
    its objective and test accuracy; None for a search of one size."""
    sizes = sorted({t.row["buffer_size"] for t in experiment.trials if t.row.get("buffer_size") is not None})
    if len(sizes) < 2:
        return None
    setting = experiment.settings[0]
    header = ["buffer size", "configurations", "completed", "best trial", "objective", f"test {setting}"]
    rows = []
    for size in sizes:
        mine = [t for t in experiment.trials if t.row.get("buffer_size") == size]
        done = sorted((t for t in mine if t.status == "completed" and t.objective is not None), key=lambda t: -t.objective)
        best = done[0] if done else None
        rows.append([str(size), str(len(mine)), str(len(done)), best.trial_id if best else "–",
                     f"{best.objective:.2f}" if best else "–", fmt(best.row.get(f"test_{setting}")) if best else "–"])
    return header, rows


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(experiment: Experiment, sections: list[tuple[str, str, Path | None]], notes: list[str],
          tables: dict[str, str] | None = None) -> str:
    counts = {s: sum(t.status == s for t in experiment.trials) for s in STATUS_COLORS}
    best = experiment.best
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>raycl report: {html.escape(experiment.path.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1150px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;"
        "text-align:right}img{max-width:100%;border:1px solid #eee}.note{color:#a33}</style></head><body>",
        f"<h1>Search report: {html.escape(experiment.path.name)}</h1>",
        f"<p>{html.escape(experiment.method)} on {html.escape(experiment.dataset)}, {len(experiment.trials)} "
        "trials: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ". Objective: mean validation "
        f"{html.escape(experiment.settings[0])} accuracy over the tasks seen (%). "
        f"Experiment folder: <code>{html.escape(str(experiment.path))}</code></p>",
    ]
    if best is not None:
        config = ", ".join(f"{k}={fmt(v)}" for k, v in sorted(best.config.items()))
        parts.append(f"<p><b>Best trial {html.escape(best.trial_id)}</b>: objective {best.objective:.2f}; "
                     f"{html.escape(config)}</p>")
    for note in notes:
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    by_size = sizes_table(experiment)
    if by_size is not None:
        parts.append("<h2>Buffer sizes</h2><p>Each size was searched as if alone (its own configurations, rungs "
                     "and winner); the figures below pool every size.</p>")
        parts.append(html_table(*by_size))
    for title, text, figure in sections:
        parts.append(f"<h2>{html.escape(title)}</h2><p>{text}</p>")
        if figure is not None:
            parts.append(f"<img src='{html.escape(figure.name)}' alt='{html.escape(title)}'>")
        if tables and title in tables:
            parts.append(tables[title])
    header, rows = top_table(experiment)
    parts.append(f"<h2>Top {len(rows)} configurations</h2><p>Completed trials by objective; per-task "
                 f"columns are the final validation {html.escape(experiment.settings[0])} accuracy on each "
                 "task after the last task.</p>")
    parts.append(html_table(header, rows))
    parts.append("</body></html>")
    return "\n".join(parts)


def _verdict(signal: rung_signal.RungSignal) -> str:
    if signal.weak:
        return "weak"
    if signal.audited.n >= rung_signal.MIN_COMPLETED:
        return "informative" if signal.audited.rho is not None else "no ranking"
    return "not judged (too few audited)" if signal.audited.n else "not judged (survivors only)"


def signal_table(signal: list[rung_signal.RungSignal]) -> tuple[list[str], list[list[str]]]:
    header = ["rung (after task)", "judged", "stopped", "rho survivors", "n", "rho audited", "n", "verdict"]
    rows = [[str(r.rung), str(r.judged), str(r.stopped), fmt(r.survivors.rho), str(r.survivors.n),
             fmt(r.audited.rho), str(r.audited.n),
             _verdict(r)]
            for r in signal]
    return header, rows
