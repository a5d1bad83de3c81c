"""The GPU path on a CUDA device (skipped where there is none): every method trains there, float64
numbers match the CPU's, state moves both ways, bf16 trains."""

import pytest
import torch

from raycl.device_checks import largest_gap, population, resumed_gap, train_tasks
from raycl.methods import METHODS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda", 0)


def one_example(benchmark) -> float:
    """One validation example's worth of accuracy on the smallest task, in points."""
    return 100.0 / min(len(t.val_y) for t in benchmark.tasks)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_two_members_on_cuda(digits, method):
    run = train_tasks(population(digits, method, CUDA), 2)  # the second task replays
    assert run.next_task == 2 and not run.diverged
    assert torch.device(run.method.device).type == "cuda"


@pytest.mark.parametrize("method", ["derpp", "vib"])
def test_float64_on_cuda_matches_the_cpu(digits, method):
    cpu = train_tasks(population(digits, method, "cpu", dtype=torch.float64), digits.n_tasks)
    cuda = train_tasks(population(digits, method, CUDA, dtype=torch.float64), digits.n_tasks)
    assert largest_gap(cpu, cuda) <= one_example(digits)


def test_a_stacked_resnet_population_in_float64_on_cuda_matches_the_cpu(tiny_cifar):
    """Grouped convolutions and batch norm over every member's channels, on cuDNN and on the CPU."""
    from raycl.population.convnet import StackedResNet

    values = {"n_epochs": 1, "batch_size": 4, "minibatch_size": 4, "buffer_size": 8}
    runs = [train_tasks(population(tiny_cifar, "derpp", device, seeds=(0, 1, 2), dtype=torch.float64, values=values), 2)
            for device in ("cpu", CUDA)]
    assert all(isinstance(run.method.net, StackedResNet) for run in runs)
    assert largest_gap(*runs) <= one_example(tiny_cifar)


@pytest.mark.parametrize("source, target", [("cpu", CUDA), (CUDA, "cpu")])
def test_state_moves_between_cpu_and_cuda(digits, source, target):
    gap, devices = resumed_gap(digits, "derpp", source, target, tasks=2, dtype=torch.float64)
    assert devices == {torch.device(target).type}
    assert gap <= one_example(digits)


def test_bf16_trains_with_float32_weights(digits):
    run = train_tasks(population(digits, "derpp", CUDA, precision="bf16"), 2)
    assert not run.diverged
    assert all(p.dtype == torch.float32 for p in run.method.net.parameters())
    assert run.val["class_il"][:, 1, :2].min() > 50.0
