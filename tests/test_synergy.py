import numpy as np
import torch

from raycl.methods import make_config
from raycl.methods.base import ContinualMethod
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
    assert Synergy.begin_task is ContinualMethod.begin_task
    assert Synergy.end_task is ContinualMethod.end_task


def test_fisher_is_estimated_and_the_penalty_pulls_towards_the_ema(digits):
    distances = {}
    for weight in (0.0, 100.0):
        stream = PopulationRun(digits, "synergy", config(digits, penalty_weight=weight, fisher_update_freq=1.0), [0])
        losses = [stream.run_task().loss for _ in range(2)]
        assert np.isfinite(losses).all()
        m = stream.method.members[0]
        distances[weight] = sum(float((p.detach() - q).pow(2).sum()) for p, q in zip(m.net.parameters(),
                                                                             m.ema.model.parameters()))
        if weight:
            assert all(torch.isfinite(f).all() and (f >= 0).all() for f in m.fisher)
            assert sum(float(f.sum()) for f in m.fisher) > 0
    assert distances[100.0] < distances[0.0], distances


def test_fast_fisher_matches_per_example_gradients(digits):
    stream = PopulationRun(digits, "synergy", config(digits), [0])
    stream.run_task()
    m = stream.method.members[0]
    assert m.linear_only
    sample = m.buffer.sample(32)
    fast = m._estimate_fisher(sample.x, sample.y)
    m.linear_only = False
    general = m._estimate_fisher(sample.x, sample.y)
    for a, b in zip(fast, general):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_evaluates_the_semantic_memory(digits):
    stream = PopulationRun(digits, "synergy", config(digits), [0])
    stream.run_task()
    m = stream.method.members[0]
    x = digits.to_tensor(digits.tasks[0].test_x[:16])
    assert torch.equal(m.predict(x, 0), m.ema.model(x))
    assert not torch.equal(m.predict(x, 0), m.net(x))
    working = PopulationRun(digits, "synergy", config(digits, eval_model="working"), [0])
    working.run_task()
    assert torch.equal(working.method.members[0].predict(x, 0), working.method.members[0].net(x))


def test_resuming_from_a_task_boundary_gives_the_same_numbers(digits, assert_resumes_identically):
    cfg = make_config("synergy", {"buffer_size": 50}, digits.defaults)
    assert_resumes_identically(digits, "synergy", cfg, seed=3)
