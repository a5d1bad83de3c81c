"""MER: the hand-written Algorithm-1 step, the Reptile meta steps, the batched variant, the
mer-* streams, and MER retaining more than plain online SGD on a short permuted stream."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raycl.data import load_benchmark
from raycl.errors import RayclError
from raycl.methods import get_method, make_config
from raycl.models import build_model
from raycl.train import run


@pytest.fixture(scope="module")
def small_perm(mnist_data_root):
    """Five mer-permutations tasks of 100 training and 1000 test images each."""
    bench = load_benchmark("mer-permutations", mnist_data_root, seed=0, samples_per_task=100)
    tasks = [dataclasses.replace(t, test_x=t.test_x[:1000], test_y=t.test_y[:1000]) for t in bench.tasks[:5]]
    return dataclasses.replace(bench, tasks=tasks)


def make_mer(bench, seed=0, **values):
    """A population of one MER member (its network initialised from ``seed``)."""
    cfg = make_config("mer", {"buffer_size": 20, **values}, bench.defaults)
    return get_method("mer")([cfg], [seed], bench, torch.device("cpu"))


def flat(mer) -> torch.Tensor:
    """Member 0's parameters as one vector, in nn.Linear's layout."""
    return torch.cat([(p[0].t() if p.dim() == 3 else p[0, 0]).flatten() for p in mer.net.parameters()])


def set_flat(mer, values: torch.Tensor) -> None:
    offset = 0
    with torch.no_grad():
        for p in mer.net.parameters():
            member = p[0].t() if p.dim() == 3 else p[0, 0]
            member.copy_(values[offset:offset + member.numel()].view_as(member))
            offset += member.numel()


def stream(bench, n=12, task=0):
    x = bench.to_tensor(bench.tasks[task].train_x[:n])
    return x, torch.from_numpy(bench.tasks[task].train_y[:n])


def one(x, y, i):
    """Example i as a population of one's batch: [1, 1, ...]."""
    return x[i:i + 1][None], y[i:i + 1][None]


def test_mer_streams_follow_the_protocol(mnist_data_root):
    rot = load_benchmark("mer-rotations", mnist_data_root, seed=3, samples_per_task=40)
    assert rot.n_tasks == 20 and rot.settings == ("domain_il",) and rot.model == "mlp"
    assert rot.defaults == {"batch_size": 1, "n_epochs": 1}
    for task in rot.tasks:
        assert task.train_x.shape == (40, 784) and task.val_x.shape == (4, 784)
        assert task.test_x.shape == (10000, 784)
    # Each task draws its own images; the same seed draws the same ones.
    assert not np.array_equal(rot.tasks[0].train_y, rot.tasks[1].train_y)
    again = load_benchmark("mer-rotations", mnist_data_root, seed=3, samples_per_task=40)
    assert np.array_equal(rot.tasks[5].train_x, again.tasks[5].train_x)
    many = load_benchmark("mer-many-permutations", mnist_data_root, seed=0, samples_per_task=5)
    assert many.n_tasks == 100
    with pytest.raises(RayclError, match="samples_per_task"):
        load_benchmark("seq-digits", samples_per_task=10)


def test_first_rotation_is_small_and_last_is_near_half_a_turn(mnist_data_root):
    from raycl.data.mnist import load_mnist, rotate

    rot = load_benchmark("mer-rotations", mnist_data_root, seed=0, samples_per_task=20, val_fraction=0.0)
    mnist = load_mnist(mnist_data_root)
    test = mnist["test_x"][:50]

    def best_angle(task):
        errors = {a: np.abs(rotate(test, a).astype(int) - rot.tasks[task].inputs("test")[:50]).sum() for a in range(0, 180)}
        return min(errors, key=errors.get)

    assert 0 <= best_angle(0) < 9
    assert 171 <= best_angle(19) < 180


@pytest.mark.parametrize("variant", ["per-example", "batched"])
def test_manual_mlp_step_matches_autograd(small_perm, variant):
    fast = make_mer(small_perm, lr=0.1, beta=0.3, gamma=0.6, minibatch_size=5, batches_per_example=3,
                    variant=variant)
    slow = make_mer(small_perm, lr=0.1, beta=0.3, gamma=0.6, minibatch_size=5, batches_per_example=3,
                    variant=variant)
    assert fast.manual_mlp_step
    slow.manual_mlp_step = False
    start = flat(fast)
    assert torch.equal(start, flat(slow))
    x, y = stream(small_perm, 30)
    for i in range(30):
        a = fast.observe(*one(x, y, i), 0)
        b = slow.observe(*one(x, y, i), 0)
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(flat(fast), flat(slow), atol=1e-5)
    assert not torch.allclose(flat(fast), start, atol=1e-3)


@pytest.mark.parametrize("frozen", [{"beta": 0.0}, {"gamma": 0.0}])
def test_a_zero_meta_step_leaves_the_weights_alone(small_perm, frozen):
    mer = make_mer(small_perm, lr=0.1, minibatch_size=4, batches_per_example=2, **frozen)
    start = flat(mer)
    x, y = stream(small_perm)
    for i in range(len(y)):
        mer.observe(*one(x, y, i), 0)
    assert torch.equal(flat(mer), start)
    assert len(mer.buffer) == len(y)


def test_within_and_across_batch_steps_interpolate(small_perm):
    """beta = 1 and gamma = 1 with an empty memory is one SGD step; beta = 0.25 keeps a quarter of it
    for each batch, and gamma = 0.5 half of the example's total move."""
    from raycl.methods.base import member_init

    x, y = stream(small_perm, 1)
    plain = make_mer(small_perm, lr=0.05, beta=1.0, gamma=1.0, batches_per_example=1)
    reference = member_init(0, lambda: build_model(small_perm))[0]  # the member's own initial network
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.05)
    F.cross_entropy(reference(x), y).backward()
    ref_opt.step()
    start = flat(plain)
    plain.observe(*one(x, y, 0), 0)
    sgd = torch.cat([p.detach().flatten() for p in reference.parameters()])
    assert torch.allclose(flat(plain), sgd, atol=1e-6)

    damped = make_mer(small_perm, lr=0.05, beta=0.25, gamma=0.5, batches_per_example=1)
    set_flat(damped, start)
    damped.observe(*one(x, y, 0), 0)
    assert torch.allclose(flat(damped), start + 0.5 * 0.25 * (sgd - start), atol=1e-6)


def test_batched_variant_is_one_step_on_example_plus_memories(small_perm):
    x, y = stream(small_perm, 6)
    mer = make_mer(small_perm, lr=0.1, beta=0.5, gamma=1.0, minibatch_size=3, batches_per_example=1,
                   variant="batched")
    for i in range(5):
        mer.observe(*one(x, y, i), 0)
    seen = []
    original = mer.net.forward
    mer.net.forward = lambda inp: (seen.append(inp.shape[1]), original(inp))[1]
    mer.observe(*one(x, y, 5), 0)
    assert seen == [4]  # the example and three memories, in one forward pass


def test_mer_requires_plain_sgd(small_perm):
    with pytest.raises(RayclError, match="optimizer"):
        make_mer(small_perm, optimizer="adam")


def test_mer_retains_more_than_online_sgd(small_perm):
    mer_cfg = make_config("mer", {"lr": 0.03, "beta": 0.1, "gamma": 1.0, "buffer_size": 100, "minibatch_size": 10,
                                  "batches_per_example": 2}, small_perm.defaults)
    online_cfg = make_config("online", {"lr": 0.03}, small_perm.defaults)
    mer = run(small_perm, "mer", mer_cfg, seed=0).test_metrics["domain_il"]
    online = run(small_perm, "online", online_cfg, seed=0).test_metrics["domain_il"]
    assert mer["retained_acc"] > online["retained_acc"] + 5, (mer, online)
