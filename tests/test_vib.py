import math

import numpy as np
import torch

from raycl.methods import make_config
from raycl.train import PopulationRun, run


def first_task_after_last(digits, **values):
    result = run(digits, "vib", make_config("vib", values, digits.defaults), seed=0)
    return result.test["class_il"][-1, 0], result


def test_simple_replay_keeps_the_first_task(digits):
    with_replay, result = first_task_after_last(digits, replay_mode="simple", n_replay=50)
    without, _ = first_task_after_last(digits, replay_mode="simple", n_replay=50, replay_weight=0.0)
    assert with_replay > without + 30, (with_replay, without)
    assert result.test_metrics["class_il"]["acc"] > 60


def test_generative_replay_keeps_the_first_task(digits):
    # The model's own decoder is the generator, so it needs a real reconstruction weight.
    values = {"replay_mode": "generative", "beta_1": -1.0, "beta_2": 0.1}
    with_replay, _ = first_task_after_last(digits, replay_weight=0.8, **values)
    without, _ = first_task_after_last(digits, replay_weight=0.0, **values)
    assert with_replay > without + 10, (with_replay, without)


def test_losses_are_finite_and_the_network_follows_the_benchmark(digits):
    for values in ({"beta_1": 0.5, "beta_2": 1.0}, {"beta_1": -0.1, "beta_2": 0.0},
                   {"replay_mode": "generative", "freeze_encoder": True}):
        stream = PopulationRun(digits, "vib", make_config("vib", values, digits.defaults), [1])
        assert stream.method.net.encoder[0].weight.shape[1] == math.prod(digits.input_shape) == 64
        losses = [stream.run_task().loss for _ in range(2)]
        assert all(np.isfinite(losses)), (values, losses)


def test_freeze_encoder_stops_the_encoder_after_the_first_task(digits):
    cfg = make_config("vib", {"freeze_encoder": True}, digits.defaults)
    stream = PopulationRun(digits, "vib", cfg, [0])
    stream.run_task()
    encoder = [p.detach().clone() for p in stream.method.net.encoder.parameters()]
    classifier = stream.method.net.classifier.weight.detach().clone()
    stream.run_task()
    assert all(torch.equal(a, b) for a, b in zip(encoder, stream.method.net.encoder.parameters()))
    assert not torch.equal(classifier, stream.method.net.classifier.weight)


def test_simple_replay_stores_n_replay_per_task_with_soft_targets(digits):
    cfg = make_config("vib", {"n_replay": 30}, digits.defaults)
    stream = PopulationRun(digits, "vib", cfg, [0])
    stream.run_task()
    stream.run_task()
    method = stream.method
    assert method.replay_x.shape == (1, 60, 64)
    assert torch.allclose(method.replay_targets.sum(-1), torch.ones(1, 60))


def test_resuming_from_a_task_boundary_gives_the_same_numbers(digits, assert_resumes_identically):
    cfg = make_config("vib", {"replay_mode": "generative", "beta_1": -0.1}, digits.defaults)
    assert_resumes_identically(digits, "vib", cfg, seed=3)


def test_simple_replay_keeps_uint8_bytes_and_replays_the_floats_it_was_given(digits):
    """Kept as the benchmark's bytes (a quarter of float32's memory, an eighth of float64's) and
    scaled on the way out: exactly the floats the end of the task drew; a checkpoint written when
    replay was kept as floats loads into the bytes."""
    cfg = make_config("vib", {"n_replay": 30}, digits.defaults)
    stream = PopulationRun(digits, "vib", [cfg, cfg], [0, 1], dtype=torch.float64)
    method = stream.method
    given = []
    soft_targets = method._soft_targets
    method._soft_targets = lambda x: (given.append(x), soft_targets(x))[1]
    stream.run_task()
    stream.run_task()
    assert method.replay_x.dtype == torch.uint8 and method.replay_x.shape == (2, 60, 64)
    assert torch.equal(method._scaler(method.replay_x), torch.cat(given, 1))
    replayed = method._replay_batch(10)[0]
    assert replayed.dtype == torch.float64 and torch.isin(replayed.flatten(), torch.cat(given, 1).flatten()).all()
    state = method.state_dict()
    state["replay_x"] = method._scaler(state["replay_x"])  # as kept before
    restored = PopulationRun(digits, "vib", [cfg, cfg], [0, 1], dtype=torch.float64).method
    restored.load_state_dict(state)
    assert restored.replay_x.dtype == torch.uint8 and torch.equal(restored.replay_x, method.replay_x)
