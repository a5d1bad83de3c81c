import numpy as np
import torch

from raycl.methods import make_config
from raycl.methods.gen_replay import vae_loss
from raycl.train import PopulationRun, run

# A small VAE with many passes: seq-digits has only a few hundred examples per task.
SMALL = {"gen_hidden": 100, "latent_size": 16, "gen_epochs": 30, "gen_batch_size": 32}


def config(digits, **values):
    return make_config("gen_replay", {**SMALL, **values}, digits.defaults)


def test_generated_replay_keeps_earlier_tasks(digits):
    plain = run(digits, "sgd", make_config("sgd", {}, digits.defaults), seed=0)
    for values in ({}, {"soft_targets": True}):
        replay = run(digits, "gen_replay", config(digits, **values), seed=0)
        assert np.isfinite(replay.test_metrics["class_il"]["acc"])
        earlier = replay.test["class_il"][-1, :-1].mean()  # the tasks before the last, at the end
        assert earlier > plain.test["class_il"][-1, :-1].mean() + 15, values
        assert replay.test_metrics["class_il"]["acc"] > plain.test_metrics["class_il"]["acc"] + 15, values


def _replay_sizes(digits, **values):
    """Generated examples appended to one solver step of each of three tasks."""
    stream = PopulationRun(digits, "gen_replay", config(digits, gen_epochs=1, **values), [0])
    m = stream.method
    asked = []
    generate = m.generate
    m.generate = lambda n, vaes: (asked.append(n), generate(n, vaes))[1]
    sizes = []
    for task in range(3):
        x = digits.to_tensor(digits.tasks[task].train_x[:10])[None]
        y = torch.from_numpy(digits.tasks[task].train_y[:10])[None]
        asked.clear()
        assert np.isfinite(m.observe(x, y, task).cpu().numpy()).all()
        sizes.append(sum(asked))
        m.end_task(task, stream._inputs(task, "train"))
    m.generate = generate
    return sizes, m


def test_replay_count_follows_replay_size_and_the_task_index(digits):
    assert _replay_sizes(digits)[0] == [0, 10, 10]
    assert _replay_sizes(digits, replay_size=7)[0] == [0, 7, 7]
    sizes, m = _replay_sizes(digits, increasing_replay_size=True)
    assert sizes == [0, 10, 20]
    assert m.generate(5, m._trained()).shape == (1, 5, *digits.input_shape)


def test_one_vae_by_default_one_per_task_as_an_option(digits):
    _, shared = _replay_sizes(digits)
    assert len(shared.vaes) == 1 and shared.trained_vaes == 1
    _, separate = _replay_sizes(digits, vae_per_task=True)
    assert len(separate.vaes) == separate.trained_vaes == 3
    x = separate.generate(9, separate._trained())
    assert x.shape == (1, 9, 64) and torch.isfinite(x).all() and (x >= 0).all() and (x <= 1).all()


def test_resuming_from_a_task_boundary_gives_the_same_numbers(digits, assert_resumes_identically):
    values = {"gen_hidden": 50, "latent_size": 8, "gen_epochs": 2, "soft_targets": True}
    cfg = make_config("gen_replay", values, digits.defaults)
    assert_resumes_identically(digits, "gen_replay", cfg, seed=3)


def train_generator_on_a_float_copy(method, task: int, data) -> None:
    """The generator's training at the end of ``task`` as it was before: every member's whole task
    copied as floats [P, N, in], its batches gathered from the copy (the reference)."""
    from raycl.models import frozen_copy

    whole = data.gather(torch.arange(data.n).expand(method.size, -1))[0].flatten(2)
    vae, previous = method.vaes[0], [frozen_copy(method.vaes[0])] if method.trained_vaes else []
    vae.train()
    for _ in range(method.config.gen_epochs):
        order = method.gen_shuffle.permutation(data.n)
        for start in range(0, data.n, method.config.gen_batch_size):
            rows = order[:, start:start + method.config.gen_batch_size]
            x = whole.gather(1, rows[..., None].expand(-1, -1, whole.shape[2]))
            if previous:
                x = torch.cat([x, method.generate(method._replay_count(x.shape[1], task), previous).flatten(2)], 1)
            noise = method.noise.normal(x.shape[1], method.config.latent_size, dtype=method.dtype)
            method.gen_opt.step(method.gen_opt.backward(vae_loss(vae, x, noise, method.bce).sum()))
    vae.eval()


def test_the_generator_trains_on_batches_scaled_from_the_uint8_task_exactly_as_from_a_float_copy(digits):
    """Per batch from the task's uint8 bytes: the same VAE weights, bit for bit, as from a float copy
    of each member's whole task, which at P = 256 on perm-mnist would be about 43 GB."""
    trained = []
    for reference in (False, True):
        stream = PopulationRun(digits, "gen_replay", [config(digits, gen_epochs=2, gen_lr=lr) for lr in (1e-3, 3e-3)],
                               [0, 1], dtype=torch.float64)
        stream.run_task()  # the first generator: trained on the first task
        data = stream._inputs(1, "train")
        if reference:
            train_generator_on_a_float_copy(stream.method, 1, data)  # with self-replay
        else:
            stream.method.end_task(1, data)
        trained.append([p.detach().clone() for p in stream.method.vaes[0].parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*trained))
