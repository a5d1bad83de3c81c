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

from raycl.device import to_device
from raycl.hparams import hp
from raycl.methods.base import PopulationMethod, TrainConfig, cross_entropy
from raycl.methods.state import Network
from raycl.models import frozen_copy


@dataclasses.dataclass
class VibConfig(TrainConfig):
    lr: float = hp(1e-3, "learning rate", low=0.0, per_member=True)
    optimizer: str = hp("adam", "optimiser: plain SGD or Adam (the seed uses Adam)", choices=("sgd", "adam"))
    beta_1: float = hp(-1e-4, "weight of I(Z;X): <= 0 adds -beta_1 x reconstruction BCE, > 0 adds beta_1 x KL",
                       per_member=True)
    beta_2: float = hp(1e-3, "weight of the KL of the bottleneck to the standard normal prior", low=0.0,
                       per_member=True)
    n_bottleneck: int = hp(100, "units of the Gaussian bottleneck", low=1)
    hidden: int = hp(200, "units of each of the two hidden layers of the encoder and reconstruction decoder",
                     low=1)
    replay_mode: str = hp("simple", "replay stored real examples or inputs the model decodes from its prior",
                          choices=("simple", "generative"))
    n_replay: int = hp(1000, "real examples kept per task for simple replay", low=0)
    replay_batch_size: int = hp(0, "replayed examples per step (0: as many as the current batch)", low=0)
    replay_weight: float = hp(0.5, "weight of the replay loss; the current data gets 1 - replay_weight",
                              low=0.0, high=1.0, per_member=True, most_stable=0.999)
    freeze_encoder: bool = hp(False, "stop training the encoder after the first task")


class VibNet(nn.Module):
    """Encoder to (mean, log-variance), classification decoder, reconstruction decoder.

    Works on inputs with any leading dimensions (a population's [P, n, ...] once stacked).
    """

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, n_bottleneck: int, hidden: int):
        super().__init__()
        self.input_dims = len(input_shape)
        in_features = math.prod(input_shape)
        self.encoder = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 2 * n_bottleneck))
        self.classifier = nn.Linear(n_bottleneck, n_classes)
        # Emits logits; the sigmoid is applied by the loss (BCE with logits) or when generating.
        self.reconstructor = nn.Sequential(
            nn.Linear(n_bottleneck, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, in_features))

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(-self.input_dims) if self.input_dims > 1 else x

    def encode(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.encoder(flat).chunk(2, dim=-1)
        # Bounded so that exp(logvar) stays finite under large learning rates.
        return mean, logvar.clamp(-10.0, 10.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits from the bottleneck mean (the deterministic prediction)."""
        return self.classifier(self.encode(self.flat(x))[0])


class Vib(PopulationMethod):
    name = "vib"
    Config = VibConfig

    def __init__(self, configs, seeds, benchmark, device, dtype=torch.float32, member_benchmarks=None):
        super().__init__(configs, seeds, benchmark, device, dtype)
        self.in_features = math.prod(benchmark.input_shape)
        # Simple replay's examples (the benchmark's uint8 bytes, scaled as they are replayed: the same
        # floats in a quarter of float32's memory) and their soft targets, [P, examples kept so far, ...].
        self._scaler = benchmark.scaler(device, dtype)
        self.register("replay_x", torch.zeros((self.size, 0, *benchmark.input_shape), device=device,
                                              dtype=torch.uint8))
        self.register("replay_targets", torch.zeros((self.size, 0, benchmark.n_classes), device=device, dtype=dtype))
        # Generative replay's frozen copy of the model at the end of the last task.
        self.register("previous", None, Network(new=lambda method: frozen_copy(method.net)))
        self.register("tasks_done", 0)

    def build_member_net(self) -> nn.Module:
        # The loop's default network is replaced by the bottleneck model, sized from the benchmark.
        return VibNet(self.benchmark.input_shape, self.benchmark.n_classes, self.config.n_bottleneck,
                      self.config.hidden)

    # ----- objective ----------------------------------------------------------------------
    def _recon_loss(self, recon_logits: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        # BCE needs targets in [0, 1]; benchmarks that normalise their inputs get squared error.
        if self.benchmark.mean is None:
            per_feature = F.binary_cross_entropy_with_logits(recon_logits, flat, reduction="none")
        else:
            per_feature = (recon_logits - flat) ** 2
        return per_feature.sum(-1).mean(-1)

    def objective(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The bottleneck objective per member [P] on ``x`` [P, n, ...]; ``targets`` are class
        indices [P, n] or probability rows [P, n, C]."""
        flat = self.net.flat(x)
        mean, logvar = self.net.encode(flat)
        eps = self.random.normal(*mean.shape[1:], dtype=self.dtype)
        z = mean + eps * torch.exp(0.5 * logvar)
        loss = cross_entropy(self.net.classifier(z), targets)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1).mean(-1)
        beta_1, beta_2 = self.member_values("beta_1"), self.member_values("beta_2")
        loss = loss + torch.where(beta_1 <= 0, beta_2, beta_1 + beta_2) * kl
        rewarded = beta_1 < 0
        # The reconstruction term exists only for members that reward I(Z;X); for the others
        # it adds an exact zero, so a member's numbers do not depend on its companions. Whether
        # any member rewards it is the host's copy of the same values: the step never waits on
        # the device.
        if bool((self.host_member_values("beta_1") < 0).any()):
            recon = self._recon_loss(self.net.reconstructor(z), flat)
            loss = loss + torch.where(rewarded, -beta_1 * recon, torch.zeros_like(recon))
        return loss

    # ----- replay -------------------------------------------------------------------------
    def _replay_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.tasks_done == 0 or n == 0:
            return None
        if self.config.replay_mode == "simple":
            if self.replay_x.shape[1] == 0:
                return None
            idx = to_device(self.random.below(self.replay_x.shape[1], n), self.device)
            shape = self.replay_x.shape[2:]
            rows = idx.view(*idx.shape, *[1] * len(shape)).expand(-1, -1, *shape)
            return (self._scaler(self.replay_x.gather(1, rows)),
                    self.replay_targets.gather(1, idx[:, :, None].expand(-1, -1, self.replay_targets.shape[2])))
        with torch.no_grad():
            z = self.random.normal(n, self.config.n_bottleneck, dtype=self.dtype)
            x = torch.sigmoid(self.previous.reconstructor(z))
            targets = F.softmax(self.previous(x), -1)
        return x, targets

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        x = self.augment(x)
        losses = self.objective(x, y)
        weight = self.member_values("replay_weight")
        replay = self._replay_batch(self.config.replay_batch_size or x.shape[1])
        if replay is not None:
            mixed = (1.0 - weight) * losses + weight * self.objective(*replay)
            losses = torch.where(weight > 0, mixed, losses)
        self.step(losses)
        return losses.detach()

    @torch.no_grad()
    def _soft_targets(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.net.training
        self.net.eval()
        targets = F.softmax(self.net(x), -1)
        self.net.train(was_training)
        return targets

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.replay_x.is_floating_point():  # a checkpoint written when replay was kept as float
            self.replay_x = self._scaler.to_uint8(
                self.replay_x.view(*self.replay_x.shape[:2], *self.benchmark.input_shape))

    def end_task(self, task: int, data) -> None:
        self.tasks_done += 1
        if self.config.replay_mode == "simple" and self.config.n_replay > 0:
            keep = to_device(self.random.sample_without_replacement(data.n, self.config.n_replay), self.device)
            x = data.gather(keep)[0]
            self.replay_x = torch.cat([self.replay_x, self._scaler.to_uint8(x)], 1)
            self.replay_targets = torch.cat([self.replay_targets, self._soft_targets(x)], 1)
        elif self.config.replay_mode == "generative":
            self.previous = frozen_copy(self.net)
        if self.config.freeze_encoder and task == 0:
            self.opt.freeze(list(self.net.encoder.parameters()))
