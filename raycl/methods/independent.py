"""Independent: a separate network per task, each trained only on its task (no transfer, no
forgetting). Evaluation uses the network of the task asked about, so the task must be known at
test time; a task not trained yet is answered by the newest network."""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F

from raycl.hparams import hp
from raycl.methods.base import ContinualMethod, TrainConfig
from raycl.models import build_model


@dataclasses.dataclass
class IndependentConfig(TrainConfig):
    finetune: bool = hp(False, "start each task's network from the previous task's instead of a fresh one")


class Independent(ContinualMethod):
    name = "independent"
    Config = IndependentConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.nets = [self.net]

    def begin_task(self, task: int) -> None:
        while len(self.nets) <= task:
            net = copy.deepcopy(self.net) if self.config.finetune else build_model(self.benchmark).to(self.device)
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
            self.nets.append(build_model(self.benchmark).to(self.device))
        for net, saved in zip(self.nets, state["nets"]):
            net.load_state_dict(saved)
        self.net = self.nets[len(state["nets"]) - 1]
        self.opt = self.make_optimizer(self.net.parameters())
        super().load_state_dict(state)
