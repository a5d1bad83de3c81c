"""Every vectorised method steps without waiting for its device, and its state is portable.

PyTorch's ``meta`` device has shapes and no values: any read of a device value (``.item()``,
``bool()``, ``.cpu()``, ``.tolist()`` of a device tensor) raises there, as does a CPU tensor mixed
into a device op. A method that trains on meta therefore takes every host-side decision (update
coins, which members compute a term) from the host, so on a GPU its steps queue up without a sync;
a state saved on the CPU and loaded into a method built on meta lands on meta, so a checkpoint
moves between CPU and GPU nodes. Members differ in their per-member hyperparameters and the
frequencies are set so that the host-side branches (memory updates, Fisher refreshes, the
reconstruction reward) are taken.
"""

import io

import numpy as np
import pytest
import torch

from raycl.data import Benchmark
from raycl.device_checks import HostCopies
from raycl.methods import METHODS, get_population_method, make_config
from raycl.methods.base import MemberwiseMethod, PopulationMethod
from raycl.population.inputs import MemberInputs

META = torch.device("meta")
CPU = torch.device("cpu")
SEEDS = [0, 1]
STEPS = 3

# Two members per case: (method, the members' values). Buffers are small enough to fill in the
# few CPU steps of task 0, so that task 1 replays from a full reservoir.
REPLAY = {"buffer_size": 6, "minibatch_size": 3}
GEN = {"gen_hidden": 8, "latent_size": 3, "gen_epochs": 1, "gen_batch_size": 8}
VIB = {"hidden": 8, "n_bottleneck": 3, "n_replay": 4}
MER = {**REPLAY, "minibatch_size": 2, "batches_per_example": 2, "batch_size": 2}
CASES = {
    "sgd": [{"lr": 0.05}, {"lr": 0.1}],
    "sgd-adam": [{"optimizer": "adam", "lr": 1e-3}, {"optimizer": "adam", "lr": 3e-3}],
    "online": [{"lr": 0.05}, {"lr": 0.1}],
    "er": [{**REPLAY, "lr": 0.05}, {**REPLAY, "lr": 0.1}],
    "der": [{**REPLAY, "alpha": 0.3}, {**REPLAY, "alpha": 1.0, "lr": 0.1}],
    "derpp": [{**REPLAY, "alpha": 0.3, "beta": 0.5}, {**REPLAY, "alpha": 1.0, "beta": 0.1}],
    "agem": [{**REPLAY, "lr": 0.05}, {**REPLAY, "lr": 0.1}],
    "ewc": [{"ewc_lambda": 100.0}, {"ewc_lambda": 1.0, "gamma": 0.5}],
    "mer": [{**MER, "beta": 0.1}, {**MER, "beta": 0.5, "gamma": 0.5}],
    "mer-batched": [{**MER, "variant": "batched", "beta": 0.1}, {**MER, "variant": "batched", "gamma": 0.5}],
    # One member rewards reconstruction (beta_1 < 0), the other penalises I(Z;X).
    "vib": [{**VIB, "beta_1": -0.1, "replay_weight": 0.5}, {**VIB, "beta_1": 0.1, "replay_weight": 0.3}],
    "vib-generative": [{**VIB, "replay_mode": "generative", "beta_1": -1.0, "freeze_encoder": True},
                       {**VIB, "replay_mode": "generative", "beta_1": 0.0, "replay_weight": 0.8,
                        "freeze_encoder": True}],
    "clser": [{**REPLAY, "reg_weight": 0.5, "plastic_update_freq": 1.0, "stable_update_freq": 0.5},
              {**REPLAY, "reg_weight": 1.0, "plastic_alpha": 0.9, "stable_update_freq": 1.0}],
    # Fisher refreshed at every step for the member with a penalty, never for the other.
    "synergy": [{**REPLAY, "ema_update_freq": 1.0, "fisher_update_freq": 1.0, "penalty_weight": 1.0},
                {**REPLAY, "ema_update_freq": 0.5, "fisher_update_freq": 1.0, "penalty_weight": 0.0,
                 "fisher_alpha": 0.9}],
    "gen_replay": [{**GEN, "gen_lr": 1e-3}, {**GEN, "gen_lr": 3e-3, "lr": 0.1}],
    "gen_replay-per-task": [{**GEN, "vae_per_task": True, "soft_targets": True, "increasing_replay_size": True},
                            {**GEN, "vae_per_task": True, "soft_targets": True, "increasing_replay_size": True,
                             "gen_lr": 3e-3}],
}
# Members of two buffer sizes, the first smaller than the minibatch: replay rows differ per member
# (the buffer gives a RaggedSample, computed on per group of members) and the reservoirs replace
# at different times.
RAGGED = {"buffer_size": 2, "minibatch_size": 3}
for _case in ("er", "der", "derpp", "agem", "clser", "synergy", "mer", "mer-batched"):
    _first, _second = CASES[_case]
    CASES[f"{_case}-mixed"] = [{**_first, **RAGGED}, {**_second, **RAGGED, "buffer_size": 9}]
# On the ResNet (batch norm, augmentation, the stacked network of grouped convolutions).
RESNET = {"er", "derpp", "agem", "ewc", "mer", "clser", "synergy", "derpp-mixed", "agem-mixed", "synergy-mixed"}
# ... with fewer of MER's per-example steps (each a ResNet forward and backward per member).
RESNET_VALUES = {"mer": {"batch_size": 1, "batches_per_example": 1}}

# Loading real values into meta tensors keeps only their shapes, as meant here.
pytestmark = pytest.mark.filterwarnings("ignore:.*copying from a non-meta parameter:UserWarning")


def method_name(case: str) -> str:
    return case.split("-")[0]


def test_mixed_cases_replay_ragged_rows(tiny_mlp, monkeypatch):
    """The mixed cases reach what they are there for: a RaggedSample in a step."""
    import raycl.buffer

    ragged = []
    sample = raycl.buffer.PopulationReservoir.sample
    monkeypatch.setattr(raycl.buffer.PopulationReservoir, "sample",
                        lambda self, *a, **k: ragged.append(sample(self, *a, **k)) or ragged[-1])
    method = build("er-mixed", tiny_mlp, CPU)
    train(method, tiny_mlp, 0, CPU)
    assert any(isinstance(s, raycl.buffer.RaggedSample) for s in ragged)


def test_every_vectorised_method_has_a_case():
    vectorised = {name for name in METHODS if issubclass(get_population_method(name), PopulationMethod)
                  and not issubclass(get_population_method(name), MemberwiseMethod)}
    assert vectorised == {method_name(case) for case in CASES}


def build(case: str, bench: Benchmark, device: torch.device):
    name = method_name(case)
    rows = [{"batch_size": 4, **row} for row in CASES[case]]
    if bench.model != "mlp":  # the ResNet's own protocol values are too large for a few steps
        rows = [{**row, "n_epochs": 1, **RESNET_VALUES.get(case, {})} for row in rows]
    configs = [make_config(name, row, bench.defaults) for row in rows]
    return get_population_method(name)(configs, SEEDS, bench, device)


def train(method, bench: Benchmark, task: int, device: torch.device) -> None:
    """begin_task, a few observe steps and end_task of ``task``, every tensor on ``device``."""
    data = MemberInputs([bench], [0] * len(SEEDS), task, "train", device, torch.float32)
    batch = method.config.batch_size
    method.train()
    method.begin_task(task)
    for step in range(STEPS if bench.model == "mlp" else 2):  # ResNet steps on meta are slow
        rows = torch.arange(step * batch, (step + 1) * batch, device=device).expand(len(SEEDS), -1)
        losses = method.observe(*data.gather(rows), task)
        assert losses.shape == (len(SEEDS),) and losses.device == device
    method.end_task(task, data)


def leaves(state, path=()):
    """(path, array) of every tensor and NumPy array reachable in a (nested) state dict."""
    if isinstance(state, (torch.Tensor, np.ndarray)):
        yield path, state
    elif isinstance(state, dict):
        for key, value in state.items():
            yield from leaves(value, (*path, str(key)))
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            yield from leaves(value, (*path, str(i)))


def cases(resnet: bool):
    return sorted(c for c in CASES if not resnet or c in RESNET)


@pytest.mark.parametrize("case", cases(False))
def test_steps_run_on_the_meta_device(case, tiny_mlp):
    method = build(case, tiny_mlp, META)
    train(method, tiny_mlp, 0, META)
    train(method, tiny_mlp, 1, META)  # with replay, penalties and memories active


@pytest.mark.parametrize("case", cases(True))
def test_steps_of_a_network_with_batch_norm_run_on_the_meta_device(case, tiny_cifar):
    method = build(case, tiny_cifar, META)
    train(method, tiny_cifar, 0, META)
    train(method, tiny_cifar, 1, META)


@pytest.mark.parametrize("case", cases(False))
def test_host_drawn_values_reach_the_device_without_the_host_waiting(case, tiny_mlp):
    """Every host tensor a step copies to the device (coins, decisions, a random stream's new block)
    is copied ``non_blocking``; on CUDA it also comes from pinned memory (``raycl.device.to_device``,
    tests/test_devices.py; tests/test_cuda.py checks both on a GPU)."""
    method = build(case, tiny_mlp, META)
    copies, observe = HostCopies(), method.observe

    def recorded(*args):
        with copies:
            return observe(*args)

    method.observe = recorded
    train(method, tiny_mlp, 0, META)  # the streams' first blocks are drawn inside the first step
    train(method, tiny_mlp, 1, META)
    assert copies.waiting(pinned=False) == []
    if method_name(case) in ("clser", "synergy"):  # their update coins, every step
        assert len(copies.copies) >= 2 * STEPS


def check_loads_onto_meta(case, bench):
    """The state of a method trained on the CPU, loaded as it is and as a trial loads a checkpoint
    (``torch.load`` with ``map_location``), into a method built on meta, which trains on."""
    trained = build(case, bench, CPU)
    train(trained, bench, 0, CPU)
    saved = io.BytesIO()
    torch.save(trained.state_dict(), saved)
    saved.seek(0)
    for state in (trained.state_dict(), torch.load(saved, map_location=META, weights_only=False)):
        method = build(case, bench, META)
        method.load_state_dict(state)
        found = list(leaves(method.state_dict()))
        for path, value in found:
            if isinstance(value, torch.Tensor):
                assert value.device == META, ".".join(path)
        # Host-side state (generators' states, host streams, counts of host decisions) is NumPy,
        # which map_location leaves on the host; the rest are tensors, on the method's device.
        assert any(isinstance(v, np.ndarray) for _, v in found) and any(isinstance(v, torch.Tensor) for _, v in found)
        train(method, bench, 1, META)  # from the restored buffer, Fisher, memories and replay data


@pytest.mark.parametrize("case", cases(False))
def test_a_state_saved_on_the_cpu_loads_onto_the_meta_device_and_trains_on(case, tiny_mlp):
    check_loads_onto_meta(case, tiny_mlp)


@pytest.mark.parametrize("case", ["clser", "synergy"])
def test_stacked_batch_norm_state_loads_onto_the_meta_device(case, tiny_cifar):
    check_loads_onto_meta(case, tiny_cifar)

