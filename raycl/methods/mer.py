"""Meta-Experience Replay (Riemer et al., ICLR 2019): Reptile over replay batches.

For every incoming example, ``batches_per_example`` batches are drawn, each of up to
``minibatch_size`` reservoir memories plus the example. Within a batch the network takes SGD
steps, then moves only a fraction ``beta`` of the way from where the batch started to where the
steps ended (within-batch Reptile step); after all the batches it keeps a fraction ``gamma`` of the
total move since the example arrived (across-batch step). Then the example is offered to the
reservoir.

``variant`` chooses the steps inside a batch:
- ``per-example`` (the paper's Algorithm 1): one SGD step per example of the batch, in sequence,
  the incoming example first.
- ``batched`` (Algorithm 6 style, mammoth's MER): one SGD step on the whole batch's mean loss.

Algorithm 1 takes millions of single-example steps, so its cost is per-step overhead. Vectorised,
row j of the batch is processed for every member at once, each member with its own learning rate
and Reptile steps (beta, gamma); on the stacked MLP a hand-written forward and backward pass
(batched products, rank-one weight updates in place) replaces autograd.
"""

from __future__ import annotations

import dataclasses

import torch

from raycl.buffer import BufferSample, RaggedSample
from raycl.device import full_precision, to_device
from raycl.hparams import hp
from raycl.methods.base import Members, ReplayConfig, ReplayPopulationMethod, cross_entropy
from raycl.population.nets import StackedLinear, per_member_view

VARIANTS = ("per-example", "batched")
# One kernel for "gradient where the ReLU output is positive, else 0" (a comparison and a product
# would be two).
relu_backward = torch.ops.aten.threshold_backward


@dataclasses.dataclass
class MerConfig(ReplayConfig):
    minibatch_size: int = hp(10, "memories per replay batch (the paper's replay batch size)", low=1)
    beta: float = hp(0.03, "within-batch Reptile step: share of a batch's move kept", low=0.0, high=1.0,
                     per_member=True)
    gamma: float = hp(1.0, "across-batch Reptile step: share of an example's total move kept", low=0.0, high=1.0,
                      per_member=True)
    batches_per_example: int = hp(1, "replay batches drawn for every incoming example", low=1)
    variant: str = hp("per-example", "SGD steps within a batch: one per example (Algorithm 1) or one per batch",
                      choices=VARIANTS)


class Mer(ReplayPopulationMethod):
    name = "mer"
    Config = MerConfig
    sgd_only_reason = "takes Reptile steps over plain SGD"

    def __init__(self, configs: list, seeds: list[int], benchmark, device, dtype=torch.float32,
                 member_benchmarks=None):
        super().__init__(configs, seeds, benchmark, device, dtype, member_benchmarks)
        self.eye = torch.eye(self.benchmark.n_classes, device=self.device, dtype=dtype)
        # The hand-written step needs the stacked MLP and inputs the benchmark does not augment.
        self.manual_mlp_step = (all(hasattr(self.net, n) for n in ("fc1", "fc2", "classifier"))
                                and all(isinstance(getattr(self.net, n), StackedLinear)
                                        for n in ("fc1", "fc2", "classifier"))
                                and not self.benchmark.augment)

    def _params(self) -> list[torch.Tensor]:
        return list(self.net.parameters())

    @staticmethod
    def _towards(params: list[torch.Tensor], start: list[torch.Tensor], keep: torch.Tensor) -> None:
        """params <- start + keep * (params - start), per member (keep [P]; 1 leaves params as they are)."""
        for p, s in zip(params, start):
            p.data.lerp_(s, per_member_view((1.0 - keep).to(p), p))

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        cfg = self.config
        params = self._params()
        beta, gamma = self.member_values("beta"), self.member_values("gamma")
        losses = []
        for i in range(x.shape[1]):
            xi, yi = x[:, i:i + 1], y[:, i:i + 1]
            example_start = [p.detach().clone() for p in params]
            for b in range(cfg.batches_per_example):
                replay = None if self.buffer.is_empty() else self.buffer.sample(cfg.minibatch_size)
                batch_start = [p.detach().clone() for p in params]
                loss = self._batch_steps(xi, yi, replay)
                if b == 0:
                    losses.append(loss)
                self._towards(params, batch_start, beta)  # within-batch Reptile step
            self._towards(params, example_start, gamma)  # across-batch Reptile step
            self.buffer.add(xi, yi, task=task)
        return torch.stack(losses, 1).mean(1)

    def _batch_steps(self, xi: torch.Tensor, yi: torch.Tensor, replay) -> torch.Tensor:
        """SGD on one replay batch per member: the incoming example ``xi`` [P, 1, ...] and the
        memories ``replay`` (None: none yet); returns that example's loss per member [P]."""
        if self.config.variant == "batched":
            losses, first = self.per_group(replay, lambda on, rows: self._batch_losses(on, on.rows(xi), on.rows(yi),
                                                                                       rows))
            self.opt.step(self.opt.backward(losses.sum()))
            return first
        counts = None  # memories per member where members hold different numbers
        if isinstance(replay, RaggedSample):
            replay, counts = replay.padded()
        bx, by = (xi, yi) if replay is None else (torch.cat([xi, replay.x], 1), torch.cat([yi, replay.y], 1))
        if self.manual_mlp_step:
            # In full precision under any autocast: the in-place rank-one updates add products to the
            # float32 weights, and each step starts from the weights the previous one wrote.
            with full_precision(self.device):
                return self._sequential_mlp_steps(bx, by, counts)
        first = None
        for j in range(bx.shape[1]):
            # A member without a j-th memory takes no step at column j (its SGD step adds a zero).
            on = self.everyone if counts is None or j == 0 else Members(self, (counts >= j).nonzero()[:, 0])
            loss = cross_entropy(on(self.net, on.augment(on.rows(bx[:, j:j + 1]))), on.rows(by[:, j:j + 1]))
            self.opt.step(self.opt.backward(loss.sum()))
            if first is None:
                first = loss.detach()
        return first

    def _batch_losses(self, on: Members, xi: torch.Tensor, yi: torch.Tensor,
                      replay: BufferSample | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch's mean loss per member and the incoming example's."""
        bx, by = (xi, yi) if replay is None else (torch.cat([xi, replay.x], 1), torch.cat([yi, replay.y], 1))
        logits = on(self.net, on.augment(bx))
        return cross_entropy(logits, by), cross_entropy(logits[:, :1].detach(), by[:, :1])

    @torch.no_grad()
    def _sequential_mlp_steps(self, bx: torch.Tensor, by: torch.Tensor,
                              counts: torch.Tensor | None = None) -> torch.Tensor:
        """One SGD step per column of ``bx`` on the stacked MLP, in order, for every member, without
        autograd; where ``counts`` (memories per member) is given, a member steps only on its own
        columns (on another, its learning rate is zero: it adds exact zeros).

        Cross-entropy of one example: d(loss)/d(logits) = softmax - one_hot. Each weight update is the
        rank-one ``W -= lr * outer(input, delta)`` (a batched product, the learning rate folded into
        the delta), done in place, after the deltas of the layers below have been computed from the
        old weights.
        """
        net = self.net
        w1, b1 = net.fc1.weight, net.fc1.bias  # [P, in, out], [P, 1, out]
        w2, b2 = net.fc2.weight, net.fc2.bias
        w3, b3 = net.classifier.weight, net.classifier.bias
        neg_lr = -self.member_values("lr").view(-1, 1, 1)
        rates = None if counts is None else \
            torch.where(to_device(torch.arange(bx.shape[1]) <= counts[:, None], self.device)[..., None, None],
                        neg_lr[:, None], torch.zeros_like(neg_lr[:, None]))
        inputs = bx.flatten(2)
        targets = self.eye[by]
        first = None
        for j in range(inputs.shape[1]):
            x, target = inputs[:, j:j + 1], targets[:, j:j + 1]  # [P, 1, in], [P, 1, C]
            if rates is not None:
                neg_lr = rates[:, j]
            h1 = torch.baddbmm(b1, x, w1).relu_()
            h2 = torch.baddbmm(b2, h1, w2).relu_()
            delta3 = torch.softmax(torch.baddbmm(b3, h2, w3), -1)
            if first is None:
                first = -torch.log((delta3 * target).sum(-1))[:, 0]
            delta3.sub_(target)
            delta2 = relu_backward(torch.bmm(delta3, w3.transpose(1, 2)), h2, 0)
            delta1 = relu_backward(torch.bmm(delta2, w2.transpose(1, 2)), h1, 0)
            delta3.mul_(neg_lr)
            delta2.mul_(neg_lr)
            delta1.mul_(neg_lr)
            w3.baddbmm_(h2.transpose(1, 2), delta3)
            b3.add_(delta3)
            w2.baddbmm_(h1.transpose(1, 2), delta2)
            b2.add_(delta2)
            w1.baddbmm_(x.transpose(1, 2), delta1)
            b1.add_(delta1)
        return first
