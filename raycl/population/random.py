"""Per-member random streams that a whole population draws from in one call.

Each member owns a torch generator seeded from its seed and a stream id. Numbers are produced
in blocks (one generator call per member per block) and handed out in slices [P, n]. A call draws
the same amount for every member (the population is in lockstep), or for some members only
(:meth:`MemberRandom.members`: a step computed per group of members, where the members' replay
rows differ), each member from its own place in the block; either way a member's numbers depend
only on its own seed and its own draws, never on who else is in the population. Members that draw
at lastingly different rates (reservoirs of different capacities) take streams of their own
(:meth:`MemberRandom.split`): a block refilled for the fastest would keep growing with the numbers
the slowest has not used. Blocks are drawn on the CPU and then moved, so a run gives the same
numbers on any device.
"""

from __future__ import annotations

import enum
import math

import numpy as np
import torch

from raycl.device import to_device
from raycl.errors import RayclError

# Numbers pre-drawn per member: amortises one generator call per member over many small draws.
_BLOCK = 8192


def host_state(tensor: torch.Tensor) -> np.ndarray:
    """Host-side state (a generator's state, a host stream's numbers, a count of host decisions) as
    it goes into a state dict: a NumPy copy, which ``torch.load(map_location=...)`` leaves on the
    host while it moves every tensor to the run's device."""
    return tensor.detach().cpu().numpy().copy()


def from_host_state(saved) -> torch.Tensor:
    """Host-side state of a state dict back as a CPU tensor of its own (from a NumPy array, or from
    a tensor on any device as older checkpoints hold it)."""
    if isinstance(saved, torch.Tensor):
        return saved.detach().to("cpu", copy=True)
    return torch.from_numpy(np.array(saved, copy=True))


class Stream(enum.IntEnum):
    """Every random stream a member draws from, named in one place. A stream's generator is seeded
    from (member seed, stream) by :func:`stream_seed`, so no two seeds and no two streams share one."""

    ORDER = 0  # the loop's data order
    METHOD = 1  # a vectorised method's own draws (augmentation, noise, coins)
    BUFFER = 2  # the reservoir's slots and replay samples
    AUGMENT = 3  # a member-by-member method's augmentation
    JOINT_SHUFFLE = 4  # joint training's order over every task seen
    AGEM_SAMPLES = 5  # the examples A-GEM keeps of a finished task
    FISHER_SAMPLES = 6  # the examples EWC estimates its Fisher on
    SYNERGY_COINS = 7  # SYNERgy's update coins
    CLSER_COINS = 8  # CLS-ER's update coins
    VAE_NOISE = 9  # generative replay's latent noise
    VAE_SHUFFLE = 10  # generative replay's VAE batches
    VAE_INIT = 11  # generative replay's new VAEs' initial weights


_SEED_STRIDE = 1_000_003  # more streams than this per seed would collide with the next seed's


def stream_seed(seed: int, stream: int) -> int:
    """The generator seed of ``stream`` for the member seeded ``seed``: distinct for every pair."""
    return int(seed) * _SEED_STRIDE + int(stream)


def stream_generator(seed: int, stream: Stream, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator of one member's ``stream``."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, stream))


class MemberRandom:
    """Uniform and normal numbers for P members, each from its own stream."""

    def __init__(self, seeds: list[int], stream: int, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.generators = [torch.Generator().manual_seed(stream_seed(s, stream)) for s in seeds]
        self._block = torch.zeros((len(seeds), 0), dtype=torch.float64, device=self.device)
        self._offset = 0
        # Per member, the numbers handed out past ``_offset`` by draws for some members only; None
        # while every member stands at ``_offset`` (lockstep).
        self._ahead: np.ndarray | None = None
        self._helpers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._subsets: dict[tuple[int, ...], MemberSubset] = {}
        self._rows: dict[tuple[int, ...], torch.Tensor] = {}

    @property
    def size(self) -> int:
        return len(self.generators)

    def _refill(self, n: int) -> None:
        rest = self._block[:, self._offset:]
        fresh = torch.stack([torch.rand(max(n, _BLOCK), generator=g, dtype=torch.float64)
                             for g in self.generators]) if self.generators else torch.zeros((0, max(n, _BLOCK)),
                                                                                             dtype=torch.float64)
        self._block = torch.cat([rest, to_device(fresh, self.device)], dim=1)
        self._offset = 0

    def _take(self, n: int) -> torch.Tensor:
        if self._ahead is not None:
            return self._take_of(list(range(self.size)), n)
        if self._offset + n > self._block.shape[1]:
            self._refill(n)
        out = self._block[:, self._offset:self._offset + n]
        self._offset += n
        return out

    def members(self, positions: list[int]) -> MemberRandom:
        """The streams of the members at ``positions`` (ascending) as a MemberRandom of their own:
        what it draws, only those members draw, each from where its stream stands; the others keep
        their places. All the members: this stream itself."""
        positions = tuple(positions)
        if positions == tuple(range(self.size)):
            return self
        subset = self._subsets.get(positions)
        if subset is None:
            subset = self._subsets[positions] = MemberSubset(self, positions)
        return subset

    def split(self, positions: list[int]) -> MemberRandom:
        """The streams of the members at ``positions`` as a MemberRandom of their own, each going on
        from where it stands (this one is not to draw for them any more): members that draw at
        rates of their own keep a block of their own, not a share of one that the fastest refills
        for all."""
        part = MemberRandom([0] * len(positions), 0, self.device)
        part.load_state_dict(part.joined_state(self.member_states(positions)))
        return part

    def _take_of(self, positions: list[int], n: int) -> torch.Tensor:
        """The next ``n`` numbers [len(positions), n] of the members at ``positions``, each from its
        own place in the block."""
        ahead = np.zeros(self.size, dtype=np.int64) if self._ahead is None else self._ahead
        starts = self._offset + ahead[positions]
        if int(starts.max(initial=0)) + n > self._block.shape[1]:
            self._even_out()
            self._refill(n)
            ahead = np.zeros(self.size, dtype=np.int64)
            starts = self._offset + ahead[positions]
        rows = self._subset_rows(positions)
        if (starts == starts[0]).all():
            out = self._block[:, int(starts[0]):int(starts[0]) + n] if rows is None else \
                self._block[rows, int(starts[0]):int(starts[0]) + n]
        else:
            columns = to_device(torch.from_numpy(starts[:, None] + np.arange(n)), self.device)
            out = self._block[torch.arange(self.size, device=self.device)[:, None] if rows is None else rows[:, None],
                              columns]
        ahead = ahead.copy()
        ahead[positions] += n
        if (ahead == ahead[0]).all():
            self._offset += int(ahead[0])
            self._ahead = None
        else:
            self._ahead = ahead
        return out

    def _subset_rows(self, positions: list[int]) -> torch.Tensor | None:
        """``positions`` as an index on the device (None: every member, in order)."""
        if len(positions) == self.size:
            return None
        key = tuple(positions)
        cached = self._rows.get(key)
        if cached is None:
            cached = self._rows[key] = torch.tensor(positions, dtype=torch.long, device=self.device)
        return cached

    def _even_out(self) -> None:
        """Back into lockstep: members that handed out more numbers than others draw as many more
        from their generators (a generator's numbers come out the same whether drawn in one call
        or in several), so that every member's rest of the block is as long; offset 0. (The block
        then holds what the member furthest behind has not used: bounded while the members' rates
        of drawing stay close, as a step's groups' do.)"""
        if self._ahead is None:
            return
        rests = [self._block[p, self._offset + int(a):] for p, a in enumerate(self._ahead)]
        longest = max(len(r) for r in rests)
        rows = []
        for generator, rest in zip(self.generators, rests):
            missing = longest - len(rest)
            drawn = to_device(torch.rand(missing, generator=generator, dtype=torch.float64), self.device)
            rows.append(torch.cat([rest, drawn]))
        self._block = torch.stack(rows)
        self._offset = 0
        self._ahead = None

    def uniform(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[P, *shape] numbers in [0, 1)."""
        return self._take(math.prod(shape)).view(self.size, *shape).to(dtype)

    def normal(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[P, *shape] standard normal numbers (Box-Muller over two uniforms)."""
        u = self._take(2 * math.prod(shape)).view(self.size, 2, *shape)
        radius = torch.sqrt(-2.0 * torch.log1p(-u[:, 0]))
        return (radius * torch.cos(2.0 * math.pi * u[:, 1])).to(dtype)

    def below(self, bound: int | torch.Tensor, *shape: int) -> torch.Tensor:
        """[P, *shape] integers uniform in [0, bound) (``bound`` broadcast against the shape)."""
        return (self.uniform(*shape, dtype=torch.float64) * bound).long()

    def permutation(self, n: int) -> torch.Tensor:
        """A random order of range(n) per member: int64 [P, n]."""
        return self.uniform(n, dtype=torch.float64).argsort(dim=1)

    def sample_without_replacement(self, n: int, k: int, groups: int | None = None) -> torch.Tensor:
        """``min(k, n)`` distinct integers of range(n) per member, uniformly: int64 [P, k]; with
        ``groups``, that many independent such samples at once: [P, groups, k].

        For n well above a small k: the first k distinct values of 3k uniform draws (a uniform
        k-subset, at 3k numbers instead of n); otherwise the k smallest of n uniform keys. Fewer than k distinct values among 3k draws from n > 4k
        has a probability below 1e-8 even at k = 10; it then repeats a value rather than fail.
        """
        k = min(k, n)
        g = groups or 1
        if n <= 4 * k or k > 32:
            picked = self.uniform(g, n, dtype=torch.float64).topk(k, dim=2).indices
        else:
            draws = 3 * k
            candidates = self._take(g * draws).view(self.size, g, draws).mul(n).long()
            # A draw repeats an earlier one iff, stably sorted, it equals its predecessor.
            values, order = candidates.sort(dim=-1, stable=True)
            repeated_sorted = torch.zeros_like(values, dtype=torch.bool)
            repeated_sorted[..., 1:] = values[..., 1:] == values[..., :-1]
            repeated = torch.empty_like(repeated_sorted).scatter_(-1, order, repeated_sorted)
            first = repeated.mul(draws).add_(self._positions(draws)).argsort(dim=-1)[..., :k]
            picked = candidates.gather(2, first)
        return picked if groups else picked[:, 0]

    def _positions(self, draws: int) -> torch.Tensor:
        cached = self._helpers.get(draws)
        if cached is None:
            cached = self._helpers[draws] = torch.arange(draws, device=self.device)
        return cached

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members at positions ``keep`` (their streams continue unchanged); a position
        given more than once becomes that many members with copies of its stream."""
        generators, taken = [], set()
        for i in keep.tolist():
            generator = self.generators[i]
            if i in taken:
                generator = torch.Generator()
                generator.set_state(self.generators[i].get_state())
            taken.add(i)
            generators.append(generator)
        self.generators = generators
        self._block = self._block[to_device(keep, self.device)]
        if self._ahead is not None:
            self._ahead = self._ahead[keep.numpy()]
        self._subsets.clear()

    def state_dict(self) -> dict:
        """The generators' states (host state) and the numbers drawn but not handed out yet: a
        tensor on the device where the stream lives there (copied, never read back), host state
        where it lives on the CPU (a host stream: coins, seeds). Members out of step add ``ahead``:
        how far into the block each member's next number is."""
        rest = self._block[:, self._offset:]
        state = {"generators": [host_state(g.get_state()) for g in self.generators],
                 "block": host_state(rest) if self.device.type == "cpu" else rest.clone()}
        if self._ahead is not None:
            state["ahead"] = self._ahead.copy()
        return state

    def member_states(self, positions: list[int]) -> list[dict]:
        """Each member's stream at ``positions`` as the state of a stream of that member alone: its
        generator's state and its numbers drawn but not handed out yet (``[1, n]``)."""
        ahead = np.zeros(self.size, dtype=np.int64) if self._ahead is None else self._ahead
        rows = [self._block[p:p + 1, self._offset + int(ahead[p]):] for p in positions]
        return [{"generators": [host_state(self.generators[p].get_state())],
                 "block": host_state(row) if self.device.type == "cpu" else row.clone()}
                for p, row in zip(positions, rows)]

    def joined_state(self, states: list[dict]) -> dict:
        """The state of one stream of the members of ``states`` (of one member each, or more), in order.

        Members that hold fewer numbers drawn ahead than the others draw the difference from their
        own generators now: a generator's numbers come out the same whether drawn in one call or in
        several, so each member hands out the very numbers it would have, and the block keeps one
        offset for all."""
        members = self._rows_of(states)
        longest = max(len(row) for _, row in members)
        generators, rows = [], []
        for generator_state, row in members:
            missing = longest - len(row)
            if missing:
                generator = torch.Generator()
                generator.set_state(generator_state)
                drawn = torch.rand(missing, generator=generator, dtype=torch.float64)
                generator_state = generator.get_state()
                row = torch.cat([row, to_device(drawn, self.device)])
            generators.append(host_state(generator_state))
            rows.append(row)
        block = torch.stack(rows)
        return {"generators": generators, "block": host_state(block) if self.device.type == "cpu" else block}

    def gathered_state(self, states: list[dict]) -> dict:
        """The state of one stream of the members of ``states``, in order, each as it stands: nothing
        is drawn now; a member holding fewer numbers drawn ahead than the most is placed further into
        the block (``ahead``). Saving streams split from one, a checkpoint then holds what they held."""
        members = self._rows_of(states)
        longest = max(len(row) for _, row in members)
        block = torch.stack([torch.cat([row.new_zeros(longest - len(row)), row]) for _, row in members])
        ahead = np.array([longest - len(row) for _, row in members], dtype=np.int64)
        state = {"generators": [host_state(g) for g, _ in members],
                 "block": host_state(block) if self.device.type == "cpu" else block}
        if ahead.any():
            state["ahead"] = ahead
        return state

    def _rows_of(self, states: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(generator state, numbers drawn ahead on this stream's device) of every member of ``states``."""
        members = []
        for state in states:
            held = [from_host_state(s) for s in state["generators"]]
            block = state["block"] if isinstance(state["block"], torch.Tensor) else from_host_state(state["block"])
            if len(held) != block.shape[0]:
                raise RayclError(f"a stream's state holds {len(held)} generators for {block.shape[0]} rows of numbers")
            ahead = state.get("ahead")
            for p, generator_state in enumerate(held):
                start = 0 if ahead is None else int(ahead[p])
                members.append((generator_state, block[p, start:].to(self.device, torch.float64)))
        return members

    def load_state_dict(self, state: dict) -> None:
        for g, s in zip(self.generators, state["generators"], strict=True):
            g.set_state(from_host_state(s))
        block = state["block"]
        block = block if isinstance(block, torch.Tensor) else from_host_state(block)
        self._block = block.to(self.device, torch.float64)
        self._offset = 0
        ahead = state.get("ahead")
        self._ahead = None if ahead is None else np.array(ahead, dtype=np.int64)
        if self._ahead is not None and (self._ahead == self._ahead[0]).all():
            self._offset, self._ahead = int(self._ahead[0]), None
        self._subsets.clear()


class MemberSubset(MemberRandom):
    """Some members of a :class:`MemberRandom`, drawing as a MemberRandom of their own (each from its
    own place in the whole stream's block); the rest of the population keeps its places. A view:
    its state is the whole stream's."""

    def __init__(self, whole: MemberRandom, positions: tuple[int, ...]):  # no block of its own
        self.whole = whole
        self.positions = list(positions)
        self.device = whole.device
        self._helpers = {}

    @property
    def size(self) -> int:
        return len(self.positions)

    def _take(self, n: int) -> torch.Tensor:
        return self.whole._take_of(self.positions, n)

    def members(self, positions: list[int]) -> MemberRandom:
        return self.whole.members([self.positions[p] for p in positions])

    def _state_error(self, *args, **kwargs):
        raise RayclError("a subset of a random stream keeps no state of its own: select, save and restore the whole")

    select = state_dict = member_states = joined_state = gathered_state = load_state_dict = _state_error
