import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raycl.errors import DivergedError
from raycl.methods import METHODS, make_config
from raycl.models import MLP
from raycl.solo_optim import FlatSGD
from raycl.train import PopulationRun, run

FAST = {"lr": 0.1, "n_epochs": 2}


def config_for(method, bench, **extra):
    values = {**FAST, **extra}
    from raycl.hparams import param_specs
    from raycl.methods import get_method

    declared = param_specs(get_method(method).Config)
    if "buffer_size" in declared:
        values.setdefault("buffer_size", 100)
    if declared["optimizer"].default == "adam":
        values.pop("lr")  # FAST's rate suits plain SGD; Adam methods keep their own
    return make_config(method, values, bench.defaults)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_learns_seq_digits(method, digits):
    result = run(digits, method, config_for(method, digits), seed=0)
    acc = result.test_metrics["class_il"]["acc"]
    task_il = result.test_metrics["task_il"]["acc"]
    assert np.isfinite(acc) and task_il > 70  # two-way choices: chance is 50
    assert result.test["class_il"].shape == (5, 5)
    assert not np.isnan(np.diag(result.test["class_il"])).any()


def test_replay_beats_fine_tuning(digits):
    sgd = run(digits, "sgd", config_for("sgd", digits), seed=0).test_metrics["class_il"]["acc"]
    for method in ("er", "der", "derpp"):
        replay = run(digits, method, config_for(method, digits), seed=0).test_metrics["class_il"]["acc"]
        assert replay > sgd + 20, (method, replay, sgd)


REPLAY_METHODS = ("er", "der", "derpp", "mer", "gem", "agem", "clser", "synergy", "gen_replay", "vib")


@pytest.fixture(scope="module")
def sgd_with_defaults(digits):
    return run(digits, "sgd", make_config("sgd", {}, digits.defaults_for("sgd")), seed=0).test_metrics["class_il"]["acc"]


@pytest.mark.parametrize("method", REPLAY_METHODS)
def test_every_replay_method_with_its_defaults_beats_sgd_on_the_offline_default(method, digits, sgd_with_defaults):
    """What a first `launch/train.py --method M` prints: the defaults, with seq-digits' own
    (``Benchmark.method_defaults``), at least 20 points Class-IL above fine-tuning."""
    config = make_config(method, {}, digits.defaults_for(method))
    acc = run(digits, method, config, seed=0).test_metrics["class_il"]["acc"]
    assert acc > sgd_with_defaults + 20, (method, acc, sgd_with_defaults)


def test_method_defaults_of_a_benchmark_yield_to_given_values(digits):
    assert make_config("clser", {}, digits.defaults_for("clser")).stable_alpha == digits.method_defaults["clser"]["stable_alpha"]
    assert make_config("clser", {"stable_alpha": 0.5}, digits.defaults_for("clser")).stable_alpha == 0.5
    assert make_config("der", {}, digits.defaults_for("clser")).minibatch_size == digits.defaults["minibatch_size"]


def test_same_seed_same_numbers(digits):
    a = run(digits, "derpp", config_for("derpp", digits), seed=5)
    b = run(digits, "derpp", config_for("derpp", digits), seed=5)
    c = run(digits, "derpp", config_for("derpp", digits), seed=6)
    assert np.array_equal(a.test["class_il"], b.test["class_il"], equal_nan=True)
    assert not np.array_equal(a.test["class_il"], c.test["class_il"], equal_nan=True)


def test_checkpoint_at_a_task_boundary_resumes_identically(digits, assert_resumes_identically):
    cfg = config_for("derpp", digits)
    assert_resumes_identically(digits, "derpp", cfg, seed=1)


def test_der_stores_logits_from_before_the_step(digits):
    cfg = config_for("der", digits, buffer_size=500)
    stream = PopulationRun(digits, "der", cfg, [0])
    method = stream.method
    x = digits.to_tensor(digits.tasks[0].train_x[:8])[None]
    y = torch.from_numpy(digits.tasks[0].train_y[:8])[None]
    with torch.no_grad():
        before = method.net(x).clone()
    method.observe(x, y, 0)
    assert torch.allclose(method.buffer.logits[:, :8], before, atol=1e-6)
    with torch.no_grad():
        assert not torch.allclose(method.net(x), before)


def test_batch_and_minibatch_sizes_are_independent(digits):
    cfg = config_for("er", digits, batch_size=4, minibatch_size=16)
    stream = PopulationRun(digits, "er", cfg, [0])
    seen = []
    original = stream.method.net.forward
    stream.method.net.forward = lambda x: (seen.append(x.shape[1]), original(x))[1]
    stream.run_task()
    assert seen[0] == 4 and max(seen[:50]) == 20


def test_nan_loss_raises_diverged(digits):
    cfg = config_for("sgd", digits, lr=1e30)
    with pytest.raises(DivergedError):
        run(digits, "sgd", cfg, seed=0)


def test_flat_sgd_matches_torch_sgd():
    torch.manual_seed(0)
    a = MLP(20, 5, hidden=8)
    b = copy.deepcopy(a)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.2)
    opt_b = FlatSGD(b.parameters(), lr=0.2)
    for _ in range(10):
        x, y = torch.randn(6, 20), torch.randint(0, 5, (6,))
        for net, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    b.classifier.weight.grad = None
    with pytest.raises(RuntimeError, match="grad was replaced"):
        opt_b.step()


def test_task_il_masks_other_tasks_logits():
    from raycl.train import _accuracies

    logits = torch.tensor([[0.0, 0.0, 5.0, 1.0], [0.0, 0.0, 1.0, 5.0]])
    y = torch.tensor([3, 3])
    classes = torch.tensor([2, 3])  # the task's classes, on the device of the logits
    acc = _accuracies(logits, y, classes, ("class_il", "task_il"))
    assert acc == {"class_il": 1, "task_il": 1}
    acc = _accuracies(torch.tensor([[9.0, 0.0, 1.0, 2.0]]), torch.tensor([3]), classes, ("class_il", "task_il"))
    assert acc == {"class_il": 0, "task_il": 1}


def test_masked_class_il_scores_a_task_over_the_classes_of_the_tasks_up_to_it():
    from raycl.train import _accuracies

    # Task 1 (classes 2, 3) after three tasks: class 4 (task 2) is masked out, class 0 (task 0) is not.
    logits = torch.tensor([[0.0, 0.0, 1.0, 2.0, 9.0, 0.0], [6.0, 0.0, 1.0, 2.0, 9.0, 0.0]])
    y = torch.tensor([3, 3])
    settings = ("class_il", "masked_class_il", "task_il")
    acc = _accuracies(logits, y, torch.tensor([2, 3]), settings, seen=torch.tensor([0, 1, 2, 3]))
    assert acc == {"class_il": 0, "masked_class_il": 1, "task_il": 2}


def test_masked_class_il_lies_between_class_il_and_task_il_and_equals_task_il_on_the_first_task(digits):
    import numpy as np

    population = PopulationRun(digits, "er", make_config("er", {"n_epochs": 1, "buffer_size": 20}, digits.defaults),
                               [0, 1])
    for _ in population:
        pass
    for split in ("val", "test"):
        class_il, masked, task_il = (population.record.matrices(1, split)[s]
                                     for s in ("class_il", "masked_class_il", "task_il"))
        seen = ~np.isnan(masked)
        assert seen.sum() >= 15 and np.array_equal(seen, ~np.isnan(class_il))
        assert (class_il[seen] <= masked[seen]).all() and (masked[seen] <= task_il[seen]).all()
        assert np.array_equal(masked[:, 0], task_il[:, 0])  # the first task's classes are all seen
        assert (masked[1:, 1:] > class_il[1:, 1:]).any() and (masked[1:, 1:] < task_il[1:, 1:]).any()
    assert "masked_class_il" in population.result(0).test_metrics


@pytest.mark.parametrize("method", ["mer", "gem", "agem"])
def test_flat_vector_methods_refuse_other_optimisers(method, digits):
    from raycl.errors import RayclError

    with pytest.raises(RayclError, match=f"method '{method}' .*optimizer must be 'sgd', got 'adam'"):
        PopulationRun(digits, method, make_config(method, {"optimizer": "adam"}, digits.defaults), [0])
