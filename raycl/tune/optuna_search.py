"""Ray's OptunaSearch, proposing cohorts and telling Optuna the truth about every configuration.

A Tune trial is a cohort of up to ``cohort_size`` configurations (one with ``--population 1``),
each its own Optuna trial: asked together (TPE's constant liar counts the cohort's running
members, so a cohort is not P copies of one point), with the hyperparameters a population must
share (``shared``) drawn once per cohort, by its first member, and fixed for the others.

Ray's OptunaSearch records every trial that stops without an error as COMPLETE with its last
reported value. Configurations stopped early at a rung reported a partial objective (fewer tasks
seen, so usually a *higher* mean accuracy), which would mislead TPE: here they are told PRUNED
(Optuna keeps their intermediate values), diverged ones FAIL, and only a configuration that
trained every task COMPLETE.

With ``audit_fraction`` a random share of the configurations is marked audited (exempt from early
stopping, the rung diagnostic's unselected sample); the mark travels in the trial's config and is
kept as the Optuna trial's user attribute ``audit``.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from raycl.vocabulary import AUDIT, COHORT, OBJECTIVE, TASK, Status, config_summaries

# The search's own random stream (which configurations are audited), apart from the sampler's.
AUDIT_STREAM = 1

log = logging.getLogger(__name__)


class CohortOptunaSearch(OptunaSearch):
    def __init__(self, *args, final_task: int, samples: int, cohort_size: int = 1, shared: tuple[str, ...] = (),
                 points_to_evaluate: list[dict] | None = None, audit_fraction: float = 0.0, audit_seed: int = 0,
                 **kwargs):
        # Start points are enqueued here, one before each ask, so that they and the cohorts' fixed
        # shared values never meet in Optuna's queue of waiting trials.
        super().__init__(*args, **kwargs)
        self.final_task = final_task
        self.cohort_size = cohort_size
        self.shared = tuple(shared)
        self._to_propose = samples
        self._start_points = list(points_to_evaluate or [])
        self._cohorts: dict[str, list] = {}  # Tune trial id -> its configurations' Optuna trials
        self._params: dict[str, list[dict]] = {}
        self._audit: dict[str, list[bool]] = {}
        self._told: set[tuple[str, int]] = set()
        self.audit_fraction = audit_fraction
        self._audit_random = np.random.default_rng([audit_seed, AUDIT_STREAM])

    def _ask(self, fixed: dict) -> tuple[object, dict]:
        point = next((p for p in self._start_points
                      if all(p.get(k, v) == v for k, v in fixed.items())), None)
        if point is not None:
            self._start_points.remove(point)
        if point is not None or fixed:
            self._ot_study.enqueue_trial({**(point or {}), **fixed})
        trial = self._ot_study.ask()
        return trial, self._suggest_from_define_by_run_func(self._space, trial)

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._cohorts:
            size = min(self.cohort_size, self._to_propose)
            if size <= 0:
                return Searcher.FINISHED
            first, params = self._ask({})
            fixed = {k: params[k] for k in self.shared if k in params}
            asked = [(first, params)] + [self._ask(fixed) for _ in range(size - 1)]
            self._cohorts[trial_id] = [trial for trial, _ in asked]
            self._params[trial_id] = [p for _, p in asked]
            self._audit[trial_id] = [bool(u < self.audit_fraction) for u in self._audit_random.random(size)]
            for (trial, _), audited in zip(asked, self._audit[trial_id]):
                trial.set_user_attr(AUDIT, audited)
            self._to_propose -= size
        return {COHORT: self._params[trial_id], AUDIT: self._audit[trial_id]}

    def _tell(self, trial_id: str, index: int, state: TrialState, value: float | None = None) -> None:
        self._told.add((trial_id, index))
        self._ot_study.tell(self._cohorts[trial_id][index], value if state == TrialState.COMPLETE else None,
                            state=state)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._cohorts:
            return
        for index, summary in sorted((int(k), v) for k, v in config_summaries(result).items()):
            if (trial_id, index) in self._told:
                continue
            value = summary.get(OBJECTIVE)
            if summary["status"] != Status.DIVERGED and value is not None and summary[TASK] == result.get(TASK):
                with warnings.catch_warnings():  # a retried task reports its step again
                    warnings.simplefilter("ignore")
                    self._cohorts[trial_id][index].report(value, summary[TASK])
            if summary["status"] == Status.DIVERGED:
                self._tell(trial_id, index, TrialState.FAIL)
            elif summary["status"] == Status.PRUNED:
                self._tell(trial_id, index, TrialState.PRUNED)
            elif summary["status"] == Status.COMPLETED and summary[TASK] >= self.final_task:
                self._tell(trial_id, index, TrialState.COMPLETE, value)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self._cohorts:
            return
        if result and not error:
            self.on_trial_result(trial_id, result)
        for index in range(len(self._cohorts[trial_id])):
            if (trial_id, index) not in self._told:
                # Errored, or stopped by ASHA (with --population 1) before the last task.
                self._tell(trial_id, index, TrialState.FAIL if error else TrialState.PRUNED)
