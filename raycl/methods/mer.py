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

Algorithm 1 takes millions of single-example steps, so its cost is per-step overhead. On the MLP
it runs a hand-written forward and backward pass (three matrix-vector products, two more for the
backward, rank-one weight updates in place) instead of autograd, on parameters that are views of
one flat vector (FlatSGD), so the Reptile steps are two vector operations on that vector.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from raycl.hparams import hp
from raycl.methods.base import ReplayConfig, ReplayMethod
from raycl.models import MLP

VARIANTS = ("per-example", "batched")
# One kernel for "gradient where the ReLU output is positive, else 0" (a comparison and a product
# would be two).
relu_backward = torch.ops.aten.threshold_backward


@dataclasses.dataclass
class MerConfig(ReplayConfig):
    minibatch_size: int = hp(10, "memories per replay batch (the paper's replay batch size)", low=1)
    beta: float = hp(0.03, "within-batch Reptile step: share of a batch's move kept", low=0.0, high=1.0)
    gamma: float = hp(1.0, "across-batch Reptile step: share of an example's total move kept", low=0.0, high=1.0)
    batches_per_example: int = hp(1, "replay batches drawn for every incoming example", low=1)
    variant: str = hp("per-example", "SGD steps within a batch: one per example (Algorithm 1) or one per batch",
                      choices=VARIANTS)


class Mer(ReplayMethod):
    name = "mer"
    Config = MerConfig
    flat_sgd_reason = "takes Reptile steps over plain SGD"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        flat = self.opt.flat
        self.example_start = torch.empty_like(flat)
        self.batch_start = torch.empty_like(flat)
        self.eye = torch.eye(self.benchmark.n_classes, device=self.device)
        # The hand-written step needs the plain MLP and inputs the benchmark does not augment.
        self.manual_mlp_step = type(self.net) is MLP and not self.benchmark.augment

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        cfg = self.config
        flat = self.opt.flat
        losses = []
        for i in range(x.shape[0]):
            xi, yi = x[i:i + 1], y[i:i + 1]
            if cfg.gamma != 1.0:
                self.example_start.copy_(flat)
            for b in range(cfg.batches_per_example):
                if self.buffer.is_empty():
                    bx, by = xi, yi
                else:
                    replay = self.buffer.sample(cfg.minibatch_size)
                    bx, by = torch.cat([xi, replay.x]), torch.cat([yi, replay.y])
                if cfg.beta != 1.0:
                    self.batch_start.copy_(flat)
                loss = self._batch_steps(bx, by)
                if b == 0:
                    losses.append(loss)
                if cfg.beta != 1.0:
                    # flat <- batch_start + beta * (flat - batch_start)
                    flat.lerp_(self.batch_start, 1.0 - cfg.beta)
            if cfg.gamma != 1.0:
                flat.lerp_(self.example_start, 1.0 - cfg.gamma)
            self.buffer.add(xi, yi, task=task)
        return torch.stack(losses).mean()

    def _batch_steps(self, bx: torch.Tensor, by: torch.Tensor) -> torch.Tensor:
        """SGD on one replay batch, the incoming example in row 0; returns that example's loss."""
        if self.config.variant == "batched":
            self.opt.zero_grad()
            logits = self.net(self.augment(bx))
            F.cross_entropy(logits, by).backward()
            self.opt.step()
            return F.cross_entropy(logits[:1].detach(), by[:1])
        if self.manual_mlp_step:
            return self._sequential_mlp_steps(bx, by)
        first = None
        for j in range(bx.shape[0]):
            self.opt.zero_grad()
            loss = F.cross_entropy(self.net(self.augment(bx[j:j + 1])), by[j:j + 1])
            loss.backward()
            self.opt.step()
            if first is None:
                first = loss.detach()
        return first

    @torch.no_grad()
    def _sequential_mlp_steps(self, bx: torch.Tensor, by: torch.Tensor) -> torch.Tensor:
        """One SGD step per row of ``bx`` on the MLP, in order, without autograd.

        Cross-entropy of one example: d(loss)/d(logits) = softmax - one_hot. Each weight update is
        the rank-one ``W -= lr * outer(delta, input)`` (addr_), done in place on the parameters,
        after the deltas of the layers below have been computed from the old weights.
        """
        net = self.net
        w1, b1 = net.fc1.weight, net.fc1.bias
        w2, b2 = net.fc2.weight, net.fc2.bias
        w3, b3 = net.classifier.weight, net.classifier.bias
        w2t, w3t = w2.t(), w3.t()
        neg_lr = -self.config.lr
        addmv, mv, softmax = torch.addmv, torch.mv, torch.softmax
        inputs = bx.flatten(1)
        targets = self.eye[by]
        first = None
        for x, target in zip(inputs.unbind(0), targets.unbind(0)):
            h1 = addmv(b1, w1, x).relu_()
            h2 = addmv(b2, w2, h1).relu_()
            delta3 = softmax(addmv(b3, w3, h2), 0)
            if first is None:
                first = -torch.log(torch.dot(delta3, target))
            delta3.sub_(target)
            delta2 = relu_backward(mv(w3t, delta3), h2, 0)
            delta1 = relu_backward(mv(w2t, delta2), h1, 0)
            w3.addr_(delta3, h2, alpha=neg_lr)
            b3.add_(delta3, alpha=neg_lr)
            w2.addr_(delta2, h1, alpha=neg_lr)
            b2.add_(delta2, alpha=neg_lr)
            w1.addr_(delta1, x, alpha=neg_lr)
            b1.add_(delta1, alpha=neg_lr)
        return first
