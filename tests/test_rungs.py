"""Early stopping per configuration: the rung board, its file, the rung diagnostic, the edge warning."""

import random

import pytest

from raycl.tune.rung_signal import WEAK_BELOW, RungSignal, rung_signal, spearman, unjudged_note, weak_warning
from raycl.tune.rungs import RungBoard, RungService, cohort_judge, read_board, rung_schedule


class Trial:
    def __init__(self, trial_id):
        self.trial_id = trial_id


@pytest.mark.parametrize("first, factor, final", [(1, 4, 5), (2, 4, 5), (1, 2, 20), (2, 4, 20), (1, 3, 27), (3, 2, 50)])
def test_rungs_sit_where_tunes_asha_puts_its_milestones(first, factor, final):
    from ray.tune.schedulers import ASHAScheduler

    asha = ASHAScheduler(max_t=final, grace_period=first, reduction_factor=factor, metric="m", mode="max")
    milestones = sorted(m for m, _ in asha._brackets[0]._rungs if m < final)
    assert rung_schedule(first, factor, final) == tuple(milestones)


@pytest.mark.parametrize("seed", range(4))
def test_one_configuration_per_trial_is_judged_as_tunes_asha_judges_it(seed):
    """The same results, in the same order, given to Tune's ASHA scheduler and to the board."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    rng = random.Random(seed)
    final, rungs = 20, rung_schedule(1, 3, 20)  # rungs 1, 3, 9
    asha = ASHAScheduler(time_attr="task", metric="score", mode="max", max_t=final, grace_period=1,
                         reduction_factor=3)
    board = RungBoard(rungs, 3, final)
    live = {f"t{i}": rng.uniform(0, 100) for i in range(40)}
    for name in live:
        asha.on_trial_add(None, Trial(name))
    tasks = dict.fromkeys(live, 0)
    stopped_by = {"asha": set(), "board": set()}
    while live:  # trials advance in a random interleaving, as asynchronous trials do
        name = rng.choice(sorted(live))
        tasks[name] += 1
        score = round(live[name] + rng.gauss(0, 10), 1)  # ties happen, as they do at a rung
        tune_says = asha.on_trial_result(None, Trial(name), {"task": tasks[name], "score": score})
        if tasks[name] in rungs:
            kept = board.judge(tasks[name], {name: score})[name]
            if not kept:
                stopped_by["board"].add(name)
        if tune_says == TrialScheduler.STOP and tasks[name] < final:
            stopped_by["asha"].add(name)
        if name in stopped_by["asha"] or name in stopped_by["board"] or tasks[name] == final:
            del live[name]
    assert stopped_by["board"] == stopped_by["asha"] and len(stopped_by["asha"]) > 10


def test_a_cohort_is_judged_against_the_whole_rung_with_its_mates_already_recorded():
    board = RungBoard((2,), 4, 5)
    assert board.judge(2, {"a": 1.0}) == {"a": True}  # nothing recorded yet
    # Each against a and its two mates: b against {1, 3, 4} (75th percentile 3.5) stops, c against
    # {1, 2, 4} (3.0) and d against {1, 2, 3} (2.5) go on. Against a alone all three would.
    assert board.judge(2, {"b": 2.0, "c": 3.0, "dd": 4.0}) == {"b": False, "c": True, "dd": True}
    board = RungBoard((2,), 4, 5)
    board.judge(2, {"a": 1.0})
    board.judge(2, {"b": 2.0, "c": 3.0})
    # d against {1, 2, 3, 0}: 75th percentile 2.25, so 4 goes on; e against {1, 2, 3, 4}: 3.25, so 0 stops.
    assert board.judge(2, {"d": 4.0, "e": 0.0}) == {"d": True, "e": False}
    # A retried task asks again: the decision recorded stands, whatever it scores now.
    assert board.judge(2, {"e": 99.0}) == {"e": False}
    assert [e.config for e in board.events] == ["a", "b", "c", "d", "e"]
    # Inside one cohort the order does not matter.
    other = RungBoard((2,), 4, 5)
    other.judge(2, {"a": 1.0})
    other.judge(2, {"c": 3.0, "b": 2.0})
    assert other.judge(2, {"e": 0.0, "d": 4.0}) == {"d": True, "e": False}
    # Audited configurations are recorded and judged, but never stopped.
    assert board.judge(2, {"f": -5.0, "g": -5.0}, audit=["f"]) == {"f": True, "g": False}
    f = next(e for e in board.events if e.config == "f")
    assert f.audit and f.kept and not f.verdict


def test_the_board_file_survives_a_new_service_and_a_retried_trial(tmp_path):
    location = str(tmp_path / "exp" / "rungs.jsonl")
    first = RungService(location, (1, 4), 4, 5)
    first.judge(1, {"x-0": 50.0, "x-1": 10.0, "x-2": 70.0, "x-3": 60.0})
    first.judge(4, {"x-2": 80.0})
    again = RungService(location, (1, 4), 4, 5)  # a resumed search, or the actor restarted
    assert again.events() == first.events()
    assert again.judge(1, {"x-1": 100.0}) == first.judge(1, {"x-1": 100.0})  # retried: the same answer
    # A later cohort is judged against what the earlier run recorded.
    assert again.judge(1, {"y": 55.0}) == {"y": False}
    assert read_board(location).events == again.events()
    assert read_board(str(tmp_path / "none.json")) is None


def test_two_cohorts_share_the_rung_and_the_one_below_the_cut_stops_there(digits):
    import torch

    from raycl.cohort import Cohort
    from raycl.vocabulary import Status

    COMPLETED, PRUNED = Status.COMPLETED, Status.PRUNED

    def cohort(lrs, board, name):
        return Cohort([{"lr": lr, "n_epochs": 1} for lr in lrs], [digits], "sgd", [0], rungs=(2,),
                      judge=cohort_judge(board.judge, [f"{name}-{c}" for c in range(len(lrs))]),
                      dtype=torch.float64)

    board = RungBoard((2,), 4, digits.n_tasks)
    good = cohort((0.1, 0.05, 0.2, 0.08), board, "good")
    while not good.finished:
        good.run_task()
    assert COMPLETED in [r.status for r in good.records]
    starved = cohort((1e-6, 2e-6, 3e-6, 4e-6), board, "starved")
    trained = 0
    while not starved.finished:
        starved.run_task()
        trained += 1
    # Every configuration of the starved cohort scored below the cut: the cohort ended at the rung.
    assert trained == 2 and starved.population.next_task == 2
    assert [r.status for r in starved.records] == [PRUNED] * 4 and starved.live == []
    # Compared only with itself (the first cohort at a rung) it keeps its best to the end.
    alone = cohort((1e-6, 2e-6, 3e-6, 4e-6), RungBoard((2,), 4, digits.n_tasks), "alone")
    while not alone.finished:
        alone.run_task()
    assert [r.status for r in alone.records].count(COMPLETED) >= 1


# ----- the rung diagnostic ----------------------------------------------------------------------------
def _row(status, curve, audit=False):
    return {"status": status, "objective_by_task": curve, "tasks_trained": len(curve),
            "objective": curve[-1] if status == "completed" else None, "audit": audit}


def test_the_rung_signal_counts_and_correlates_on_a_table_with_a_known_answer():
    from scipy.stats import spearmanr

    # Twelve completed survivors whose task-2 order is the final order reversed except one swap, five
    # audited ones ranked exactly alike, three stopped at task 2 and one that diverged in task 2.
    finals = [80.0 + k for k in range(12)]
    at_two = [99.0 - k for k in range(12)]
    at_two[0], at_two[1] = at_two[1], at_two[0]
    rows = [_row("completed", [99.5, a, 90.0, 88.0, f]) for a, f in zip(at_two, finals)]
    rows += [_row("completed", [99.0, 50.0 + k, 80.0, 85.0, 70.0 + k], audit=True) for k in range(5)]
    rows += [_row("pruned", [99.0, 10.0]) for _ in range(3)]
    rows += [_row("diverged", [99.0, 0.0]), _row("pruned", [99.1])]
    (two,) = rung_signal(rows, [2])
    assert isinstance(two, RungSignal)
    assert (two.judged, two.stopped) == (20, 3)  # 12 + 5 + 3; the diverged one never reached the rung
    expected = spearmanr(at_two, finals).statistic
    assert two.survivors.n == 12 and two.survivors.rho == pytest.approx(expected) and expected < -0.9
    assert two.audited.n == 5 and two.audited.rho == pytest.approx(1.0)
    # The audited sample is the evidence; five are too few to call the rung weak or strong.
    assert two.evidence is two.audited and not two.weak
    assert "rungs not judged" in unjudged_note([two])
    (one,) = rung_signal(rows, [1])
    assert (one.judged, one.stopped) == (22, 1)


def test_only_configurations_never_stopped_can_call_a_rung_weak():
    # Survivors ranked at random: range restriction alone would produce that, so no verdict.
    shuffled = [_row("completed", [99.0, 50.0 + (7 * k) % 12, 80.0, 85.0, 70.0 + k]) for k in range(12)]
    (two,) = rung_signal(shuffled, [2])
    assert two.survivors.n == 12 and abs(two.survivors.rho) < WEAK_BELOW and not two.weak
    assert unjudged_note([two]) is not None
    # The same ranking among twelve audited configurations is evidence: the rung is weak.
    audited = [{**row, "audit": True} for row in shuffled]
    (two,) = rung_signal(audited, [2])
    assert two.evidence is two.audited and two.weak and unjudged_note([two]) is None
    assert "never stopped early" in weak_warning(two) and "over 12 audited" in weak_warning(two)


def test_a_rung_with_few_completed_configurations_is_not_called_weak():
    rows = [_row("completed", [50.0, 90.0 - k]) for k in range(5)]
    (signal,) = rung_signal(rows, [1])
    assert signal.survivors.rho is None  # every rung score equal: no ranking
    assert not signal.weak
    assert spearman([1.0, 2.0], [2.0, 1.0]) is None


# ----- the edge of the space ----------------------------------------------------------------------------
def test_a_winner_at_the_edge_of_its_range_is_named_with_the_bound():
    from raycl.tune.space import parse_space, edge_warnings

    space = parse_space({"params": {"alpha": {"loguniform": [0.05, 2.0]}, "beta": {"uniform": [0.0, 1.5]},
                                    "lr": {"loguniform": [0.005, 0.3]}, "minibatch_size": {"choice": [10, 32]}}},
                        "derpp", "seq-mnist", "derpp.yaml")
    # 1.70 of [0.05, 2.0] is 96% of the way on the log scale (85% on a linear one).
    warnings = edge_warnings(space, {"alpha": 1.70, "beta": 0.7, "lr": 0.0051, "minibatch_size": 32})
    assert len(warnings) == 2
    assert "alpha = 1.7 lies within 4% of the upper bound 2 of its range [0.05, 2] (log scale)" in warnings[0]
    assert "lr = 0.0051 lies within 0% of the lower bound 0.005" in warnings[1]
    assert edge_warnings(space, {"alpha": 0.3, "beta": 1.5, "lr": 0.05})[0].startswith(
        "the winner's beta = 1.5 lies at the upper bound 1.5")
    assert edge_warnings(space, {"alpha": 0.3, "beta": 0.7, "lr": 0.05, "minibatch_size": 10}) == []
