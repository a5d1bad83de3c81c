"""Members of different buffer sizes in one population: each is exactly the run it would be alone.

The sizes are the papers' 200 / 500 / 5120 scaled down to 20 / 50 / 512 on seq-digits cut to 600
training examples: the 20- and 50-example reservoirs fill and then replace while the 512-example
one still fills (it fills at example 512 and replaces over the last 88). Everything in float64,
compared bit for bit: every piece of a member's state (networks, optimiser, buffer rows and draw
plans, moving averages, random streams) and its accuracy record.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import raycl.buffer
import raycl.population.random
import solo_reference
from raycl.buffer import PopulationReservoir, RaggedSample
from raycl.errors import RayclError
from raycl.hparams import check_changes, param_specs, structural_names
from raycl.methods import make_config
from raycl.methods.base import ReplayConfig
from raycl.population.random import MemberRandom, Stream
from raycl.selection import per_member_space
from raycl.train import PopulationRun
from raycl.tune.space import parse_space
from test_member_moves import assert_same_member, run_tasks, with_more_drawn_ahead

F64 = torch.float64
REPO = Path(__file__).resolve().parents[1]
SIZES = (20, 512, 50)  # 200, 5120, 500 scaled down; the smallest first, the largest beside it
ERACE = "raycl_erace.method:ErAce"
METHOD_VALUES = {
    "er": {}, "der": {"alpha": 0.5}, "derpp": {"alpha": 0.3, "beta": 0.7}, "agem": {},
    "clser": {"reg_weight": 0.5, "stable_update_freq": 0.6, "plastic_update_freq": 0.8},
    "synergy": {"ema_update_freq": 0.7, "fisher_update_freq": 0.5, "penalty_weight": 1.0},
    "mer": {"batches_per_example": 2, "beta": 0.3},
    "mer-batched": {"batches_per_example": 2, "variant": "batched"},
    "erace": {"replay_weight": 0.8},
}
# Minibatches: below every size (the members replay as many rows), and above the smallest (the
# smallest replays fewer rows than the others: a RaggedSample, computed on per group of members).
# MER takes a step per row, so it is scaled further down.
MINIBATCH = {"even": 8, "ragged": 24}
MER_SIZES = {"even": ((20, 512, 50), 3), "ragged": ((2, 512, 50), 3)}


@pytest.fixture
def erace_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "examples" / "raycl-erace"))


def short(benchmark, n_train=solo_reference.N_TRAIN):
    return solo_reference.short(benchmark, n_train)


def method_of(case: str) -> str:
    name = case.split("-")[0]
    return ERACE if name == "erace" else name


def rows_of(case: str, variant: str) -> list[dict]:
    sizes, minibatch = MER_SIZES[variant] if case.startswith("mer") else (SIZES, MINIBATCH[variant])
    return [{"lr": lr, "buffer_size": size, "minibatch_size": minibatch, **METHOD_VALUES[case]}
            for lr, size in zip((0.05, 0.03, 0.07), sizes)]


def trained(bench, method, rows, seeds, tasks=None) -> PopulationRun:
    configs = [make_config(method, {"n_epochs": 1, **row}, bench.defaults) for row in rows]
    run = PopulationRun(bench, method, configs, seeds, dtype=F64)
    return run_tasks(run, bench.n_tasks if tasks is None else tasks)


@pytest.fixture
def samples_seen(monkeypatch):
    """Every sample the reservoirs give (``sample`` and ``all``), in order."""
    seen = []

    def spied(call):
        def spy(self, *args, **kwargs):
            seen.append(call(self, *args, **kwargs))
            return seen[-1]

        return spy

    monkeypatch.setattr(PopulationReservoir, "sample", spied(PopulationReservoir.sample))
    monkeypatch.setattr(PopulationReservoir, "all", spied(PopulationReservoir.all))
    return seen


# ----- the required test: a member of each size equals its solo run, every replay method -------------------
@pytest.mark.parametrize("variant", sorted(MINIBATCH))
@pytest.mark.parametrize("case", sorted(METHOD_VALUES))
def test_a_member_of_each_buffer_size_equals_its_solo_run(case, variant, digits, erace_on_path, samples_seen):
    bench = short(digits)
    rows = rows_of(case, variant)
    seeds = [3, 4, 5]
    population = trained(bench, method_of(case), rows, seeds)
    buffer = population.method.buffer
    assert buffer.lengths() == [row["buffer_size"] for row in rows] or case == "agem"
    assert (variant == "ragged" or case in ("agem", "synergy")) == any(isinstance(s, RaggedSample)
                                                                       for s in samples_seen)
    for i, (row, seed) in enumerate(zip(rows, seeds)):
        (alone,) = trained(bench, method_of(case), [row], [seed]).export_members()
        assert_same_member(population.export_members([i])[0], alone)
    # The members really are other runs.
    assert not np.array_equal(population.val_loss[0], population.val_loss[2], equal_nan=True)


@pytest.mark.parametrize("method", ["agem", "clser", "derpp"])
def test_a_resnet_member_of_each_buffer_size_equals_its_solo_run(method, tiny_cifar, monkeypatch):
    """Batch norm's running statistics written back from groups of members, augmentation drawn per
    group, moving averages run on groups; sizes 4 / 60 / 10 with a minibatch of 6 on 90 examples.
    (Not SYNERgy: its per-example Fisher on the ResNet depends on the population's size in the last
    bits, mixed sizes or not; tests/test_convolutional_populations.py checks it to 1e-9.)"""
    import raycl.models

    monkeypatch.setitem(raycl.models.BASE_FILTERS, tiny_cifar.model, 4)
    values = {"agem": {}, "derpp": {"alpha": 0.3, "beta": 0.7}, "clser": {"reg_weight": 0.5}}[method]
    rows = [{"lr": lr, "batch_size": 4, "minibatch_size": 6, "buffer_size": size, **values}
            for lr, size in ((0.05, 4), (0.03, 60), (0.07, 10))]
    population = trained(tiny_cifar, method, rows, [3, 4, 5])
    for i in range(3):
        (alone,) = trained(tiny_cifar, method, [rows[i]], [3 + i]).export_members()
        assert_same_member(population.export_members([i])[0], alone)


# ----- existing best-args replay as before -------------------------------------------------------------------
RECORDED = json.loads((REPO / "tests" / "data" / "solo_numbers.json").read_text())


@pytest.fixture(scope="module")
def recorded_environment():
    if RECORDED["environment"] != solo_reference.environment():
        pytest.skip(f"the solo numbers were recorded on {RECORDED['environment']}; float64 kernels differ elsewhere")


@pytest.mark.parametrize("case", sorted(solo_reference.CASES))
def test_a_solo_run_gives_the_numbers_of_the_code_before_buffer_sizes_were_per_member(
        case, digits, erace_on_path, recorded_environment):
    assert_recorded(solo_reference.numbers(short(digits), case, solo_reference.CASES[case]), case)


def assert_recorded(found: dict, case: str) -> None:
    """``found`` equals the record of ``case``, on the settings the record holds (masked Class-IL is
    scored since it was written)."""
    recorded = RECORDED["cases"][case]
    for split in ("test", "val"):
        found[split] = {s: found[split][s] for s in recorded[split]}
    assert json.dumps(found) == json.dumps(recorded)


def test_a_solo_resnet_run_gives_the_numbers_of_the_code_before(tmp_path, recorded_environment, monkeypatch):
    import raycl.models

    monkeypatch.setattr(raycl.models, "BASE_FILTERS", dict(raycl.models.BASE_FILTERS))
    bench = solo_reference.narrow_cifar(tmp_path)
    for case, row in solo_reference.RESNET_CASES.items():
        assert_recorded(solo_reference.numbers(bench, case, row), case)


# ----- members moving between populations of other sizes -------------------------------------------------------
@pytest.mark.parametrize("method", ["agem", "derpp", "synergy"])
def test_a_member_exported_from_a_mixed_population_continues_exactly_in_one_of_other_sizes(method, digits,
                                                                                            monkeypatch):
    """The member of 50 trains two tasks beside members of 20 and 512, then the rest with members of
    512, 50 and 30 trained elsewhere (the 50 holding many more random numbers drawn ahead), and ends
    as its solo run. Small random blocks: the numbers drawn at the join are handed out in training."""
    monkeypatch.setattr(raycl.population.random, "_BLOCK", 50)
    bench = short(digits)
    values = {"minibatch_size": 24, **METHOD_VALUES[method]}
    rows = [{"lr": lr, "buffer_size": size, **values} for lr, size in ((0.05, 20), (0.03, 50), (0.07, 512))]
    solo = trained(bench, method, rows[1:2], [4])
    (member,) = trained(bench, method, rows, [3, 4, 5], tasks=2).export_members([1])
    others = trained(bench, method, [{**rows[2], "lr": 0.02}, {**rows[1], "lr": 0.04}, {**rows[0], "buffer_size": 30}],
                     [6, 7, 8], tasks=2).export_members()
    joined = PopulationRun.from_members(bench, method, [others[0], with_more_drawn_ahead(others[1], 300), member,
                                                        others[2]])
    assert joined.method.buffer.capacities == [512, 50, 50, 30]
    run_tasks(joined, bench.n_tasks - 2)
    assert_same_member(joined.export_members([2])[0], solo.export_members()[0])


# ----- the reservoir itself ---------------------------------------------------------------------------------
CAPACITIES = [2, 5, 9, 5]


def feed(buffer: PopulationReservoir, start: int, n: int) -> None:
    ids = torch.arange(start, start + n, dtype=F64)
    members = buffer.random.size
    buffer.add(ids.view(1, n, 1).expand(members, n, 1), ids.long().expand(members, n),
               logits=ids.view(1, n, 1).expand(members, n, 2), task=start // 10)


def solo_reservoirs(seeds):
    return [PopulationReservoir(c, (1,), 2, MemberRandom([s], Stream.BUFFER), "cpu", F64)
            for c, s in zip(CAPACITIES, seeds)]


def member_rows(buffer: PopulationReservoir, p: int) -> dict:
    return {k: v for k, v in buffer.member_states([p])[0].items() if k != "random"}


def same_rows(sample, alone_sample) -> bool:
    return all(torch.equal(getattr(sample, f), getattr(alone_sample, f)) for f in ("x", "y", "logits", "task"))


def check_against_solo(buffer: PopulationReservoir, alone: list[PopulationReservoir], size: int, draws: int) -> bool:
    """The members' next samples of ``size`` (``draws`` of them) and stored rows equal their solo
    reservoirs', member by member; whether the members gave different numbers of rows."""
    got = buffer.sample(size, draws=draws)
    expected = [a.sample(size, draws=draws) for a in alone]
    groups = got.groups if isinstance(got, RaggedSample) else [raycl.buffer.MemberGroup(torch.arange(len(alone)), got)]
    for group in groups:
        for k, p in enumerate(group.positions.tolist()):
            if group.sample is None:
                assert alone[p].is_empty()
                continue
            mine = group.sample if isinstance(group.sample, list) else [group.sample]
            theirs = expected[p] if isinstance(expected[p], list) else [expected[p]]
            for a, b in zip(mine, theirs, strict=True):
                assert same_rows(raycl.buffer.BufferSample(a.x[k:k + 1], a.y[k:k + 1], a.logits[k:k + 1],
                                                           a.task[k:k + 1]), b), (p, size)
    for p, a in enumerate(alone):
        mine, theirs = member_rows(buffer, p), member_rows(a, 0)
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert repr(mine[key]) == repr(theirs[key]), (p, key)
    return isinstance(got, RaggedSample)


def test_members_of_different_capacities_draw_and_hold_what_each_reservoir_alone_would(monkeypatch):
    """Capacities 2, 5, 9, 5 fed in batches of 3: the 2 replaces while the 9 fills and draws nothing;
    samples of 1 (every member gives one row), 4 (the 2 gives fewer) and two draws of 6, all
    against four solo reservoirs; then the population keeps the 9, the 2 twice and the first 5
    (positions 2, 0, 0, 1), saves and restores itself, and still matches."""
    monkeypatch.setattr(raycl.population.random, "_BLOCK", 40)
    seeds = [3, 4, 5, 6]
    buffer = PopulationReservoir(CAPACITIES, (1,), 2, MemberRandom(seeds, Stream.BUFFER), "cpu", F64)
    alone = solo_reservoirs(seeds)
    ragged = []
    for step in range(12):
        feed(buffer, 3 * step, 3)
        for a in alone:
            feed(a, 3 * step, 3)
        for size, draws in ((1, 1), (4, 1), (6, 2)):
            ragged.append(check_against_solo(buffer, alone, size, draws))
    assert buffer.lengths() == CAPACITIES and buffer.seen == 36
    assert ragged[-3:] == [False, True, True]  # every member gives 1 row; the 2 fewer than 4 or 6
    with pytest.raises(RayclError, match=r"hold \[2, 5, 9\] examples: no one capacity"):
        buffer.examples
    assert isinstance(buffer.all(), RaggedSample) and isinstance(buffer.sample(4), RaggedSample)
    for a in alone:
        a.sample(4)
    buffer.select(torch.tensor([2, 0, 0, 1]))
    twin = PopulationReservoir(2, (1,), 2, MemberRandom([3], Stream.BUFFER), "cpu", F64)
    twin.load_state_dict(alone[0].state_dict())
    alone = [alone[2], alone[0], twin, alone[1]]
    restored = PopulationReservoir([9, 2, 2, 5], (1,), 2, MemberRandom([0, 0, 0, 0], Stream.BUFFER), "cpu", F64)
    restored.load_state_dict(buffer.state_dict())
    for step in range(12, 20):
        feed(restored, 3 * step, 3)
        for a in alone:
            feed(a, 3 * step, 3)
        check_against_solo(restored, alone, 4, 2)


def test_members_of_different_capacities_join_from_other_reservoirs_and_go_on_as_alone():
    seeds = [3, 4, 5, 6]
    first = PopulationReservoir([5, 2], (1,), 2, MemberRandom(seeds[:2], Stream.BUFFER), "cpu", F64)
    second = PopulationReservoir([9, 5], (1,), 2, MemberRandom(seeds[2:], Stream.BUFFER), "cpu", F64)
    alone = solo_reservoirs([4, 3, 5, 6])  # capacities 2, 5, 9, 5
    for step in range(5):
        for buffer in (first, second, *alone):
            feed(buffer, 3 * step, 3)
            buffer.sample(4)
    pieces = first.member_states([1, 0]) + second.member_states([0, 1])
    joined = PopulationReservoir(CAPACITIES, (1,), 2, MemberRandom([4, 3, 5, 6], Stream.BUFFER), "cpu", F64)
    joined.load_state_dict(joined.joined_state(pieces))
    for step in range(5, 12):
        feed(joined, 3 * step, 3)
        for a in alone:
            feed(a, 3 * step, 3)
        check_against_solo(joined, alone, 4, 1)
    # A member whose reservoir is of another size than its place, or members of one size whose counts
    # of examples seen differ: named in one line.
    wrong = PopulationReservoir([5, 5, 9, 5], (1,), 2, MemberRandom([4, 3, 5, 6], Stream.BUFFER), "cpu", F64)
    with pytest.raises(RayclError, match=r"reservoirs of \[2, 5, 9, 5\] examples cannot take the places of "
                                         r"reservoirs of \[5, 5, 9, 5\]"):
        wrong.joined_state(pieces)
    behind = dict(pieces[3], seen=7)
    with pytest.raises(RayclError, match="counts of examples seen differ"):
        joined.joined_state(pieces[:3] + [behind])


def test_members_adding_different_numbers_of_rows_hold_each_their_own():
    """A-GEM's share of a task per member: each member's first rows only, its spare slot untouched;
    members of one capacity add as many."""
    seeds = [3, 4, 5, 6]
    buffer = PopulationReservoir(CAPACITIES, (1,), 2, MemberRandom(seeds, Stream.BUFFER), "cpu", F64)
    alone = solo_reservoirs(seeds)
    ids = torch.arange(4, dtype=F64)
    buffer.add(ids.view(1, 4, 1).expand(4, 4, 1), ids.long().expand(4, 4), counts=[1, 3, 4, 3])
    for a, count in zip(alone, [1, 3, 4, 3]):
        a.add(ids[:count].view(1, count, 1), ids[:count].long()[None])
    check_against_solo(buffer, alone, 2, 1)
    with pytest.raises(RayclError, match="counts of rows the members of one buffer size add differ"):
        buffer.add(ids.view(1, 4, 1).expand(4, 4, 1), ids.long().expand(4, 4), counts=[1, 3, 4, 2])


def test_a_mixed_reservoir_takes_the_memory_of_its_members_reservoirs_apart():
    """Stored flat, member after member: no member pays for the largest capacity."""
    capacities = [200, 5120, 500]
    mixed = PopulationReservoir(capacities, (784,), 10, MemberRandom([0, 1, 2], Stream.BUFFER), "cpu")
    apart = [PopulationReservoir(c, (784,), 10, MemberRandom([s], Stream.BUFFER), "cpu")
             for c, s in zip(capacities, range(3))]

    def nbytes(buffer):
        return sum(t.numel() * t.element_size() for t in (buffer._examples, buffer._labels, buffer._logits,
                                                          buffer._tasks))

    assert nbytes(mixed) == sum(nbytes(b) for b in apart)


# ----- random streams drawn for some members ------------------------------------------------------------------
def test_draws_for_some_members_hand_each_member_its_own_numbers(monkeypatch):
    """Random draws for all members and for subsets, checkpoints and member moves in between: each
    member's numbers are those of its stream drawn alone."""
    monkeypatch.setattr(raycl.population.random, "_BLOCK", 50)
    rng = np.random.default_rng(1)
    seeds = [3, 4, 5, 6]
    whole = MemberRandom(seeds, Stream.BUFFER)
    alone = [MemberRandom([s], Stream.BUFFER) for s in seeds]
    got, expected = [[] for _ in seeds], [[] for _ in seeds]
    for step in range(300):
        n = int(rng.integers(1, 70))
        positions = sorted(rng.choice(4, size=int(rng.integers(1, 5)), replace=False).tolist())
        drawn = whole.members(positions).uniform(n, dtype=F64)
        for k, p in enumerate(positions):
            got[p].append(drawn[k])
            expected[p].append(alone[p].uniform(n, dtype=F64)[0])
        if step % 97 == 0:
            restored = MemberRandom(seeds, Stream.BUFFER)
            restored.load_state_dict(whole.state_dict())
            whole = restored
        if step % 131 == 0:
            moved = MemberRandom(seeds, Stream.BUFFER)
            moved.load_state_dict(moved.joined_state(whole.member_states([0, 1, 2, 3])))
            whole = moved
    for p in range(4):
        assert torch.equal(torch.cat(got[p]), torch.cat(expected[p])), p


# ----- the hyperparameter ----------------------------------------------------------------------------------
def test_buffer_size_is_per_member_and_fixed_for_the_run(digits):
    assert "buffer_size" not in structural_names(ReplayConfig) and "minibatch_size" in structural_names(ReplayConfig)
    assert param_specs(ReplayConfig)["buffer_size"].per_member
    before = [make_config("derpp", {"buffer_size": 200}), make_config("derpp", {"buffer_size": 500})]
    with pytest.raises(RayclError, match="'buffer_size' cannot change between tasks"):
        check_changes(before, [dataclasses.replace(before[0], buffer_size=300), before[1]], "'derpp'")
    space = parse_space({"params": {"buffer_size": {"choice": [200, 500]}, "lr": {"choice": [0.1, 0.2]}}}, "derpp",
                        "seq-digits", "a space")
    assert {d.name for d in per_member_space(space, type(before[0])).dimensions} == {"lr"}
    assert "buffer_size" not in {d.name for d in per_member_space(space, type(before[0])).dimensions}
