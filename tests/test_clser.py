import numpy as np
import torch

from raycl.methods import make_config
from raycl.train import PopulationRun, run

# seq-digits has a few hundred steps in all: memories with a shorter horizon than the defaults.
SHORT = {"buffer_size": 100, "plastic_alpha": 0.95, "stable_alpha": 0.99, "stable_update_freq": 0.7}


def config(digits, **values):
    return make_config("clser", {**SHORT, **values}, digits.defaults)


def test_replay_keeps_the_first_task(digits):
    replay = run(digits, "clser", config(digits), seed=0)
    hardly = run(digits, "clser", config(digits, buffer_size=1), seed=0)
    assert np.isfinite(replay.test_metrics["class_il"]["acc"])
    assert replay.test["class_il"][-1, 0] > hardly.test["class_il"][-1, 0] + 30
    assert replay.test_metrics["class_il"]["acc"] > hardly.test_metrics["class_il"]["acc"] + 20


def test_evaluates_the_stable_model_and_the_others_on_request(digits):
    x = digits.to_tensor(digits.tasks[0].test_x[:16])
    outputs = {}
    for which in ("stable", "plastic", "working"):
        stream = PopulationRun(digits, "clser", config(digits, eval_model=which), [0])
        loss = stream.run_task().loss
        assert np.isfinite(loss)
        m = stream.method
        outputs[which] = m.predict(x[None], 0)[0]
        expected = {"stable": m.stable.model, "plastic": m.plastic.model, "working": m.net}[which]
        assert torch.equal(outputs[which], expected(x[None])[0])
    # Same seed, same training: the three models really differ.
    assert not torch.allclose(outputs["stable"], outputs["plastic"])
    assert not torch.allclose(outputs["stable"], outputs["working"])
    assert config(digits).eval_model == make_config("clser", {}).eval_model == "stable"


def test_targets_come_from_the_memory_more_confident_in_the_label(digits):
    stream = PopulationRun(digits, "clser", config(digits), [0])
    stream.run_task()
    stream.run_task()
    m = stream.method
    sample = m.buffer.sample(100)
    targets = m.memory_targets(sample.x, sample.y)[0]
    stable, plastic = m.stable(sample.x)[0], m.plastic(sample.x)[0]
    y = sample.y[0]
    p_s = stable.softmax(1).gather(1, y[:, None]).squeeze(1)
    p_p = plastic.softmax(1).gather(1, y[:, None]).squeeze(1)
    chosen = torch.where((p_s > p_p)[:, None], stable, plastic)
    assert torch.equal(targets, chosen)
    assert (p_s > p_p).any() and (p_s <= p_p).any()


def test_stochastic_updates_follow_their_frequencies(digits):
    # Two members of one population with their own frequencies.
    stream = PopulationRun(digits, "clser", [config(digits, plastic_update_freq=0.9, stable_update_freq=0.2),
                                             config(digits, plastic_update_freq=0.3, stable_update_freq=0.6)], [0, 1])
    stream.run_task()
    m = stream.method
    steps = m.global_step
    for member, (plastic, stable) in enumerate([(0.9, 0.2), (0.3, 0.6)]):
        assert abs(int(m.plastic.updates[member]) / steps - plastic) < 0.1
        assert abs(int(m.stable.updates[member]) / steps - stable) < 0.1


def test_resuming_from_a_task_boundary_gives_the_same_numbers(digits, assert_resumes_identically):
    cfg = make_config("clser", {"buffer_size": 50, "stable_update_freq": 0.5}, digits.defaults)
    assert_resumes_identically(digits, "clser", cfg, seed=3)
