"""A method's registered state is its whole state: stopped mid-task, checkpointed and restored into
a fresh instance, every method continues with the numbers of the run that never stopped; every
stacked attribute is registered; and a registration left out is caught."""

import copy
import io

import numpy as np
import pytest
import torch
from torch import nn

from raycl.methods import get_population_method, make_config
from raycl.methods.base import PopulationMethod
from raycl.population.inputs import MemberInputs
from test_meta import CASES, SEEDS, leaves, method_name

CPU = torch.device("cpu")
# Every vectorised method's cases, and a method run member by member (its solo learners' state).
STATE_CASES = {**CASES, "gem": [{"buffer_size": 6, "lr": 0.05}, {"buffer_size": 6, "lr": 0.1}]}
# Attributes that hold tensors but are not state, and why.
NOT_STATE = {
    "mer": {"eye"},  # a constant: the one-hot rows of the labels
}


def build(case: str, bench, dtype: torch.dtype = torch.float32):
    rows = [{"batch_size": 4, **row} for row in STATE_CASES[case]]
    configs = [make_config(method_name(case), row, bench.defaults) for row in rows]
    return get_population_method(method_name(case))(configs, SEEDS, bench, CPU, dtype)


def steps(method, bench, task: int, first: int, last: int) -> list[torch.Tensor]:
    """Steps ``first`` .. ``last`` - 1 of ``task``; their losses."""
    data = MemberInputs([bench], [0] * len(SEEDS), task, "train", CPU, method.dtype)
    batch = method.config.batch_size
    method.train()
    out = []
    for step in range(first, last):
        rows = torch.arange(step * batch, (step + 1) * batch).expand(len(SEEDS), -1)
        out.append(method.observe(*data.gather(rows), task).clone())
    return out


def end(method, bench, task: int) -> list[torch.Tensor]:
    """The end of ``task``, then the method's predictions on every task's validation examples."""
    method.end_task(task, MemberInputs([bench], [0] * len(SEEDS), task, "train", CPU, method.dtype))
    method.train(False)
    predictions = []
    for t in range(bench.n_tasks):
        data = MemberInputs([bench], [0] * len(SEEDS), t, "val", CPU, method.dtype)
        x, _ = data.gather(torch.arange(data.n).expand(len(SEEDS), -1))
        predictions.append(method.predict(x, t))
    return predictions


def checkpointed(method):
    """``method``'s state as a trial writes and reads it (torch.save, then torch.load with map_location)."""
    saved = io.BytesIO()
    torch.save(method.state_dict(), saved)
    saved.seek(0)
    return torch.load(saved, map_location=CPU, weights_only=False)


def resume_mismatches(case: str, bench) -> list[str]:
    """Train task 0 and a step of task 1, checkpoint, restore into a fresh instance and finish tasks 1
    and 2 there; the same run without the stop alongside. Returns where the two differ: a loss, a
    prediction, or a piece of the final state."""
    whole, first = build(case, bench), build(case, bench)
    records = {"whole": [], "resumed": []}
    for method, record in ((whole, records["whole"]), (first, records["resumed"])):
        method.begin_task(0)
        record += steps(method, bench, 0, 0, 3) + end(method, bench, 0)
        method.begin_task(1)
        record += steps(method, bench, 1, 0, 1)
    resumed = build(case, bench)
    resumed.load_state_dict(checkpointed(first))
    for method, record in ((whole, records["whole"]), (resumed, records["resumed"])):
        record += steps(method, bench, 1, 1, 3) + end(method, bench, 1)
        method.begin_task(2)
        record += steps(method, bench, 2, 0, 3) + end(method, bench, 2)
    mismatches = [f"output {i}" for i, (a, b) in enumerate(zip(records["whole"], records["resumed"], strict=True))
                  if not torch.equal(a, b)]
    final = dict(leaves(resumed.state_dict()))
    for path, value in leaves(whole.state_dict()):
        other = final.get(path)
        same = (other is not None and type(other) is type(value) and other.shape == value.shape
                and (torch.equal(value, other) if isinstance(value, torch.Tensor) else np.array_equal(value, other)))
        if not same:
            mismatches.append(".".join(path))
    return mismatches


@pytest.mark.parametrize("case", sorted(STATE_CASES))
def test_a_method_stopped_mid_task_and_restored_continues_as_if_never_stopped(case, tiny_mlp):
    assert resume_mismatches(case, tiny_mlp) == []


def stateful(value) -> bool:
    """Whether ``value`` holds per-member state: a tensor, a network, an object that keeps its own
    members (select / state_dict), or a list of them."""
    if isinstance(value, (list, tuple)):
        return any(stateful(v) for v in value)
    return (isinstance(value, (torch.Tensor, nn.Module))
            or all(hasattr(value, a) for a in ("select", "state_dict", "load_state_dict")))


def unregistered(method: PopulationMethod, name: str) -> list[str]:
    registered = set(method.registered())
    return sorted(attribute for attribute, value in vars(method).items()
                  if not attribute.startswith("_") and attribute not in registered
                  and attribute not in NOT_STATE.get(name, set()) and stateful(value))


@pytest.mark.parametrize("case", sorted(STATE_CASES))
def test_every_stacked_attribute_of_a_method_is_registered(case, tiny_mlp):
    """After two tasks (the state made at task ends exists by then), every attribute that holds
    tensors, networks, streams, optimisers or buffers is registered state."""
    method = build(case, tiny_mlp)
    for task in range(2):
        method.begin_task(task)
        steps(method, tiny_mlp, task, 0, 3)
        end(method, tiny_mlp, task)
    assert unregistered(method, method_name(case)) == []


# One registration of each kind of part, left out in turn.
FORGOTTEN = [
    ("clser", "global_step"),  # a value shared by the members
    ("clser", "coins"),  # a host random stream
    ("synergy", "fisher_updates"),  # a host tensor [P]
    ("synergy", "ema"),  # a moving average
    ("ewc", "fisher"),  # stacked tensors made at a task's end
    ("vib", "replay_x"),  # stacked tensors that grow
    ("vib-generative", "previous"),  # a frozen network made at a task's end
    ("gen_replay", "old_solver"),
    ("gen_replay-per-task", "vaes"),  # a list of networks that grows
    ("agem", "samples"),
    ("der", "buffer"),
]


@pytest.mark.parametrize("case, forgotten", FORGOTTEN, ids=[f"{c}-{n}" for c, n in FORGOTTEN])
def test_a_registration_left_out_is_caught(case, forgotten, tiny_mlp, monkeypatch):
    """A method whose ``forgotten`` piece is set as a plain attribute instead of registered: its
    resumed run differs from the uninterrupted one (or fails), and the attribute scan names the
    piece when it holds tensors."""
    register = PopulationMethod.register

    def forgetting(self, name, value, part=None):
        if name == forgotten:
            setattr(self, name, value)
        else:
            register(self, name, value, part)

    monkeypatch.setattr(PopulationMethod, "register", forgetting)
    try:
        mismatches = resume_mismatches(case, tiny_mlp)
    except (AttributeError, TypeError) as error:  # the resumed run lacks the piece altogether
        mismatches = [repr(error)]
    assert mismatches != []
    method = build(case, tiny_mlp)
    for task in range(2):
        method.begin_task(task)
        steps(method, tiny_mlp, task, 0, 3)
        end(method, tiny_mlp, task)
    if stateful(getattr(method, forgotten)):
        assert unregistered(method, method_name(case)) == [forgotten]


@pytest.mark.parametrize("case", sorted(STATE_CASES))
def test_copies_made_by_select_continue_exactly_as_the_member_would(case, tiny_mlp):
    """``select`` with a position given twice (how a branch forks a chosen state): both copies carry
    on exactly as that member does in the original, each with its own streams and state. In float64,
    as every member-independence test: in float32 a batched product may sum in another order at
    another position of the stack."""
    original = build(case, tiny_mlp, torch.float64)
    original.begin_task(0)
    steps(original, tiny_mlp, 0, 0, 3)
    end(original, tiny_mlp, 0)
    original.begin_task(1)
    steps(original, tiny_mlp, 1, 0, 1)
    copies = copy.deepcopy(original)
    copies.select(torch.tensor([1, 1]))
    for method_outputs in zip(steps(original, tiny_mlp, 1, 1, 3) + end(original, tiny_mlp, 1),
                              steps(copies, tiny_mlp, 1, 1, 3) + end(copies, tiny_mlp, 1), strict=True):
        member, (first, second) = method_outputs[0][1], method_outputs[1]
        assert torch.equal(first, member) and torch.equal(second, member)
