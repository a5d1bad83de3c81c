"""The reservoir buffer shared by every replay method, one reservoir per population member."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from raycl.device import to_device
from raycl.errors import RayclError
from raycl.population.members import agreed, all_or_none, joined_rows, member_rows
from raycl.population.random import MemberRandom

if TYPE_CHECKING:
    from raycl.data import Benchmark

# Once a reservoir is full its draws no longer depend on what it holds, so the slots of this many
# future insertions, or this many future samples, are drawn in one call (per-step cost of the
# random numbers falls to a slice).
PLAN_STEPS = 64


class _DrawPlan:
    """Random draws for the next PLAN_STEPS calls, made in one call and handed out a row at a time.

    ``key`` says what the rows were drawn for; ``next`` is the row the next call takes. Used for a
    full reservoir's insertion slots and for its samples.
    """

    def __init__(self, key=None):
        self.rows: torch.Tensor | None = None  # [P, PLAN_STEPS, ...]
        self.key = key
        self.next = 0

    def take(self, fits, key, draw) -> torch.Tensor:
        """The next row [P, ...], first drawing them anew (``draw()``, for ``key``) when none is left or
        ``fits(self)`` says they were drawn for other calls."""
        if self.rows is None or self.next == self.rows.shape[1] or not fits(self):
            self.rows, self.key, self.next = draw(), key, 0
        row = self.rows[:, self.next]
        self.next += 1
        return row

    def select(self, keep: torch.Tensor) -> None:
        if self.rows is not None:
            self.rows = self.rows[keep]

    def state(self) -> tuple:
        return self.rows, self.key, self.next

    def load(self, state: tuple, device: torch.device) -> None:
        rows, self.key, self.next = state
        self.rows = None if rows is None else to_device(rows, device)

    def member_states(self, positions: list[int]) -> list[tuple]:
        """Each member's plan at ``positions`` as the state of the plan of that member alone."""
        rows = [None] * len(positions) if self.rows is None else member_rows(self.rows, positions)
        return [(r, self.key, self.next) for r in rows]

    @staticmethod
    def joined_state(what: str, states: list[tuple], device: torch.device) -> tuple:
        """The state of one plan of the members of ``states``: what the rows were drawn for and the
        row the next call takes are shared by construction, and checked."""
        key = agreed(f"the keys of the {what}", [s[1] for s in states])
        next_row = agreed(f"the next rows of the {what}", [s[2] for s in states])
        pieces = [s[0] for s in states]
        rows = joined_rows(what, pieces, device) if all_or_none(what, pieces) else None
        return rows, key, next_row


@dataclasses.dataclass
class BufferSample:
    x: torch.Tensor
    y: torch.Tensor
    logits: torch.Tensor | None
    task: torch.Tensor


@dataclasses.dataclass
class MemberGroup:
    """Members whose reservoirs give the same number of rows: ``positions`` (ascending, an int64
    tensor on the host: nothing waits for the device to find them) and their rows, ``sample``
    [G, k, ...] (a list of them for several draws), or None where these members' reservoirs are
    empty."""

    positions: torch.Tensor
    sample: BufferSample | list[BufferSample] | None


class RaggedSample:
    """What a reservoir gives when its members hold different numbers of rows for it (members of
    different capacities, a minibatch larger than some of them): one :class:`MemberGroup` per
    number of rows. A method computes on each group as a population of its own
    (:meth:`raycl.methods.base.PopulationMethod.per_group`); the rows are not one [P, ...] tensor."""

    def __init__(self, groups: list[MemberGroup]):
        self.groups = groups

    def _not_one_tensor(self):
        raise RayclError("the members' buffers give different numbers of rows (different buffer sizes): compute "
                         "per group of members with PopulationMethod.per_group (docs/methods.md)")

    x = y = logits = task = property(lambda self: self._not_one_tensor())

    def __iter__(self):
        self._not_one_tensor()

    def padded(self) -> tuple[BufferSample | list[BufferSample], torch.Tensor]:
        """The rows as one [P, k_max, ...] sample (a member's rows beyond its own count repeat its
        first row, or are zeros where it has none) and every member's count of rows (int64 [P], on
        the host): for a method that masks the rows a member does not have."""
        members = sum(len(g.positions) for g in self.groups)
        draws = next(len(g.sample) if isinstance(g.sample, list) else 1 for g in self.groups if g.sample is not None)
        counts = torch.zeros(members, dtype=torch.long)
        for g in self.groups:
            if g.sample is not None:
                counts[g.positions] = _draws(g.sample)[0].y.shape[1]
        k = int(counts.max())
        template = next(_draws(g.sample)[0] for g in self.groups if g.sample is not None)
        padded = []
        for d in range(draws):
            def field(name):
                like = getattr(template, name)
                if like is None:
                    return None
                out = like.new_zeros((members, k, *like.shape[2:]))
                for g in self.groups:
                    if g.sample is None:
                        continue
                    rows = getattr(_draws(g.sample)[d], name)
                    filler = rows[:, :1].expand(-1, k - rows.shape[1], *rows.shape[2:])
                    out[to_device(g.positions, out.device)] = torch.cat([rows, filler], 1)
                return out

            padded.append(BufferSample(x=field("x"), y=field("y"), logits=field("logits"), task=field("task")))
        return (padded[0] if draws == 1 else padded), counts


def _draws(sample: BufferSample | list[BufferSample]) -> list[BufferSample]:
    return sample if isinstance(sample, list) else [sample]


class _Members:
    """The members of one capacity: they fill, replace and sample in lockstep (the same count of
    examples seen, the same random draws per member), with draw plans of their own."""

    def __init__(self, capacity: int, positions: list[int], random: MemberRandom, device: torch.device):
        self.capacity = capacity
        self.positions = positions
        self.index = torch.tensor(positions, dtype=torch.long, device=device)
        self.random = random  # these members' streams
        self.seen = 0
        self.slot_plan = _DrawPlan(key=0)  # [G, PLAN_STEPS, n] slots of future insertions; key: ``seen`` at the first
        self.sample_plan = _DrawPlan()  # [G, PLAN_STEPS, draws, k] future samples; key: (len, size, draws)

    def __len__(self) -> int:
        return min(self.seen, self.capacity)


class PopulationReservoir:
    """P reservoirs (Vitter's algorithm R), member p's of ``capacities[p]`` examples.

    The i-th example seen (0-based) takes slot i while a reservoir fills; afterwards it draws
    r ~ U{0..i} and replaces slot r if r < capacity, so every example seen so far is held with
    equal probability. Members see the same number of examples (lockstep) unless told otherwise
    (``add(counts=...)``); each draws its own slots and samples from its own stream, and draws
    exactly what a reservoir of its capacity alone would: members of one capacity draw together,
    members of others from their own places in the stream (a member of 200 replaces while one of
    5120 still fills and draws nothing). Each slot keeps x, y, the logits given at insertion (if
    any) and the task. One extra slot per member takes the writes of examples that win no slot.

    Storage is flat, member after member, each member ``capacity + 1`` rows: a population of mixed
    capacities takes the memory of its members' reservoirs apart, and reads and writes stay single
    index_select / index_copy_ calls. ``random`` is the members' stream as given; with several
    capacities the members of each draw from a stream split from it (a reservoir of 5120 samples
    from 25 times the keys one of 200 does), which ``state_dict`` and ``member_states`` give back
    per member.

    With ``images`` (the benchmark the examples come from) x is kept as the benchmark's uint8
    bytes, a quarter of float32's memory in the buffer and its checkpoints, and scaled again on
    the way out: the same floats as were added.
    """

    def __init__(self, capacity: int | Sequence[int], x_shape: tuple[int, ...], n_logits: int, random: MemberRandom,
                 device: torch.device | str, dtype: torch.dtype = torch.float32, store_logits: bool = True,
                 images: Benchmark | None = None):
        capacities = [capacity] * random.size if isinstance(capacity, int) else [int(c) for c in capacity]
        if len(capacities) != random.size:
            raise RayclError(f"{len(capacities)} buffer capacities for {random.size} members")
        self.capacities = capacities
        self.device = torch.device(device)
        self.random = random
        self.scaler = None if images is None else images.scaler(self.device, dtype)
        rows = sum(c + 1 for c in capacities)
        stored = dtype if self.scaler is None else torch.uint8
        self._examples = torch.zeros((rows, *x_shape), device=self.device, dtype=stored)
        self._labels = torch.zeros(rows, dtype=torch.long, device=self.device)
        self._logits = torch.zeros((rows, n_logits), device=self.device, dtype=dtype) if store_logits else None
        self._tasks = torch.zeros(rows, dtype=torch.long, device=self.device)
        self._arrange()

    def _arrange(self) -> None:
        """The members' first rows in the flat storage and their groups of one capacity (ascending)."""
        self._starts = np.cumsum([0] + [c + 1 for c in self.capacities])[:-1]  # on the host, as read there
        self._base = torch.tensor(self._starts, dtype=torch.long, device=self.device)[:, None]
        capacities = sorted(set(self.capacities))
        members = [[p for p, cp in enumerate(self.capacities) if cp == c] for c in capacities]
        streams = [self.random] if len(capacities) == 1 else [self.random.split(m) for m in members]
        self._groups = [_Members(c, m, s, self.device) for c, m, s in zip(capacities, members, streams)]
        self._group_of = {p: (g, g.positions.index(p)) for g in self._groups for p in g.positions}
        # Where member p's row is in the groups' rows concatenated: how per-group results become [P, ...].
        order = [p for g in self._groups for p in g.positions]
        self._inverse = None if len(self._groups) == 1 else \
            torch.tensor(np.argsort(order), dtype=torch.long, device=self.device)

    def _members_view(self, flat: torch.Tensor | None) -> torch.Tensor | None:
        if flat is None:
            return None
        return flat.view(-1, self.capacity + 1, *flat.shape[1:])

    @property
    def capacity(self) -> int:
        """The members' capacity (RayclError where they differ)."""
        if len(self._groups) > 1:
            raise RayclError(f"the members' reservoirs hold {sorted(set(self.capacities))} examples: no one capacity")
        return self._groups[0].capacity

    @property
    def examples(self) -> torch.Tensor:
        """The stored inputs [P, capacity + 1, ...] as kept (uint8 bytes for images); members of one
        capacity only."""
        return self._members_view(self._examples)

    def _inputs(self, stored: torch.Tensor) -> torch.Tensor:
        return stored if self.scaler is None else self.scaler(stored)

    def _stored(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach().to(self._examples.dtype) if self.scaler is None else self.scaler.to_uint8(x)

    @property
    def labels(self) -> torch.Tensor:
        return self._members_view(self._labels)

    @property
    def logits(self) -> torch.Tensor | None:
        return self._members_view(self._logits)

    @property
    def tasks(self) -> torch.Tensor:
        return self._members_view(self._tasks)

    @property
    def seen(self) -> int:
        """The examples every member has seen (RayclError where members saw different numbers)."""
        return agreed("counts of examples seen", [g.seen for g in self._groups])

    def lengths(self) -> list[int]:
        """The examples each member holds."""
        return [len(self._group_of[p][0]) for p in range(len(self.capacities))]

    def __len__(self) -> int:
        return agreed("counts of examples held", [len(g) for g in self._groups])

    def is_empty(self) -> bool:
        """Whether no member holds an example yet."""
        return all(g.seen == 0 for g in self._groups)

    def _joined(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """The groups' rows [G_i, ...] (in group order) as one [P, ...] in member order."""
        return parts[0] if self._inverse is None else torch.cat(parts)[self._inverse]

    def _slots(self, n: int) -> torch.Tensor:
        """[P, n] slots of the next ``n`` examples of every member."""
        return self._joined([self._group_slots(g, n) for g in self._groups])

    def _group_slots(self, g: _Members, n: int) -> torch.Tensor:
        """[G, n] slots of the next ``n`` examples of group ``g``; its ``capacity`` (the spare slot)
        where one wins none.

        Later rows win a slot two rows of one batch drew, as sequential insertion would.
        """
        start = g.seen
        if start + n <= g.capacity:
            return torch.arange(start, start + n, device=self.device).expand(len(g.positions), n)
        if start < g.capacity:
            return self._draw_slots(g, torch.arange(start, start + n, device=self.device)[None])[:, 0]

        def fits(plan: _DrawPlan) -> bool:  # drawn for batches of n, the next of them starting at ``start``
            return plan.rows.shape[2] == n and start == plan.key + plan.next * n

        def draw() -> torch.Tensor:
            positions = torch.arange(start, start + PLAN_STEPS * n, device=self.device).view(PLAN_STEPS, n)
            return self._draw_slots(g, positions)

        return g.slot_plan.take(fits, start, draw)

    def _draw_slots(self, g: _Members, positions: torch.Tensor) -> torch.Tensor:
        """Slots [G, steps, n] of group ``g``'s insertions at stream ``positions`` [steps, n], one batch per row."""
        steps, n = positions.shape
        capacity = g.capacity
        drawn = g.random.below(positions + 1, steps, n)
        slots = torch.where(positions < capacity, positions, drawn)
        slots = torch.where(slots < capacity, slots, capacity)
        later = torch.ones(n, n, dtype=torch.bool, device=self.device).triu(1)
        overwritten = ((slots[..., :, None] == slots[..., None, :]) & later).any(-1)
        return torch.where(overwritten, capacity, slots)

    def add(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None = None,
            task: int | torch.Tensor = 0, counts: Sequence[int] | None = None) -> None:
        """Offer a batch [P, n, ...] to the reservoirs (detached copies are stored). ``counts``: how
        many of its first rows each member offers (all n when None); members of one capacity offer
        as many."""
        n = x.shape[1]
        offered = self._group_counts(counts, n)
        if all(count == n for count in offered):
            rows, taken = (self._slots(n) + self._base).flatten(), None
        else:  # only each member's first rows: the rest are written nowhere, not even to its spare slot
            rows = torch.cat([(self._group_slots(g, count) + self._base[g.index]).flatten()
                              for g, count in zip(self._groups, offered)])
            taken = torch.tensor([p * n + j for g, count in zip(self._groups, offered) for p in g.positions
                                  for j in range(count)], dtype=torch.long, device=self.device)
        for g, count in zip(self._groups, offered):
            g.seen += count

        def offered_rows(t: torch.Tensor) -> torch.Tensor:
            return t if taken is None else t.index_select(0, taken)

        self._examples.index_copy_(0, rows, offered_rows(self._stored(x.flatten(0, 1))))
        self._labels.index_copy_(0, rows, offered_rows(y.flatten()))
        if self._logits is not None and logits is not None:
            self._logits.index_copy_(0, rows, offered_rows(logits.detach().flatten(0, 1).to(self._logits.dtype)))
        if isinstance(task, torch.Tensor):
            self._tasks.index_copy_(0, rows, offered_rows(task.flatten()))
        else:
            self._tasks.index_fill_(0, rows, task)

    def _group_counts(self, counts: Sequence[int] | None, n: int) -> list[int]:
        if counts is None:
            return [n] * len(self._groups)
        if len(counts) != len(self.capacities) or any(not 0 <= c <= n for c in counts):
            raise RayclError(f"counts of rows to add {list(counts)} for {len(self.capacities)} members of {n} rows")
        return [agreed("counts of rows the members of one buffer size add", [int(counts[p]) for p in g.positions])
                for g in self._groups]

    def sample(self, size: int, draws: int = 1) -> BufferSample | list[BufferSample] | RaggedSample:
        """Up to ``size`` distinct stored examples per member, uniformly at random: [P, k, ...].

        ``draws`` > 1 gives a list of that many independent samples, drawn in one call. Where
        members give different numbers of rows (``k = min(size, held)`` differs: a member of
        another capacity holds fewer than ``size``, or none), a :class:`RaggedSample`.
        """
        picked = [self._group_sample(g, size, draws) for g in self._groups]
        counts = {None if idx is None else idx.shape[2] for idx in picked}
        if len(counts) > 1 or None in counts:
            return self._ragged([(g.positions, idx) for g, idx in zip(self._groups, picked)], draws)
        idx = self._joined(picked)
        if draws == 1:
            return self.gather(idx[:, 0])
        return self._split(self.gather(idx.flatten(1)), idx.shape[2], draws)

    def _group_sample(self, g: _Members, size: int, draws: int) -> torch.Tensor | None:
        """Slots [G, draws, k] of group ``g``'s next sample, or None where its reservoirs are empty."""
        n = len(g)
        if n == 0:
            return None
        if n < g.capacity:
            return to_device(g.random.sample_without_replacement(n, size, groups=draws), self.device)
        key = (n, size, draws)

        def draw() -> torch.Tensor:
            planned = g.random.sample_without_replacement(n, size, groups=PLAN_STEPS * draws)
            return to_device(planned, self.device).view(planned.shape[0], PLAN_STEPS, draws, -1)

        return g.sample_plan.take(lambda plan: plan.key == key, key, draw)

    @staticmethod
    def _split(together: BufferSample, k: int, draws: int) -> list[BufferSample]:
        """Views of one gather of every draw, per draw."""
        def part(t, d):
            return None if t is None else t[:, d * k:(d + 1) * k]

        return [BufferSample(x=part(together.x, d), y=part(together.y, d), logits=part(together.logits, d),
                             task=part(together.task, d)) for d in range(draws)]

    def _ragged(self, picked: list[tuple[list[int], torch.Tensor | None]], draws: int) -> RaggedSample:
        """Per-group slots [G, draws, k_G] (None: empty) as a RaggedSample, groups of one k together."""
        by_count: dict[int, list[tuple[list[int], torch.Tensor | None]]] = {}
        for positions, idx in picked:
            by_count.setdefault(0 if idx is None else idx.shape[2], []).append((positions, idx))
        groups = []
        for count, parts in sorted(by_count.items()):
            positions = [p for members, _ in parts for p in members]
            order = np.argsort(positions, kind="stable")
            host = torch.from_numpy(np.asarray(positions)[order])
            if count == 0:
                groups.append(MemberGroup(host, None))
                continue
            idx = torch.cat([i for _, i in parts])[to_device(torch.from_numpy(order), self.device)]
            together = self._gather_rows(idx.flatten(1), self._base[to_device(host, self.device)])
            groups.append(MemberGroup(host, together if draws == 1 else self._split(together, count, draws)))
        return RaggedSample(groups)

    def gather(self, idx: torch.Tensor) -> BufferSample:
        """The stored examples at slots ``idx`` [P, k] of each member."""
        return self._gather_rows(idx, self._base)

    def _gather_rows(self, idx: torch.Tensor, base: torch.Tensor) -> BufferSample:
        rows = (idx + base).flatten()
        p, k = idx.shape

        def take(flat):
            return flat.index_select(0, rows).view(p, k, *flat.shape[1:])

        return BufferSample(x=self._inputs(take(self._examples)), y=take(self._labels),
                            logits=None if self._logits is None else take(self._logits), task=take(self._tasks))

    def all(self) -> BufferSample | RaggedSample:
        """Every stored example of every member, [P, held, ...]; a RaggedSample where members hold
        different numbers."""
        if len(self._groups) == 1:
            n = len(self)
            logits = self.logits
            return BufferSample(x=self._inputs(self.examples[:, :n]), y=self.labels[:, :n],
                                logits=None if logits is None else logits[:, :n], task=self.tasks[:, :n])
        held = self.lengths()
        if len(set(held)) == 1:
            return self.gather(torch.arange(held[0], device=self.device).expand(len(held), -1))
        groups = []
        for n in sorted(set(held)):
            host = torch.tensor([p for p, h in enumerate(held) if h == n], dtype=torch.long)
            slots = torch.arange(n, device=self.device).expand(len(host), -1)
            groups.append(MemberGroup(host, self._gather_rows(slots, self._base[to_device(host, self.device)]) if n else None))
        return RaggedSample(groups)

    def _random_state(self) -> dict:
        """The members' streams as one state, in member order (from each capacity's own stream)."""
        if len(self._groups) == 1:
            return self.random.state_dict()
        return self.random.gathered_state(self._random_pieces(range(len(self.capacities))))

    def _random_pieces(self, positions) -> list[dict]:
        if len(self._groups) == 1:
            return self.random.member_states(list(positions))
        return [g.random.member_states([within])[0] for g, within in (self._group_of[p] for p in positions)]

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members at positions ``keep``, with their random streams."""
        if len(self._groups) > 1:
            self.random.load_state_dict(self._random_state())
        self.random.select(keep)
        positions = keep.tolist()
        rows = torch.cat([torch.arange(self.capacities[p] + 1) + int(self._starts[p]) for p in positions])
        rows = rows.to(self.device)

        def kept(flat):
            return None if flat is None else flat.index_select(0, rows)

        self._examples, self._labels = kept(self._examples), kept(self._labels)
        self._logits, self._tasks = kept(self._logits), kept(self._tasks)
        before = {g.capacity: g for g in self._groups}
        self.capacities = [self.capacities[p] for p in positions]
        self._arrange()
        for g in self._groups:
            old = before[g.capacity]
            within = torch.tensor([old.positions.index(positions[p]) for p in g.positions])
            g.seen = old.seen
            g.slot_plan, g.sample_plan = old.slot_plan, old.sample_plan
            g.slot_plan.select(to_device(within, self.device))
            g.sample_plan.select(to_device(within, self.device))

    def state_dict(self) -> dict:
        """The stored rows, the count of examples seen and the draw plans: as they are for members of
        one capacity; a count per member and the plans of each capacity (ascending) for several."""
        one = len(self._groups) == 1
        return {"examples": self._examples, "labels": self._labels, "logits": self._logits, "tasks": self._tasks,
                "capacities": list(self.capacities),
                "seen": self._groups[0].seen if one else [self._group_of[p][0].seen
                                                          for p in range(len(self.capacities))],
                "slot_plan": self._groups[0].slot_plan.state() if one else [g.slot_plan.state() for g in self._groups],
                "sample_plan": self._groups[0].sample_plan.state() if one else [g.sample_plan.state()
                                                                                  for g in self._groups],
                "random": self._random_state()}

    def member_states(self, positions: list[int]) -> list[dict]:
        """Each member's reservoir at ``positions`` as the state of the reservoir of that member alone:
        its slots, its count of examples seen, its draw plans and its random stream."""
        def rows(flat: torch.Tensor | None, p: int) -> torch.Tensor | None:
            start = int(self._starts[p])
            return None if flat is None else flat[start:start + self.capacities[p] + 1].clone()

        randoms = self._random_pieces(positions)
        states = []
        for p, random in zip(positions, randoms):
            g, within = self._group_of[p]
            states.append({"examples": rows(self._examples, p), "labels": rows(self._labels, p),
                           "logits": rows(self._logits, p), "tasks": rows(self._tasks, p),
                           "capacities": [self.capacities[p]], "seen": g.seen,
                           "slot_plan": g.slot_plan.member_states([within])[0],
                           "sample_plan": g.sample_plan.member_states([within])[0], "random": random})
        return states

    def joined_state(self, states: list[dict]) -> dict:
        """The state of one reservoir of the members of ``states`` (one member each), in order, each of
        the capacity this reservoir gives it. Members of one capacity fill and draw in lockstep, so
        their count seen and their plans' positions are shared by construction, and checked; members
        of different capacities share nothing."""
        capacities = []
        for state in states:
            if len(state["random"]["generators"]) != 1:
                raise RayclError("a reservoir joins the states of single members (member_states)")
            capacities.append(len(state["labels"]) - 1)
        if capacities != self.capacities:
            raise RayclError(f"reservoirs of {capacities} examples cannot take the places of reservoirs of "
                             f"{self.capacities}")

        def flat(name: str) -> torch.Tensor | None:
            pieces = [s[name] for s in states]
            return joined_rows(f"buffer {name}", pieces, self.device) if all_or_none(f"buffer {name}", pieces) else None

        seen, slot_plans, sample_plans = [], [], []
        for g in self._groups:
            members = [states[p] for p in g.positions]
            seen.append(agreed("counts of examples seen", [s["seen"] for s in members]))
            slot_plans.append(_DrawPlan.joined_state("slot plans", [s["slot_plan"] for s in members], self.device))
            sample_plans.append(_DrawPlan.joined_state("sample plans", [s["sample_plan"] for s in members],
                                                       self.device))
        one = len(self._groups) == 1
        return {**{name: flat(name) for name in ("examples", "labels", "logits", "tasks")},
                "capacities": list(self.capacities),
                "seen": seen[0] if one else [s["seen"] for s in states],
                "slot_plan": slot_plans[0] if one else slot_plans,
                "sample_plan": sample_plans[0] if one else sample_plans,
                "random": self.random.joined_state([s["random"] for s in states])}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``, saved on any device: every tensor lands on this buffer's."""
        if state["examples"].dtype != self._examples.dtype:
            raise ValueError(f"the checkpoint stores buffer inputs as {state['examples'].dtype}, this buffer "
                             f"as {self._examples.dtype}")
        capacities = state.get("capacities")  # checkpoints of one capacity from before it was saved
        if capacities is not None and list(capacities) != self.capacities:
            raise RayclError(f"a checkpoint of reservoirs of {list(capacities)} examples cannot restore reservoirs "
                             f"of {self.capacities}")
        self._examples.copy_(state["examples"])
        self._labels.copy_(state["labels"])
        if self._logits is not None:
            self._logits.copy_(state["logits"])
        self._tasks.copy_(state["tasks"])
        one = len(self._groups) == 1
        seen, slot_plans, sample_plans = state["seen"], state["slot_plan"], state["sample_plan"]
        for i, g in enumerate(self._groups):
            g.seen = seen if isinstance(seen, int) else int(seen[g.positions[0]])
            g.slot_plan.load(slot_plans if one else slot_plans[i], self.device)
            g.sample_plan.load(sample_plans if one else sample_plans[i], self.device)
        self.random.load_state_dict(state["random"])
        if len(self._groups) > 1:
            for g in self._groups:
                g.random = self.random.split(g.positions)
