"""Members moving between populations (raycl.population.members): a member exported from one
population and joined with members of others continues exactly as it would alone. Everything in
float64 and compared bit for bit: the member's whole state (networks, optimiser, buffer, moving
averages, every registered piece, its random streams' positions and its accuracy record) against
its solo run's."""

import dataclasses

import numpy as np
import pytest
import torch

import raycl.models
import raycl.population.random
from raycl.errors import RayclError
from raycl.hparams import hp
from raycl.methods import METHODS, make_config
from raycl.methods.base import ReplayConfig, ReplayPopulationMethod, cross_entropy
from raycl.methods.state import HostTensor, Part
from raycl.population.inputs import MemberInputs
from raycl.population.members import MemberState, load_member_states, save_member_states
from raycl.population.random import MemberRandom, Stream
from raycl.train import PopulationRun

F64 = torch.float64
META = torch.device("meta")


def short(benchmark, n_train=60):
    """The benchmark with few training examples per task: every method's populations stay quick."""
    tasks = [dataclasses.replace(t, train_x=t.train_x[:n_train], train_y=t.train_y[:n_train]) for t in benchmark.tasks]
    return dataclasses.replace(benchmark, tasks=tasks)


# ----- a plugin's method, written as docs/methods.md tells a plugin to --------------------------------------
@dataclasses.dataclass
class TallyConfig(ReplayConfig):
    pull: float = hp(0.5, "weight of the pull of each loss towards its running mean", low=0.0, per_member=True)
    decay: float = hp(0.9, "decay of the running mean of the loss", low=0.0, high=1.0, per_member=True)
    boost_freq: float = hp(0.5, "probability of a step raising the member's loss weight", low=0.0, high=1.0,
                           per_member=True)


class LossTally:
    """A plugin's own component, moved by the fallback (no member_states / joined_state): per member a
    running mean of its loss (a device tensor) and of its coins (host, NumPy), and a count of updates
    every member shares."""

    def __init__(self, size: int, device: torch.device, dtype: torch.dtype):
        self.mean = torch.zeros(size, device=device, dtype=dtype)
        self.square = np.zeros((size, 1))
        self.updates = 0

    def update(self, losses: torch.Tensor, coins: np.ndarray, decay: torch.Tensor) -> None:
        self.mean = decay * self.mean + (1.0 - decay) * losses
        self.square = 0.5 * self.square + 0.5 * coins[:, None] ** 2
        self.updates += 1

    def select(self, keep: torch.Tensor) -> None:
        self.mean = self.mean[keep.to(self.mean.device)]
        self.square = self.square[keep.numpy()]

    def state_dict(self) -> dict:
        return {"mean": self.mean.clone(), "square": self.square.copy(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.mean = state["mean"].to(self.mean.device, self.mean.dtype)
        self.square = np.array(state["square"])
        self.updates = state["updates"]


class Tally(ReplayPopulationMethod):
    """ER whose loss is pulled towards its running mean and weighted by host-side coin decisions."""

    name = "tally"
    Config = TallyConfig

    def __init__(self, configs, seeds, benchmark, device, dtype=torch.float32, member_benchmarks=None):
        super().__init__(configs, seeds, benchmark, device, dtype, member_benchmarks)
        self.register("tally", LossTally(self.size, device, dtype))
        self.register("coins", MemberRandom(seeds, Stream.CLSER_COINS, "cpu"))
        self.register("boosts", torch.zeros(self.size, dtype=torch.long), HostTensor())
        self.register("observed", 0)

    def observe(self, x, y, task):
        parts, labels = [x], y
        if not self.buffer.is_empty():
            replay = self.buffer.sample(self.config.minibatch_size)
            parts.append(replay.x)
            labels = torch.cat([y, replay.y], 1)
        losses = cross_entropy(self.forward_parts(parts), labels)
        coins = self.coins.uniform(1, dtype=F64)[:, 0]  # on the host, as every host-side decision
        self.boosts += (coins < self.host_member_values("boost_freq").double()).long()
        weight = (1.0 + 0.1 * self.boosts.to(self.device, self.dtype)
                  + torch.from_numpy(self.tally.square[:, 0]).to(losses))
        self.step(weight * losses + self.member_values("pull") * (losses - self.tally.mean).pow(2))
        self.tally.update(losses.detach(), coins.numpy(), self.member_values("decay"))
        self.buffer.add(x, y, task=task)
        self.observed += 1
        return losses.detach()


TALLY = f"{__name__}:Tally"


# ----- comparing members -----------------------------------------------------------------------------------
def is_stream(piece) -> bool:
    return isinstance(piece, dict) and set(piece) == {"generators", "block"}


def future(stream: dict, count: int) -> np.ndarray:
    """The next ``count`` numbers a one-member stream hands out: those it drew ahead, then its generator's."""
    generator = torch.Generator()
    generator.set_state(torch.from_numpy(np.array(stream["generators"][0])))
    ahead = np.asarray(stream["block"])[0]
    return np.concatenate([ahead, torch.rand(count, generator=generator, dtype=F64).numpy()])[:count]


def differences(first, second, path="") -> list[str]:
    """Where two members' pieces of state differ. A random stream is compared by what it hands out
    from now on (the two may hold different amounts drawn ahead)."""
    if is_stream(first) and is_stream(second):
        count = max(first["block"].shape[1], second["block"].shape[1]) + 100
        return [] if np.array_equal(future(first, count), future(second, count)) else [path]
    if isinstance(first, dict) and isinstance(second, dict):
        if sorted(first) != sorted(second):
            return [f"{path} keys"]
        return [d for k in first for d in differences(first[k], second[k], f"{path}.{k}")]
    if isinstance(first, (list, tuple)) and isinstance(second, (list, tuple)):
        if len(first) != len(second):
            return [f"{path} length"]
        return [d for i, (a, b) in enumerate(zip(first, second)) for d in differences(a, b, f"{path}[{i}]")]
    if isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor):
        return [] if first.dtype == second.dtype and torch.equal(first, second) else [path]
    if isinstance(first, np.ndarray) and isinstance(second, np.ndarray):
        return [] if first.dtype == second.dtype and np.array_equal(first, second, equal_nan=True) else [path]
    return [] if type(first) is type(second) and first == second else [path]


def assert_same_member(first: MemberState, second: MemberState) -> None:
    assert (first.method, first.config, first.seed, first.next_task, first.dtype) == \
           (second.method, second.config, second.seed, second.next_task, second.dtype)
    assert (differences(first.record, second.record, "record") + differences(first.order, second.order, "order")
            + differences(first.parts, second.parts, "parts")) == []


def with_more_drawn_ahead(state: MemberState, extra: int) -> MemberState:
    """``state`` with ``extra`` more numbers drawn ahead in every random stream: the same member (it
    hands out the very same numbers), holding more of them, as after another history of draws."""
    def deeper(piece):
        if is_stream(piece):
            generator = torch.Generator()
            generator.set_state(torch.from_numpy(piece["generators"][0].copy()))
            drawn = torch.rand(extra, generator=generator, dtype=F64).numpy()
            return {"generators": [generator.get_state().numpy()],
                    "block": np.concatenate([piece["block"], drawn[None]], axis=1)}
        if isinstance(piece, dict):
            return {k: deeper(v) for k, v in piece.items()}
        if isinstance(piece, (list, tuple)):
            return type(piece)(deeper(v) for v in piece)
        return piece

    return dataclasses.replace(state, order=deeper(state.order), parts=deeper(state.parts))


def trained(bench, method, rows, seeds, tasks, **options) -> PopulationRun:
    configs = [make_config(method, {"n_epochs": 1, **row}, bench.defaults) for row in rows]
    run = PopulationRun(bench, method, configs, seeds, dtype=F64, **options)
    for _ in range(tasks):
        run.run_task()
    return run


def run_tasks(run: PopulationRun, tasks: int) -> PopulationRun:
    for _ in range(tasks):
        run.run_task()
    return run


# ----- 1. a configuration promoted through two populations ends as its solo run -----------------------------
REPLAY = {"buffer_size": 20, "minibatch_size": 5}
PROMOTED = {
    "derpp": [{**REPLAY, "lr": 0.05, "alpha": 0.3, "beta": 0.5}, {**REPLAY, "lr": 0.1, "alpha": 1.0, "beta": 0.1},
              {**REPLAY, "lr": 0.02, "alpha": 0.0, "beta": 1.0}, {**REPLAY, "lr": 0.07, "alpha": 0.5},
              {**REPLAY, "lr": 0.03, "beta": 0.2}],
    "clser": [{**REPLAY, "lr": 0.05, "reg_weight": 0.5, "stable_update_freq": 0.5, "plastic_update_freq": 0.7},
              {**REPLAY, "lr": 0.1, "reg_weight": 1.0, "plastic_alpha": 0.9, "stable_alpha": 0.95},
              {**REPLAY, "lr": 0.02, "reg_weight": 0.1, "plastic_update_freq": 0.3},
              {**REPLAY, "lr": 0.07, "stable_alpha": 0.99},
              {**REPLAY, "lr": 0.03, "stable_update_freq": 0.2}],
    TALLY: [{**REPLAY, "lr": 0.05, "pull": 0.5, "boost_freq": 0.5}, {**REPLAY, "lr": 0.1, "pull": 1.0, "decay": 0.5},
            {**REPLAY, "lr": 0.02, "boost_freq": 0.9}, {**REPLAY, "lr": 0.07, "pull": 0.0},
            {**REPLAY, "lr": 0.03, "decay": 0.99, "boost_freq": 0.1}],
}


@pytest.mark.parametrize("method", sorted(PROMOTED), ids=["clser", "derpp", "plugin"])
def test_a_configuration_promoted_through_two_populations_ends_as_its_solo_run(method, digits, monkeypatch):
    """Task 1 in population A beside two others, task 2 in population B with members of another
    population (one of which holds a thousand more random numbers drawn ahead, which the others draw
    when they join), the rest in population C with a member trained elsewhere: the member ends with
    every piece of state and every accuracy matrix (baselines too) of its solo run. A itself goes on
    undisturbed by the export. Random blocks are small here, so that the numbers drawn at the join
    are handed out in training."""
    monkeypatch.setattr(raycl.population.random, "_BLOCK", 50)
    bench = short(digits)
    rows = PROMOTED[method]
    solo = trained(bench, method, rows[:1], [3], bench.n_tasks)
    a = trained(bench, method, [rows[1], rows[0], rows[2]], [11, 3, 12], tasks=1)
    (member,) = a.export_members([1])
    elsewhere = trained(bench, method, [rows[3], rows[4]], [21, 22], tasks=1).export_members()
    b = PopulationRun.from_members(bench, method, [with_more_drawn_ahead(elsewhere[0], 1000), member, elsewhere[1]])
    assert b.alive == [0, 1, 2] and b.next_task == 1
    run_tasks(b, 1)
    (member,) = b.export_members([1])
    assert_same_member(member, run_tasks(a, 1).export_members([1])[0])
    other = trained(bench, method, [rows[2]], [31], tasks=2).export_members()
    c = run_tasks(PopulationRun.from_members(bench, method, [member, *other]), bench.n_tasks - 2)
    assert c.finished
    assert_same_member(c.export_members([0])[0], solo.export_members()[0])
    for split in ("val", "test"):
        for setting in bench.settings:
            assert np.array_equal(getattr(c, split)[setting][0], getattr(solo, split)[setting][0], equal_nan=True)
            assert np.array_equal(getattr(c, f"{split}_baseline")[setting][0],
                                  getattr(solo, f"{split}_baseline")[setting][0], equal_nan=True)
    # The companions really are other runs.
    assert not np.array_equal(c.val_loss[0], c.val_loss[1], equal_nan=True)


# ----- 2. every method: a member exported after task 1 trains task 2 with others exactly as alone -----------
GEN = {"gen_hidden": 8, "latent_size": 3, "gen_epochs": 1, "gen_batch_size": 16}
MER = {"buffer_size": 20, "minibatch_size": 3, "batches_per_example": 2}
SMALL_REPLAY = {"buffer_size": 20}
EVERY = {
    "sgd": [{"lr": 0.05}, {"lr": 0.1}, {"lr": 0.02}, {"lr": 0.07}],
    "online": [{"lr": 0.05}, {"lr": 0.1}, {"lr": 0.02}, {"lr": 0.07}],
    "joint": [{"lr": 0.05}, {"lr": 0.1}, {"lr": 0.02}, {"lr": 0.07}],
    "independent": [{"lr": 0.05}, {"lr": 0.1, "finetune": True}, {"lr": 0.02}, {"lr": 0.07, "split_hidden": False}],
    "taskinput": [{"lr": 0.05}, {"lr": 0.1}, {"lr": 0.02}, {"lr": 0.07}],
    "gem": [{"lr": 0.05, "buffer_size": 20}, {"lr": 0.1, "buffer_size": 10}, {"lr": 0.02, "memory_strength": 0.1},
            {"lr": 0.07, "buffer_size": 30}],
    "er": [{**SMALL_REPLAY, "lr": lr} for lr in (0.05, 0.1, 0.02, 0.07)],
    "der": [{**SMALL_REPLAY, "lr": 0.05, "alpha": 0.3}, {**SMALL_REPLAY, "lr": 0.1, "alpha": 1.0},
            {**SMALL_REPLAY, "lr": 0.02}, {**SMALL_REPLAY, "lr": 0.07, "alpha": 0.5}],
    "derpp": PROMOTED["derpp"][:4],
    "agem": [{**SMALL_REPLAY, "lr": lr} for lr in (0.05, 0.1, 0.02, 0.07)],
    "ewc": [{"lr": 0.05, "ewc_lambda": 100.0}, {"lr": 0.1, "ewc_lambda": 1.0, "gamma": 0.5},
            {"lr": 0.02, "ewc_lambda": 1000.0, "gamma": 0.9}, {"lr": 0.07}],
    "mer": [{**MER, "lr": 0.05, "beta": 0.1}, {**MER, "lr": 0.1, "beta": 0.5, "gamma": 0.5}, {**MER, "lr": 0.02},
            {**MER, "lr": 0.07, "gamma": 0.8}],
    "vib": [{"lr": 1e-3, "beta_1": -1e-2, "replay_weight": 0.5, "n_replay": 20},
            {"lr": 3e-3, "beta_1": 1e-3, "replay_weight": 0.0, "n_replay": 20},
            {"lr": 5e-4, "beta_1": 0.0, "beta_2": 0.1, "replay_weight": 0.8, "n_replay": 20},
            {"lr": 2e-3, "beta_1": -1e-3, "replay_weight": 0.3, "n_replay": 20}],
    "clser": PROMOTED["clser"][:4],
    "synergy": [{**SMALL_REPLAY, "lr": 0.05, "ema_update_freq": 0.5, "fisher_update_freq": 0.5},
                {**SMALL_REPLAY, "lr": 0.1, "penalty_weight": 1.0, "ema_alpha": 0.9},
                {**SMALL_REPLAY, "lr": 0.02, "reg_weight": 1.0, "penalty_weight": 0.0},
                {**SMALL_REPLAY, "lr": 0.07, "fisher_alpha": 0.9}],
    "gen_replay": [{**GEN, "lr": 0.05, "gen_lr": 1e-3}, {**GEN, "lr": 0.1, "gen_lr": 3e-3},
                   {**GEN, "lr": 0.02, "gen_lr": 5e-4}, {**GEN, "lr": 0.07, "gen_lr": 2e-3}],
}
# Variants whose state takes other shapes: Adam's moments, generative replay's frozen copy and
# frozen encoder, a growing list of VAEs.
VARIANTS = {
    "sgd-adam": [{"optimizer": "adam", "lr": lr} for lr in (1e-3, 3e-3, 5e-4, 2e-3)],
    "vib-generative": [{**row, "replay_mode": "generative", "freeze_encoder": True} for row in EVERY["vib"]],
    "gen_replay-per-task": [{**row, "vae_per_task": True, "soft_targets": True} for row in EVERY["gen_replay"]],
}


def test_every_method_has_a_case():
    assert set(EVERY) == set(METHODS)


def joined_after_one_task(bench, method, rows, device="cpu") -> tuple[MemberState, MemberState]:
    """The member of ``rows[0]`` after task 2 trained alone, and after task 2 trained in a population
    it joined after task 1 with two members of another population: (alone, joined)."""
    alone = trained(bench, method, rows[:1], [3], tasks=2).export_members()[0]
    (member,) = trained(bench, method, [rows[1], rows[0]], [5, 3], tasks=1).export_members([1])
    others = trained(bench, method, rows[2:4], [6, 7], tasks=1).export_members()
    joined = PopulationRun.from_members(bench, method, [others[0], member, others[1]], device=device)
    return alone, run_tasks(joined, 1).export_members([1])[0]


@pytest.mark.parametrize("case", sorted({**EVERY, **VARIANTS}))
def test_a_member_joined_after_a_task_trains_the_next_as_alone(case, digits):
    bench = short(digits)
    alone, joined = joined_after_one_task(bench, case.split("-")[0], {**EVERY, **VARIANTS}[case])
    assert_same_member(joined, alone)


@pytest.fixture
def narrow_cifar(tiny_cifar, monkeypatch):
    """tiny_cifar's reduced-resnet18 narrowed to 4 base filters for this test."""
    monkeypatch.setitem(raycl.models.BASE_FILTERS, tiny_cifar.model, 4)
    return tiny_cifar


RESNET = {"n_epochs": 1, "batch_size": 4, "minibatch_size": 4, "buffer_size": 8}


@pytest.mark.parametrize("method", ["clser", "derpp"])
def test_a_stacked_resnet_member_joined_after_a_task_trains_the_next_as_alone(method, narrow_cifar):
    """Grouped convolutions, batch norm's running statistics, augmentation and moving averages."""
    rows = [{**RESNET, **row} for row in EVERY[method]]
    alone, joined = joined_after_one_task(narrow_cifar, method, rows)
    assert_same_member(joined, alone)
    assert "resnet.bn1.running_mean" in joined.parts["net"]


# ----- 3. a member's state on disk and on other devices ------------------------------------------------------
def test_a_member_state_saved_and_loaded_continues_exactly_and_holds_only_its_own_rows(digits, tmp_path):
    bench = short(digits)
    rows = PROMOTED["derpp"]
    population = trained(bench, "derpp", rows[:3], [3, 4, 5], tasks=1)
    states = population.export_members()
    path = tmp_path / "members.pt"
    save_member_states(path, states)
    loaded = load_member_states(path, map_location="cpu")
    for state, back in zip(states, loaded, strict=True):
        assert_same_member(state, back)
    # Every tensor and array holds only the member's own elements: no population's storage rides along.
    tensors, arrays = [], []

    def collect(piece):
        if isinstance(piece, torch.Tensor):
            tensors.append(piece)
        elif isinstance(piece, np.ndarray):
            arrays.append(piece)
        elif isinstance(piece, dict):
            for value in piece.values():
                collect(value)
        elif isinstance(piece, (list, tuple)):
            for value in piece:
                collect(value)

    collect([(s.record, s.order, s.parts) for s in states])
    assert tensors and arrays
    assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in tensors)
    assert all(a.base is None or a.flags.owndata for a in arrays)
    assert loaded[1].parts["buffer"]["examples"].shape[0] == rows[0]["buffer_size"] + 1
    payload = sum(t.numel() * t.element_size() for t in tensors) + sum(a.nbytes for a in arrays)
    assert path.stat().st_size < 1.2 * payload + 100_000
    # The population the states came from goes on as if nothing was exported; the loaded ones alike.
    continued = run_tasks(population, 1).export_members()
    joined = run_tasks(PopulationRun.from_members(bench, "derpp", loaded[::-1]), 1).export_members()
    for state, twin in zip(continued, joined[::-1], strict=True):
        assert_same_member(state, twin)


@pytest.mark.filterwarnings("ignore:.*copying from a non-meta parameter:UserWarning")
@pytest.mark.parametrize("method", ["clser", "vib", "gen_replay"])
def test_member_states_loaded_onto_another_device_join_there_and_train_on(method, digits, tmp_path):
    """PyTorch's meta device stands for a GPU node: the states land there through map_location, join
    into a population on it (host state stays on the host) and train on without a read of a value."""
    bench = short(digits)
    rows = EVERY[method]
    states = trained(bench, method, rows[:2], [3, 4], tasks=1).export_members()
    save_member_states(tmp_path / "members.pt", states)
    loaded = load_member_states(tmp_path / "members.pt", map_location=META)
    run = PopulationRun.from_members(bench, method, loaded, device=META)
    method_state = run.method.state_dict()

    def leaves(piece):
        if isinstance(piece, dict):
            return [leaf for value in piece.values() for leaf in leaves(value)]
        if isinstance(piece, (list, tuple)):
            return [leaf for value in piece for leaf in leaves(value)]
        return [piece]

    found = leaves(method_state)
    assert all(leaf.device == META for leaf in found if isinstance(leaf, torch.Tensor))
    assert any(isinstance(leaf, np.ndarray) for leaf in found)
    data = MemberInputs([bench], [0, 0], 1, "train", META, F64)
    run.method.train(True)
    run.method.begin_task(1)
    for step in range(3):
        losses = run.method.observe(*data.gather(torch.arange(step * 10, step * 10 + 10, device=META).expand(2, -1)), 1)
        assert losses.shape == (2,) and losses.device == META


# ----- 4. members that cannot share a population -----------------------------------------------------------
def one_line_error(call) -> str:
    with pytest.raises(RayclError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message
    return message


def test_members_that_cannot_share_a_population_are_refused_in_one_line(digits):
    bench = short(digits)
    rows = PROMOTED["derpp"]
    population = trained(bench, "derpp", rows[:2], [3, 4], tasks=1)
    first, second = population.export_members()
    later = run_tasks(population, 1).export_members()[0]
    assert "at one next task; these are at tasks 2, 3" in one_line_error(
        lambda: PopulationRun.from_members(bench, "derpp", [first, later]))
    larger = trained(bench, "derpp", [{**rows[0], "batch_size": 7}], [5], tasks=1).export_members()[0]
    assert "must share 'batch_size'" in one_line_error(lambda: PopulationRun.from_members(bench, "derpp",
                                                                                          [first, larger]))
    assert "cannot join a population of 'der'" in one_line_error(lambda: PopulationRun.from_members(bench, "der",
                                                                                                    [first]))
    assert "one dtype" in one_line_error(lambda: PopulationRun.from_members(bench, "derpp", [first],
                                                                            dtype=torch.float32))
    # A value the members of one structure share at one task boundary, differing: named, with the values.
    seen = dataclasses.replace(second, parts={**second.parts, "buffer": {**second.parts["buffer"], "seen": 7}})
    message = one_line_error(lambda: PopulationRun.from_members(bench, "derpp", [first, seen]))
    assert "'buffer'" in message and "counts of examples seen differ" in message and "7" in message
    steps = dict(second.parts["opt"], steps=1)
    message = one_line_error(lambda: PopulationRun.from_members(bench, "derpp",
                                                                [first, dataclasses.replace(second, parts={
                                                                    **second.parts, "opt": steps})]))
    assert "'opt'" in message and "step counts differ" in message
    assert "are not trained any more" in one_line_error(lambda: population.export_members([7]))


class Unstacked(LossTally):
    """A component whose state holds a tensor without a member dimension: the fallback cannot split it."""

    def state_dict(self) -> dict:
        return {**super().state_dict(), "scale": torch.ones(3)}


class Careless(Tally):
    name = "careless"

    def __init__(self, configs, seeds, benchmark, device, dtype=torch.float32, member_benchmarks=None):
        super().__init__(configs, seeds, benchmark, device, dtype, member_benchmarks)
        self.tally = Unstacked(self.size, device, dtype)


class Rows(Part):
    """A part of a plugin's own that selects members but says nothing of how they move."""

    def select(self, value, keep):
        return value[keep]


class Unmovable(Tally):
    name = "unmovable"

    def __init__(self, configs, seeds, benchmark, device, dtype=torch.float32, member_benchmarks=None):
        super().__init__(configs, seeds, benchmark, device, dtype, member_benchmarks)
        self.register("extra", torch.zeros(self.size), Rows())


def test_state_the_members_cannot_take_along_is_named_in_one_line(digits):
    population = trained(short(digits), f"{__name__}:Careless", PROMOTED[TALLY][:2], [3, 4], tasks=1)
    message = one_line_error(population.export_members)
    assert "'tally'" in message and "state.scale is shaped (3,)" in message and "member_states()" in message
    population = trained(short(digits), f"{__name__}:Unmovable", PROMOTED[TALLY][:2], [3, 4], tasks=1)
    message = one_line_error(population.export_members)
    assert "'extra'" in message and "Rows keeps per-member state but cannot move members" in message


# ----- the random streams' alignment ------------------------------------------------------------------------
def test_a_generator_hands_out_the_same_numbers_in_one_draw_or_in_several():
    """What aligning members' streams rests on (checked here so that a torch that breaks it fails)."""
    for first, then in ((1, 1), (7, 9), (15, 17), (100, 8192), (8192, 3), (9000, 8193)):
        whole = torch.rand(first + then, generator=torch.Generator().manual_seed(5), dtype=F64)
        generator = torch.Generator().manual_seed(5)
        parts = torch.cat([torch.rand(first, generator=generator, dtype=F64),
                           torch.rand(then, generator=generator, dtype=F64)])
        assert torch.equal(whole, parts), (first, then)


def test_streams_holding_different_amounts_drawn_ahead_join_and_hand_out_their_own_numbers():
    def drawn(seeds, counts):
        stream = MemberRandom(seeds, Stream.METHOD)
        for n in counts:
            stream.uniform(n)
        return stream

    short_history, long_history = drawn([3], [100]), drawn([4, 5], [8000, 300, 50])
    joined = MemberRandom([3, 4, 5], Stream.METHOD)
    pieces = short_history.member_states([0]) + long_history.member_states([1, 0])
    joined.load_state_dict(joined.joined_state(pieces))
    out = torch.cat([joined.uniform(n, dtype=F64) for n in (20, 9000, 3)], 1)
    alone = [drawn([seed], [count]) for seed, count in ((3, 100), (5, 8350), (4, 8350))]
    for k, stream in enumerate(alone):
        assert torch.equal(out[k], torch.cat([stream.uniform(n, dtype=F64) for n in (20, 9000, 3)], 1)[0])
