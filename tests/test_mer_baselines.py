"""The MER paper's baselines: online, online EWC, independent, task input; checkpoints of all the
methods added with MER."""

import copy

import numpy as np
import pytest
import torch

from raycl.methods import make_config
from raycl.train import PopulationRun, run


def cfg(method, bench, **values):
    return make_config(method, {"lr": 0.1, **values}, bench.defaults)


def test_online_is_plain_sgd_on_each_example_in_the_stream_order(digits):
    """`online` (the MER paper's name for fine-tuning) against a plain PyTorch loop: the same initial
    weights and data order, torch.optim.SGD on an ordinary nn.Module, float64."""
    import torch.nn.functional as F

    from raycl.methods.base import member_init
    from raycl.models import build_model
    from raycl.population.random import MemberRandom, Stream

    config = cfg("online", digits, n_epochs=1)
    stream = PopulationRun(digits, "online", config, [2], dtype=torch.float64)
    stream.run_task()
    net = member_init(2, lambda: build_model(digits))[0].double()
    opt = torch.optim.SGD(net.parameters(), lr=config.lr)
    task = digits.tasks[0]
    order = MemberRandom([2], Stream.ORDER, "cpu").permutation(len(task.train_y))[0]
    x = digits.scale(torch.from_numpy(task.train_x), torch.float64)
    y = torch.from_numpy(task.train_y).long()
    for start in range(0, len(order), config.batch_size):
        rows = order[start:start + config.batch_size]
        opt.zero_grad()
        F.cross_entropy(net(x[rows]), y[rows]).backward()
        opt.step()
    stacked = stream.method.net
    assert torch.allclose(stacked.fc1.weight[0], net.fc1.weight.t(), rtol=0, atol=1e-12)
    assert torch.allclose(stacked.classifier.bias[0, 0], net.classifier.bias, rtol=0, atol=1e-12)


def test_independent_never_forgets(digits):
    result = run(digits, "independent", cfg("independent", digits), seed=0)
    matrix = result.test["task_il"]
    for j in range(digits.n_tasks):
        assert np.allclose(matrix[j:, j], matrix[j, j])  # a task's own network is never trained again
    assert result.test_metrics["task_il"]["bti"] == pytest.approx(0.0)


def test_task_input_trains_only_the_current_input_layer(digits):
    stream = PopulationRun(digits, "taskinput", cfg("taskinput", digits), [0])
    stream.run_task()
    net = stream.method.members[0].net
    first = copy.deepcopy(net.inputs[0].state_dict())
    shared = net.fc2.weight.detach().clone()
    untouched = net.inputs[2].weight.detach().clone()
    stream.run_task()
    assert all(torch.equal(v, net.inputs[0].state_dict()[k]) for k, v in first.items())
    assert not torch.equal(shared, net.fc2.weight)
    assert torch.equal(untouched, net.inputs[2].weight)
    assert net.inputs[1].weight.grad is not None


def test_ewc_penalty_holds_weights_near_the_anchor(digits):
    # Two members, lambda 0 and 300, in one population: the penalised one moves less, Fisher-weighted.
    stream = PopulationRun(digits, "ewc", [cfg("ewc", digits, lr=0.05, ewc_lambda=lam) for lam in (0.0, 300.0)],
                           [0, 0])
    stream.run_task()
    method = stream.method
    assert all((f >= 0).all() for f in method.fisher) and all(float(f[m].sum()) > 0 for f in method.fisher[:1]
                                                              for m in (0, 1))
    assert method.penalty().detach().tolist() == [0.0, 0.0]
    anchor, fisher = [a.clone() for a in method.anchor], [f.clone() for f in method.fisher]
    stream.run_task()
    moves = sum((p.detach() - a).pow(2).mul(f).flatten(1).sum(1) for p, a, f in zip(method.params(), anchor, fisher))
    assert float(moves[1]) < 0.5 * float(moves[0]), moves


def test_ewc_fisher_decays_with_gamma(digits):
    stream = PopulationRun(digits, "ewc", cfg("ewc", digits, gamma=0.5), [0])
    stream.run_task()
    first = [f.clone() for f in stream.method.fisher]
    stream.run_task()
    second_only = [f - 0.5 * old for f, old in zip(stream.method.fisher, first)]
    assert all((s >= -1e-9).all() for s in second_only) and sum(float(s.sum()) for s in second_only) > 0


def test_ewc_fisher_is_the_weighted_square_of_each_example_s_gradient(digits):
    """The batched estimate against one member's per-example gradients taken one at a time."""
    import torch.nn.functional as F

    from raycl.methods.base import member_init
    from raycl.models import build_model

    stream = PopulationRun(digits, "ewc", cfg("ewc", digits), [4], dtype=torch.float64)
    method = stream.method
    data = stream._inputs(0, "train")
    state = copy.deepcopy(method.samples.state_dict())
    fisher = method.task_fisher(data)
    method.samples.load_state_dict(state)
    rows = method.samples.permutation(data.n)[0, :min(1000, data.n)]
    net = member_init(4, lambda: build_model(digits))[0].double()
    x, y = data.member(0)
    reference = [torch.zeros_like(p) for p in net.parameters()]
    for i in rows.tolist():
        log_p = F.log_softmax(net(x[i:i + 1]), 1)[0, y[i]]
        for r, g in zip(reference, torch.autograd.grad(log_p, list(net.parameters()))):
            r.add_(g.pow(2) * float(log_p.detach().exp()))
    assert torch.allclose(fisher[0][0], reference[0].t() / len(rows), rtol=1e-9, atol=1e-15)
    assert torch.allclose(fisher[-1][0, 0], reference[-1] / len(rows), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("method,values", [
    ("mer", {"buffer_size": 50, "minibatch_size": 5}), ("gem", {"buffer_size": 50}),
    ("agem", {"buffer_size": 50}), ("ewc", {}), ("independent", {}), ("taskinput", {}),
])
def test_checkpoint_at_a_task_boundary_resumes_identically(digits, method, values, assert_resumes_identically):
    import dataclasses

    short = dataclasses.replace(digits, tasks=[dataclasses.replace(t, train_x=t.train_x[:150], train_y=t.train_y[:150])
                                               for t in digits.tasks[:3]])
    assert_resumes_identically(short, method, cfg(method, short, **values), seed=1)
