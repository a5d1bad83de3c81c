"""Joint training: after each task, a fresh network trained on all data seen so far (upper bound)."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from raycl.errors import DivergedError
from raycl.methods.base import ContinualMethod, TrainConfig
from raycl.population.random import Stream, from_host_state, host_state, stream_generator


class Joint(ContinualMethod):
    name = "joint"
    stability_task = 1  # retrains on every task seen: no stability mechanism
    Config = TrainConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial_state = copy.deepcopy(self.net.state_dict())
        self.shuffle_generator = stream_generator(self.seed, Stream.JOINT_SHUFFLE)

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        # Nothing is learnt online; end_task trains on the union of the tasks seen.
        return torch.zeros((), device=self.device)

    def end_task(self, task: int, train_x: torch.Tensor, train_y: torch.Tensor) -> None:
        seen = self.benchmark.tasks[: task + 1]
        xs = np.concatenate([t.inputs("train") for t in seen])
        ys = torch.from_numpy(np.concatenate([t.train_y for t in seen])).to(self.device)
        self.net.load_state_dict(self.initial_state)
        self.opt = self.make_optimizer(self.net.parameters())
        batch = self.config.batch_size
        for _ in range(self.config.n_epochs):
            order = torch.randperm(len(xs), generator=self.shuffle_generator)
            for start in range(0, len(xs), batch):
                idx = order[start:start + batch]
                x = self.benchmark.to_tensor(xs[idx.numpy()], self.device)
                loss = F.cross_entropy(self.net(self.augment(x)), ys[idx.to(self.device)])
                if not torch.isfinite(loss):
                    raise DivergedError(task, start // batch)
                self.step(loss)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "shuffle_rng": host_state(self.shuffle_generator.get_state())}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.shuffle_generator.set_state(from_host_state(state["shuffle_rng"]))
