"""Per-task hyperparameter selection: branch and select on the population engine, the continual
hyperparameter framework against a plain loop of retrains, the proposal protocols with Optuna."""

import dataclasses

import numpy as np
import pytest
import torch

from raycl.methods import make_config
from raycl.selection import (Branches, ChfSettings, Candidate, decisions, fork, proposal_study,
                             run_schedule, schedule_configs, select_per_task)
from raycl.train import PopulationRun

F64 = torch.float64


def short(benchmark, n_train=80):
    tasks = [dataclasses.replace(t, train_x=t.train_x[:n_train], train_y=t.train_y[:n_train]) for t in benchmark.tasks]
    return dataclasses.replace(benchmark, tasks=tasks)


def test_copies_of_a_member_continue_exactly_as_it_would(digits):
    bench = short(digits)
    config = make_config("derpp", {"lr": 0.05, "buffer_size": 30, "n_epochs": 1}, bench.defaults)
    run = PopulationRun(bench, "derpp", config, [3], dtype=F64)
    run.run_task()
    copies = fork(run, 3)
    assert copies.alive == [0, 1, 2] and run.alive == [0]  # the original is untouched
    for _ in copies:
        pass
    for _ in run:
        pass
    for member in range(3):
        for setting in bench.settings:
            assert np.array_equal(copies.test[setting][member], run.test[setting][0], equal_nan=True)


@pytest.mark.parametrize("method, rows", [
    ("derpp", [{"lr": 0.1, "alpha": 0.5}, {"lr": 0.03, "alpha": 1.0, "beta": 0.2}, {"lr": 0.05, "beta": 1.0}]),
    ("ewc", [{"lr": 0.1, "ewc_lambda": 5.0}, {"lr": 0.05, "ewc_lambda": 50.0}, {"lr": 0.02}]),
])
def test_the_chosen_path_is_the_run_of_the_chosen_candidates_alone(method, rows, digits):
    """Branch and select over three candidates a task, chosen by a fixed rule (the second, then the
    first, ...): in float64 the chosen path equals one run that trains only those, a schedule."""
    bench = short(digits)
    base = make_config(method, {"n_epochs": 1, **({"buffer_size": 30} if method == "derpp" else {})}, bench.defaults)
    branches = Branches(bench, method, base, seed=1, dtype=F64)
    picks = []
    for task in range(bench.n_tasks):
        candidates = [Candidate(dict(r), "proposal") for r in rows]
        branches.train(candidates)
        pick = (task + 1) % len(rows)
        branches.choose(0, pick)
        picks.append(dataclasses.replace(base, **rows[pick]))
    alone = run_schedule(bench, method, picks, [1], dtype=F64)
    for setting in bench.settings:
        assert np.array_equal(branches.chosen.val[setting][0], alone.val[setting][0], equal_nan=True), setting
        # The selection tests after the last task only (test never chooses).
        assert np.array_equal(branches.chosen.test[setting][0, -1], alone.test[setting][0, -1]), setting
    assert branches.trainings == len(rows) * bench.n_tasks


def reference_chf(bench, method, base, seed, settings):
    """The continual hyperparameter framework as a plain loop: every candidate retrained from the
    start of the stream along the schedule chosen so far, then the task, one run at a time."""
    from raycl.hparams import stability_hyperparameters

    stability = stability_hyperparameters(type(base))
    chosen = []

    def train(values):
        run = run_schedule(bench, method, chosen + [dataclasses.replace(base, **values)], [seed], dtype=F64)
        if run.diverged:
            return None
        task = len(chosen)
        return float(run.val[bench.settings[0]][0, task, task])

    out = []
    for task in range(bench.n_tasks):
        grid = [(lr, train({"lr": lr, **{n: 0.0 for n in stability}})) for lr in settings.grid]
        lr, a_star = max(((lr, acc) for lr, acc in grid if acc is not None), key=lambda p: p[1])
        values = {"lr": lr}
        for k in range(settings.decay_limit + 1):
            values = {"lr": lr, **{n: v * settings.decay ** k for n, v in stability.items()}}
            accuracy = train(values)
            if accuracy is not None and accuracy >= (1 - settings.drop) * a_star:
                break
        chosen.append(dataclasses.replace(base, **values))
        out.append((task, {k: float(v) for k, v in values.items()}))
    return out


@pytest.mark.parametrize("drop", [0.2, 0.01])
def test_chf_decides_as_the_sequential_framework_does(drop, digits):
    bench = short(digits)
    base = make_config("der", {"n_epochs": 1, "buffer_size": 30}, bench.defaults)
    settings = ChfSettings(grid=(0.2, 0.05, 0.01), drop=drop, decay=0.5, decay_limit=3)
    population = select_per_task(Branches(bench, "der", base, seed=0, dtype=F64), "chf", settings)
    reference = reference_chf(bench, "der", base, 0, settings)
    assert decisions(population) == reference
    sequential = select_per_task(Branches(bench, "der", base, seed=0, dtype=F64), "chf", settings, sequential=True)
    assert decisions(sequential) == reference
    # As populations: the grid and every learning rate's first step, then the rest of the ladder
    # where that step fell short; the loop retrains the grid and then step by step.
    for pop, seq in zip(population.choices, sequential.choices):
        climbed = pop.evidence["decays"] > 0 or not pop.evidence["accepted"]
        assert len(pop.candidates) == 3 + 3 + (3 if climbed else 0)
        assert len(seq.candidates) == 3 + pop.evidence["decays"] + 1
    if drop == 0.01:
        assert any(c.evidence["decays"] > 0 for c in population.choices)  # the ladder was climbed
    for setting in bench.settings:
        assert np.array_equal(population.run.val[setting], sequential.run.val[setting], equal_nan=True)


def test_a_candidate_that_diverges_is_never_chosen_and_the_selection_goes_on(digits):
    bench = short(digits)
    base = make_config("der", {"n_epochs": 1, "buffer_size": 30}, bench.defaults)
    result = select_per_task(Branches(bench, "der", base, seed=0), "chf", ChfSettings(grid=(1e30, 0.05)))
    assert len(result.choices) == bench.n_tasks
    for choice in result.choices:
        diverged = [c for c in choice.candidates if c.diverged]
        assert diverged and all(c.values["lr"] == 1e30 for c in diverged)
        assert choice.values["lr"] == 0.05 and not choice.candidates[choice.chosen].diverged


def test_the_proposal_protocols_tell_optuna_every_candidate_and_learn_across_tasks(digits):
    from raycl.tune.space import parse_space
    from raycl.selection import per_member_space

    bench = short(digits)
    base = make_config("derpp", {"n_epochs": 1, "buffer_size": 30}, bench.defaults)
    space = per_member_space(parse_space({"params": {"lr": {"loguniform": [1e-3, 0.3]},
                                                     "minibatch_size": {"choice": [10, 32]},
                                                     "alpha": {"uniform": [0.0, 1.0]}, "beta": {"uniform": [0.0, 1.0]}}},
                                         "derpp", "seq-digits", "s.yaml"), type(base))
    assert sorted(d.name for d in space.dimensions) == ["alpha", "beta", "lr"]  # structural ones stay fixed
    for protocol, by in (("current-task", "current"), ("seen-tasks-val", "seen")):
        study, define = proposal_study(space, seed=0)
        result = select_per_task(Branches(bench, "derpp", base, seed=0), protocol, study=study, define=define,
                                 candidates=3)
        assert len(study.trials) == 3 * bench.n_tasks
        for choice in result.choices:
            numbers = [c.number for c in choice.candidates]
            trials = [study.trials[n] for n in numbers]
            assert all(t.params["task"] == choice.task for t in trials)
            for trial, candidate in zip(trials, choice.candidates):
                assert trial.state.name == "COMPLETE" and trial.value == getattr(candidate, by)
                assert trial.params["lr"] == candidate.values["lr"]
            assert choice.chosen == max(range(3), key=lambda i: (getattr(choice.candidates[i], by), -i))


def test_a_schedule_expands_to_one_config_per_task():
    assert schedule_configs({"lr": [0.1, 0.2], "alpha": 1.0}, 2) == [{"lr": 0.1, "alpha": 1.0},
                                                                     {"lr": 0.2, "alpha": 1.0}]
    from raycl.errors import RayclError

    with pytest.raises(RayclError, match="schedule of 'lr' has 2 values for 5 tasks"):
        schedule_configs({"lr": [0.1, 0.2]}, 5)


def test_only_per_member_hyperparameters_may_change_between_tasks(digits):
    from raycl.errors import RayclError

    config = make_config("derpp", {"buffer_size": 30, "n_epochs": 1}, digits.defaults)
    run = PopulationRun(short(digits), "derpp", config, [0])
    run.set_configs([dataclasses.replace(config, lr=0.2, alpha=0.1)])
    assert float(run.method.member_values("lr")[0]) == pytest.approx(0.2) and float(run.method.member_values("alpha")[0]) == pytest.approx(0.1)
    with pytest.raises(RayclError, match="'minibatch_size' cannot change between tasks.*what may: lr, alpha, beta"):
        run.set_configs([dataclasses.replace(config, minibatch_size=32)])
