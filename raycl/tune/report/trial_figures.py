"""Figures of the best trial: its accuracy matrices, and its accuracy on each task over the stream."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from raycl.tune.report.draw import save_png
from raycl.tune.report.experiment import Experiment, Trial


def plot_matrices(experiment: Experiment, matrices: dict, trial: Trial, path: Path) -> Path:
    settings = [s for s in experiment.settings if s in matrices.get("val", {})]
    t = experiment.n_tasks
    fig = Figure(figsize=(4.2 * 2 + 1, 3.6 * len(settings) + 0.4), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(settings), 2))
    for row, setting in enumerate(settings):
        for col, split in enumerate(("val", "test")):
            ax = axes[row, col]
            m = matrices.get(split, {}).get(setting, np.full((t, t), np.nan))
            image = ax.imshow(m, vmin=0, vmax=100, cmap="viridis")
            if t <= 10:
                for i in range(t):
                    for j in range(t):
                        if not math.isnan(m[i, j]):
                            ax.text(j, i, f"{m[i, j]:.0f}", ha="center", va="center", fontsize=7,
                                    color="white" if m[i, j] < 60 else "black")
            ticks = range(0, t, max(1, t // 10))
            ax.set_xticks(ticks, [str(k + 1) for k in ticks])
            ax.set_yticks(ticks, [str(k + 1) for k in ticks])
            ax.set_xlabel("task evaluated")
            ax.set_ylabel("after training task")
            note = "" if split == "val" or np.isfinite(m[:-1]).any() else " (search tests after the last task only)"
            ax.set_title(f"{split} {setting}{note}", fontsize=9)
            fig.colorbar(image, ax=ax, shrink=0.9, label="accuracy (%)")
    fig.suptitle(f"Best trial {trial.trial_id}: accuracy matrices (blank = not evaluated)")
    return save_png(fig, path)


def plot_stream(experiment: Experiment, matrices: dict, trial: Trial, path: Path) -> Path:
    import matplotlib

    setting = experiment.settings[0]
    m = matrices["val"][setting]
    t = experiment.n_tasks
    colors = matplotlib.colormaps["viridis"]
    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for j in range(t):
        rows = [i for i in range(t) if not math.isnan(m[i, j])]
        if not rows:
            continue
        color = colors(j / max(1, t - 1))
        trained = [i for i in rows if i >= j]
        ax.plot([i + 1 for i in trained], [m[i, j] for i in trained], color=color, marker=".", lw=1,
                label=f"task {j + 1}" if t <= 10 else None)
        before = [i for i in rows if i < j]
        if before:  # accuracy on a task before training it (FWT): dotted lead-in
            ax.plot([i + 1 for i in [*before, j]], [m[i, j] for i in [*before, j]], color=color, ls=":", lw=1)
    seen = [np.nanmean(m[i, : i + 1]) if np.isfinite(m[i, : i + 1]).any() else np.nan for i in range(t)]
    ax.plot(range(1, t + 1), seen, color="black", lw=2.5, label="mean over seen tasks")
    ax.set_xlabel("after training task")
    ax.set_ylabel(f"val {setting} accuracy (%)")
    ax.set_xticks(range(1, t + 1, max(1, t // 10)))
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.set_title(f"Best trial {trial.trial_id}: accuracy on each task over the stream")
    ax.legend(fontsize=7, ncol=2 if t <= 10 else 1, loc="lower left")
    return save_png(fig, path)
