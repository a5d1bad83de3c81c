"""The method interface every continual-learning method implements, and shared configs."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from raycl.augment import random_crop_flip
from raycl.buffer import ReservoirBuffer
from raycl.data import Benchmark
from raycl.errors import RayclError
from raycl.hparams import hp
from raycl.optim import make_optimizer


@dataclasses.dataclass
class TrainConfig:
    """Hyperparameters every method has."""

    lr: float = hp(0.03, "learning rate", low=0.0)
    batch_size: int = hp(10, "examples of the current task per step", low=1)
    n_epochs: int = hp(1, "passes over each task's training data", low=1)
    optimizer: str = hp("sgd", "optimiser: plain SGD (the DER protocol) or Adam", choices=("sgd", "adam"))


@dataclasses.dataclass
class ReplayConfig(TrainConfig):
    """Hyperparameters of methods that replay from a reservoir buffer."""

    buffer_size: int = hp(500, "examples the reservoir buffer holds", low=1)
    minibatch_size: int = hp(10, "buffer examples replayed per step", low=1)


class ContinualMethod:
    """A learner that sees a stream of tasks one batch at a time.

    The training loop calls ``begin_task``, then ``observe`` once per batch, then ``end_task``
    with the task's whole training data; evaluation calls ``predict`` in eval mode.
    """

    name: ClassVar[str]
    Config: ClassVar[type] = TrainConfig
    # Methods that work on FlatSGD's flat parameter and gradient vectors (projections, Reptile
    # steps) say why here; they then accept only the plain SGD optimiser.
    flat_sgd_reason: ClassVar[str | None] = None

    def __init__(self, config: Any, model: nn.Module, benchmark: Benchmark, device: torch.device, seed: int):
        self.config = config
        self.net = model.to(device)
        self.benchmark = benchmark
        self.device = device
        self.seed = seed
        self.n_tasks = benchmark.n_tasks
        self.augment_generator = torch.Generator().manual_seed(seed + 1)
        self.opt = self.make_optimizer(self.net.parameters())

    def make_optimizer(self, params):
        if self.flat_sgd_reason and self.config.optimizer != "sgd":
            raise RayclError(f"method {self.name!r} {self.flat_sgd_reason}; optimizer must be 'sgd', "
                             f"got {self.config.optimizer!r}")
        return make_optimizer(self.config.optimizer, params, self.config.lr)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Training-time augmentation of the benchmark (identity where it has none)."""
        if not self.benchmark.augment:
            return x
        return random_crop_flip(x, generator=self.augment_generator)

    def step(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def begin_task(self, task: int) -> None:
        pass

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        """Learn from one batch of the current task; returns the (detached) loss."""
        raise NotImplementedError

    def end_task(self, task: int, train_x: torch.Tensor, train_y: torch.Tensor) -> None:
        pass

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """Logits for evaluation on examples of ``task`` (the loop has put the method in eval mode).

        Most methods ignore ``task``; those with task-specific parts (one model per task, a task
        input layer) use it, which is only fair in settings where the task is known at test time.
        """
        return self.net(x)

    def train(self, mode: bool = True) -> None:
        self.net.train(mode)

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(),
                "augment_rng": self.augment_generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.augment_generator.set_state(state["augment_rng"])


class ReplayMethod(ContinualMethod):
    """A method with a reservoir buffer of ``config.buffer_size`` examples."""

    Config: ClassVar[type] = ReplayConfig
    stores_logits: ClassVar[bool] = False

    def __init__(self, config: ReplayConfig, model: nn.Module, benchmark: Benchmark, device: torch.device,
                 seed: int):
        super().__init__(config, model, benchmark, device, seed)
        self.buffer = ReservoirBuffer(config.buffer_size, benchmark.input_shape, benchmark.n_classes, device,
                                      seed=seed + 2, store_logits=self.stores_logits)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.buffer.load_state_dict(state["buffer"])
