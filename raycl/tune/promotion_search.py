"""Ray Tune's searcher for the promotion form: Optuna proposes configurations, the
:class:`~raycl.tune.promotion.PromotionScheduler` hands out jobs, and Optuna is told the truth.

Every configuration is its own Optuna trial. A job of new configurations takes its structure from
its first configuration, which TPE proposes freely; the others of the job are proposed with that
structure fixed (Optuna's enqueued values) and their per-member values from TPE: the conditional
form, where a structure is drawn once per population. Optuna is told each configuration's
objective after every task it trains (its intermediate values), COMPLETE with its final objective,
PRUNED as soon as the scheduler knows it will never be promoted (at the latest when the search
ends), FAIL when it diverged or its job failed for good.

Each Tune trial is one job (its config holds the job). The scheduler's decisions go to the
experiment's ``rungs.jsonl`` before they take effect; after an interruption the searcher Tune
restores rebuilds the scheduler from that file, re-creates in Optuna the configurations proposed
after Tune's last snapshot, and hands out again the jobs Tune does not know of.
"""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from raycl.tune.journal import Journal, read_journal, repair_journal
from raycl.tune.costs import Widths
from raycl.tune.promotion import FINISHED, Configuration, Job, Outcome, PromotionScheduler
from raycl.vocabulary import AUDIT, JOB, OBJECTIVE, RUNG_SCORE, TASK, Status, config_summaries

log = logging.getLogger(__name__)

# The search's own random stream (which configurations are audited), apart from the sampler's.
AUDIT_STREAM = 1
CONFIG_ATTR = "raycl_config"  # the Optuna trial's user attribute naming its configuration


def job_spec(job: Job, configs: dict[str, Configuration]) -> dict:
    """What a job's trial is told: the segment and every configuration's values and audit mark."""
    return {"id": job.id, "start": job.start, "end": job.end, "planned": job.planned,
            "configs": [{"id": c, "params": configs[c].params, "audit": configs[c].audit} for c in job.configs]}


class PromotionSearch(OptunaSearch):
    def __init__(self, *args, final_task: int, samples: int, rungs: tuple[int, ...], reduction_factor: int,
                 widths: Widths, slots: int, seeds: int, structure_of, journal: str, settings: dict,
                 points_to_evaluate: list[dict] | dict[str, list[dict]] | None = None, audit_fraction: float = 0.0,
                 audit_seed: int = 0, groups: dict[str, tuple] | None = None, mixable: bool = False, **kwargs):
        """``groups`` (several searches at once, a table's buffer sizes): group name -> (its space, its
        sampler); each group gets an Optuna study of its own, named ``<study name>-<group>``, and its own
        first configurations (``points_to_evaluate`` by group; a list is the ungrouped search's)."""
        super().__init__(*args, **kwargs)
        self._group_spaces = {"": self._space}
        self._studies = {"": self._ot_study}
        if groups:
            import optuna

            self._group_spaces = {g: space for g, (space, _) in groups.items()}
            self._studies = {g: optuna.create_study(
                storage=self._storage, sampler=sampler, pruner=optuna.pruners.NopPruner(),
                study_name=f"{self._study_name}-{g}", load_if_exists=True, direction="maximize")
                for g, (_, sampler) in groups.items()}
        self.slots = max(1, slots)
        self.structure_of = structure_of
        self.shared = tuple(getattr(structure_of, "names", ()))
        self.audit_fraction = audit_fraction
        self._audit_random = np.random.default_rng([audit_seed, AUDIT_STREAM])
        points = points_to_evaluate or {}
        self._start_points = {g: list(p) for g, p in points.items()} if isinstance(points, dict) else {"": list(points)}
        self.journal = Journal(journal)
        self._scheduler_args = (rungs, final_task, reduction_factor, samples, widths)
        self._scheduler_kwargs = {"seeds": seeds, "audit_fraction": audit_fraction, "groups": tuple(self._studies),
                                  "mixable": mixable}
        self.scheduler = PromotionScheduler(*self._scheduler_args, record=self.journal.append, **self._scheduler_kwargs)
        self.journal.append({"event": "search", **settings})
        self._optuna: dict[str, object] = {}  # configuration id -> its Optuna trial
        self._objective: dict[str, float] = {}
        self._told: set[str] = set()
        self._trial_jobs: dict[str, str] = {}  # live Tune trial id -> its job
        self._reissue: list[str] = []  # jobs started before an interruption that Tune does not know of
        self._asking_for = ""
        self._asked = 0

    # ----- proposing ------------------------------------------------------------------------------------
    def _ask(self, fixed: dict, group: str):
        study = self._studies[group]
        points = self._start_points.get(group, [])
        point = next((p for p in points if all(p.get(k, v) == v for k, v in fixed.items())), None)
        if point is not None:
            points.remove(point)
        if point is not None or fixed:
            study.enqueue_trial({**(point or {}), **fixed})
        trial = study.ask()
        return trial, self._suggest_from_define_by_run_func(self._group_spaces[group], trial)

    def _propose(self, fixed: dict, group: str) -> Configuration:
        trial, params = self._ask(fixed, group)
        config_id = f"{self._asking_for}-{self._asked}"
        self._asked += 1
        audit = bool(self._audit_random.random() < self.audit_fraction)
        trial.set_user_attr(AUDIT, audit)
        trial.set_user_attr(CONFIG_ATTR, config_id)
        self._optuna[config_id] = trial
        config = Configuration(config_id, params, self.structure_of(params), group=group, audit=audit)
        self.scheduler.add(config)
        return config

    def _propose_first(self, group: str) -> Configuration:
        return self._propose({}, group)

    def _propose_like(self, first: Configuration, group: str) -> Configuration:
        return self._propose({k: first.params[k] for k in self.shared if k in first.params}, group)

    # ----- Tune's calls ---------------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | None:
        if trial_id in self._trial_jobs:
            job = self.scheduler.jobs[self._trial_jobs[trial_id]]
            return {JOB: job_spec(job, self.scheduler.configs)}
        if self._reissue:
            job = self.scheduler.jobs[self._reissue.pop(0)]
        else:
            self._asking_for, self._asked = trial_id, 0
            job = self.scheduler.next_job(self.slots - len(self._trial_jobs), self._propose_first, self._propose_like)
            if job == FINISHED:
                self._tell_ended()
                self._forget_waiting()
                return Searcher.FINISHED
            if job is None:
                return None
        self._trial_jobs[trial_id] = job.id
        return {JOB: job_spec(job, self.scheduler.configs)}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        for config, summary in config_summaries(result).items():
            if config in self._told or config not in self._optuna:
                continue
            value = summary.get(OBJECTIVE)
            if summary.get("status") == Status.DIVERGED:
                self._tell(config, TrialState.FAIL)
            elif value is not None and summary.get(TASK) == result.get(TASK):
                self._objective[config] = float(value)
                with warnings.catch_warnings():  # a retried task reports its step again
                    warnings.simplefilter("ignore")
                    self._optuna[config].report(float(value), int(summary[TASK]))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        job = self._trial_jobs.pop(trial_id, None)
        if job is None:
            return
        if error:
            ended = self.scheduler.job_failed(job, trial=trial_id)
        else:
            summaries = config_summaries(result or {})
            if result:
                self.on_trial_result(trial_id, result)
            outcomes = {c: Outcome(s.get("status", Status.ERRORED), int(s.get(TASK) or 0), s.get(RUNG_SCORE))
                        for c, s in summaries.items()}
            seconds = result.get("task_seconds") if result else None
            ended = self.scheduler.job_finished(job, outcomes, list(seconds or []), trial=trial_id)
        for config, status in ended:
            self._tell_status(config, status)
        self._forget_states(job, ended)

    def _forget_waiting(self) -> None:
        """At the end, the states of the configurations pruned as the search ended."""
        from raycl import storage
        from raycl.tune.job import member_file

        experiment = self.journal.location.rsplit("/", 1)[0]
        for config in self.scheduler.configs.values():
            if config.status == Status.PRUNED and 0 < config.tasks < self.scheduler.final_task:
                storage.delete(member_file(experiment, config.id, config.tasks))

    def _forget_states(self, job: str, ended: list[tuple[str, str]]) -> None:
        """Delete the member states nothing will read again: those a finished promoted job started from,
        and those of configurations pruned while they waited (a waiting configuration's state stays
        until its promoted job has finished, so a job run again after an interruption finds it)."""
        from raycl import storage
        from raycl.tune.job import member_file

        experiment = self.journal.location.rsplit("/", 1)[0]
        start = self.scheduler.jobs[job].start
        stale = [(c, start) for c in self.scheduler.jobs[job].configs if start > 0]
        stale += [(c, self.scheduler.configs[c].tasks) for c, status in ended if status == Status.PRUNED]
        for config, task in stale:
            storage.delete(member_file(experiment, config, task))

    # ----- telling Optuna -------------------------------------------------------------------------------
    def _tell(self, config: str, state: TrialState, value: float | None = None) -> None:
        if config in self._told or config not in self._optuna:
            return
        self._told.add(config)
        study = self._studies[self.scheduler.configs[config].group]
        # A told trial's state is in the study: its Trial object would only grow the searcher Tune pickles.
        study.tell(self._optuna.pop(config), value if state == TrialState.COMPLETE else None, state=state)

    def _tell_status(self, config: str, status: str) -> None:
        if status == Status.COMPLETED:
            self._tell(config, TrialState.COMPLETE, self._objective.get(config))
        elif status == Status.PRUNED:
            self._tell(config, TrialState.PRUNED)
        else:
            self._tell(config, TrialState.FAIL)

    def _tell_ended(self) -> None:
        for config, c in self.scheduler.configs.items():
            if c.ended:
                self._tell_status(config, c.status)

    # ----- after an interruption ------------------------------------------------------------------------
    def restore(self, checkpoint_path: str) -> None:
        """Tune's last snapshot of the searcher, brought up to date with the decisions recorded after it."""
        super().restore(checkpoint_path)
        self.resync()

    def resync(self) -> None:
        """Rebuild the scheduler from the journal, make Optuna know every configuration the journal
        holds (with its outcome where it has one), and queue for handing out again the jobs started
        after Tune's snapshot (the ones no live Tune trial runs)."""
        repair_journal(self.journal.location)
        events = read_journal(self.journal.location)
        self.scheduler = PromotionScheduler(*self._scheduler_args, record=self.journal.append, **self._scheduler_kwargs)
        unfinished = self.scheduler.replay(e for e in events if e.get("event") != "search")
        known = {t.user_attrs.get(CONFIG_ATTR): t for study in self._studies.values()
                 for t in study.get_trials(deepcopy=False) if t.user_attrs.get(CONFIG_ATTR)}
        for config_id, config in self.scheduler.configs.items():
            if config_id in self._optuna:
                continue
            study = self._studies[config.group]
            stored = known.get(config_id)
            if stored is not None and stored.state != TrialState.RUNNING:
                self._told.add(config_id)
                continue
            if stored is not None:
                from optuna.trial import Trial

                self._optuna[config_id] = Trial(study, stored._trial_id)
                continue
            study.enqueue_trial(dict(config.params))
            trial = study.ask()
            self._suggest_from_define_by_run_func(self._group_spaces[config.group], trial)
            trial.set_user_attr(AUDIT, config.audit)
            trial.set_user_attr(CONFIG_ATTR, config_id)
            self._optuna[config_id] = trial
        for config_id, config in self.scheduler.configs.items():
            if config.ended:
                self._tell_status(config_id, config.status)
        running = set(self._trial_jobs.values())
        self._reissue = [job.id for job in unfinished if job.id not in running]
        if self._reissue:
            log.info("handing out again %d job(s) started before the interruption: %s", len(self._reissue),
                     ", ".join(self._reissue))


def structure_key(values: dict) -> str:
    """One key for the values a population shares."""
    return json.dumps(values, sort_keys=True, default=str)
