"""Cohorts (``--population P``): several configurations in one population, judged at the rungs."""

import copy

import numpy as np
import pytest
import torch

from raycl.cohort import Cohort
from raycl.tune.rungs import RungBoard, cohort_judge
from raycl.vocabulary import Status, config_summaries

DERPP = [{"lr": lr, "alpha": alpha, "beta": 0.5, "buffer_size": 50, "minibatch_size": 10, "n_epochs": 1}
         for lr, alpha in ((0.1, 0.3), (0.003, 1.0), (0.03, 0.1), (0.0003, 0.5))]


def judged(rungs, reduction_factor, final_task=5, size=len(DERPP)):
    """A judge for one cohort from a board of its own."""
    return cohort_judge(RungBoard(rungs, reduction_factor, final_task).judge, [str(c) for c in range(size)])


def test_stopping_at_a_rung_compacts_the_population_and_leaves_survivors_as_if_alone(digits):
    from raycl.methods import make_config
    from raycl.train import PopulationRun

    seeds = [0, 1]
    # Alone at the rungs with reduction factor 2: two of four go past task 1, one of those two past task 2.
    cohort = Cohort(DERPP, [digits], "derpp", seeds, rungs=(1, 2), judge=judged((1, 2), 2), dtype=torch.float64)
    cohort.run_task()
    survivors = cohort.live
    assert len(survivors) == 2 and len(cohort.population.alive) == 2 * len(seeds)  # dropped members are gone
    assert {r.status for c, r in enumerate(cohort.records) if c not in survivors} == {Status.PRUNED}
    while not cohort.finished:
        cohort.run_task()
    statuses = [r.status for r in cohort.records]
    assert statuses.count(Status.COMPLETED) == 1 and statuses.count(Status.PRUNED) == 3
    for c, record in enumerate(cohort.records):
        assert record.tasks == len(record.objective_by_task) == (5 if record.status == Status.COMPLETED else
                                                                 1 if c not in survivors else 2)
    # Every configuration's numbers, for the tasks it trained, equal a run of it alone on the same seeds.
    for c, record in enumerate(cohort.records):
        alone = PopulationRun(digits, "derpp", make_config("derpp", DERPP[c], digits.defaults), seeds,
                              dtype=torch.float64, test_every_task=False)
        for _ in range(record.tasks):
            alone.run_task()
        for setting in digits.settings:
            assert np.array_equal(cohort.population.val[setting][cohort.members(c)], alone.val[setting], equal_nan=True)
        if record.status == Status.COMPLETED:
            assert record.test["class_il"] == pytest.approx(alone.test["class_il"][:, -1].mean(0).tolist())


def test_a_diverging_configuration_fails_alone_and_the_cohort_goes_on(digits):
    configs = [{"lr": lr, "n_epochs": 1} for lr in (0.1, 1.0e30, 0.05)]
    cohort = Cohort(configs, [digits], "sgd", [0])
    while not cohort.finished:
        task = cohort.run_task()
        report = cohort.report(task)
        assert report["diverged"] is False and config_summaries(report)["1"]["status"] == Status.DIVERGED
    assert [r.status for r in cohort.records] == [Status.COMPLETED, Status.DIVERGED, Status.COMPLETED]
    assert "seed 0: loss diverged" in cohort.records[1].reason
    assert all(len(cohort.records[c].objective_by_task) == 5 for c in (0, 2))


def test_a_cohort_resumes_from_its_task_checkpoint_with_the_same_live_members(digits):
    def build():
        return Cohort(DERPP, [digits], "derpp", [0], rungs=(1,), judge=judged((1,), 4))

    whole = build()
    while not whole.finished:
        whole.run_task()
    first = build()
    first.run_task()
    first.run_task()
    second = build()
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    assert second.live == first.live and second.population.alive == first.population.alive
    while not second.finished:
        second.run_task()
    assert [r.status for r in second.records] == [r.status for r in whole.records]
    for a, b in zip(second.records, whole.records):
        assert a.objective_by_task == b.objective_by_task and a.test == b.test


def test_a_cohort_whose_configurations_all_diverge_ends_after_that_task(digits):
    cohort = Cohort([{"lr": lr, "n_epochs": 1} for lr in (1e30, 3e30)], [digits], "sgd", [0],
                    rungs=(1, 4), judge=judged((1, 4), 4, size=2))
    task = cohort.run_task()
    assert cohort.finished and cohort.population.next_task == 1 and cohort.live == []
    assert [r.status for r in cohort.records] == [Status.DIVERGED, Status.DIVERGED]
    report = cohort.report(task)
    assert report["diverged"] is True and report["live"] == 0
    assert {c["status"] for c in config_summaries(report).values()} == {Status.DIVERGED}


def test_equal_accuracies_at_a_rung_are_ranked_by_the_lower_validation_loss():
    from raycl.cohort import task_metrics
    from raycl.population.record import AccuracyRecord
    from raycl.vocabulary import OBJECTIVE, RUNG_SCORE

    # Two configurations with the same validation accuracies after task 1, one with the lower loss.
    val = np.array([[[99.5, np.nan]], [[99.5, np.nan]]]).repeat(2, 1)
    loss = np.array([[[0.03, np.nan]], [[0.01, np.nan]]]).repeat(2, 1)
    record = AccuracyRecord(2, 2, ("class_il",))
    record.val, record.val_loss = {"class_il": val}, loss
    higher, lower = (task_metrics(record, [0, 0], 0, [m]) for m in (0, 1))
    assert higher[OBJECTIVE] == lower[OBJECTIVE] == 99.5
    assert lower[RUNG_SCORE] > higher[RUNG_SCORE]
    # The loss never outweighs one validation example: a better accuracy always ranks first.
    assert higher[OBJECTIVE] - 1e-4 * 100 < higher[RUNG_SCORE] < higher[OBJECTIVE]
    board = RungBoard((1,), 2, 5)
    assert board.judge(1, {"a": higher[RUNG_SCORE], "b": lower[RUNG_SCORE]}) == {"a": False, "b": True}


def test_a_report_names_each_configuration_once_and_tune_sees_no_metric_per_configuration(digits):
    """Tune flattens nested mappings of a result into metrics it keeps, analyses and writes in every
    snapshot of the experiment, per trial: a job of 16 configurations would add dozens of them.
    Summaries come as a list, which it keeps as one value; the searcher reads them by key."""
    from ray.tune.utils import flatten_dict

    cohort = Cohort([{"lr": lr, "n_epochs": 1} for lr in (0.1, 0.05)], [digits], "sgd", [0])
    report = cohort.report(cohort.run_task())
    assert not [k for k in flatten_dict(report) if k.startswith("configs/")]
    summaries = config_summaries(report)
    assert list(summaries) == ["0", "1"] and summaries["1"]["task"] == 1 and "key" not in summaries["1"]
    flattened = flatten_dict({"task": 1, "configs": {"0": {"status": "running", "task": 1}}})  # as results were
    assert config_summaries(flattened) == {"0": {"status": "running", "task": 1}}
