"""Cohorts (``--population P``): several configurations in one population, halved inside the trial."""

import copy

import numpy as np
import pytest
import torch

from raycl.tune.trainable import COMPLETED, DIVERGED, PRUNED, Cohort, keep_top

DERPP = [{"lr": lr, "alpha": alpha, "beta": 0.5, "buffer_size": 50, "minibatch_size": 10, "n_epochs": 1}
         for lr, alpha in ((0.1, 0.3), (0.003, 1.0), (0.03, 0.1), (0.0003, 0.5))]


def test_keep_top_keeps_the_best_fraction():
    assert keep_top({0: 1.0, 1: 4.0, 2: 2.0, 3: 3.0}, 4) == {1}
    assert keep_top({0: 1.0, 1: 4.0, 2: 2.0, 3: 3.0}, 2) == {1, 3}
    assert keep_top({c: float(c) for c in range(25)}, 4) == {19, 20, 21, 22, 23, 24}
    assert keep_top({0: 1.0, 1: 2.0}, 4) == {1}  # never none
    assert keep_top({2: 5.0, 0: 5.0, 1: 1.0}, 2) == {0}  # equal scores: the lower key


def test_halving_compacts_the_population_and_leaves_survivors_as_if_alone(digits):
    from raycl.methods import make_config
    from raycl.train import PopulationRun

    seeds = [0, 1]
    cohort = Cohort(DERPP, [digits], "derpp", seeds, rungs=(1, 2), reduction_factor=2, dtype=torch.float64)
    cohort.run_task()
    survivors = cohort.live
    assert len(survivors) == 2 and len(cohort.stream.alive) == 2 * len(seeds)  # dropped members are gone
    assert {r.status for c, r in enumerate(cohort.records) if c not in survivors} == {PRUNED}
    while not cohort.finished:
        cohort.run_task()
    statuses = [r.status for r in cohort.records]
    assert statuses.count(COMPLETED) == 1 and statuses.count(PRUNED) == 3
    for c, record in enumerate(cohort.records):
        assert record.tasks == len(record.objective_by_task) == (5 if record.status == COMPLETED else
                                                                 1 if c not in survivors else 2)
    # Every configuration's numbers, for the tasks it trained, equal a run of it alone on the same seeds.
    for c, record in enumerate(cohort.records):
        alone = PopulationRun(digits, "derpp", make_config("derpp", DERPP[c], digits.defaults), seeds,
                              dtype=torch.float64, test_every_task=False)
        for _ in range(record.tasks):
            alone.run_task()
        for setting in digits.settings:
            assert np.array_equal(cohort.stream.val[setting][cohort.members(c)], alone.val[setting], equal_nan=True)
        if record.status == COMPLETED:
            assert record.test["class_il"] == pytest.approx(alone.test["class_il"][:, -1].mean(0).tolist())


def test_a_diverging_configuration_fails_alone_and_the_cohort_goes_on(digits):
    configs = [{"lr": lr, "n_epochs": 1} for lr in (0.1, 1.0e30, 0.05)]
    cohort = Cohort(configs, [digits], "sgd", [0])
    while not cohort.finished:
        task = cohort.run_task()
        report = cohort.report(task)
        assert report["diverged"] is False and report["configs"]["1"]["status"] == DIVERGED
    assert [r.status for r in cohort.records] == [COMPLETED, DIVERGED, COMPLETED]
    assert "seed 0: loss diverged" in cohort.records[1].reason
    assert all(len(cohort.records[c].objective_by_task) == 5 for c in (0, 2))


def test_a_cohort_resumes_from_its_task_checkpoint_with_the_same_live_members(digits):
    def build():
        return Cohort(DERPP, [digits], "derpp", [0], rungs=(1,), reduction_factor=4)

    whole = build()
    while not whole.finished:
        whole.run_task()
    first = build()
    first.run_task()
    first.run_task()
    second = build()
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    assert second.live == first.live and second.stream.alive == first.stream.alive
    while not second.finished:
        second.run_task()
    assert [r.status for r in second.records] == [r.status for r in whole.records]
    for a, b in zip(second.records, whole.records):
        assert a.objective_by_task == b.objective_by_task and a.test == b.test
