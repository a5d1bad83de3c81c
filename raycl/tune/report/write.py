"""Write a finished search's report: every figure and the page that shows them."""

from __future__ import annotations

import html
import logging
from pathlib import Path

from raycl import storage
from raycl.errors import RayclError
from raycl.files import atomic_write_text
from raycl.tune.report.experiment import REPORT_INPUTS, experiment_signal, load_experiment, trial_matrices
from raycl.tune.report.page import PAGE, ReportFiles, html_table, page, signal_table
from raycl.tune.report.param_figures import plot_importance, plot_params
from raycl.tune.report.per_task import per_task_report
from raycl.tune.report.search_figures import plot_asha, plot_history, plot_rungs
from raycl.tune.report.study import IMPORTANCE_TRIALS, _declared_space_object, param_importances
from raycl.tune.report.trial_figures import plot_matrices, plot_stream

log = logging.getLogger(__name__)


def write_report(experiment_dir: str | Path, out_dir: str | Path | None = None,
                 optuna_storage: str | None = None) -> ReportFiles:
    """Write the figures and ``index.html`` to ``out_dir`` (default ``<experiment>/report``, or
    ``./<experiment name>-report`` for an experiment in object storage such as ``s3://...``)."""
    if storage.is_uri(experiment_dir):
        location = storage.resolve(experiment_dir)
        # Only the files a report reads, not the models in the checkpoints.
        local = storage.download(location, keep=lambda relative: relative.endswith(REPORT_INPUTS))
        out_dir = out_dir or Path.cwd() / f"{storage.name(location)}-report"
        experiment_dir = local
    per_task = per_task_report(Path(experiment_dir), out_dir)
    if per_task is not None:
        return per_task
    experiment = load_experiment(experiment_dir)
    out = Path(out_dir) if out_dir else experiment.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    sections: list[tuple[str, str, Path | None]] = []
    sections.append(("Search history", "Every trial's objective in the order trials finished; the orange "
                     "line is the best completed trial so far. Trials ASHA stopped early show the objective "
                     "over the fewer tasks they saw, which is not comparable with a full stream.",
                     plot_history(experiment, out / "history.png")))
    rungs_text = f" {html.escape(experiment.rungs_described)}." if experiment.rungs_described else ""
    sections.append(("Early stopping (ASHA's rule on tasks)", "Left: each configuration's objective after every "
                     "task it trained. Right: how many configurations trained each task and how many were "
                     f"stopped there.{rungs_text}", plot_asha(experiment, out / "asha.png")))
    tables = {}
    signal = experiment_signal(experiment)
    if signal:
        title = "Rung signal"
        tables[title] = html_table(*signal_table(signal))
        sections.append((title, "For every rung, Spearman's rank correlation between a configuration's objective "
                         "at the rung and its final objective, over the configurations that completed: near 1 "
                         "the rung ranks them as the end does, near 0 stopping there is close to random. "
                         "Survivors passed every rung, a narrow selected sample that biases the correlation "
                         "low; audited configurations (--audit-fraction) were never stopped.",
                         plot_rungs(experiment, signal, out / "rungs.png")))
        for r in signal:
            if r.weak:
                notes.append(f"weak rung after task {r.rung}: {r.audited.describe()}; move it with --grace-period")
    declared = _declared_space_object(experiment)
    if declared is not None and experiment.best is not None:
        from raycl.tune.space import edge_warnings  # the methods' declarations: torch

        notes.extend(edge_warnings(declared, experiment.best.config))
    completed = experiment.completed
    try:
        importances = param_importances(experiment, optuna_storage)
    except (RayclError, RuntimeError, ValueError) as exc:
        notes.append(f"no hyperparameter importance: {exc}")
        importances = {}
    if importances:
        sections.append(("Hyperparameter importance", "Optuna's fANOVA evaluator on the study (rebuilt from "
                         "the trials table unless --optuna-storage is given; past "
                         f"{IMPORTANCE_TRIALS} completed trials, on a random sample of them): how much of the "
                         "objective's variance each hyperparameter explains.",
                         plot_importance(importances, out / "importance.png", len(completed),
                                         min(len(completed), IMPORTANCE_TRIALS))))
    top = list(importances)[:4] or experiment.params[:4]
    if top and completed:
        sections.append(("Top hyperparameters against the objective", "Each completed trial's value of the "
                         "most important hyperparameters and its objective; the star is the best trial.",
                         plot_params(experiment, top, out / "params.png")))
    best = experiment.best
    if best is None:
        notes.append("no trial completed every task: no best-trial figures")
    else:
        matrices = trial_matrices(experiment, best)
        sections.append(("Best trial: accuracy matrices", "Row i, column j: accuracy on task j after training "
                         "task i. The search evaluates test once, after the last task, so only the test "
                         "matrix's last row is filled.",
                         plot_matrices(experiment, matrices, best, out / "matrices.png")))
        sections.append(("Best trial: accuracy on each task over the stream", "Validation accuracy on each "
                         "task (one line per task, from the task it is trained on; dotted: before it is "
                         "trained) and the mean over seen tasks, which is the objective.",
                         plot_stream(experiment, matrices, best, out / "stream.png")))
    page_path = out / PAGE
    atomic_write_text(page_path, page(experiment, sections, notes, tables))
    figures = [f for _, _, f in sections if f is not None]
    log.info("report of %s: %s (%d figures)", experiment.path, page_path, len(figures))
    return ReportFiles(page=page_path, figures=figures, notes=notes)
