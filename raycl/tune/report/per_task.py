"""The report of a per-task search (``--protocol chf | current-task | seen-tasks-val``): the
hyperparameters chosen at each task, and every candidate's validation evidence.

Reads the experiment's trials table, which holds one row per (task, candidate).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from matplotlib.figure import Figure

from raycl.files import atomic_write_text
from raycl.tune.report.draw import save_png
from raycl.tune.report.page import PAGE, ReportFiles, fmt, html_table
from raycl.vocabulary import TRIALS_FILE


def is_per_task(rows: list[dict]) -> bool:
    return bool(rows) and "candidate" in rows[0] and "task" in rows[0]


def winner_rows(rows: list[dict]) -> list[dict]:
    """The rows of the winning trial's lineage (all rows but for PBT's other trials)."""
    return [r for r in rows if r.get("winner", True)]


def plot_schedule(rows: list[dict], path: Path) -> Path:
    """One panel per hyperparameter: every candidate's value at each task (grey), the chosen one in
    orange; and a panel of each candidate's validation accuracy on its task, the chosen marked."""
    names = sorted({k[len("config."):] for r in rows for k in r if k.startswith("config.") and r[k] is not None})
    tasks = sorted({r["task"] for r in rows})
    fig = Figure(figsize=(3.8 * (len(names) + 1), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(names) + 1, squeeze=False)[0])
    for ax, name in zip(axes, names):
        key = f"config.{name}"
        tried = [(r["task"], r[key]) for r in rows if r.get(key) is not None]
        chosen = [(r["task"], r[key]) for r in rows if r["chosen"] and r.get(key) is not None]
        ax.scatter(*zip(*tried), color="tab:gray", alpha=0.5, s=18, label="candidates")
        ax.plot(*zip(*chosen), color="tab:orange", marker="o", lw=2, label="chosen")
        values = [v for _, v in tried]
        if min(values) > 0 and max(values) / min(values) > 20:
            ax.set_yscale("log")
        ax.set_xticks(tasks)
        ax.set_xlabel("task")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    for phase, marker in (("plasticity", "s"), ("stability", "o"), ("proposal", "o")):
        points = [(r["task"], r["current_task_val"]) for r in rows if r["phase"] == phase and not r["diverged"]]
        if points:
            ax.scatter(*zip(*points), marker=marker, alpha=0.5, s=18, label=phase)
    chosen = [(r["task"], r["current_task_val"]) for r in rows if r["chosen"]]
    ax.plot(*zip(*chosen), color="tab:orange", marker="*", ms=12, lw=1, label="chosen")
    ax.set_xticks(tasks)
    ax.set_xlabel("task")
    ax.set_title("val accuracy on the task just trained (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(f"Hyperparameters chosen per task ({rows[0].get('protocol')}): {rows[0].get('method')} on "
                 f"{rows[0].get('dataset')}")
    return save_png(fig, path)


def schedule_page(name: str, rows: list[dict], figure: Path) -> str:
    names = sorted({k for r in rows for k in r if k.startswith("config.")})
    chosen = [r for r in rows if r["chosen"]]
    header = ["task", *[n[len("config."):] for n in names], "val on the task", "val over the tasks seen", "candidates"]
    body = [[str(r["task"]), *[fmt(r.get(n)) for n in names], fmt(r["current_task_val"]), fmt(r["seen_tasks_val"]),
             str(sum(x["task"] == r["task"] for x in rows))] for r in chosen]
    first = rows[0]
    return "\n".join([
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>raycl report: {html.escape(name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1150px;margin:auto;padding:1em}table{border-collapse:"
        "collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}img{max-width:100%}"
        "</style></head><body>",
        f"<h1>Per-task search: {html.escape(name)}</h1>",
        f"<p>{html.escape(str(first.get('method')))} on {html.escape(str(first.get('dataset')))}, protocol "
        f"{html.escape(str(first.get('protocol')))}: {len(rows)} candidates over {len(chosen)} tasks. Each task's "
        "candidates started from the state chosen at the task before; the chosen one carried on.</p>",
        f"<img src='{html.escape(figure.name)}' alt='schedule'>",
        "<h2>The schedule</h2>", html_table(header, body), "</body></html>"])


def per_task_report(path: Path, out_dir) -> ReportFiles | None:
    """The report of a per-task search (one table row per task and candidate), None for another."""
    table = path.expanduser().resolve() / TRIALS_FILE
    rows = pq.read_table(table).to_pylist() if table.is_file() else []
    if not is_per_task(rows):
        return None
    rows = winner_rows(rows)
    out = Path(out_dir) if out_dir else table.parent / "report"
    out.mkdir(parents=True, exist_ok=True)
    figure = plot_schedule(rows, out / "schedule.png")
    page = out / PAGE
    atomic_write_text(page, schedule_page(table.parent.name, rows, figure))
    return ReportFiles(page=page, figures=[figure], notes=[])
