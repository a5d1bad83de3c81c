"""The GPU path on a CUDA device: every method trains there, float64 numbers match the CPU's, state
moves both ways, bf16 trains, and no step waits for the GPU.

Runs with torch alone (no Ray, no Optuna). Where CUDA does not work the tests are skipped, with
the reason; with ``RAYCL_REQUIRE_CUDA=1`` (how a GPU host runs them) ``test_cuda_works_here``
fails instead, with one line naming the NVIDIA driver, torch's CUDA version and the fix:

    RAYCL_REQUIRE_CUDA=1 python -m pytest tests/test_cuda.py
"""

import contextlib
import functools

import pytest
import torch

from raycl.device import cuda_problem, cuda_required
from raycl.device_checks import HostCopies, largest_gap, population, resumed_gap, state_tensors, train_tasks
from raycl.methods import METHODS, get_population_method
from raycl.methods.base import MemberwiseMethod

PROBLEM = cuda_problem()
needs_cuda = pytest.mark.skipif(PROBLEM is not None, reason="CUDA unusable here: see test_cuda_works_here")
CUDA = torch.device("cuda", 0)

# The host reads a step makes by design, each with where it is and why; every other read of the
# GPU inside a step is an error (tests/test_meta.py proves the same on the meta device).
SYNCS_BY_DESIGN = {
    ("raycl.population.state", "Population", "_drop_diverged"):
        "the divergence check reads whether any member's loss is not finite, every DIVERGENCE_CHECK_EVERY steps",
    ("raycl.methods.gen_replay", "GenReplay", "_new_vae"):
        "a new VAE's members are seeded from a host stream and built on the CPU, once per task",
    ("raycl.methods.gem", "Gem", "observe"):
        "GEM solves its quadratic program on the host (quadprog) from the memory gradients' dot products",
}
# The vectorised methods, and GEM for its quadratic program; the other member-by-member methods
# (joint, independent, taskinput) train each member in a Python loop of its own.
STEPPED = sorted(name for name in METHODS
                 if not issubclass(get_population_method(name), MemberwiseMethod) or name == "gem")


def test_cuda_works_here():
    if PROBLEM is not None:
        if cuda_required():
            pytest.fail(PROBLEM, pytrace=False)
        pytest.skip(PROBLEM)


def one_example(benchmark) -> float:
    """One validation example's worth of accuracy on the smallest task, in points."""
    return 100.0 / min(len(t.val_y) for t in benchmark.tasks)


@needs_cuda
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_two_members_on_cuda(digits, method):
    run = train_tasks(population(digits, method, CUDA), 2)  # the second task replays
    assert run.next_task == 2 and not run.diverged
    assert {t.device.type for t in state_tensors(run.method.state_dict())} <= {"cuda"}


@needs_cuda
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_in_bf16_with_float32_weights(digits, method):
    run = train_tasks(population(digits, method, CUDA, precision="bf16"), 2)
    assert not run.diverged
    assert {t.dtype for t in state_tensors(run.method.state_dict()) if t.is_floating_point()} == {torch.float32}
    assert run.val["task_il"][:, 0, 0].min() > 75.0


@needs_cuda
@pytest.mark.parametrize("method", ["clser", "derpp", "ewc", "mer", "synergy"])
def test_methods_train_a_stacked_resnet_in_bf16_on_cuda(tiny_cifar, method):
    values = {"n_epochs": 1, "batch_size": 2, "minibatch_size": 2, "buffer_size": 4}
    if method == "mer":
        values["batches_per_example"] = 1
    run = train_tasks(population(tiny_cifar, method, CUDA, precision="bf16", values=values), 2)
    assert run.next_task == 2 and not run.diverged
    assert {t.dtype for t in state_tensors(run.method.state_dict()) if t.is_floating_point()} == {torch.float32}


@needs_cuda
@pytest.mark.parametrize("method", ["derpp", "vib"])
def test_float64_on_cuda_matches_the_cpu(digits, method):
    cpu = train_tasks(population(digits, method, "cpu", dtype=torch.float64), digits.n_tasks)
    cuda = train_tasks(population(digits, method, CUDA, dtype=torch.float64), digits.n_tasks)
    assert largest_gap(cpu, cuda) <= one_example(digits)


@needs_cuda
def test_a_stacked_resnet_population_in_float64_on_cuda_matches_the_cpu(tiny_cifar):
    """Grouped convolutions and batch norm over every member's channels, on cuDNN and on the CPU."""
    from raycl.population.convnet import StackedResNet

    values = {"n_epochs": 1, "batch_size": 4, "minibatch_size": 4, "buffer_size": 8}
    runs = [train_tasks(population(tiny_cifar, "derpp", device, seeds=(0, 1, 2), dtype=torch.float64, values=values), 2)
            for device in ("cpu", CUDA)]
    assert all(isinstance(run.method.net, StackedResNet) for run in runs)
    assert largest_gap(*runs) <= one_example(tiny_cifar)


@needs_cuda
@pytest.mark.parametrize("source, target", [("cpu", CUDA), (CUDA, "cpu")])
def test_state_moves_between_cpu_and_cuda(digits, source, target):
    gap, devices = resumed_gap(digits, "derpp", source, target, tasks=2, dtype=torch.float64)
    assert devices == {torch.device(target).type}
    assert gap <= one_example(digits)


@contextlib.contextmanager
def sync_allowed():
    mode = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(0)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(mode)


def allowing_syncs(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with sync_allowed():
            return function(*args, **kwargs)

    return wrapper


@needs_cuda
@pytest.mark.parametrize("method", STEPPED)
def test_steps_never_wait_for_the_gpu(digits, method, monkeypatch):
    """From a task's first step to its last, under ``set_sync_debug_mode("error")``: any read of the
    GPU not in SYNCS_BY_DESIGN raises; every host tensor a step copies to the GPU goes from pinned
    memory without blocking."""
    import importlib

    for (module, owner, name), _why in SYNCS_BY_DESIGN.items():
        cls = getattr(importlib.import_module(module), owner)
        monkeypatch.setattr(cls, name, allowing_syncs(getattr(cls, name)))
    run = population(digits, method, CUDA)
    copies, steps = HostCopies(), run.method
    observe, begin_task, end_task = steps.observe, steps.begin_task, steps.end_task

    def recorded(*args):
        with copies:
            return observe(*args)

    def begin(task):
        begin_task(task)
        torch.cuda.set_sync_debug_mode("error")

    def end(task, data):
        torch.cuda.set_sync_debug_mode(0)
        return end_task(task, data)

    monkeypatch.setattr(steps, "observe", recorded)
    monkeypatch.setattr(steps, "begin_task", begin)
    monkeypatch.setattr(steps, "end_task", end)
    try:
        train_tasks(run, 2)  # the second task replays
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert run.next_task == 2 and not run.diverged
    assert copies.waiting(pinned=True) == []
