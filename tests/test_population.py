"""Populations: members trained in lockstep are exactly the runs they would be alone."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raycl.errors import RayclError
from raycl.methods import METHODS, make_config
from raycl.train import PopulationRun, run_population

F64 = torch.float64


def short(benchmark, n_train=60):
    """The benchmark with few training examples per task: populations of every method stay quick."""
    tasks = [dataclasses.replace(t, train_x=t.train_x[:n_train], train_y=t.train_y[:n_train]) for t in benchmark.tasks]
    return dataclasses.replace(benchmark, tasks=tasks)


def configs(method, bench, rows):
    return [make_config(method, {"n_epochs": 1, **row}, bench.defaults) for row in rows]


GEN = {"gen_hidden": 20, "latent_size": 4, "gen_epochs": 2, "gen_batch_size": 32}
MIXED = {
    "sgd": [{"lr": 0.05}, {"lr": 0.1}, {"lr": 0.02}, {"lr": 0.07}],
    "er": [{"lr": 0.05, "buffer_size": 50}, {"lr": 0.1, "buffer_size": 50}, {"lr": 0.02, "buffer_size": 50},
           {"lr": 0.07, "buffer_size": 50}],
    "der": [{"lr": 0.05, "alpha": 0.3, "buffer_size": 50}, {"lr": 0.1, "alpha": 1.0, "buffer_size": 50},
            {"lr": 0.02, "alpha": 0.0, "buffer_size": 50}, {"lr": 0.07, "alpha": 0.5, "buffer_size": 50}],
    "derpp": [{"lr": 0.05, "alpha": 0.3, "beta": 0.5, "buffer_size": 50},
              {"lr": 0.1, "alpha": 1.0, "beta": 0.1, "buffer_size": 50},
              {"lr": 0.02, "alpha": 0.0, "beta": 1.0, "buffer_size": 50},
              {"lr": 0.07, "alpha": 0.5, "beta": 0.5, "buffer_size": 50}],
    "vib": [{"lr": 1e-3, "beta_1": -1e-2, "replay_weight": 0.5, "n_replay": 20},
            {"lr": 3e-3, "beta_1": 1e-3, "replay_weight": 0.0, "n_replay": 20},
            {"lr": 5e-4, "beta_1": 0.0, "beta_2": 0.1, "replay_weight": 0.8, "n_replay": 20},
            {"lr": 2e-3, "beta_1": -1e-3, "replay_weight": 0.3, "n_replay": 20}],
    "agem": [{"lr": 0.05, "buffer_size": 50}, {"lr": 0.1, "buffer_size": 50},
             {"lr": 0.02, "buffer_size": 50}, {"lr": 0.07, "buffer_size": 50}],
    "clser": [{"lr": 0.05, "buffer_size": 50, "reg_weight": 0.5, "stable_update_freq": 0.5},
              {"lr": 0.1, "buffer_size": 50, "reg_weight": 1.0, "plastic_alpha": 0.9, "stable_alpha": 0.95},
              {"lr": 0.02, "buffer_size": 50, "reg_weight": 0.1, "plastic_update_freq": 0.7},
              {"lr": 0.07, "buffer_size": 50, "stable_alpha": 0.99}],
    "synergy": [{"lr": 0.05, "buffer_size": 50, "ema_update_freq": 0.5, "fisher_update_freq": 0.5},
                {"lr": 0.1, "buffer_size": 50, "penalty_weight": 1.0, "ema_alpha": 0.9},
                {"lr": 0.02, "buffer_size": 50, "reg_weight": 1.0, "penalty_weight": 0.0},
                {"lr": 0.07, "buffer_size": 50, "fisher_alpha": 0.9}],
    "gen_replay": [{"lr": 0.05, "gen_lr": 1e-3, **GEN}, {"lr": 0.1, "gen_lr": 3e-3, **GEN},
                   {"lr": 0.02, "gen_lr": 5e-4, **GEN}, {"lr": 0.07, "gen_lr": 2e-3, **GEN}],
    "mer": [{"lr": 0.05, "beta": 0.1, "buffer_size": 30, "minibatch_size": 3, "batches_per_example": 2},
            {"lr": 0.1, "beta": 0.5, "gamma": 0.5, "buffer_size": 30, "minibatch_size": 3, "batches_per_example": 2},
            {"lr": 0.02, "beta": 1.0, "buffer_size": 30, "minibatch_size": 3, "batches_per_example": 2},
            {"lr": 0.07, "gamma": 0.8, "buffer_size": 30, "minibatch_size": 3, "batches_per_example": 2}],
    "ewc": [{"lr": 0.05, "ewc_lambda": 100.0}, {"lr": 0.1, "ewc_lambda": 1.0, "gamma": 0.5},
            {"lr": 0.02, "ewc_lambda": 1000.0, "gamma": 0.9}, {"lr": 0.07, "ewc_lambda": 10.0}],
}


def wide(benchmark):
    """The benchmark's 8x8 images blown up to 28x28 (784 inputs, as MNIST): the first layer's
    gradient then has more elements than torch reduces on one thread."""
    def blow_up(x):
        images = np.kron(x.reshape(-1, 8, 8), np.ones((3, 3), dtype=x.dtype))
        return np.pad(images, ((0, 0), (2, 2), (2, 2))).reshape(len(x), 784)

    tasks = [dataclasses.replace(t, train_x=blow_up(t.train_x), val_x=blow_up(t.val_x), test_x=blow_up(t.test_x))
             for t in benchmark.tasks]
    return dataclasses.replace(benchmark, tasks=tasks, input_shape=(784,))


@pytest.fixture
def torch_threads(request):
    """Run the test with ``request.param`` torch threads (the suite runs with one)."""
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(1)


@pytest.mark.parametrize("torch_threads", [1, 2], indirect=True, ids=["1 thread", "2 threads"])
@pytest.mark.parametrize("method", sorted(MIXED))
def test_a_member_alone_equals_that_member_in_a_population_of_four(method, digits, torch_threads):
    """With two threads too: a reduction that torch splits over threads at P = 1 but not at P = 4
    (a two-pass sum) would change a member's numbers with its company."""
    bench = wide(short(digits, 200))
    rows = configs(method, bench, MIXED[method])
    seeds = [3, 4, 5, 6]
    together = run_population(bench, method, rows, seeds, dtype=F64)
    for i in (0, 2):
        alone = run_population(bench, method, [rows[i]], [seeds[i]], dtype=F64)
        for setting in bench.settings:
            assert np.array_equal(together.test[setting][i], alone.test[setting][0], equal_nan=True), (i, setting)
            assert np.array_equal(together.val[setting][i], alone.val[setting][0], equal_nan=True), (i, setting)
        assert np.array_equal(together.val_loss[i], alone.val_loss[0], equal_nan=True)
    # Different configurations and seeds really train differently.
    assert not np.array_equal(together.val_loss[0], together.val_loss[1], equal_nan=True)


def test_each_member_gets_its_solo_gradient_and_learning_rate(digits):
    """One DER++ step of a population equals, member by member, the step of an ordinary network
    with that member's weights, loss weights and learning rate."""
    rows = configs("derpp", digits, MIXED["derpp"][:3])
    population = PopulationRun(digits, "derpp", rows, [0, 1, 2], dtype=F64)
    method = population.method
    data = population._inputs(0, "train")
    for start in range(0, 30, 10):  # fill the buffers a little so the step replays
        method.observe(*data.gather(torch.arange(start, start + 10).expand(3, -1)), 0)
    nets = []
    for p in range(3):
        layers = [method.net.fc1, method.net.fc2, method.net.classifier]
        net = torch.nn.Sequential(torch.nn.Linear(64, 100), torch.nn.ReLU(), torch.nn.Linear(100, 100), torch.nn.ReLU(),
                                  torch.nn.Linear(100, 10)).double()
        for linear, stacked in zip(net[::2], layers):
            linear.weight.data.copy_(stacked.weight[p].t())
            linear.bias.data.copy_(stacked.bias[p, 0])
        nets.append(net)
    x, y = data.gather(torch.arange(40, 50).expand(3, -1))
    # The draws the population will make at this step, replayed for the plain networks.
    buffer_state = copy.deepcopy(method.buffer.state_dict())
    for_logits, for_labels = method.buffer.sample(10, draws=2)
    method.buffer.load_state_dict(buffer_state)
    method.observe(x, y, 0)
    for p, (net, row) in enumerate(zip(nets, rows)):
        out = net(torch.cat([x[p], for_logits.x[p], for_labels.x[p]]))
        loss = (F.cross_entropy(out[:10], y[p]) + row.alpha * F.mse_loss(out[10:20], for_logits.logits[p])
                + row.beta * F.cross_entropy(out[20:], for_labels.y[p]))
        grads = torch.autograd.grad(loss, list(net.parameters()))
        expected = [w.detach() - row.lr * g for w, g in zip(net.parameters(), grads)]
        assert torch.allclose(method.net.fc1.weight[p].t(), expected[0], atol=1e-12, rtol=0)
        assert torch.allclose(method.net.classifier.bias[p, 0], expected[5], atol=1e-12, rtol=0)


def test_a_diverging_member_is_dropped_and_the_others_are_untouched(digits):
    bench = short(digits, 200)
    rows = configs("er", bench, [{"lr": 0.05, "buffer_size": 50}, {"lr": 1e30, "buffer_size": 50},
                                 {"lr": 0.1, "buffer_size": 50}])
    population = PopulationRun(bench, "er", rows, [0, 1, 2])
    reports = list(population)
    assert population.alive == [0, 2] and list(population.diverged) == [1]
    assert 1 in reports[0].diverged and "diverged" in reports[0].diverged[1]
    assert reports[-1].members == [0, 2]
    assert population.method.size == 2 and population.method.buffer.examples.shape[0] == 2
    assert np.isnan(population.test["class_il"][1, -1]).all()
    for i in (0, 2):
        alone = run_population(bench, "er", [rows[i]], [i])
        assert np.array_equal(population.test["class_il"][i], alone.test["class_il"][0], equal_nan=True)


@pytest.mark.parametrize("method", ["derpp", "vib"])
def test_a_member_diverging_mid_task_leaves_the_others_as_if_alone(method, digits, monkeypatch):
    """The loop checks for non-finite losses every DIVERGENCE_CHECK_EVERY steps; here every 3, so the
    drop comes mid-task, mid-way through a gathered chunk of batches, whose order and batches must
    then be re-indexed for the members left."""
    import raycl.train

    from raycl.data import load_benchmark

    monkeypatch.setattr(raycl.train, "DIVERGENCE_CHECK_EVERY", 3)
    monkeypatch.setattr(raycl.train, "GATHER_STEPS", 4)
    # 15 steps per task at batch 10, gathered 4 at a time: the drop comes mid-chunk, and the chunks
    # after it are gathered through the re-indexed orders; each member on its own data seed, so the
    # data's member offsets must be re-indexed too.
    benches = [short(digits, 150)] + [short(load_benchmark("seq-digits", seed=s), 150) for s in (1, 2)]
    rows = [dict(r) for r in MIXED[method][:3]]
    rows[1]["lr"] = 1e300  # Adam's step is about lr whatever the gradient: in float64 only this overflows
    bench = benches[0]
    population_configs = configs(method, bench, rows)
    population = PopulationRun(benches, method, population_configs, [0, 1, 2], dtype=F64)
    report = population.run_task()
    assert population.alive == [0, 2] and population.diverged[1].task == 0
    assert population.diverged[1].step == 3 and "near step 3" in report.diverged[1]  # mid-task
    for _ in population:
        pass
    for i in (0, 2):
        alone = run_population([benches[i]], method, [population_configs[i]], [i], dtype=F64)
        for setting in bench.settings:
            assert np.array_equal(population.test[setting][i], alone.test[setting][0], equal_nan=True)
            assert np.array_equal(population.val[setting][i], alone.val[setting][0], equal_nan=True)


@pytest.mark.parametrize("method", sorted(MIXED))
def test_a_diverging_member_of_any_method_leaves_the_others_as_if_alone(method, digits):
    bench = short(digits, 100)
    rows = [dict(r) for r in MIXED[method][:3]]
    rows[1]["lr"] = 1e300  # overflows in float64 within a few steps, SGD and Adam alike
    population_configs = configs(method, bench, rows)
    population = run_population(bench, method, population_configs, [0, 1, 2], dtype=F64)
    assert population.alive == [0, 2] and list(population.diverged) == [1]
    for i in (0, 2):
        alone = run_population(bench, method, [population_configs[i]], [i], dtype=F64)
        for setting in bench.settings:
            assert np.array_equal(population.test[setting][i], alone.test[setting][0], equal_nan=True), (i, setting)


@pytest.mark.parametrize("method", sorted(MIXED))
def test_every_method_resumes_mid_stream_with_the_same_numbers(method, digits):
    bench = short(digits, 100)
    population_configs = configs(method, bench, MIXED[method][:2])
    whole = run_population(bench, method, population_configs, [0, 1], dtype=F64)
    first = PopulationRun(bench, method, population_configs, [0, 1], dtype=F64)
    first.run_task()
    first.run_task()
    second = PopulationRun(bench, method, population_configs, [0, 1], dtype=F64)
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    for _ in second:
        pass
    for setting in bench.settings:
        assert np.array_equal(whole.test[setting], second.test[setting], equal_nan=True), setting
        assert np.array_equal(whole.val[setting], second.val[setting], equal_nan=True), setting


@pytest.mark.parametrize("method", ["derpp", "vib", "gem"])
def test_a_population_resumes_mid_stream_with_the_same_numbers(method, digits):
    bench = short(digits, 100)
    rows = {"derpp": [{"lr": 0.05, "buffer_size": 30}, {"lr": 1e30, "buffer_size": 30}, {"lr": 0.1, "buffer_size": 30}],
            "vib": [{"lr": 1e-3, "replay_mode": "generative", "beta_1": -0.1}, {"lr": 1e30, "beta_1": -0.1,
                                                                                 "replay_mode": "generative"},
                    {"lr": 3e-3, "replay_mode": "generative", "beta_1": -0.1}],
            "gem": [{"lr": 0.05}, {"lr": 0.1}, {"lr": 0.02}]}[method]
    population_configs = configs(method, bench, rows)
    whole = run_population(bench, method, population_configs, [0, 1, 2])
    first = PopulationRun(bench, method, population_configs, [0, 1, 2])
    first.run_task()
    first.run_task()
    second = PopulationRun(bench, method, population_configs, [0, 1, 2])
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    assert second.alive == first.alive
    for _ in second:
        pass
    assert second.alive == whole.alive and set(second.diverged) == set(whole.diverged)
    if method != "gem":  # the populations with a learning rate of 1e30 lose that member in task 1
        assert whole.alive == [0, 2]
    for setting in bench.settings:
        assert np.array_equal(whole.test[setting], second.test[setting], equal_nan=True), setting


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_a_population_of_two(method, digits):
    bench = short(digits)
    from raycl.hparams import param_specs
    from raycl.methods import get_method

    declared = param_specs(get_method(method).Config)
    values = {"n_epochs": 1, **({"buffer_size": 20} if "buffer_size" in declared else {})}
    config = make_config(method, values, bench.defaults)
    population = run_population(bench, method, config, [0, 1])
    assert population.alive == [0, 1]
    results = [population.result(m) for m in (0, 1)]
    assert [r.seed for r in results] == [0, 1]
    for r in results:
        assert np.isfinite(r.test["class_il"][-1]).all()
    assert not np.array_equal(results[0].test["class_il"], results[1].test["class_il"])


def test_members_on_different_data_seeds_share_nothing_but_the_benchmark_name(digits):
    from raycl.data import load_benchmark

    other = load_benchmark("seq-digits", seed=7)
    config = make_config("sgd", {"n_epochs": 1}, digits.defaults)
    together = run_population([digits, other], "sgd", config, [0, 1], member_data=[0, 1], dtype=F64)
    alone = run_population([other], "sgd", config, [1], dtype=F64)
    assert np.array_equal(together.val["class_il"][1], alone.val["class_il"][0], equal_nan=True)
    assert PopulationRun([digits, other], "sgd", config, [0, 1]).member_data == [0, 1]  # one per member
    with pytest.raises(RayclError, match="2 benchmarks for 3 members"):
        PopulationRun([digits, other], "sgd", config, [0, 1, 2])


def test_structural_hyperparameters_must_be_shared(digits):
    rows = [make_config("derpp", {"minibatch_size": 5}), make_config("derpp", {"minibatch_size": 6})]
    with pytest.raises(RayclError, match="must share 'minibatch_size'.*per-member hyperparameters: lr, buffer_size, "
                                         "alpha, beta"):
        PopulationRun(digits, "derpp", rows, [0, 1])
    # Methods run member by member only share the step schedule.
    bench = short(digits)
    population = run_population(bench, "gem", [make_config("gem", {"buffer_size": 20, "n_epochs": 1}),
                                               make_config("gem", {"buffer_size": 40, "n_epochs": 1})], [0, 1])
    assert [m.config.buffer_size for m in population.method.members] == [20, 40]
    with pytest.raises(RayclError, match="must share 'n_epochs'"):
        PopulationRun(digits, "gem", [make_config("gem", {"n_epochs": 1}), make_config("gem", {"n_epochs": 2})],
                      [0, 1])


@pytest.mark.parametrize("fused", [True, False], ids=["fused, as on CPU", "multi-tensor, as off CPU"])
def test_population_optimiser_matches_torch_adam_per_member(fused):
    from raycl.models import MLP
    from raycl.population.nets import stack_members
    from raycl.population.optim import PopulationOptimizer

    torch.manual_seed(0)
    solos = [MLP(20, 5, hidden=8).double() for _ in range(2)]
    stacked = stack_members(copy.deepcopy(solos))
    rates = torch.tensor([1e-2, 3e-3], dtype=F64)
    population_opt = PopulationOptimizer("adam", stacked.parameters(), rates, fused=fused)
    torch_opts = [torch.optim.Adam(s.parameters(), lr=float(r)) for s, r in zip(solos, rates)]
    for _ in range(5):
        x, y = torch.randn(2, 6, 20, dtype=F64), torch.randint(0, 5, (2, 6))
        logits = stacked(x)
        losses = torch.stack([F.cross_entropy(logits[p], y[p]) for p in range(2)])
        population_opt.step(population_opt.backward(losses.sum()))
        for p, (solo, opt) in enumerate(zip(solos, torch_opts)):
            opt.zero_grad()
            F.cross_entropy(solo(x[p]), y[p]).backward()
            opt.step()
    for p, solo in enumerate(solos):
        assert torch.allclose(stacked.fc1.weight[p].t(), solo.fc1.weight, atol=1e-10)
        assert torch.allclose(stacked.classifier.bias[p, 0], solo.classifier.bias, atol=1e-10)


def test_a_network_with_batch_norm_is_run_member_by_member_as_it_would_run_alone():
    """MemberLoop (any network without a stacked form): stacked parameters and buffers (batch norm's running statistics too), each member's
    slices through the original module; in float64 a member's outputs, gradients and running
    statistics equal those of its own network."""
    from raycl.models import ResNet18
    from raycl.population.nets import MemberLoop

    torch.manual_seed(0)
    solos = [ResNet18(4, nf=4).double() for _ in range(3)]
    stacked = MemberLoop(copy.deepcopy(solos))  # the reference tests/test_convolutional_populations.py checks against
    x = torch.randn(3, 5, 3, 32, 32, dtype=F64)
    out = stacked(x)
    out.square().sum().backward()
    for p, solo in enumerate(solos):
        alone = solo(x[p])
        alone.square().sum().backward()
        assert torch.equal(out[p], alone)
        names = [n for n, _ in solo.named_parameters()]
        for name, stacked_param in zip(names, stacked.stacked_params):
            assert torch.allclose(stacked_param.grad[p], dict(solo.named_parameters())[name].grad, rtol=0, atol=1e-12)
        running = dict(solo.named_buffers())["bn1.running_mean"]
        index = [n for n, _ in solo.named_buffers()].index("bn1.running_mean")
        assert torch.equal(getattr(stacked, f"stacked_buffer_{index}")[p], running)
    stacked.eval()
    assert torch.equal(stacked(x)[1], solos[1].eval()(x[1]))


@pytest.mark.mnist
def test_rotations_are_pixel_maps_of_one_stored_copy(mnist_data_root):
    from raycl.data import load_benchmark
    from raycl.data.mnist import load_mnist, rotate

    rot = load_benchmark("rot-mnist", mnist_data_root, val_fraction=0.0, seed=3)
    images = load_mnist(mnist_data_root)["test_x"][:100]
    rng = np.random.default_rng(3)
    angles = [float(rng.uniform(0.0, 180.0)) for _ in range(20)]
    for task in (0, 7, 19):
        assert np.array_equal(rot.tasks[task].inputs("test")[:100], rotate(images, angles[task]))
    assert all(t.train_x is rot.tasks[0].train_x for t in rot.tasks)


def test_joint_training_marks_a_diverging_member_and_resumes_identically(digits, assert_resumes_identically):
    bench = short(digits, 100)
    rows = configs("joint", bench, [{"lr": 0.05}, {"lr": 1e30}])
    population = run_population(bench, "joint", rows, [0, 1], dtype=F64)
    assert population.alive == [0] and list(population.diverged) == [1]
    alone = run_population(bench, "joint", [rows[0]], [0], dtype=F64)
    assert np.array_equal(population.test["class_il"][0], alone.test["class_il"][0], equal_nan=True)
    assert_resumes_identically(bench, "joint", rows[0], seed=0, after=2)


def _generators(root) -> list[torch.Generator]:
    """Every torch generator reachable from ``root`` through attributes, lists and dicts."""
    found, seen, stack = [], set(), [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float, np.ndarray, torch.Tensor)):
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Generator):
            found.append(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type) and type(obj).__module__.startswith(("raycl", "torch.nn")):
            stack.extend(vars(obj).values())
    return found


@pytest.mark.parametrize("method", sorted(METHODS))
def test_no_two_members_or_streams_share_a_random_generator_seed(method, digits):
    """Members seeded 0..5 in one population: every generator any of them draws from (data order,
    buffer, augmentation, coins, noise, samplers) starts from its own seed."""
    from raycl.hparams import param_specs
    from raycl.methods import get_method

    bench = short(digits)
    declared = param_specs(get_method(method).Config)
    config = make_config(method, {"n_epochs": 1, **({"buffer_size": 20} if "buffer_size" in declared else {})},
                         bench.defaults)
    population = PopulationRun(bench, method, config, list(range(6)))
    seeds = [g.initial_seed() for g in _generators(population)]
    assert len(seeds) >= 12 and len(set(seeds)) == len(seeds), sorted(seeds)


@pytest.mark.parametrize("method", ["er", "der", "derpp"])
def test_with_batch_norm_the_current_examples_are_not_normalised_with_the_replayed_ones(method, tiny_cifar):
    """On the ResNet, current and replayed examples go through separate passes, as in the DER paper's
    code: in training mode the outputs on the current batch do not depend on what is replayed."""
    config = make_config(method, {"n_epochs": 1, "batch_size": 4, "minibatch_size": 4, "buffer_size": 8},
                         tiny_cifar.defaults)
    run = PopulationRun(tiny_cifar, method, config, [0, 1], dtype=F64)
    model = run.method
    assert model.batch_statistics
    model.train(True)
    x = torch.rand(2, 4, 3, 32, 32, dtype=F64)
    first, second = torch.rand(2, 4, 3, 32, 32, dtype=F64), torch.rand(2, 4, 3, 32, 32, dtype=F64)
    with torch.no_grad():
        a = model.forward_parts([x, first])[:, :4]
        b = model.forward_parts([x, second])[:, :4]
        mixed = model.net(torch.cat([x, first], 1))[:, :4]
    assert torch.allclose(a, b, rtol=0, atol=1e-12)
    assert not torch.allclose(a, mixed, atol=1e-6)  # one pass over both would have mixed them
