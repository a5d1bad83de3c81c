"""Task input: the MLP with a separate first layer per task and every later layer shared.

The task must be known at training and test time. Each task trains its own input layer and the
shared layers; a task not trained yet is answered through the newest input layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raycl.errors import RayclError
from raycl.methods.base import ContinualMethod, TrainConfig
from raycl.models import MLP


class TaskInputMLP(nn.Module):
    """An MLP's layers with its first layer repeated ``n_tasks`` times (fresh Xavier weights)."""

    def __init__(self, mlp: MLP, n_tasks: int):
        super().__init__()
        first = mlp.fc1
        extra = []
        for _ in range(n_tasks - 1):
            layer = nn.Linear(first.in_features, first.out_features)
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
            extra.append(layer)
        self.inputs = nn.ModuleList([first, *extra])
        self.fc2 = mlp.fc2
        self.classifier = mlp.classifier

    def forward(self, x: torch.Tensor, task: int = 0) -> torch.Tensor:
        h = F.relu(self.inputs[min(task, len(self.inputs) - 1)](x.flatten(1)))
        return self.classifier(F.relu(self.fc2(h)))

    def task_parameters(self, task: int):
        return [*self.inputs[task].parameters(), *self.fc2.parameters(), *self.classifier.parameters()]


class TaskInput(ContinualMethod):
    name = "taskinput"
    stability_task = 1  # a task input layer per task: no stability mechanism
    Config = TrainConfig

    def __init__(self, config, model, benchmark, device, seed):
        if not isinstance(model, MLP):
            raise RayclError(f"method 'taskinput' needs an MLP benchmark; {benchmark.name} uses {benchmark.model}")
        self.trained_tasks = 0
        super().__init__(config, TaskInputMLP(model, benchmark.n_tasks), benchmark, device, seed)

    def make_optimizer(self, params):
        # Only the current task's input layer and the shared layers learn (and the optimiser's
        # flat vector stays the size of one MLP).
        current = max(self.trained_tasks - 1, 0)
        return super().make_optimizer(self.net.task_parameters(current))

    def begin_task(self, task: int) -> None:
        self.trained_tasks = max(self.trained_tasks, task + 1)
        self.opt = self.make_optimizer(None)

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        loss = F.cross_entropy(self.net(self.augment(x), task), y)
        self.step(loss)
        return loss.detach()

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return self.net(x, min(task, max(self.trained_tasks - 1, 0)))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "trained_tasks": self.trained_tasks}

    def load_state_dict(self, state: dict) -> None:
        self.trained_tasks = state["trained_tasks"]
        self.opt = self.make_optimizer(None)
        super().load_state_dict(state)
