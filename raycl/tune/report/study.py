"""The search as an Optuna study: each searched hyperparameter's distribution (declared in the
experiment's search space, else inferred from the values tried), the study rebuilt from the trials
table, and fANOVA importances.
"""

from __future__ import annotations

import logging

import yaml

from raycl.errors import RayclError
from raycl.tune.report.experiment import Experiment
from raycl.vocabulary import SPACE_FILE, Status

log = logging.getLogger(__name__)


def _distributions(experiment: Experiment) -> dict:
    """Optuna distributions of the searched parameters: from the experiment's search_space.yaml,
    else inferred from the values tried.

    Inferred: strings and integers with at most 8 distinct values are categorical (``choice``);
    other integers are integer ranges; floats spanning more than a factor 20 while positive are
    log-uniform, else uniform.
    """
    import optuna.distributions as d

    declared = _declared_space(experiment)
    out = {}
    for name in experiment.params:
        if name in declared:
            out[name] = declared[name]
            continue
        values = [t.config[name] for t in experiment.trials if name in t.config]
        distinct = sorted(set(values), key=str)
        if any(isinstance(v, str) for v in values):
            out[name] = d.CategoricalDistribution(tuple(str(v) for v in distinct))
        elif all(float(v).is_integer() for v in values) and len(distinct) <= 8:
            out[name] = d.CategoricalDistribution(tuple(sorted(int(v) for v in distinct)))
        elif all(float(v).is_integer() for v in values):
            out[name] = d.IntDistribution(int(min(values)), int(max(values)))
        else:
            low, high = float(min(values)), float(max(values))
            out[name] = d.FloatDistribution(low, high, log=low > 0 and high / low > 20)
    return out


def _declared_space_object(experiment: Experiment):
    """The experiment's search space from its search_space.yaml, None when it has none."""
    from raycl.tune.space import parse_space

    path = experiment.path / SPACE_FILE
    if not path.is_file():
        return None
    try:
        return parse_space(yaml.safe_load(path.read_text()), experiment.method, experiment.dataset, str(path))
    except (RayclError, yaml.YAMLError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None


def _declared_space(experiment: Experiment) -> dict:
    space = _declared_space_object(experiment)
    if space is None:
        return {}
    return {dim.name: dim.distribution() for dim in space.dimensions if dim.kind != "fixed"}


def _param_value(distribution, value):
    import optuna.distributions as d

    if isinstance(distribution, d.CategoricalDistribution):
        # The table stores numbers as floats: give back the declared choice they stand for.
        for choice in distribution.choices:
            if choice == value or (not isinstance(choice, str) and not isinstance(value, str)
                                   and float(choice) == float(value)):
                return choice
        return value
    if isinstance(distribution, d.IntDistribution):
        return int(value)
    return float(value)


def build_study(experiment: Experiment, storage: str | None = None, trials: list | None = None):
    """The search's Optuna study: loaded from ``storage`` when given, else rebuilt in memory (of
    ``trials`` only when given, e.g. a sample of the experiment's)."""
    import optuna
    from optuna.trial import TrialState, create_trial

    if storage:
        from raycl.tune.optuna_storage import open_storage

        return optuna.load_study(study_name=experiment.path.name, storage=open_storage(storage))
    distributions = _distributions(experiment)
    study = optuna.create_study(direction="maximize", study_name=experiment.path.name)
    frozen = []
    for trial in experiment.trials if trials is None else trials:
        dists = {k: v for k, v in distributions.items() if k in trial.config}
        params = {k: _param_value(v, trial.config[k]) for k, v in dists.items()}
        curve = trial.objective_by_task
        intermediate = {step: value for step, value in enumerate(curve, start=1)}
        if trial.status == Status.COMPLETED and trial.objective is not None:
            frozen.append(create_trial(params=params, distributions=dists, value=trial.objective,
                                       intermediate_values=intermediate))
        elif trial.status == Status.PRUNED:
            frozen.append(create_trial(params=params, distributions=dists, state=TrialState.PRUNED,
                                       intermediate_values=intermediate))
        else:
            frozen.append(create_trial(params=params, distributions=dists, state=TrialState.FAIL))
    study.add_trials(frozen)
    return study


# The most completed trials fANOVA's forest is fitted on: its cost grows faster than the trials, and a
# few hundred say as much about which hyperparameters matter as thousands.
IMPORTANCE_TRIALS = 500


def param_importances(experiment: Experiment, storage: str | None = None, seed: int = 0,
                      limit: int = IMPORTANCE_TRIALS) -> dict[str, float]:
    """fANOVA importance of each searched hyperparameter for the objective (sums to 1), over the
    completed trials, or a random sample of ``limit`` of them (seeded with ``seed``) where there
    are more."""
    import numpy as np
    import optuna

    def sample(items: list) -> list:
        if len(items) <= limit:
            return list(items)
        keep = np.sort(np.random.default_rng(seed).choice(len(items), size=limit, replace=False))
        return [items[i] for i in keep]

    if storage:
        complete = build_study(experiment, storage).get_trials(deepcopy=False,
                                                              states=(optuna.trial.TrialState.COMPLETE,))
        study = optuna.create_study(direction="maximize")
        study.add_trials(sample(complete))
    else:  # only the sample is rebuilt, not the whole search
        complete = experiment.completed
        study = build_study(experiment, trials=sample(complete))
    if len(complete) < 2:
        raise RayclError(f"hyperparameter importance needs at least 2 completed trials, found {len(complete)}")
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
