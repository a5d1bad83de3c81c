"""Variational information bottleneck replay.

An encoder maps the input to a Gaussian bottleneck (mean, log-variance); a classification decoder
reads a sample of it, a reconstruction decoder rebuilds the input from it. The objective is the
cross-entropy plus the information terms of the bottleneck, with the sign convention of the seed
notes: ``beta_1`` weighs I(Z; X) and ``beta_2`` the KL to the prior. I(Z; X) is bounded above by
the KL and below by minus the reconstruction error, so a penalty (``beta_1 > 0``) adds
``(beta_1 + beta_2) * KL`` and a reward (``beta_1 <= 0``) adds ``-beta_1 * reconstruction BCE +
beta_2 * KL``.

Replay from earlier tasks is either ``simple`` (``n_replay`` real examples kept per task with the
model's soft predictions at the end of that task) or ``generative`` (inputs decoded from prior
samples by a frozen copy of the model taken at the end of the last task, soft targets from its
classifier). The replay objective is the same with soft cross-entropy; it is weighted
``replay_weight`` against ``1 - replay_weight`` for the current data.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from raycl.hparams import hp
from raycl.methods.base import ContinualMethod, TrainConfig
from raycl.models import frozen_copy


@dataclasses.dataclass
class VibConfig(TrainConfig):
    lr: float = hp(1e-3, "learning rate", low=0.0)
    optimizer: str = hp("adam", "optimiser: plain SGD or Adam (the seed uses Adam)", choices=("sgd", "adam"))
    beta_1: float = hp(-1e-4, "weight of I(Z;X): <= 0 adds -beta_1 x reconstruction BCE, > 0 adds beta_1 x KL")
    beta_2: float = hp(1e-3, "weight of the KL of the bottleneck to the standard normal prior", low=0.0)
    n_bottleneck: int = hp(100, "units of the Gaussian bottleneck", low=1)
    hidden: int = hp(200, "units of each of the two hidden layers of the encoder and reconstruction decoder",
                     low=1)
    replay_mode: str = hp("simple", "replay stored real examples or inputs the model decodes from its prior",
                          choices=("simple", "generative"))
    n_replay: int = hp(1000, "real examples kept per task for simple replay", low=0)
    replay_batch_size: int = hp(0, "replayed examples per step (0: as many as the current batch)", low=0)
    replay_weight: float = hp(0.5, "weight of the replay loss; the current data gets 1 - replay_weight",
                              low=0.0, high=1.0)
    freeze_encoder: bool = hp(False, "stop training the encoder after the first task")


class VibNet(nn.Module):
    """Encoder to (mean, log-variance), classification decoder, reconstruction decoder."""

    def __init__(self, in_features: int, n_classes: int, n_bottleneck: int, hidden: int):
        super().__init__()
        self.n_bottleneck = n_bottleneck
        self.encoder = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 2 * n_bottleneck))
        self.classifier = nn.Linear(n_bottleneck, n_classes)
        # Emits logits; the sigmoid is applied by the loss (BCE with logits) or when generating.
        self.reconstructor = nn.Sequential(
            nn.Linear(n_bottleneck, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, in_features))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.encoder(x.flatten(1)).chunk(2, dim=1)
        # Bounded so that exp(logvar) stays finite under large learning rates.
        return mean, logvar.clamp(-10.0, 10.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits from the bottleneck mean (the deterministic prediction)."""
        return self.classifier(self.encode(x)[0])


class Vib(ContinualMethod):
    name = "vib"
    Config = VibConfig

    def __init__(self, config: VibConfig, model: nn.Module, benchmark, device: torch.device, seed: int):
        # The loop's default network is replaced by the bottleneck model, sized from the benchmark.
        in_features = math.prod(benchmark.input_shape)
        net = VibNet(in_features, benchmark.n_classes, config.n_bottleneck, config.hidden)
        super().__init__(config, net, benchmark, device, seed)
        self.in_features = in_features
        self.noise = torch.Generator(device=device).manual_seed(seed + 5)
        self.replay_rng = torch.Generator().manual_seed(seed + 6)
        self.replay_x = torch.zeros((0, in_features), device=device)
        self.replay_targets = torch.zeros((0, benchmark.n_classes), device=device)
        self.previous: VibNet | None = None
        self.tasks_done = 0

    # ----- objective ----------------------------------------------------------------------
    def _recon_loss(self, recon_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # BCE needs targets in [0, 1]; benchmarks that normalise their inputs get squared error.
        if self.benchmark.mean is None:
            per_feature = F.binary_cross_entropy_with_logits(recon_logits, x, reduction="none")
        else:
            per_feature = (recon_logits - x) ** 2
        return per_feature.sum(1).mean()

    def objective(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The bottleneck objective on ``x``; ``targets`` are class indices or probability rows."""
        flat = x.flatten(1)
        mean, logvar = self.net.encode(flat)
        eps = torch.randn(mean.shape, device=self.device, generator=self.noise)
        z = mean + eps * torch.exp(0.5 * logvar)
        logits = self.net.classifier(z)
        if targets.dim() == 1:
            loss = F.cross_entropy(logits, targets)
        else:
            loss = -(targets * F.log_softmax(logits, 1)).sum(1).mean()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(1).mean()
        beta_1, beta_2 = self.config.beta_1, self.config.beta_2
        if beta_1 <= 0:
            loss = loss + beta_2 * kl
            if beta_1 < 0:
                loss = loss - beta_1 * self._recon_loss(self.net.reconstructor(z), flat)
        else:
            loss = loss + (beta_1 + beta_2) * kl
        return loss

    # ----- replay -------------------------------------------------------------------------
    def _replay_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.tasks_done == 0 or n == 0:
            return None
        if self.config.replay_mode == "simple":
            if len(self.replay_x) == 0:
                return None
            idx = torch.randint(len(self.replay_x), (n,), generator=self.replay_rng).to(self.device)
            return self.replay_x[idx], self.replay_targets[idx]
        with torch.no_grad():
            z = torch.randn((n, self.config.n_bottleneck), device=self.device, generator=self.noise)
            x = torch.sigmoid(self.previous.reconstructor(z))
            targets = F.softmax(self.previous(x), 1)
        return x, targets

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        x = self.augment(x)
        loss = self.objective(x, y)
        w = self.config.replay_weight
        size = self.config.replay_batch_size or x.shape[0]
        replay = self._replay_batch(size) if w > 0 else None
        if replay is not None:
            loss = (1.0 - w) * loss + w * self.objective(*replay)
        self.step(loss)
        return loss.detach()

    @torch.no_grad()
    def _soft_targets(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.net.training
        self.net.eval()
        targets = F.softmax(self.net(x), 1)
        self.net.train(was_training)
        return targets

    def end_task(self, task: int, train_x: torch.Tensor, train_y: torch.Tensor) -> None:
        self.tasks_done += 1
        if self.config.replay_mode == "simple" and self.config.n_replay > 0:
            keep = torch.randperm(len(train_x), generator=self.replay_rng)[: self.config.n_replay].to(self.device)
            x = train_x[keep].flatten(1)
            self.replay_x = torch.cat([self.replay_x, x])
            self.replay_targets = torch.cat([self.replay_targets, self._soft_targets(x)])
        elif self.config.replay_mode == "generative":
            self.previous = frozen_copy(self.net)
        if self.config.freeze_encoder and task == 0:
            for p in self.net.encoder.parameters():
                p.requires_grad_(False)

    # ----- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {**super().state_dict(), "noise": self.noise.get_state(), "replay_rng": self.replay_rng.get_state(),
                "replay_x": self.replay_x, "replay_targets": self.replay_targets, "tasks_done": self.tasks_done,
                "previous": None if self.previous is None else self.previous.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.noise.set_state(state["noise"])
        self.replay_rng.set_state(state["replay_rng"])
        self.replay_x, self.replay_targets = state["replay_x"], state["replay_targets"]
        self.tasks_done = state["tasks_done"]
        if state["previous"] is not None:
            self.previous = frozen_copy(self.net, state["previous"])
        if self.config.freeze_encoder and self.tasks_done > 0:
            for p in self.net.encoder.parameters():
                p.requires_grad_(False)
