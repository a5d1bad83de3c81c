"""Figures of the hyperparameters: their importance for the objective, and each completed trial's
values against its objective."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from raycl.tune.report.draw import save_png
from raycl.tune.report.experiment import Experiment
from raycl.tune.report.study import _distributions, _param_value


def plot_importance(importances: dict[str, float], path: Path, n_completed: int, n_used: int | None = None) -> Path:
    """``n_used``: how many of the ``n_completed`` trials the importances were measured on (a sample)."""
    names = list(importances)[::-1]
    fig = Figure(figsize=(6, 0.5 + 0.45 * len(names)), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    for y, n in enumerate(names):
        ax.text(importances[n], y, f" {importances[n]:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("importance for the objective (fANOVA, sums to 1)")
    over = f"{n_completed}" if n_used is None or n_used >= n_completed else \
        f"a random sample of {n_used} of the {n_completed}"
    ax.set_title(f"Hyperparameter importance over {over} completed trials")
    return save_png(fig, path)


def plot_params(experiment: Experiment, names: list[str], path: Path) -> Path:
    import optuna.distributions as d

    distributions = _distributions(experiment)
    done = experiment.completed
    best = experiment.best
    fig = Figure(figsize=(3.6 * len(names), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(names), sharey=True))
    for ax, name in zip(axes, names):
        dist = distributions.get(name)
        points = [(t.config[name], t.objective) for t in done if name in t.config]
        categorical = isinstance(dist, d.CategoricalDistribution)
        if categorical:
            choices = list(dist.choices)
            xs = [choices.index(_param_value(dist, v)) for v, _ in points]
            ax.set_xticks(range(len(choices)), [str(c) for c in choices])
        else:
            xs = [float(v) for v, _ in points]
            if getattr(dist, "log", False):
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
        ax.scatter(xs, [o for _, o in points], color="tab:blue", alpha=max(0.1, min(0.7, 70 / max(1, len(points)))))
        if best is not None and name in best.config:
            bx = choices.index(_param_value(dist, best.config[name])) if categorical else float(best.config[name])
            ax.scatter([bx], [best.objective], color="tab:orange", s=120, marker="*", zorder=3, label="best")
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("objective (%)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Top hyperparameters against the objective (completed trials)")
    return save_png(fig, path)
