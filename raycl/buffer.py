"""The reservoir buffer shared by every replay method, one reservoir per population member."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

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
        self.rows = None if rows is None else rows.to(device)

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


class PopulationReservoir:
    """P reservoirs (Vitter's algorithm R) of ``capacity`` examples, stored as [P, capacity, ...].

    The i-th example seen (0-based) takes slot i while a reservoir fills; afterwards it draws
    r ~ U{0..i} and replaces slot r if r < capacity, so every example seen so far is held with
    equal probability. Members see the same number of examples (lockstep), each draws its own
    slots from its own stream. Each slot keeps x, y, the logits given at insertion (if any) and
    the task. One extra slot per member takes the writes of examples that win no slot.

    With ``images`` (the benchmark the examples come from) x is kept as the benchmark's uint8
    bytes, a quarter of float32's memory in the buffer and its checkpoints, and scaled again on
    the way out: the same floats as were added.
    """

    def __init__(self, capacity: int, x_shape: tuple[int, ...], n_logits: int, random: MemberRandom,
                 device: torch.device | str, dtype: torch.dtype = torch.float32, store_logits: bool = True,
                 images: Benchmark | None = None):
        self.capacity = capacity
        self.device = torch.device(device)
        self.random = random
        self.scaler = None if images is None else images.scaler(self.device, dtype)
        # Stored flat, member after member ([P * (capacity + 1), ...]): reads and writes are single
        # index_select / index_copy_ calls; ``examples`` etc. are the [P, capacity + 1, ...] views.
        rows = random.size * (capacity + 1)
        stored = dtype if self.scaler is None else torch.uint8
        self._examples = torch.zeros((rows, *x_shape), device=self.device, dtype=stored)
        self._labels = torch.zeros(rows, dtype=torch.long, device=self.device)
        self._logits = torch.zeros((rows, n_logits), device=self.device, dtype=dtype) if store_logits else None
        self._tasks = torch.zeros(rows, dtype=torch.long, device=self.device)
        self.seen = 0
        self._index_base()
        self._slot_plan = _DrawPlan(key=0)  # [P, PLAN_STEPS, n] slots of future insertions; key: ``seen`` at the first
        self._sample_plan = _DrawPlan()  # [P, PLAN_STEPS, draws, k] future samples; key: (len, size, draws)

    def _index_base(self) -> None:
        size = len(self._labels) // (self.capacity + 1)
        self._base = torch.arange(size, device=self.device)[:, None] * (self.capacity + 1)

    def _members_view(self, flat: torch.Tensor | None) -> torch.Tensor | None:
        return None if flat is None else flat.view(-1, self.capacity + 1, *flat.shape[1:])

    @property
    def examples(self) -> torch.Tensor:
        """The stored inputs [P, capacity + 1, ...] as kept (uint8 bytes for images)."""
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

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def is_empty(self) -> bool:
        return self.seen == 0

    def _slots(self, n: int) -> torch.Tensor:
        """[P, n] slots of the next ``n`` examples; ``capacity`` (the spare slot) where one wins none.

        Later rows win a slot two rows of one batch drew, as sequential insertion would.
        """
        start = self.seen
        if start + n <= self.capacity:
            return torch.arange(start, start + n, device=self.device).expand(self.random.size, n)
        if start < self.capacity:
            return self._draw_slots(torch.arange(start, start + n, device=self.device)[None])[:, 0]

        def fits(plan: _DrawPlan) -> bool:  # drawn for batches of n, the next of them starting at ``start``
            return plan.rows.shape[2] == n and start == plan.key + plan.next * n

        def draw() -> torch.Tensor:
            positions = torch.arange(start, start + PLAN_STEPS * n, device=self.device).view(PLAN_STEPS, n)
            return self._draw_slots(positions)

        return self._slot_plan.take(fits, start, draw)

    def _draw_slots(self, positions: torch.Tensor) -> torch.Tensor:
        """Slots [P, steps, n] of insertions at stream ``positions`` [steps, n], one batch per row."""
        steps, n = positions.shape
        drawn = self.random.below(positions + 1, steps, n)
        slots = torch.where(positions < self.capacity, positions, drawn)
        slots = torch.where(slots < self.capacity, slots, self.capacity)
        later = torch.ones(n, n, dtype=torch.bool, device=self.device).triu(1)
        overwritten = ((slots[..., :, None] == slots[..., None, :]) & later).any(-1)
        return torch.where(overwritten, self.capacity, slots)

    def add(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None = None,
            task: int | torch.Tensor = 0) -> None:
        """Offer a batch [P, n, ...] to the reservoirs (detached copies are stored)."""
        n = x.shape[1]
        rows = (self._slots(n) + self._base).flatten()
        self.seen += n
        self._examples.index_copy_(0, rows, self._stored(x.flatten(0, 1)))
        self._labels.index_copy_(0, rows, y.flatten())
        if self._logits is not None and logits is not None:
            self._logits.index_copy_(0, rows, logits.detach().flatten(0, 1).to(self._logits.dtype))
        if isinstance(task, torch.Tensor):
            self._tasks.index_copy_(0, rows, task.flatten())
        else:
            self._tasks.index_fill_(0, rows, task)

    def sample(self, size: int, draws: int = 1) -> BufferSample | list[BufferSample]:
        """Up to ``size`` distinct stored examples per member, uniformly at random: [P, k, ...].

        ``draws`` > 1 gives a list of that many independent samples, drawn in one call.
        """
        n = len(self)
        if n < self.capacity:
            idx = self.random.sample_without_replacement(n, size, groups=draws).to(self.device)
        else:
            key = (n, size, draws)

            def draw() -> torch.Tensor:
                planned = self.random.sample_without_replacement(n, size, groups=PLAN_STEPS * draws)
                return planned.to(self.device).view(planned.shape[0], PLAN_STEPS, draws, -1)

            idx = self._sample_plan.take(lambda plan: plan.key == key, key, draw)
        if draws == 1:
            return self.gather(idx[:, 0])
        # One gather for every draw, then views of it per draw.
        k = idx.shape[2]
        together = self.gather(idx.flatten(1))

        def part(t, g):
            return None if t is None else t[:, g * k:(g + 1) * k]

        return [BufferSample(x=part(together.x, g), y=part(together.y, g), logits=part(together.logits, g),
                             task=part(together.task, g)) for g in range(draws)]

    def gather(self, idx: torch.Tensor) -> BufferSample:
        """The stored examples at slots ``idx`` [P, k] of each member."""
        rows = (idx + self._base).flatten()
        p, k = idx.shape

        def take(flat):
            return flat.index_select(0, rows).view(p, k, *flat.shape[1:])

        return BufferSample(x=self._inputs(take(self._examples)), y=take(self._labels),
                            logits=None if self._logits is None else take(self._logits), task=take(self._tasks))

    def all(self) -> BufferSample:
        n = len(self)
        logits = self.logits
        return BufferSample(x=self._inputs(self.examples[:, :n]), y=self.labels[:, :n],
                            logits=None if logits is None else logits[:, :n], task=self.tasks[:, :n])

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members at positions ``keep``, with their random streams."""
        self.random.select(keep)
        keep = keep.to(self.device)

        def rows(flat):
            return None if flat is None else self._members_view(flat)[keep].flatten(0, 1)

        self._examples, self._labels = rows(self._examples), rows(self._labels)
        self._logits, self._tasks = rows(self._logits), rows(self._tasks)
        self._index_base()
        self._slot_plan.select(keep)
        self._sample_plan.select(keep)

    def state_dict(self) -> dict:
        return {"examples": self._examples, "labels": self._labels, "logits": self._logits, "tasks": self._tasks,
                "seen": self.seen, "slot_plan": self._slot_plan.state(), "sample_plan": self._sample_plan.state(),
                "random": self.random.state_dict()}

    def member_states(self, positions: list[int]) -> list[dict]:
        """Each member's reservoir at ``positions`` as the state of the reservoir of that member alone:
        its slots, its count of examples seen, its draw plans and its random stream."""
        slots = self.capacity + 1

        def rows(flat: torch.Tensor | None, p: int) -> torch.Tensor | None:
            return None if flat is None else flat[p * slots:(p + 1) * slots].clone()

        slot_plans = self._slot_plan.member_states(positions)
        sample_plans = self._sample_plan.member_states(positions)
        randoms = self.random.member_states(positions)
        return [{"examples": rows(self._examples, p), "labels": rows(self._labels, p), "logits": rows(self._logits, p),
                 "tasks": rows(self._tasks, p), "seen": self.seen, "slot_plan": slot_plan,
                 "sample_plan": sample_plan, "random": random}
                for p, slot_plan, sample_plan, random in zip(positions, slot_plans, sample_plans, randoms)]

    def joined_state(self, states: list[dict]) -> dict:
        """The state of one reservoir of the members of ``states``, in order. Members see the same
        number of examples (lockstep), so the count seen and the plans' positions are shared by
        construction, and checked."""
        capacities = {len(s["labels"]) // len(s["random"]["generators"]) - 1 for s in states}
        if capacities != {self.capacity}:
            raise RayclError(f"reservoirs of {sorted(capacities)} examples cannot join reservoirs of {self.capacity}")

        def flat(name: str) -> torch.Tensor | None:
            pieces = [s[name] for s in states]
            return joined_rows(f"buffer {name}", pieces, self.device) if all_or_none(f"buffer {name}", pieces) else None

        return {**{name: flat(name) for name in ("examples", "labels", "logits", "tasks")},
                "seen": agreed("counts of examples seen", [s["seen"] for s in states]),
                "slot_plan": _DrawPlan.joined_state("slot plans", [s["slot_plan"] for s in states], self.device),
                "sample_plan": _DrawPlan.joined_state("sample plans", [s["sample_plan"] for s in states], self.device),
                "random": self.random.joined_state([s["random"] for s in states])}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``, saved on any device: every tensor lands on this buffer's."""
        if state["examples"].dtype != self._examples.dtype:
            raise ValueError(f"the checkpoint stores buffer inputs as {state['examples'].dtype}, this buffer "
                             f"as {self._examples.dtype}")
        self._examples.copy_(state["examples"])
        self._labels.copy_(state["labels"])
        if self._logits is not None:
            self._logits.copy_(state["logits"])
        self._tasks.copy_(state["tasks"])
        self.seen = state["seen"]
        self._slot_plan.load(state["slot_plan"], self.device)
        self._sample_plan.load(state["sample_plan"], self.device)
        self.random.load_state_dict(state["random"])
