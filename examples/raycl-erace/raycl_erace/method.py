"""ER-ACE: Experience Replay with the asymmetric cross-entropy (Caccia et al., "New Insights on
Reducing Abrupt Representation Change in Online Continual Learning", ICLR 2022).

Incoming examples are scored only among the classes present in their batch, so learning new
classes does not push down the logits of old ones (whose examples are absent); replayed examples
get the usual cross-entropy over every class. As in the paper, the mask and the replay start with
the second task; on the first, ER-ACE is plain fine-tuning. (mammoth's er_ace also leaves the
classes not seen yet unmasked; this follows the paper.)
"""

from __future__ import annotations

import dataclasses

import torch

from raycl.hparams import hp
from raycl.buffer import BufferSample
from raycl.methods.base import Members, ReplayConfig, ReplayPopulationMethod, cross_entropy


@dataclasses.dataclass
class ErAceConfig(ReplayConfig):
    # Not in the paper (which weighs both terms 1): a per-member loss weight a search can tune, and
    # the stability hyperparameter the per-task protocols decay.
    replay_weight: float = hp(1.0, "weight of the cross-entropy on replayed examples", low=0.0, per_member=True,
                              most_stable=1.0)


class ErAce(ReplayPopulationMethod):
    name = "erace"
    Config = ErAceConfig
    search_space = "erace.yaml"  # next to this module

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        replay = self.buffer.sample(self.config.minibatch_size) if task > 0 else None
        # Members of different buffer sizes may hold different numbers of memories: per group then.
        losses = self.per_group(replay, lambda on, rows: self.losses(on, on.rows(x), on.rows(y), rows, task))
        self.step(losses)
        self.buffer.add(x, y, task=task)
        return losses.detach()

    def losses(self, on: Members, x: torch.Tensor, y: torch.Tensor, replay: BufferSample | None,
               task: int) -> torch.Tensor:
        n = x.shape[1]
        outputs = on.forward_parts([on.augment(x)] + ([on.augment(replay.x)] if replay else []))
        incoming = outputs[:, :n]
        if task > 0:
            # Each member's own batch decides which of its classes compete: present [P, C].
            present = torch.zeros(incoming.shape[0], incoming.shape[-1], dtype=torch.bool, device=incoming.device)
            present.scatter_(1, y, True)
            incoming = incoming.masked_fill(~present[:, None, :], torch.finfo(incoming.dtype).min)
        losses = cross_entropy(incoming, y)
        if replay is not None:
            losses = losses + on.values("replay_weight") * cross_entropy(outputs[:, n:], replay.y)
        return losses
