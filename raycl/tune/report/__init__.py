"""A finished search as PNG figures and one HTML page, from the experiment folder's own files.

Nothing is trained, nothing is fetched; it works on an experiment copied from a cluster (or read
from object storage). One module per part:

- :mod:`.experiment`: reading the experiment (trials table, Ray histories, accuracy matrices);
- :mod:`.study`: the search as an Optuna study (distributions, importances);
- :mod:`.search_figures`, :mod:`.param_figures`, :mod:`.trial_figures`: the figures of how the
  search went, of the hyperparameters and of the best trial (:mod:`.draw`: what they share);
- :mod:`.page`: the HTML page; :mod:`.per_task`: the report of a per-task search;
- :mod:`.write`: :func:`write_report`, which writes them all.
"""

from raycl.tune.report.experiment import (REPORT_INPUTS, Experiment, Trial, experiment_signal, load_experiment,
                                          trial_matrices)
from raycl.tune.report.page import PAGE, TOP, ReportFiles, signal_table, top_table
from raycl.tune.report.study import _distributions, build_study, param_importances
from raycl.tune.report.write import write_report

__all__ = ["PAGE", "REPORT_INPUTS", "TOP", "Experiment", "ReportFiles", "Trial", "build_study", "experiment_signal",
           "load_experiment", "param_importances", "signal_table", "top_table", "trial_matrices", "write_report"]
