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


# The most curves of one status plot_asha draws: past it, a random sample of them (the same one every
# time), so that a figure of 10,000 configurations stays readable and quick to draw.
MAX_CURVES = 500


def curve_sample(trials: list, limit: int, seed: int = 0) -> list:
    """At most ``limit`` of ``trials``, drawn at random (seeded) and kept in their order."""
    if len(trials) <= limit:
        return list(trials)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(trials), size=limit, replace=False))
    return [trials[i] for i in keep]


def plot_asha(experiment: Experiment, path: Path) -> Path:
    from matplotlib.collections import LineCollection

    t = experiment.n_tasks
    fig = Figure(figsize=(11, 4), layout="constrained")
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    sampled = False
    for status in dict.fromkeys(trial.status for trial in experiment.trials):
        color = STATUS_COLORS.get(status, "black")
        of_status = [trial for trial in experiment.trials if trial.status == status and trial.objective_by_task]
        shown = curve_sample(of_status, MAX_CURVES)
        sampled = sampled or len(shown) < len(of_status)
        if not shown:
            continue
        curves = [np.column_stack([np.arange(1, len(c) + 1), c]) for c in (tr.objective_by_task for tr in shown)]
        alpha = 0.9 if status == Status.COMPLETED else 0.5
        if len(shown) > 50:  # many lines over each other: fainter, so that where they crowd shows
            alpha = max(0.08, alpha * (50 / len(shown)) ** 0.5)
        left.add_collection(LineCollection(curves, colors=color, alpha=alpha, linewidths=1))
        if status != Status.COMPLETED:
            left.scatter([len(c) for c in curves], [c[-1, 1] for c in curves], marker="x", color=color,
                         alpha=max(alpha, 0.3), zorder=3)
    left.autoscale_view()
    best = experiment.best
    if best is not None:
        curve = best.objective_by_task
        left.plot(range(1, len(curve) + 1), curve, color="tab:orange", lw=2.5, label=f"best ({best.trial_id})")
        left.legend(fontsize=8, loc="lower left")
    left.set_xlabel("tasks trained (the rungs' time)")
    left.set_ylabel("objective (%)")
    left.set_title("Objective after each task; x = stopped there (at a rung) or diverged"
                   + (f"\n(at most {MAX_CURVES} configurations of each status, drawn at random)" if sampled else ""),
                   fontsize=10 if sampled else None)
    left.set_xticks(range(1, t + 1, max(1, t // 10)))
    left.grid(alpha=0.3)

    trained = np.array([tr.tasks_trained for tr in experiment.trials], dtype=int)
    ended_early = np.array([tr.status != Status.COMPLETED for tr in experiment.trials], dtype=bool)
    reached = [int((trained >= k).sum()) for k in range(1, t + 1)]
    stopped = [int(((trained == k) & ended_early).sum()) for k in range(1, t + 1)]
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
