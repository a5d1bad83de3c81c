"""Independent: a separate network per task, each trained only on its task (no transfer, no
forgetting). Evaluation uses the network of the task asked about, so the task must be known at
test time; a task not trained yet is answered by the newest network.

As in the GEM and MER papers' baseline, the MLP's hidden units are split among the tasks by
default (100 hidden units over 20 tasks: 5 per task network), so all the networks together are
about the size of one.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F

from raycl.hparams import hp
from raycl.methods.base import ContinualMethod, TrainConfig
from raycl.models import MLP, build_model


@dataclasses.dataclass
class IndependentConfig(TrainConfig):
    finetune: bool = hp(False, "start each task's network from the previous task's instead of a fresh one")
    split_hidden: bool = hp(True, "divide the MLP's hidden units among the tasks (the papers' baseline)")


class Independent(ContinualMethod):
    name = "independent"
    stability_task = 1  # a network per task: no stability mechanism
    Config = IndependentConfig

    def __init__(self, config, model, benchmark, device, seed):
        super().__init__(config, self._task_model(config, model, benchmark), benchmark, device, seed)
        self.nets = [self.net]

    @staticmethod
    def _task_model(config, model, benchmark):
        if not (config.split_hidden and isinstance(model, MLP)):
            return model
        hidden = max(1, model.fc1.out_features // benchmark.n_tasks)
        return MLP(model.fc1.in_features, model.classifier.out_features, hidden=hidden)

    def _new_net(self):
        return self._task_model(self.config, build_model(self.benchmark), self.benchmark).to(self.device)

    def begin_task(self, task: int) -> None:
        while len(self.nets) <= task:
            net = copy.deepcopy(self.net) if self.config.finetune else self._new_net()
            self.nets.append(net)
        self.net = self.nets[task]
        self.opt = self.make_optimizer(self.net.parameters())

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        loss = F.cross_entropy(self.net(self.augment(x)), y)
        self.step(loss)
        return loss.detach()

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return self.nets[min(task, len(self.nets) - 1)](x)

    def train(self, mode: bool = True) -> None:
        for net in self.nets:
            net.train(mode)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "nets": [net.state_dict() for net in self.nets]}

    def load_state_dict(self, state: dict) -> None:
        while len(self.nets) < len(state["nets"]):
            self.nets.append(self._new_net())
        for net, saved in zip(self.nets, state["nets"]):
            net.load_state_dict(saved)
        self.net = self.nets[len(state["nets"]) - 1]
        self.opt = self.make_optimizer(self.net.parameters())
        super().load_state_dict(state)
