"""Members that move between populations: one member's whole state (:class:`MemberState`), and the
helpers with which every kind of state gives each member its piece and joins pieces into one
population.

A member's piece of a stacked value is that value's saved form (what its ``state_dict`` or its
part's ``save`` gives) in a population of that member alone: rows ``[1, ...]`` of every
``[P, ...]`` tensor, copies of their own (torch.save of a view would write the whole population's
storage), tensors on the device they lived on and host state as NumPy, as in a checkpoint, so that
``torch.load(map_location=...)`` moves them to any device. Joining pieces (of one member each, or
of populations of several) gives the saved form of one population of those members, in that order,
which ``load_state_dict`` restores: rows are concatenated, and every value the members share by
construction (a step count, a reservoir's count of examples seen, the tasks done) is checked
equal, a RayclError naming it where the members differ.

:meth:`raycl.population.state.Population.export_members` makes MemberStates and
:meth:`raycl.train.PopulationRun.from_members` joins them; docs/methods.md says what a method's
own components provide.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from raycl.errors import RayclError
from raycl.files import atomic_write_bytes


@dataclasses.dataclass
class MemberState:
    """Everything one live member needs to continue in another population.

    ``config`` is its method's config (per-member values as they are now), ``benchmark`` the index
    of the benchmark it trains on in the benchmarks list of the populations it moves between,
    ``next_task`` the task it trains next. ``record`` holds its rows ``[1, ...]`` of the accuracy
    record (val/test matrices, validation loss, the untrained network's baselines), ``order`` its
    data-order stream, ``parts`` its piece of every piece of the method's registered state, by name.
    """

    method: str
    config: Any
    seed: int
    benchmark: int
    next_task: int
    dtype: torch.dtype
    record: dict[str, Any]
    order: dict[str, Any]
    parts: dict[str, Any]


def save_member_states(path: str | os.PathLike, states: Sequence[MemberState]) -> None:
    """Write ``states`` to ``path`` atomically (torch.save of the list)."""
    data = io.BytesIO()
    torch.save(list(states), data)
    atomic_write_bytes(path, data.getvalue())


def load_member_states(path: str | os.PathLike, map_location: torch.device | str = "cpu") -> list[MemberState]:
    """The states :func:`save_member_states` wrote, their tensors on ``map_location``."""
    return torch.load(path, map_location=map_location, weights_only=False)


# ----- pieces of stacked state -------------------------------------------------------------------------
def member_rows(value: torch.Tensor | np.ndarray, positions: Sequence[int]) -> list:
    """The rows ``[1, ...]`` of a stacked ``value`` [P, ...] at ``positions``, each a copy of its own."""
    if isinstance(value, torch.Tensor):
        return [value[p:p + 1].detach().clone() for p in positions]
    return [np.array(value[p:p + 1]) for p in positions]


def own_copy(state: Any) -> Any:
    """A copy of a nested state (dicts, lists, tuples) whose every tensor and array holds only its own
    elements, not the storage it was a view of."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, np.ndarray):
        return state.copy()
    if isinstance(state, dict):
        return type(state)((k, own_copy(v)) for k, v in state.items())
    if isinstance(state, (list, tuple)):
        return type(state)(own_copy(v) for v in state)
    return copy.deepcopy(state)


def joined_rows(what: str, pieces: Sequence, device: torch.device | None = None):
    """Pieces ``[n_i, ...]`` (tensors, moved to ``device`` when given, or arrays) as one ``[sum n_i, ...]``."""
    try:
        if all(isinstance(p, torch.Tensor) for p in pieces):
            return torch.cat([p if device is None else p.to(device) for p in pieces])
        if all(isinstance(p, np.ndarray) for p in pieces):
            return np.concatenate(pieces)
    except (RuntimeError, ValueError):
        shapes = sorted({tuple(p.shape[1:]) for p in pieces})
        raise RayclError(f"{what} have different shapes per member {shapes}") from None
    raise RayclError(f"{what} are of different kinds: {sorted({type(p).__name__ for p in pieces})}")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and (
            a.device.type == "meta" or b.device.type == "meta" or torch.equal(a.cpu(), b.cpu()))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def agreed(what: str, values: Sequence) -> Any:
    """The value every member has of something the members of one population share by construction,
    or RayclError naming it and the values that differ."""
    first = values[0]
    if all(_same(first, v) for v in values[1:]):
        return first
    shown = ", ".join(dict.fromkeys(repr(v) if not isinstance(v, torch.Tensor) else repr(v.tolist()) for v in values))
    raise RayclError(f"{what} differ between the members ({shown}); members of one population share them, so they "
                     "must come from one structure at one task boundary")


def all_or_none(what: str, pieces: Sequence) -> bool:
    """Whether the members' pieces of a value that may not exist yet (None) exist, or RayclError
    where only some members have it."""
    present = [p is not None for p in pieces]
    if any(present) and not all(present):
        raise RayclError(f"{what} exist for some members and not for others")
    return all(present)


# ----- the fallback for components without member_states / joined_state ---------------------------------
def split_state(state: Any, size: int, positions: Sequence[int], where: str = "state") -> list:
    """Each member's piece of a component's ``state_dict`` in which every tensor and array (of one
    dimension or more) is stacked ``[size, ...]``; numbers, strings, None and 0-dim tensors are shared
    by the members. RayclError naming the leaf that is neither."""
    count = len(positions)
    if isinstance(state, dict):
        split = {k: split_state(v, size, positions, f"{where}.{k}") for k, v in state.items()}
        return [{k: split[k][i] for k in state} for i in range(count)]
    if isinstance(state, (list, tuple)):
        split = [split_state(v, size, positions, f"{where}[{j}]") for j, v in enumerate(state)]
        return [type(state)(item[i] for item in split) for i in range(count)]
    if isinstance(state, (torch.Tensor, np.ndarray)):
        if state.ndim == 0:
            return [state.clone() if isinstance(state, torch.Tensor) else state.copy() for _ in positions]
        if state.shape[0] != size:
            raise RayclError(f"{where} is shaped {tuple(state.shape)}, without a leading member dimension of {size}: "
                             "give the component member_states() and joined_state() (docs/methods.md)")
        return member_rows(state, positions)
    if state is None or isinstance(state, (bool, int, float, str)):
        return [state] * count
    raise RayclError(f"{where} holds a {type(state).__name__}, which members cannot take along: give the component "
                     "member_states() and joined_state() (docs/methods.md)")


def join_state(pieces: Sequence, device: torch.device | None, where: str = "state") -> Any:
    """The state of one population from its members' pieces made by :func:`split_state`: tensors and
    arrays of one dimension or more concatenated (tensors on ``device``), everything else checked equal."""
    first = pieces[0]
    if isinstance(first, dict):
        agreed(f"the keys of {where}", [sorted(p) for p in pieces])
        return {k: join_state([p[k] for p in pieces], device, f"{where}.{k}") for k in first}
    if isinstance(first, (list, tuple)):
        agreed(f"the lengths of {where}", [len(p) for p in pieces])
        return type(first)(join_state([p[j] for p in pieces], device, f"{where}[{j}]") for j in range(len(first)))
    if isinstance(first, (torch.Tensor, np.ndarray)) and first.ndim > 0:
        return joined_rows(where, pieces, device)
    return agreed(where, pieces)
