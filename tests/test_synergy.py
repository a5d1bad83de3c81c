import numpy as np
import torch

from raycl.methods import make_config
from raycl.methods.base import PopulationMethod
from raycl.methods.synergy import Synergy
from raycl.train import PopulationRun, run


def config(digits, **values):
    return make_config("synergy", {"buffer_size": 100, **values}, digits.defaults)


def test_replay_keeps_the_first_task(digits):
    replay = run(digits, "synergy", config(digits), seed=0)
    hardly = run(digits, "synergy", config(digits, buffer_size=1), seed=0)
    assert np.isfinite(replay.test_metrics["class_il"]["acc"])
    assert replay.test["class_il"][-1, 0] > hardly.test["class_il"][-1, 0] + 30
    assert replay.test_metrics["class_il"]["acc"] > hardly.test_metrics["class_il"]["acc"] + 20


def test_needs_no_task_boundaries():
    assert Synergy.begin_task is PopulationMethod.begin_task
    assert Synergy.end_task is PopulationMethod.end_task


def test_fisher_is_estimated_and_the_penalty_pulls_towards_the_ema(digits):
    # Penalty weights 0 and 100 as two members of one population.
    stream = PopulationRun(digits, "synergy", [config(digits, penalty_weight=w, fisher_update_freq=1.0)
                                               for w in (0.0, 100.0)], [0, 0])
    losses = [stream.run_task().loss for _ in range(2)]
    assert np.isfinite(losses).all()
    m = stream.method
    distances = sum((p.detach() - q).pow(2).flatten(1).sum(1) for p, q in zip(m.net.parameters(),
                                                                             m.ema.model.parameters()))
    assert all(torch.isfinite(f).all() and (f >= 0).all() for f in m.fisher)
    assert sum(float(f[1].sum()) for f in m.fisher) > 0
    assert sum(float(f[0].sum()) for f in m.fisher) == 0  # never estimated without a penalty
    assert float(distances[1]) < float(distances[0]), distances


def test_fast_fisher_matches_per_example_gradients(digits):
    """The batched estimate of a population of two against per-example gradients of each member's
    own plain network (torch.func)."""
    from torch.func import functional_call, grad, vmap

    import torch.nn.functional as F

    from raycl.methods.base import member_init
    from raycl.models import build_model

    stream = PopulationRun(digits, "synergy", [config(digits), config(digits, ema_alpha=0.9)], [0, 1],
                           dtype=torch.float64)
    stream.run_task()
    m = stream.method
    assert m.linear_only
    sample = m.buffer.sample(32)
    fast = m._estimate_fisher(sample.x, sample.y)
    for member in (0, 1):
        net = member_init(0, lambda: build_model(digits))[0].double()
        params = {}
        for (name, _), stacked in zip(net.named_parameters(), m.ema.model.parameters()):
            params[name] = stacked[member].t() if stacked.dim() == 3 and name.endswith("weight") else stacked[member].flatten()
        x, y = sample.x[member], sample.y[member]
        weight = F.softmax(functional_call(net, params, (x,)), 1).gather(1, y[:, None])[:, 0]

        def loss(p, xi, yi):
            return F.cross_entropy(functional_call(net, p, (xi[None],)), yi[None])

        grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
        for (name, _), f in zip(net.named_parameters(), fast):
            reference = (grads[name].pow(2) * weight.view(-1, *[1] * (grads[name].dim() - 1))).mean(0)
            mine = f[member].t() if name.endswith("weight") else f[member].flatten()
            assert torch.allclose(mine, reference, rtol=1e-9, atol=1e-15), name


def test_evaluates_the_semantic_memory(digits):
    stream = PopulationRun(digits, "synergy", config(digits), [0])
    stream.run_task()
    m = stream.method
    x = digits.to_tensor(digits.tasks[0].test_x[:16])[None]
    assert torch.equal(m.predict(x, 0), m.ema.model(x))
    assert not torch.equal(m.predict(x, 0), m.net(x))
    working = PopulationRun(digits, "synergy", config(digits, eval_model="working"), [0])
    working.run_task()
    assert torch.equal(working.method.predict(x, 0), working.method.net(x))


def test_resuming_from_a_task_boundary_gives_the_same_numbers(digits, assert_resumes_identically):
    cfg = make_config("synergy", {"buffer_size": 50}, digits.defaults)
    assert_resumes_identically(digits, "synergy", cfg, seed=3)


def test_the_fisher_of_a_network_with_batch_norm_comes_from_per_example_gradients(tiny_cifar):
    values = {"buffer_size": 8, "batch_size": 4, "minibatch_size": 4, "n_epochs": 1, "fisher_update_freq": 1.0}
    stream = PopulationRun(tiny_cifar, "synergy", [make_config("synergy", values, tiny_cifar.defaults)] * 2, [0, 1])
    stream.run_task()
    stream.run_task()
    m = stream.method
    assert not m.linear_only
    assert all(torch.isfinite(f).all() and (f >= 0).all() for f in m.fisher)
    assert all(float(f[p].sum()) > 0 for p in (0, 1) for f in m.fisher[:1])
    assert (m.fisher_updates > 0).all()


def test_the_per_example_fisher_holds_as_many_gradients_as_its_memory_budget_allows(tiny_cifar, monkeypatch):
    """Chunks of buffer examples sized by the bytes of one example's gradients (every member's): the
    old 16 where they fit, fewer for a wide population of a large network; the same Fisher either way
    up to the order of the sums."""
    from raycl.methods import synergy

    mib = 2**20
    assert synergy.fisher_chunk(8 * mib) == 16  # a small network: the fixed chunk of before, the same numbers
    assert synergy.fisher_chunk(int(16 * 44.7 * mib)) == 1  # resnet18's 11.2M parameters x 16 members, float32
    assert synergy.fisher_chunk(100 * mib, budget=350 * mib) == 3
    values = {"buffer_size": 8, "batch_size": 4, "minibatch_size": 4, "n_epochs": 1, "fisher_update_freq": 1.0}
    stream = PopulationRun(tiny_cifar, "synergy", [make_config("synergy", values, tiny_cifar.defaults)] * 2, [0, 1])
    stream.run_task()
    m = stream.method
    stored = m.buffer.all()
    x, y = m.augment(stored.x), stored.y
    chunks = []
    per_example = synergy.vmap

    def counting(function, in_dims):
        batched = per_example(function, in_dims=in_dims)
        return lambda params, xs, ys: (chunks.append(xs.shape[1]), batched(params, xs, ys))[1]

    monkeypatch.setattr(synergy, "vmap", counting)
    whole = m._estimate_fisher(x, y)
    assert chunks == [8]  # the reduced ResNet of two members fits 16 examples: the whole buffer at once
    chunks.clear()
    one_example = sum(p.numel() * p.element_size() for p in m.ema.model.parameters())
    monkeypatch.setattr(synergy, "FISHER_CHUNK_BYTES", 3 * one_example)
    apart = m._estimate_fisher(x, y)
    assert chunks == [3, 3, 2]
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-12) for a, b in zip(whole, apart))
