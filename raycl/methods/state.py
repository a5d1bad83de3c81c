"""How each kind of a method's registered state is selected, saved and restored.

A population method registers every piece of its stacked state once
(:meth:`raycl.methods.base.PopulationMethod.register`); the base class then walks the registry to
keep members (``select``: compaction, and a position given twice becomes two independent copies),
to write a checkpoint (``state_dict``) and to restore one (``load_state_dict``), and to move
members between populations (``members``: each member's piece, the value's saved form in a
population of that member alone; ``join``: pieces joined into the saved form of one population of
those members, which ``load`` restores; :mod:`raycl.population.members`). A :class:`Part` says how
one kind of value goes through these; :func:`part_for` picks it from the value where the value says
it alone.

Checkpoints are loaded with ``torch.load(map_location=the run's device)``: device tensors are saved
as tensors (they land on the run's device), host-side state as NumPy arrays (left on the host).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from raycl.errors import RayclError
from raycl.population.members import (agreed, all_or_none, join_state, joined_rows, member_rows, own_copy,
                                     split_state)
from raycl.population.nets import joined_network_state, network_member_states, select_members
from raycl.population.random import from_host_state, host_state


class Part:
    """How one kind of registered value is selected, saved and restored; this base keeps a value
    as it is through all three."""

    def select(self, value: Any, keep: torch.Tensor) -> Any:
        return value

    def save(self, value: Any) -> Any:
        return value

    def load(self, value: Any, saved: Any, owner: Any) -> Any:
        """The restored value, given the fresh instance's ``value``, the checkpoint's ``saved`` and
        the method that holds it (its device; what ``new`` builds from)."""
        return saved

    def members(self, value: Any, positions: list[int], owner: Any) -> list:
        """Each member's piece of ``value`` (the members at ``positions``): its saved form in a
        population of that member alone, a copy of its own. This base shares the value among them
        (a part that selects members must say how they move)."""
        if type(self).select is not Part.select and type(self).members is Part.members:
            raise RayclError(f"{type(self).__name__} keeps per-member state but cannot move members: give it "
                             "members() and join() (docs/methods.md)")
        saved = self.save(value)
        return [copy.deepcopy(saved) for _ in positions]

    def join(self, value: Any, pieces: list, owner: Any) -> Any:
        """The saved form, for ``load``, of one population of the members whose ``pieces`` these are
        (in order), given the value of an instance built for them. This base checks that the members
        share the value."""
        return agreed("the values", pieces)


class Value(Part):
    """A value shared by every member (a step count, a number of tasks seen): selecting members
    leaves it as it is; it is saved and restored as it is; members join only where they agree on it."""


class Component(Part):
    """An object that keeps its own members: ``select(keep)``, ``state_dict()``,
    ``load_state_dict(state)`` (random streams, optimisers, buffers, moving averages). With ``new``
    (called with the method), restoring first builds it anew (an optimiser over networks that were
    rebuilt on restore). Members move with its ``member_states(positions)`` and
    ``joined_state(states)`` where it has them, else with its state dict split and joined by the
    fallback of :mod:`raycl.population.members` (docs/methods.md)."""

    def __init__(self, new: Callable[[Any], Any] | None = None):
        self.new = new

    def select(self, value, keep):
        value.select(keep)
        return value

    def save(self, value):
        return value.state_dict()

    def load(self, value, saved, owner):
        value = self.new(owner) if self.new is not None else value
        value.load_state_dict(saved)
        return value

    def members(self, value, positions, owner):
        """The component's ``member_states(positions)``, else its state dict split by
        :func:`raycl.population.members.split_state` (every tensor and array stacked per member)."""
        if hasattr(value, "member_states"):
            return value.member_states(positions)
        return split_state(value.state_dict(), owner.size, positions)

    def join(self, value, pieces, owner):
        if hasattr(value, "joined_state"):
            return value.joined_state(pieces)
        return join_state(pieces, owner.device)


class Network(Part):
    """A stacked network [P, ...] (trained or frozen), or None until it exists; ``new(method)`` builds
    one of the right architecture when a checkpoint holds it and the fresh instance does not yet.
    (``new`` takes the method rather than closing over it, so that a deep copy of a method, a
    forked branch, builds from itself.)"""

    def __init__(self, new: Callable[[Any], nn.Module] | None = None):
        self.new = new

    def select(self, value, keep):
        if value is not None:
            select_members(value, keep)
        return value

    def save(self, value):
        return None if value is None else value.state_dict()

    def members(self, value, positions, owner):
        return [None] * len(positions) if value is None else network_member_states(value, positions)

    def join(self, value, pieces, owner):
        return joined_network_state(pieces, owner.device) if all_or_none("the networks", pieces) else None

    def load(self, value, saved, owner):
        if saved is None:
            return None
        if value is None:
            if self.new is None:
                raise RayclError("a checkpoint holds a network this method cannot build: register it with "
                                 "Network(new=...)")
            value = self.new(owner)
        value.load_state_dict(saved)  # copied into the network's own tensors, on its device
        return value


class Networks(Part):
    """A list of stacked networks that grows during training (one per task); ``new(method)`` builds
    one more of the right architecture when restoring a longer list."""

    def __init__(self, new: Callable[[Any], nn.Module]):
        self.new = new

    def select(self, value, keep):
        for net in value:
            select_members(net, keep)
        return value

    def save(self, value):
        return [net.state_dict() for net in value]

    def members(self, value, positions, owner):
        per_net = [network_member_states(net, positions) for net in value]
        return [[states[k] for states in per_net] for k in range(len(positions))]

    def join(self, value, pieces, owner):
        count = agreed("the numbers of networks", [len(p) for p in pieces])
        return [joined_network_state([p[i] for p in pieces], owner.device) for i in range(count)]

    def load(self, value, saved, owner):
        value = list(value[: len(saved)])
        while len(value) < len(saved):
            value.append(self.new(owner))
        for net, state in zip(value, saved):
            net.load_state_dict(state)
        return value


class Tensors(Part):
    """Stacked tensors on the device: one [P, ...] tensor, a list of them (one per parameter), or
    None until they exist."""

    def select(self, value, keep):
        if value is None:
            return None
        if isinstance(value, torch.Tensor):
            return value[keep.to(value.device)]
        return [t[keep.to(t.device)] for t in value]

    def load(self, value, saved, owner):
        if saved is None:
            return None
        if isinstance(saved, torch.Tensor):
            return saved.to(owner.device)
        return [t.to(owner.device) for t in saved]

    def members(self, value, positions, owner):
        if value is None:
            return [None] * len(positions)
        if isinstance(value, torch.Tensor):
            return member_rows(value, positions)
        per_tensor = [member_rows(t, positions) for t in value]
        return [[rows[k] for rows in per_tensor] for k in range(len(positions))]

    def join(self, value, pieces, owner):
        if not all_or_none("the tensors", pieces):
            return None
        if isinstance(pieces[0], torch.Tensor):
            return joined_rows("the tensors", pieces, owner.device)
        count = agreed("the numbers of tensors", [len(p) for p in pieces])
        return [joined_rows(f"tensor {i}", [p[i] for p in pieces], owner.device) for i in range(count)]


class Transient(Tensors):
    """Stacked tensors kept for inspection (the last step's gradients), or None: they follow the
    members when members are selected but are not checkpointed; a restored method starts without."""

    def save(self, value):
        return None

    def load(self, value, saved, owner):
        return None

    def members(self, value, positions, owner):
        return [None] * len(positions)

    def join(self, value, pieces, owner):
        return None


class HostTensor(Part):
    """A [P, ...] tensor kept on the host (counts of host-side decisions, random states): saved as
    NumPy, which ``map_location`` leaves on the host."""

    def select(self, value, keep):
        return value[keep.cpu()]

    def save(self, value):
        return host_state(value)

    def load(self, value, saved, owner):
        return from_host_state(saved)

    def members(self, value, positions, owner):
        return [host_state(row) for row in member_rows(value, positions)]

    def join(self, value, pieces, owner):
        return joined_rows("the host tensors", [from_host_state(p).numpy() for p in pieces])


class Learners(Part):
    """One object per member, each with ``state_dict``/``load_state_dict`` (the solo learners of the
    member-by-member adapter): a member kept twice becomes two, the second a deep copy."""

    def select(self, value, keep):
        positions = keep.tolist()
        return [copy.deepcopy(value[i]) if i in positions[:k] else value[i] for k, i in enumerate(positions)]

    def save(self, value):
        return [learner.state_dict() for learner in value]

    def load(self, value, saved, owner):
        for learner, state in zip(value, saved, strict=True):
            learner.load_state_dict(state)
        return value

    def members(self, value, positions, owner):
        return [[own_copy(value[p].state_dict())] for p in positions]

    def join(self, value, pieces, owner):
        return [state for piece in pieces for state in piece]


def part_for(name: str, value: Any) -> Part:
    """The part of a value that says its kind itself; values that do not (None, an empty list, a
    tensor kept on the host) must be registered with their part."""
    if all(hasattr(value, a) for a in ("select", "state_dict", "load_state_dict")):
        return Component()
    if isinstance(value, nn.Module):
        return Network()
    if isinstance(value, torch.Tensor) or (isinstance(value, list) and value
                                           and all(isinstance(v, torch.Tensor) for v in value)):
        return Tensors()
    if isinstance(value, (bool, int, float, str)):
        return Value()
    raise RayclError(f"say how the state {name!r} ({type(value).__name__}) is kept: register it with a part "
                     "(Tensors(), Network(new=...), HostTensor(), ...)")


class StateRegistry:
    """The names and parts of an owner's registered state, in registration order (the order of
    restoring too: a part's ``new`` may use state registered before it)."""

    def __init__(self):
        self.parts: dict[str, Part] = {}

    def add(self, name: str, part: Part) -> None:
        if name in self.parts:
            raise RayclError(f"state {name!r} is registered twice")
        self.parts[name] = part

    def select(self, owner: Any, keep: torch.Tensor) -> None:
        for name, part in self.parts.items():
            setattr(owner, name, part.select(getattr(owner, name), keep))

    def state_dict(self, owner: Any) -> dict:
        return {name: part.save(getattr(owner, name)) for name, part in self.parts.items()}

    def member_states(self, owner: Any, positions: list[int]) -> list[dict]:
        """Each member's piece of every registered value, by name (the members at ``positions``)."""
        pieces = {}
        for name, part in self.parts.items():
            try:
                pieces[name] = part.members(getattr(owner, name), positions, owner)
            except RayclError as error:
                raise RayclError(f"cannot take {type(owner).__name__}'s members' {name!r} along: {error}") from None
        return [{name: pieces[name][k] for name in self.parts} for k in range(len(positions))]

    def join(self, owner: Any, pieces: list[dict]) -> dict:
        """The state dict of one population of the members whose ``pieces`` these are, in order, for
        ``load_state_dict`` of ``owner`` (an instance built for those members)."""
        missing = sorted({name for piece in pieces for name in self.parts if name not in piece})
        if missing:
            raise RayclError(f"the members' states lack {missing} of {type(owner).__name__}'s state")
        state = {}
        for name, part in self.parts.items():
            try:
                state[name] = part.join(getattr(owner, name), [piece[name] for piece in pieces], owner)
            except RayclError as error:
                raise RayclError(f"cannot join the members' {name!r}: {error}") from None
        return state

    def load_state_dict(self, owner: Any, state: dict) -> None:
        missing = [name for name in self.parts if name not in state]
        if missing:
            raise RayclError(f"the checkpoint of {type(owner).__name__} lacks {missing}; it holds {sorted(state)}")
        for name, part in self.parts.items():
            setattr(owner, name, part.load(getattr(owner, name), state[name], owner))
