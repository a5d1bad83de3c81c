"""GEM and A-GEM: the projections keep the step from increasing any memory loss to first order."""

import numpy as np
import torch
import torch.nn.functional as F

from raycl.methods import make_config
from raycl.methods.agem import project_agem
from raycl.methods.gem import project_to_cone
from raycl.train import PopulationRun


def closest_feasible(g: np.ndarray, memories: np.ndarray) -> np.ndarray:
    """The point of {z : memories @ z >= 0} closest to g, solved another way than GEM's quadprog dual:
    z = g + memories.T @ lam with lam = argmin_{lam >= 0} ||memories.T @ lam + g|| (non-negative least
    squares), whose optimality conditions are exactly the projection's KKT conditions."""
    from scipy.optimize import nnls

    lam, _ = nnls(memories.T, -g)
    return g + memories.T @ lam


def test_gem_projection_is_the_closest_gradient_with_no_conflict():
    rng = np.random.default_rng(0)
    for _ in range(20):
        memories = rng.normal(size=(6, 50))
        g = -memories[:3].sum(0) + 0.3 * rng.normal(size=50)  # conflicts with several memories
        assert (memories @ g < 0).any()
        projected = project_to_cone(torch.from_numpy(g), torch.from_numpy(memories), margin=0.0).numpy()
        tolerance = 1e-6 * np.linalg.norm(memories, axis=1) * np.linalg.norm(projected)
        assert (memories @ projected >= -tolerance).all()
        reference = closest_feasible(g, memories)
        assert np.allclose(projected, reference, rtol=1e-6, atol=1e-6 * np.linalg.norm(g))


def test_gem_leaves_a_gradient_without_conflicts_alone():
    rng = np.random.default_rng(1)
    memories = rng.normal(size=(4, 30))
    g = memories.T @ np.linalg.solve(memories @ memories.T, np.ones(4))  # dot product 1 with every row
    projected = project_to_cone(torch.from_numpy(g), torch.from_numpy(memories), margin=0.0)
    assert np.allclose(projected.numpy(), g, atol=1e-6)


def test_agem_projection_removes_exactly_the_conflicting_component():
    torch.manual_seed(0)
    for _ in range(20):
        g_ref = torch.randn(40, dtype=torch.float64)
        g = -0.5 * g_ref + torch.randn(40, dtype=torch.float64) * 0.2
        assert torch.dot(g, g_ref) < 0
        expected = g - torch.dot(g, g_ref) / torch.dot(g_ref, g_ref) * g_ref  # A-GEM's equation 11
        projected = g.clone()[None]
        project_agem([projected], [g_ref[None]])
        assert torch.allclose(projected[0], expected, rtol=0, atol=1e-12)
        assert abs(float(torch.dot(projected[0], g_ref))) < 1e-10  # on the boundary, not past it
    agree = torch.randn(1, 40)
    kept = agree.clone()
    project_agem([kept], [agree * 2])
    assert torch.equal(kept, agree)
    # Members project on their own references only: one conflicting, one not.
    g, ref = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[-1.0, 1.0], [1.0, 1.0]])
    project_agem([g], [ref])
    assert torch.allclose(g, torch.tensor([[0.5, 0.5], [1.0, 0.0]]))


def _memory_gradient(method, x, y):
    method.opt.zero_grad()
    F.cross_entropy(method.net(x), y).backward()
    return method.opt.flat_grad.clone()


def test_gem_step_does_not_point_against_an_earlier_tasks_memories(digits):
    cfg = make_config("gem", {"lr": 0.1, "buffer_size": 50, "memory_strength": 0.0}, digits.defaults)
    stream = PopulationRun(digits, "gem", cfg, [0])
    stream.run_task()
    gem = stream.method.members[0]
    gem.begin_task(1)
    task = digits.tasks[1]
    x = digits.to_tensor(task.train_x)
    y = torch.from_numpy(task.train_y)
    projected_steps = 0
    for start in range(0, 200, 10):
        mem_grads = [_memory_gradient(gem, gem.mem_x[0], gem.mem_y[0])]
        plain = _memory_gradient(gem, x[start:start + 10], y[start:start + 10])
        before = gem.opt.flat.clone()
        gem.observe(x[start:start + 10], y[start:start + 10], 1)
        step = (before - gem.opt.flat) / cfg.lr  # the gradient GEM applied
        for g_mem in mem_grads:
            assert torch.dot(step, g_mem) >= -1e-4 * g_mem.norm() * step.norm()
        projected_steps += int(not torch.allclose(step, plain, atol=1e-6))
    assert projected_steps > 0  # the constraint was active at least once


def test_agem_step_does_not_point_against_the_reference_gradient(digits):
    cfg = make_config("agem", {"lr": 0.1, "buffer_size": 50, "minibatch_size": 10}, digits.defaults)
    stream = PopulationRun(digits, "agem", [cfg, cfg], [0, 1], dtype=torch.float64)
    stream.run_task()
    agem = stream.method
    assert len(agem.buffer) == 50 // digits.n_tasks
    data = stream._inputs(1, "train")
    projected = 0
    for start in range(0, 100, 10):
        before = [p.detach().clone() for p in agem.net.parameters()]
        x, y = data.gather(torch.arange(start, start + 10).expand(2, -1))
        agem.observe(x, y, 1)
        steps = [(b - p.detach()) / cfg.lr for b, p in zip(before, agem.net.parameters())]
        dots = sum((s * r).flatten(1).sum(1) for s, r in zip(steps, agem.g_ref))
        norms = (sum(s.pow(2).flatten(1).sum(1) for s in steps) * sum(r.pow(2).flatten(1).sum(1) for r in agem.g_ref)).sqrt()
        assert (dots >= -1e-9 * norms).all(), dots
        projected += int((dots.abs() < 1e-9 * norms).sum())  # on the boundary: the projection acted
    assert projected > 0


def test_gem_retains_more_than_online_sgd(digits):
    from raycl.train import run

    gem = run(digits, "gem", make_config("gem", {"lr": 0.1, "buffer_size": 100}, digits.defaults), seed=0)
    online = run(digits, "online", make_config("online", {"lr": 0.1}, digits.defaults), seed=0)
    assert gem.test_metrics["class_il"]["retained_acc"] > online.test_metrics["class_il"]["retained_acc"] + 20
