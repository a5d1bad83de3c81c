"""Every method trains under ``--precision bf16`` (forward passes in bf16 autocast, weights and
optimiser state in float32), here on the CPU, whose autocast follows the same rules as CUDA's."""

import pytest
import torch

from raycl.device_checks import population, state_tensors, train_tasks
from raycl.hparams import param_specs
from raycl.methods import METHODS, get_method

# Small enough that every method's second task replays from what the first left behind.
FEW = {"batch_size": 10, "minibatch_size": 5, "buffer_size": 20, "gen_epochs": 1, "n_replay": 10}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_two_tasks_in_bf16(few_digits, method):
    values = {k: v for k, v in FEW.items() if k in param_specs(get_method(method).Config)}
    run = population(few_digits, method, "cpu", precision="bf16", values=values)
    train_tasks(run, 2)
    assert run.next_task == 2 and not run.diverged
    # Weights, optimiser state, stored logits and memories stay float32.
    assert {t.dtype for t in state_tensors(run.method.state_dict()) if t.is_floating_point()} == {torch.float32}
    # Every member learned the first task (two classes: chance is 50; they reach 95 to 100).
    assert run.val["task_il"][:, 0, 0].min() > 75.0


# The methods with a path of their own through a stacked ResNet (batch norm, per-example gradients,
# moving averages of its statistics), on the reduced ResNet.
RESNET = ["clser", "derpp", "ewc", "mer", "synergy"]
RESNET_FEW = {"n_epochs": 1, "batch_size": 2, "minibatch_size": 2, "buffer_size": 4, "batches_per_example": 1}


@pytest.mark.parametrize("method", RESNET)
def test_methods_train_a_stacked_resnet_in_bf16(tiny_cifar, method):
    values = {k: v for k, v in RESNET_FEW.items() if k in param_specs(get_method(method).Config)}
    run = train_tasks(population(tiny_cifar, method, "cpu", precision="bf16", values=values), 2)
    assert run.next_task == 2 and not run.diverged
    assert {t.dtype for t in state_tensors(run.method.state_dict()) if t.is_floating_point()} == {torch.float32}
