"""The search's sampler: TPE on the best trials and a window of the recent ones (raycl.tune.sampler)."""

import math
import pickle
import random

import optuna
import pytest
from optuna.samplers._tpe.sampler import _split_trials
from optuna.trial import TrialState

from raycl.tune.sampler import BELOW_LIMIT, WindowedTPESampler, make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def suggest(trial) -> dict:
    """A space like the main job's: two floats, two choices and one conditional choice."""
    params = {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
              "beta": trial.suggest_categorical("beta", [-1.0, -0.1, 0.0, 0.1]),
              "weight": trial.suggest_float("weight", 0.1, 0.999),
              "mode": trial.suggest_categorical("mode", ["simple", "generative"])}
    if params["mode"] == "simple":
        params["n_replay"] = trial.suggest_categorical("n_replay", [20, 50, 100])
    return params


def score(params: dict) -> float:
    return -abs(math.log10(params["lr"]) + 3) - abs(params["weight"] - 0.7) + 0.1 * (params["beta"] == 0.0)


def run(sampler, trials: int, in_flight: int = 4, seed: int = 0, study=None,
        ended: list | None = None) -> tuple[optuna.Study, list[dict]]:
    """A search's traffic: ``in_flight`` configurations running at once (constant liar sees them),
    most pruned after reporting an intermediate value, some failed, the rest completed with two;
    the trials' numbers appended to ``ended`` as they end."""
    ended = [] if ended is None else ended
    rng = random.Random(seed)
    study = study or optuna.create_study(direction="maximize", sampler=sampler)
    running, proposed = [], []
    while len(proposed) < trials or running:
        if len(proposed) < trials and len(running) < in_flight:
            trial = study.ask()
            params = suggest(trial)
            proposed.append(params)
            running.append((trial, params))
            continue
        trial, params = running.pop(rng.randrange(len(running)))
        value, fate = score(params), rng.random()
        ended.append(trial.number)
        trial.report(value - 0.5, 1)
        if fate < 0.6:
            study.tell(trial, state=TrialState.PRUNED)
        elif fate < 0.7:
            study.tell(trial, state=TrialState.FAIL)
        else:
            trial.report(value, 2)
            study.tell(trial, value)
    return study, proposed


def test_within_its_window_it_proposes_what_tpe_proposes():
    _, plain = run(optuna.samplers.TPESampler(seed=3), 60)
    _, windowed = run(WindowedTPESampler(seed=3, window=60), 60)
    assert windowed == plain


def test_past_its_window_it_proposes_otherwise_but_the_same_for_the_same_seed():
    _, plain = run(optuna.samplers.TPESampler(seed=3), 60)
    _, first = run(WindowedTPESampler(seed=3, window=20), 60)
    _, again = run(WindowedTPESampler(seed=3, window=20), 60)
    assert first == again
    assert first[:31] == plain[:31]  # the window acts from the 21st finished trial on, a few asks later
    assert first != plain


def test_tpe_is_shown_its_best_trials_the_recent_ones_and_the_recent_running_ones():
    window = 12
    sampler = WindowedTPESampler(seed=0, window=window)
    ended = []
    study, _ = run(sampler, 70, ended=ended)
    running = [study.ask() for _ in range(window + 3)]
    for trial in running:
        suggest(trial)
    current = running[-1].number
    shown = {t.number for t in sampler._window(study, current)}

    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    best, _ = _split_trials(study, finished, BELOW_LIMIT)  # TPE's own order: completed, then pruned
    others_running = [t.number for t in running[:-1]][-window:]
    assert len(best) == BELOW_LIMIT and any(t.state == TrialState.PRUNED for t in best)
    assert len(finished) > 2 * window
    assert shown == {t.number for t in best} | set(ended[-window:]) | set(others_running)


def test_a_pickled_sampler_goes_on_as_if_never_interrupted():
    """Tune saves the searcher (its study and sampler) by pickling it and restores it after a kill."""
    study, first = run(WindowedTPESampler(seed=5, window=15), 40)
    restored = pickle.loads(pickle.dumps(study))
    _, then = run(None, 20, seed=1, study=study)
    _, then_restored = run(None, 20, seed=1, study=restored)
    assert then_restored == then and len(first) == 40


@pytest.mark.parametrize("window", [0, None])
def test_no_window_is_optunas_tpe(window):
    sampler = make_sampler(7, window)
    assert type(sampler) is optuna.samplers.TPESampler


@pytest.mark.parametrize("window", [0, 7])
def test_a_search_proposes_with_its_window(window, tmp_path):
    """launch/tune.py's --tpe-window reaches the searcher: a window, or with 0
    Optuna's own TPE."""
    from raycl.tune.options import SearchOptions
    from raycl.tune.search import _make_searcher, prepare_space

    options = SearchOptions(method="derpp", dataset="seq-digits", samples=4, tpe_window=window,
                            storage_path=str(tmp_path))
    searcher = _make_searcher(options, prepare_space(options), final_task=5)
    sampler = searcher._sampler
    assert isinstance(sampler, WindowedTPESampler) == bool(window)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    if window:
        assert sampler.window == window


def test_the_joint_search_space_is_optunas_intersection_while_many_trials_stay_open():
    """Configurations waiting at rungs stay running in Optuna for most of a search: the sampler keeps
    the intersection of the finished trials' distributions as they finish, and it must be the one
    Optuna's IntersectionSearchSpace computes from the whole history, at every ask."""
    from optuna.search_space import IntersectionSearchSpace

    sampler = WindowedTPESampler(seed=2, window=10)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    rng = random.Random(4)
    held, spaces = [], []
    for number in range(80):
        trial = study.ask()
        ours = sampler.infer_relative_search_space(study, trial._cached_frozen_trial)
        theirs = {name: d for name, d in IntersectionSearchSpace(include_pruned=True).calculate(study).items()
                  if not d.single()}
        assert ours == theirs and list(ours) == list(theirs), number
        spaces.append(tuple(ours))
        params = suggest(trial)
        if number < 20 and rng.random() < 0.5:
            held.append(trial)  # never told while the rest of the search goes on
            continue
        trial.report(score(params), 1)
        fate = rng.random()
        study.tell(trial, state=TrialState.FAIL if fate < 0.1 else TrialState.PRUNED if fate < 0.6 else None,
                   values=score(params) if fate >= 0.6 else None)
    assert held and len(set(spaces)) > 1  # the space changed as trials without the conditional one finished


def test_a_trial_finished_without_the_sampler_being_told_is_found_by_the_periodic_scan():
    """Another process on the same storage can finish a trial: the sampler is not told of it, and a
    scan of every open trial, one catch-up in FULL_SCAN_EVERY, finds it."""
    from raycl.tune import sampler as sampler_module

    sampler = WindowedTPESampler(seed=0, window=5)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    trial = study.ask()
    suggest(trial)
    sampler._trials(study)
    assert list(sampler._open) == [trial.number]
    told_elsewhere = optuna.load_study(study_name=study.study_name, storage=study._storage,
                                       sampler=optuna.samplers.RandomSampler())
    told_elsewhere.tell(trial.number, 1.0)
    for _ in range(sampler_module.FULL_SCAN_EVERY - sampler._catch_ups - 1):
        sampler._trials(study)
        assert sampler._finished == 0
    sampler._trials(study)
    assert sampler._finished == 1 and not sampler._open and sampler._best_complete


def test_a_sampler_pickled_by_an_earlier_raycl_rebuilds_what_it_keeps_from_the_study():
    """A search resumed across versions: Tune unpickles the searcher's sampler as an earlier raycl
    left it (its open trials in a set, no search space kept); it takes the study in afresh."""
    from optuna.search_space import IntersectionSearchSpace

    sampler = WindowedTPESampler(seed=5, window=15)
    study, _ = run(sampler, 40)
    state = dict(sampler.__dict__)
    for name in ("_intersection", "_ended", "_catch_ups"):
        state.pop(name)
    state["_open"] = set(state["_open"])
    old = WindowedTPESampler.__new__(WindowedTPESampler)
    old.__setstate__(state)
    study.sampler = old
    _, then = run(None, 20, seed=1, study=study)
    trial = study.ask()
    theirs = {n: d for n, d in IntersectionSearchSpace(include_pruned=True).calculate(study).items() if not d.single()}
    assert len(then) == 20 and old.infer_relative_search_space(study, trial._cached_frozen_trial) == theirs
    assert old._finished == sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
