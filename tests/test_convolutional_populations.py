"""Stacked ResNet populations (grouped convolutions, batch norm over every member's channels): in
float64 each member is exactly its solo run, and the stacked network agrees with the
member-by-member reference (MemberLoop). The networks are 4 base filters wide: the point is the
arithmetic, not the width."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import raycl.models
from raycl.methods import make_config
from raycl.models import ResNet18
from raycl.population.convnet import StackedResNet
from raycl.population.nets import MemberLoop, select_members, stack_members
from raycl.train import PopulationRun

F64 = torch.float64
NARROW = 4
SMALL = {"n_epochs": 1, "batch_size": 4, "minibatch_size": 4, "buffer_size": 8}
ROWS = {
    # The last member's learning rate overflows float64 in its first steps: it is dropped mid-stream.
    "derpp": [{"lr": 0.05, "alpha": 0.3, "beta": 0.5}, {"lr": 0.1, "alpha": 1.0, "beta": 0.1},
              {"lr": 0.02, "alpha": 0.0, "beta": 1.0}, {"lr": 1e300, "alpha": 0.5, "beta": 0.5}],
    "clser": [{"lr": 0.05, "reg_weight": 0.5, "stable_update_freq": 0.5},
              {"lr": 0.1, "reg_weight": 1.0, "plastic_alpha": 0.9, "stable_alpha": 0.95},
              {"lr": 0.02, "reg_weight": 0.1, "plastic_update_freq": 0.7},
              {"lr": 0.07, "stable_alpha": 0.99}],
}


@pytest.fixture
def narrow_cifar(tiny_cifar, monkeypatch):
    """tiny_cifar's reduced-resnet18 narrowed to NARROW base filters for this test."""
    monkeypatch.setitem(raycl.models.BASE_FILTERS, tiny_cifar.model, NARROW)
    return tiny_cifar


@pytest.fixture
def torch_threads(request):
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(1)


def solo_networks(count: int, seed: int = 0) -> list[ResNet18]:
    torch.manual_seed(seed)
    return [ResNet18(4, nf=NARROW).double() for _ in range(count)]


def test_the_resnet_is_stacked_and_agrees_with_the_member_loop():
    """Forward, gradients and running statistics of the stacked network against MemberLoop (whose
    members are their solo networks exactly), in training and in eval mode."""
    solos = solo_networks(3)
    stacked, loop = stack_members(copy.deepcopy(solos)), MemberLoop(copy.deepcopy(solos))
    assert isinstance(stacked, StackedResNet)
    x = torch.randn(3, 5, 3, 32, 32, dtype=F64)
    out, reference = stacked(x), loop(x)
    assert torch.allclose(out, reference, rtol=0, atol=1e-12)
    grads = torch.autograd.grad(out.square().sum(), list(stacked.parameters()))
    loop_grads = torch.autograd.grad(reference.square().sum(), list(loop.parameters()))
    reference_grads = dict(zip(loop._param_names, loop_grads))
    gradient_net = StackedResNet(copy.deepcopy(solos))  # its tensors swapped for the gradients, to read them per member
    for param, grad in zip(gradient_net.parameters(), grads):
        param.data = grad
    for p in range(3):
        by_member = gradient_net.member_state_dict(p)
        for name, expected in reference_grads.items():
            assert torch.allclose(by_member[name], expected[p], rtol=0, atol=1e-10), (p, name)
        state = stacked.member_state_dict(p)
        for i, name in enumerate(loop._buffer_names):
            assert torch.allclose(state[name], getattr(loop, f"stacked_buffer_{i}")[p], rtol=0, atol=1e-12), name
    stacked.eval(), loop.eval()
    assert torch.allclose(stacked(x), loop(x), rtol=0, atol=1e-12)


def test_selected_members_and_their_copies_are_independent():
    """select_members on the stacked form: position 0 kept twice becomes two members that train apart."""
    solos = solo_networks(3)
    stacked = stack_members(copy.deepcopy(solos))
    select_members(stacked, torch.tensor([2, 0, 0]))
    x = torch.randn(3, 4, 3, 32, 32, dtype=F64)
    out = stacked(x)  # training mode: each copy's running statistics follow its own inputs
    for k, source in enumerate((2, 0, 0)):
        alone = stack_members([copy.deepcopy(solos[source])])
        assert torch.equal(out[k], alone(x[k:k + 1])[0])
        for mine, theirs in zip(stacked.buffers(), alone.buffers(), strict=True):
            assert torch.equal(mine[k], theirs[0])
    copies = [stacked.member_state_dict(k)["bn1.running_mean"] for k in (1, 2)]
    assert not torch.equal(*copies)


def members_alone_and_together(bench, method: str, rows: list[dict], seeds: list[int], tasks: int):
    configs = [make_config(method, {**SMALL, **row}, bench.defaults) for row in rows]
    together = PopulationRun(bench, method, configs, seeds, dtype=F64)
    for _ in range(tasks):
        together.run_task()
    alone = {}
    for i in (0, 2):
        alone[i] = PopulationRun(bench, method, [configs[i]], [seeds[i]], dtype=F64)
        for _ in range(tasks):
            alone[i].run_task()
    return together, alone


@pytest.mark.parametrize("torch_threads", [1, 2], indirect=True, ids=["1 thread", "2 threads"])
@pytest.mark.parametrize("method", sorted(ROWS))
def test_a_resnet_member_alone_equals_that_member_in_a_stacked_population_of_four(method, narrow_cifar,
                                                                                  torch_threads):
    """Every weight, running statistic and moving average, and every accuracy, after two tasks;
    in DER++ with a fourth member that diverges and is dropped on the way."""
    together, alone = members_alone_and_together(narrow_cifar, method, ROWS[method], [3, 4, 5, 6], tasks=2)
    assert isinstance(together.method.net, StackedResNet)
    diverges = method == "derpp"
    assert together.alive == ([0, 1, 2] if diverges else [0, 1, 2, 3])
    position = {member: k for k, member in enumerate(together.alive)}
    for i, solo in alone.items():
        stacked, own = together.method, solo.method
        nets = [(stacked.net, own.net)]
        if method == "clser":
            nets += [(stacked.stable.model, own.stable.model), (stacked.plastic.model, own.plastic.model)]
        for mine, theirs in nets:
            for a, b in zip(mine.state_dict().values(), theirs.state_dict().values(), strict=True):
                assert torch.equal(a[position[i]], b[0])
        for setting in narrow_cifar.settings:
            assert np.array_equal(together.test[setting][i], solo.test[setting][0], equal_nan=True), (i, setting)
            assert np.array_equal(together.val[setting][i], solo.val[setting][0], equal_nan=True), (i, setting)
    assert not torch.equal(together.method.net.resnet.conv1.weight[0], together.method.net.resnet.conv1.weight[1])


def test_a_stacked_resnet_population_resumes_mid_stream_with_the_same_numbers(narrow_cifar,
                                                                                assert_resumes_identically):
    config = make_config("clser", {**SMALL, **ROWS["clser"][0]}, narrow_cifar.defaults)
    assert_resumes_identically(narrow_cifar, "clser", config, seed=0, after=1)


def test_synergy_fisher_on_the_stacked_resnet_is_each_members_own(narrow_cifar, monkeypatch):
    """The per-example Fisher of every member at once (in chunks) equals, member by member, the
    mean of p(y|x) x squared gradients of a solo network with that member's weights; after a
    selection that keeps a member twice, both copies have its Fisher."""
    import raycl.methods.synergy

    monkeypatch.setattr(raycl.methods.synergy, "FISHER_CHUNK", 2)
    configs = [make_config("synergy", {**SMALL, "lr": lr}, narrow_cifar.defaults) for lr in (0.05, 0.1, 0.02)]
    run = PopulationRun(narrow_cifar, "synergy", configs, [0, 1, 2], dtype=F64)
    run.run_task()
    method = run.method
    assert isinstance(method.net, StackedResNet) and not method.linear_only
    x = torch.rand(3, 5, 3, 32, 32, dtype=F64)
    y = torch.randint(0, narrow_cifar.n_classes, (3, 5))

    def solo_fisher(state: dict, xs: torch.Tensor, ys: torch.Tensor) -> dict[str, torch.Tensor]:
        net = ResNet18(narrow_cifar.n_classes, nf=NARROW).double().eval()
        net.load_state_dict(state)
        total = {n: torch.zeros_like(t) for n, t in net.named_parameters()}
        for i in range(len(xs)):
            log_p = F.log_softmax(net(xs[i:i + 1]), -1)[0, ys[i]]
            grads = torch.autograd.grad(log_p, list(net.parameters()))
            for (name, _), g in zip(net.named_parameters(), grads):
                total[name] += log_p.detach().exp() * g.pow(2)
        return {n: t / len(xs) for n, t in total.items()}

    def check(fisher: list[torch.Tensor], expected: list[dict]) -> None:
        as_net = copy.deepcopy(method.ema.model)  # the Fisher laid out as the parameters, to read per member
        for param, f in zip(as_net.parameters(), fisher, strict=True):
            param.data = f
        for k, member_fisher in enumerate(expected):
            found = as_net.member_state_dict(k)
            for name, value in member_fisher.items():
                assert torch.allclose(found[name], value, rtol=1e-9, atol=1e-15), (k, name)

    states = [{n: t.clone() for n, t in method.ema.model.member_state_dict(p).items()} for p in range(3)]
    expected = [solo_fisher(states[p], x[p], y[p]) for p in range(3)]
    check(method._estimate_fisher(x, y), expected)
    method.select(torch.tensor([1, 1]))
    check(method._estimate_fisher(x[[1, 1]], y[[1, 1]]), [expected[1], expected[1]])
