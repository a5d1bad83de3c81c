"""SYNERgy (Sarfraz et al., CoLLAs 2022): episodic reservoir buffer plus an EMA semantic memory.

Loss: cross-entropy on the current batch and a buffer minibatch, plus ``reg_weight`` x the MSE
between the working model's buffer logits and the semantic memory's, plus ``penalty_weight`` x a
Fisher-weighted pull of the working weights towards the semantic memory's. The Fisher information
is the semantic memory's, estimated on the whole buffer from per-example squared gradients of the
log-likelihood of the stored label, each weighted by that label's probability; it is refreshed
with probability ``fisher_update_freq`` after a step and smoothed with ``fisher_alpha`` (the
first estimate is taken as it is). Nothing depends on task boundaries. Vectorised: the semantic
memory is a stacked moving average of the population network, the Fisher is stacked, and every
member has its own weights, decays, frequencies and coins.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from raycl.device import full_precision, to_device
from raycl.hparams import hp
from raycl.buffer import BufferSample, RaggedSample
from raycl.methods.base import Members, ReplayConfig, ReplayPopulationMethod, cross_entropy, mse
from raycl.methods.ema import PopulationEma
from raycl.methods.state import HostTensor
from raycl.population.nets import StackedLinear, member_sum, only_stacked_linear, per_member_view
from raycl.population.random import MemberRandom, Stream

# While the Fisher is estimated on a network without a closed form (the ResNet), the per-example
# gradients of a chunk of buffer examples are held at once, each a copy of every member's
# parameters: as many examples as fit in FISHER_CHUNK_BYTES, at most FISHER_CHUNK, at least one.
FISHER_CHUNK = 16
FISHER_CHUNK_BYTES = 1 << 29


def fisher_chunk(gradient_bytes: int, budget: int | None = None) -> int:
    """Buffer examples per chunk when one example's gradients (every member's) take ``gradient_bytes``,
    within ``budget`` bytes (default FISHER_CHUNK_BYTES)."""
    budget = FISHER_CHUNK_BYTES if budget is None else budget
    return max(1, min(FISHER_CHUNK, budget // max(1, gradient_bytes)))


@dataclasses.dataclass
class SynergyConfig(ReplayConfig):
    # Defaults are the paper's general ones; its rot-mnist arguments are in the search space notes.
    reg_weight: float = hp(0.1, "weight of the logit consistency to the EMA model on buffer examples", low=0.0,
                           per_member=True, most_stable=2.0)  # the tops of their search ranges
    ema_alpha: float = hp(0.99, "decay of the semantic memory's moving average", low=0.0, high=1.0,
                          per_member=True)
    ema_update_freq: float = hp(0.9, "probability of updating the semantic memory after a step", low=0.0, high=1.0,
                                per_member=True)
    penalty_weight: float = hp(10.0, "weight of the Fisher-weighted anchoring to the EMA weights", low=0.0,
                               per_member=True, most_stable=20.0)
    fisher_alpha: float = hp(0.999, "decay of the Fisher moving average", low=0.0, high=1.0, per_member=True)
    fisher_update_freq: float = hp(0.9, "probability of re-estimating the Fisher after a step", low=0.0, high=1.0,
                                   per_member=True)
    eval_model: str = hp("ema", "model evaluated: the semantic memory or the working model",
                         choices=("ema", "working"))


class Synergy(ReplayPopulationMethod):
    name = "synergy"
    Config = SynergyConfig

    def __init__(self, configs: list, seeds: list[int], benchmark, device, dtype=torch.float32,
                 member_benchmarks=None):
        super().__init__(configs, seeds, benchmark, device, dtype, member_benchmarks)
        self.register("ema", PopulationEma(self.net))
        self.register("fisher", [torch.zeros_like(p) for p in self.net.parameters()])
        self.register("fisher_updates", torch.zeros(self.size, dtype=torch.long), HostTensor())  # per member
        # Drawn on the host: whether the memory or the Fisher updates is decided without reading the device.
        self.register("coins", MemberRandom(seeds, Stream.SYNERGY_COINS, "cpu"))
        self.register("global_step", 0)
        self.linear_only = only_stacked_linear(self.net)

    def _estimate_fisher(self, x: torch.Tensor, y: torch.Tensor, on: Members | None = None) -> list[torch.Tensor]:
        """Per member (of ``on``: every member), the mean over examples of p(y|x) x the squared
        gradient of log p(y|x), for its EMA model: x [P, m, ...], y [P, m] -> stacked like the parameters."""
        on = on or self.everyone
        with torch.no_grad():
            weight = F.softmax(on(self.ema.model, x), -1).gather(2, y[..., None])[..., 0]  # [P, m]
        if self.linear_only:
            return self._linear_fisher(x, y, weight, on)
        return self._per_example_fisher(x, y, weight, on)

    def _per_example_fisher(self, x, y, weight, on: Members) -> list[torch.Tensor]:
        """Per-example gradients of every member at once (torch.func over the population network,
        one example per member per call), :func:`fisher_chunk` examples at a time."""
        model = self.ema.model
        tensors = on.tensors(model)
        params = {n: tensors[n].detach() for n, _ in model.named_parameters()}
        buffers = {n: tensors[n] for n, _ in model.named_buffers()}

        def loss(p, xi, yi):  # xi [P, ...], yi [P]: one example of each member
            logits = functional_call(model, {**p, **buffers}, (xi.unsqueeze(1),))
            return F.cross_entropy(logits[:, 0], yi, reduction="sum")  # members' gradients stay apart

        per_example = vmap(grad(loss), in_dims=(None, 1, 1))
        sums = {n: torch.zeros_like(t) for n, t in params.items()}
        chunk = fisher_chunk(sum(t.numel() * t.element_size() for t in params.values()))
        for start in range(0, x.shape[1], chunk):
            grads = per_example(params, x[:, start:start + chunk], y[:, start:start + chunk])
            w = weight[:, start:start + chunk].t()  # [chunk, P]
            for name, g in grads.items():  # g [chunk, P, ...]
                sums[name] += (g.pow(2) * w.view(*w.shape, *[1] * (g.dim() - 2))).sum(0)
        return [sums[n] / x.shape[1] for n in params]

    def _linear_fisher(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, on: Members) -> list[torch.Tensor]:
        """The same for a stack of linear layers, each used once, without per-example gradients.

        Example i's weight gradient is the outer product of the layer's input a_i and output
        gradient d_i, so the weighted mean of its square is (a ** 2)^T (w d ** 2) / m per member:
        one batched matrix product.
        """
        inputs, grads, handles = {}, {}, []

        def keep(module, args, out):
            inputs[module] = args[0].detach()
            out.register_hook(lambda g: grads.__setitem__(module, g.detach()))

        for module in self.ema.model.modules():
            if isinstance(module, StackedLinear):
                handles.append(module.register_forward_hook(keep))
        try:
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)  # the frozen copy needs a path for backward
                logits = on(self.ema.model, x)
                p, m, c = logits.shape
                F.cross_entropy(logits.reshape(p * m, c), y.reshape(p * m), reduction="sum").backward()
        finally:
            for h in handles:
                h.remove()
        m = x.shape[1]
        per_param = {}
        for module, a in inputs.items():
            d2 = grads[module].pow(2) * weight[..., None]  # [P, m, out]
            per_param[module.weight] = torch.bmm(a.flatten(2).pow(2).transpose(1, 2), d2) / m
            per_param[module.bias] = d2.mean(1, keepdim=True)
        return [per_param[p] for p in self.ema.model.parameters()]

    def penalty(self, on: Members | None = None) -> torch.Tensor:
        """sum(F * (theta - theta_ema)^2) per member (of ``on``: every member): [P]."""
        on = on or self.everyone
        return member_sum([f * (p - q).pow(2) for f, p, q in zip(map(on.rows, self.fisher), on.parameters(self.net),
                                                                  on.parameters(self.ema.model))])

    def losses(self, on: Members, x: torch.Tensor, y: torch.Tensor, replay: BufferSample | None) -> torch.Tensor:
        n = x.shape[1]
        parts, labels = [on.augment(x)], y
        if replay is not None:
            parts.append(on.augment(replay.x))
            labels = torch.cat([y, replay.y], 1)
        outputs = on.forward_parts(parts)
        losses = cross_entropy(outputs, labels)
        if replay is not None:
            with torch.no_grad():
                ema_logits = on(self.ema.model, parts[1])
            losses = losses + on.values("reg_weight") * mse(outputs[:, n:], ema_logits)
            losses = losses + on.values("penalty_weight") * self.penalty(on)
        return losses

    def fisher_estimate(self, on: Members, stored: BufferSample | None) -> list[torch.Tensor]:
        """The members' new Fisher estimates on their stored examples (their current ones where they
        hold none)."""
        if stored is None:
            return [on.rows(f) for f in self.fisher]
        return self._estimate_fisher(on.augment(stored.x), stored.y, on)

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        replay = None if self.buffer.is_empty() else self.buffer.sample(self.config.minibatch_size)
        losses = self.per_group(replay, lambda on, rows: self.losses(on, on.rows(x), on.rows(y), rows))
        self.step(losses)
        self.buffer.add(x, y, task=task)
        self.global_step += 1
        # The coins and every decision taken on them are the host's: nothing here reads the device.
        coins = self.coins.uniform(2, dtype=torch.float64)
        update = coins[:, 0] < self.host_member_values("ema_update_freq").double()
        self.ema.update(self.net, self.global_step, update, self.member_values("ema_alpha"))
        refresh = (coins[:, 1] < self.host_member_values("fisher_update_freq").double()) & (self.host_member_values("penalty_weight") > 0)
        if isinstance(replay, RaggedSample):  # a member that replayed nothing keeps its Fisher, as alone
            for group in replay.groups:
                if group.sample is None:
                    refresh[group.positions] = False
        if replay is not None and bool(refresh.any()):
            # Estimated for the refreshed members only: the others draw no augmentation for it, as alone;
            # in full precision (squared gradients, like a backward pass; vmap's batch norm needs it).
            with full_precision(self.device):
                new = self.per_group(self.buffer.all(), self.fisher_estimate, only=refresh)
            warm = 1.0 - 1.0 / (self.global_step + 1)
            alpha = self.host_member_values("fisher_alpha")
            # The first estimate is taken as it is, later ones smoothed; members not refreshed keep theirs.
            a = to_device(torch.where(self.fisher_updates == 0, torch.zeros_like(alpha), alpha.clamp(max=warm)),
                          self.device)
            flagged = to_device(refresh, self.device)
            self.fisher = [torch.where(per_member_view(flagged, f), per_member_view(a.to(f), f) * f
                                       + per_member_view((1.0 - a).to(f), f) * g, f)
                           for f, g in zip(self.fisher, new)]
            self.fisher_updates += refresh.long()
        return losses.detach()

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return self.ema(x) if self.config.eval_model == "ema" else self.net(x)
