"""SYNERgy (Sarfraz et al., CoLLAs 2022): episodic reservoir buffer plus an EMA semantic memory.

Loss: cross-entropy on the current batch and a buffer minibatch, plus ``reg_weight`` x the MSE
between the working model's buffer logits and the semantic memory's, plus ``penalty_weight`` x a
Fisher-weighted pull of the working weights towards the semantic memory's. The Fisher information
is the semantic memory's, estimated on the whole buffer from per-example squared gradients of the
log-likelihood of the stored label, each weighted by that label's probability; it is refreshed
with probability ``fisher_update_freq`` after a step and smoothed with ``fisher_alpha`` (the
first estimate is taken as it is). Nothing depends on task boundaries.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from raycl.hparams import hp
from raycl.methods.base import ReplayConfig, ReplayMethod
from raycl.methods.ema import EmaModel
from raycl.population.random import Stream, stream_generator


@dataclasses.dataclass
class SynergyConfig(ReplayConfig):
    # Defaults are the paper's general ones; its rot-mnist arguments are in the search space notes.
    reg_weight: float = hp(0.1, "weight of the logit consistency to the EMA model on buffer examples", low=0.0,
                           per_member=True, most_stable=2.0)  # the tops of their search ranges
    ema_alpha: float = hp(0.99, "decay of the semantic memory's moving average", low=0.0, high=1.0)
    ema_update_freq: float = hp(0.9, "probability of updating the semantic memory after a step", low=0.0, high=1.0)
    penalty_weight: float = hp(10.0, "weight of the Fisher-weighted anchoring to the EMA weights", low=0.0,
                               per_member=True, most_stable=20.0)
    fisher_alpha: float = hp(0.999, "decay of the Fisher moving average", low=0.0, high=1.0)
    fisher_update_freq: float = hp(0.9, "probability of re-estimating the Fisher after a step", low=0.0, high=1.0)
    eval_model: str = hp("ema", "model evaluated: the semantic memory or the working model",
                         choices=("ema", "working"))


class Synergy(ReplayMethod):
    name = "synergy"
    Config = SynergyConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ema = EmaModel(self.net, self.config.ema_alpha)
        self.fisher = [torch.zeros_like(p) for p in self.net.parameters()]
        self.fisher_updates = 0
        self.coin = stream_generator(self.seed, Stream.SYNERGY_COINS)
        self.linear_only = all(
            isinstance(m, nn.Linear) or not list(m.parameters(recurse=False)) for m in self.net.modules())
        self.global_step = 0

    def _estimate_fisher(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """Mean over examples of p(y|x) x the squared gradient of log p(y|x), for the EMA model."""
        with torch.no_grad():
            weight = F.softmax(self.ema(x), 1).gather(1, y[:, None]).squeeze(1)
        if self.linear_only:
            return self._linear_fisher(x, y, weight)
        params = {k: v.detach() for k, v in self.ema.model.named_parameters()}

        def loss(p, xi, yi):
            return F.cross_entropy(functional_call(self.ema.model, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))

        grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
        return [(grads[k].pow(2) * weight.view(-1, *[1] * (grads[k].dim() - 1))).mean(0) for k in params]

    def _linear_fisher(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> list[torch.Tensor]:
        """The same for a network of linear layers, each used once, without per-example gradients.

        Example i's weight gradient is the outer product of the layer's output gradient d_i and
        input a_i, so the weighted mean of its square is (w d ** 2)^T (a ** 2) / n: one matrix product.
        """
        inputs, grads, handles = {}, {}, []

        def keep(module, args, out):
            inputs[module] = args[0].detach()
            out.register_hook(lambda g: grads.__setitem__(module, g.detach()))

        for module in self.ema.model.modules():
            if isinstance(module, nn.Linear):
                handles.append(module.register_forward_hook(keep))
        try:
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)  # the frozen copy needs a path for backward
                F.cross_entropy(self.ema(x), y, reduction="sum").backward()
        finally:
            for h in handles:
                h.remove()
        n = x.shape[0]
        per_param = {}
        for module, a in inputs.items():
            d2 = grads[module].pow(2) * weight[:, None]
            per_param[module.weight] = (d2.t() @ a.flatten(1).pow(2)) / n
            if module.bias is not None:
                per_param[module.bias] = d2.mean(0)
        return [per_param[p] for p in self.ema.model.parameters()]

    def penalty(self) -> torch.Tensor:
        terms = [(f * (p - q).pow(2)).sum() for f, p, q in zip(self.fisher, self.net.parameters(),
                                                                self.ema.model.parameters())]
        return torch.stack(terms).sum()

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        n = x.shape[0]
        replay = None if self.buffer.is_empty() else self.buffer.sample(self.config.minibatch_size)
        inputs, labels = self.augment(x), y
        if replay is not None:
            replay_x = self.augment(replay.x)
            inputs, labels = torch.cat([inputs, replay_x]), torch.cat([y, replay.y])
        outputs = self.net(inputs)
        loss = F.cross_entropy(outputs, labels)
        if replay is not None:
            with torch.no_grad():
                ema_logits = self.ema(replay_x)
            loss = loss + self.config.reg_weight * F.mse_loss(outputs[n:], ema_logits)
            if self.config.penalty_weight > 0:
                loss = loss + self.config.penalty_weight * self.penalty()
        self.step(loss)
        self.buffer.add(x, y, task=task)
        self.global_step += 1
        if torch.rand((), generator=self.coin) < self.config.ema_update_freq:
            self.ema.update(self.net, self.global_step)
        if (replay is not None and self.config.penalty_weight > 0
                and torch.rand((), generator=self.coin) < self.config.fisher_update_freq):
            stored = self.buffer.all()
            new = self._estimate_fisher(self.augment(stored.x), stored.y)
            a = 0.0 if self.fisher_updates == 0 else min(1.0 - 1.0 / (self.global_step + 1), self.config.fisher_alpha)
            self.fisher = [a * f + (1.0 - a) * g for f, g in zip(self.fisher, new)]
            self.fisher_updates += 1
        return loss.detach()

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return self.ema(x) if self.config.eval_model == "ema" else self.net(x)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "ema": self.ema.state_dict(), "fisher": self.fisher,
                "coin": self.coin.get_state(), "global_step": self.global_step,
                "fisher_updates": self.fisher_updates}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.ema.load_state_dict(state["ema"])
        self.fisher = [f.to(self.device) for f in state["fisher"]]
        self.coin.set_state(state["coin"])
        self.global_step = state["global_step"]
        self.fisher_updates = state["fisher_updates"]
