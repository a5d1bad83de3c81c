"""Ray's OptunaSearch, telling Optuna the truth about trials that did not finish.

Ray's OptunaSearch records every trial that stops without an error as COMPLETE with its last
reported value. Trials ASHA stopped early reported a partial objective (fewer tasks seen, so
usually a *higher* mean accuracy), which would mislead TPE. Here such trials are told as PRUNED
(Optuna keeps their intermediate values) and diverged trials as FAIL.
"""

from __future__ import annotations

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch


class PruningOptunaSearch(OptunaSearch):
    def __init__(self, *args, final_task: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.final_task = final_task

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials or error or not result:
            return super().on_trial_complete(trial_id, result, error)
        if result.get("diverged"):
            state = TrialState.FAIL
        elif result.get("task", 0) < self.final_task:
            state = TrialState.PRUNED
        else:
            return super().on_trial_complete(trial_id, result, error)
        self._ot_study.tell(self._ot_trials[trial_id], state=state)
        self._completed_trials.add(trial_id)
