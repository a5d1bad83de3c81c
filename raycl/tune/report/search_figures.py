"""Figures of how the search went: every trial's objective in completion order, the objective after
each task (ASHA's rungs) and how well each rung's score predicted the final objective."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from raycl.tune import rung_signal
from raycl.tune.report.draw import STATUS_COLORS, save_png
from raycl.tune.report.experiment import Experiment
from raycl.vocabulary import Status


def plot_history(experiment: Experiment, path: Path) -> Path:
    trials = sorted(experiment.trials, key=lambda t: t.order)
    fig = Figure(figsize=(7.5, 4), layout="constrained")
    ax = fig.add_subplot()
    best, running = -math.inf, []
    for n, trial in enumerate(trials, start=1):
        if trial.status == Status.COMPLETED and trial.objective is not None:
            best = max(best, trial.objective)
        running.append(best if best > -math.inf else np.nan)
    for status, marker in ((Status.COMPLETED, "o"), (Status.PRUNED, "x"), (Status.DIVERGED, "v"),
                           (Status.ERRORED, "s")):
        points = [(n, t.objective_by_task[-1] if t.objective_by_task else 0.0)
                  for n, t in enumerate(trials, start=1) if t.status == status]
        if points:
            label = "pruned (objective on the tasks it saw)" if status == Status.PRUNED else status
            ax.scatter(*zip(*points), marker=marker, color=STATUS_COLORS[status], label=label, zorder=3)
    ax.step(range(1, len(trials) + 1), running, where="post", color="tab:orange", label="running best")
    ax.set_xlabel("trial, in completion order")
    ax.set_ylabel(f"objective: mean val {experiment.settings[0]} acc. (%)")
    ax.set_title(f"Search history: {experiment.method} on {experiment.dataset}, {len(trials)} trials")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return save_png(fig, path)


def plot_asha(experiment: Experiment, path: Path) -> Path:
    t = experiment.n_tasks
    fig = Figure(figsize=(11, 4), layout="constrained")
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    for trial in experiment.trials:
        curve = trial.objective_by_task
        if not curve:
            continue
        color = STATUS_COLORS.get(trial.status, "black")
        alpha = 0.9 if trial.status == Status.COMPLETED else 0.5
        left.plot(range(1, len(curve) + 1), curve, color=color, alpha=alpha, lw=1)
        if trial.status != Status.COMPLETED:
            left.scatter([len(curve)], [curve[-1]], marker="x", color=color, zorder=3)
    best = experiment.best
    if best is not None:
        curve = best.objective_by_task
        left.plot(range(1, len(curve) + 1), curve, color="tab:orange", lw=2.5, label=f"best ({best.trial_id})")
        left.legend(fontsize=8, loc="lower left")
    left.set_xlabel("tasks trained (the rungs' time)")
    left.set_ylabel("objective (%)")
    left.set_title("Objective after each task; x = stopped there (at a rung) or diverged")
    left.set_xticks(range(1, t + 1, max(1, t // 10)))
    left.grid(alpha=0.3)

    reached = [sum(tr.tasks_trained >= k for tr in experiment.trials) for k in range(1, t + 1)]
    stopped = [sum(tr.tasks_trained == k and tr.status != Status.COMPLETED for tr in experiment.trials)
               for k in range(1, t + 1)]
    ks = np.arange(1, t + 1)
    right.bar(ks, reached, color="tab:blue", alpha=0.6, label="configurations that trained this task")
    right.bar(ks, stopped, color="tab:red", alpha=0.8, label="configurations stopped after this task")
    for k, (r, s) in enumerate(zip(reached, stopped), start=1):
        right.text(k, r, str(r), ha="center", va="bottom", fontsize=7)
    right.set_xlabel("task")
    right.set_ylabel("configurations")
    right.set_title("Configurations reaching each task rung")
    right.set_xticks(range(1, t + 1, max(1, t // 10)))
    right.set_ylim(0, max(reached) * 1.3 if reached else 1)
    right.legend(fontsize=8, loc="upper right")
    return save_png(fig, path)


def plot_rungs(experiment: Experiment, signal: list[rung_signal.RungSignal], path: Path) -> Path:
    """Per rung: each completed configuration's objective at the rung against its final objective."""
    fig = Figure(figsize=(4.2 * len(signal), 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(signal), squeeze=False)[0])
    for ax, rung in zip(axes, signal):
        for sample, color, marker in (("survivors", "tab:blue", "o"), ("audited", "tab:green", "D")):
            points = [(t.objective_by_task[rung.rung - 1], t.objective) for t in experiment.completed
                      if bool(t.row.get("audit")) == (sample == "audited") and len(t.objective_by_task) >= rung.rung]
            if points:
                label = {"survivors": "completed, survived the rungs", "audited": "completed, audited"}[sample]
                ax.scatter(*zip(*points), color=color, marker=marker, alpha=0.7, label=label)
        lines = [f"{c.sample}: rho {'n/a' if c.rho is None else f'{c.rho:+.2f}'} (n={c.n})"
                 for c in (rung.survivors, rung.audited) if c.n]
        ax.set_title(f"after task {rung.rung}: stopped {rung.stopped} of {rung.judged}\n" + "; ".join(lines),
                     fontsize=9, color="tab:red" if rung.weak else "black")
        ax.set_xlabel(f"objective after task {rung.rung} (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("final objective (%)")
    fig.suptitle("Does a rung's score predict the final objective? (Spearman's rank correlation; red: weak)")
    return save_png(fig, path)
