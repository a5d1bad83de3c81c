"""A population's members and state: who they are (configuration, seed, benchmark), which are still
trained, their stacked method state and data order, their accuracy record, the one way members
leave or multiply (``select``, under ``drop``, divergence and ``broadcast``), and how members move
to another population (``export_members``; :mod:`raycl.population.members`). The loop that trains
them is :class:`raycl.train.PopulationRun`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from raycl.data import Benchmark
from raycl.device import check_precision
from raycl.errors import DivergedError, RayclError
from raycl.hparams import check_population
from raycl.methods import get_population_method
from raycl.population.members import MemberState
from raycl.population.random import MemberRandom, Stream
from raycl.population.record import AccuracyRecord

log = logging.getLogger(__name__)


class Population:
    """P members of one method: ``configs`` (one per member, or one for all) must share their
    structural hyperparameters; ``benchmarks[member_data[i]]`` is member i's benchmark (default: all
    share a single benchmark, or member i trains on ``benchmarks[i]`` when there is one per member).

    Members are named by their id (position in the population as built); ``alive`` lists the ids
    still trained, in the order of the stacked tensors.
    """

    def __init__(self, benchmarks: Benchmark | Sequence[Benchmark], method: str, configs, seeds: Sequence[int],
                 member_data: Sequence[int] | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, precision: str = "fp32"):
        self.benchmarks = [benchmarks] if isinstance(benchmarks, Benchmark) else list(benchmarks)
        self.benchmark = self.benchmarks[0]
        self.seeds = [int(s) for s in seeds]
        size = len(self.seeds)
        if size < 1:
            raise RayclError("a population needs at least one member")
        self.configs = list(configs) if isinstance(configs, (list, tuple)) else [configs] * size
        if member_data is None:
            if len(self.benchmarks) not in (1, size):
                raise RayclError(f"{len(self.benchmarks)} benchmarks for {size} members: say which member trains "
                                 "on which (member_data)")
            member_data = range(size) if len(self.benchmarks) == size else [0] * size
        self.member_data = list(member_data)
        if len(self.configs) != size or len(self.member_data) != size:
            raise RayclError(f"{size} seeds but {len(self.configs)} configs and {len(self.member_data)} data entries")
        for other in self.benchmarks[1:]:
            if (other.name, other.n_tasks, other.settings) != (self.benchmark.name, self.benchmark.n_tasks,
                                                               self.benchmark.settings):
                raise RayclError("members of one population must train on one benchmark (data seeds may differ)")
        self.method_name = method
        self.device = torch.device(device)
        self.dtype = dtype
        self.precision = check_precision(precision)
        cls = get_population_method(method)
        self.method = cls(self.configs, self.seeds, self.benchmark, self.device, dtype,
                          member_benchmarks=[self.benchmarks[i] for i in self.member_data])
        self.order_random = MemberRandom(self.seeds, Stream.ORDER, self.device)
        self.alive = list(range(size))
        self.diverged: dict[int, DivergedError] = {}
        self.record = AccuracyRecord(size, self.benchmark.n_tasks, self.benchmark.settings)
        self.next_task = 0
        self.train_s = 0.0

    @property
    def size(self) -> int:
        return len(self.seeds)

    @property
    def finished(self) -> bool:
        return self.next_task >= self.benchmark.n_tasks or not self.alive

    # The record's arrays, for the tests and tools that compare whole matrices.
    @property
    def val(self) -> dict[str, np.ndarray]:
        return self.record.val

    @property
    def test(self) -> dict[str, np.ndarray]:
        return self.record.test

    @property
    def val_loss(self) -> np.ndarray:
        return self.record.val_loss

    @property
    def val_baseline(self) -> dict[str, np.ndarray]:
        return self.record.val_baseline

    @property
    def test_baseline(self) -> dict[str, np.ndarray]:
        return self.record.test_baseline

    # ----- members ------------------------------------------------------------------------------------
    def _select(self, keep: torch.Tensor) -> None:
        """Keep only the live members at positions ``keep`` (none: the population is finished and
        its stacked state is left as it was)."""
        if len(keep) == len(self.alive):
            return
        if len(keep):
            self.method.select(keep)
            self.order_random.select(keep)
        self.alive = [self.alive[i] for i in keep.tolist()]

    def drop(self, members) -> None:
        """Stop training the members ``members`` (ids as built): every stacked tensor is compacted,
        so they cost nothing from now on. Their accuracy rows so far stay."""
        gone = set(members)
        self._select(torch.tensor([i for i, m in enumerate(self.alive) if m not in gone], dtype=torch.long))

    def _drop_diverged(self, failed: torch.Tensor, task: int, step: int) -> torch.Tensor | None:
        """Mark the members flagged in ``failed`` [live] diverged and drop them; returns the positions
        kept, or None when every member is still fine."""
        if not bool(failed.any()):
            return None
        for position in torch.nonzero(failed).flatten().tolist():
            member = self.alive[position]
            self.diverged[member] = DivergedError(task, step)
            log.info("member %d (seed %d) %s", member, self.seeds[member], self.diverged[member])
        keep = torch.nonzero(~failed.cpu()).flatten()
        self._select(keep)
        return keep

    def set_configs(self, configs) -> None:
        """Train the live members with ``configs`` (one per live member, in order) from the next task
        on. They may differ from the members' current configs only in per-member hyperparameters: a
        per-task schedule, or the candidates of a branch."""
        configs = list(configs)
        if len(configs) != len(self.alive):
            raise RayclError(f"{len(configs)} configs for {len(self.alive)} live members")
        self.method.set_configs(configs)
        for member, config in zip(self.alive, configs):
            self.configs[member] = config

    def broadcast(self, member: int, size: int) -> None:
        """Make ``size`` copies of live member ``member`` (its id): network, optimiser, buffer, random
        streams and accuracy record, so each continues exactly as ``member`` would. The copies are
        the members 0 .. size-1 from now on: the candidates of the next branch."""
        position = self.alive.index(member)
        self.method.select(torch.full((size,), position, dtype=torch.long))
        self.order_random.select(torch.full((size,), position, dtype=torch.long))
        for name in ("seeds", "configs", "member_data"):
            setattr(self, name, [getattr(self, name)[member]] * size)
        self.record.broadcast(member, size)
        self.alive = list(range(size))
        self.diverged = {}

    # ----- members moving between populations ---------------------------------------------------------
    def export_members(self, members: Sequence[int] | None = None) -> list[MemberState]:
        """The states of the live members ``members`` (ids as built; by default every live member, in
        the order of ``alive``), copies of their own: this population goes on unchanged, and
        :meth:`raycl.train.PopulationRun.from_members` continues them in another."""
        members = list(self.alive) if members is None else [int(m) for m in members]
        position = {m: p for p, m in enumerate(self.alive)}
        gone = [m for m in members if m not in position]
        if gone:
            raise RayclError(f"members {gone} are not trained any more (live: {self.alive}); only live members move")
        positions = [position[m] for m in members]
        parts = self.method.member_states(positions)
        orders = self.order_random.member_states(positions)
        return [MemberState(method=self.method_name, config=self.configs[m], seed=self.seeds[m],
                            benchmark=self.member_data[m], next_task=self.next_task, dtype=self.dtype,
                            record=self.record.member_rows(m), order=order, parts=part)
                for m, part, order in zip(members, parts, orders)]

    def _load_members(self, states: Sequence[MemberState]) -> None:
        """Continue as the members ``states``, in order: this population was built with their configs,
        seeds and benchmarks (:func:`check_members`)."""
        self.method.load_members([s.parts for s in states])
        self.order_random.load_state_dict(self.order_random.joined_state([s.order for s in states]))
        self.record.load_member_rows([s.record for s in states])
        self.next_task = states[0].next_task

    # ----- checkpoints --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "method": self.method.state_dict(), "order": self.order_random.state_dict(), "alive": list(self.alive),
            "diverged": {m: (e.task, e.step) for m, e in self.diverged.items()}, "next_task": self.next_task,
            "train_s": self.train_s, **self.record.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` of a population built the same way (same members, same order)."""
        self._select(torch.tensor([self.alive.index(m) for m in state["alive"]], dtype=torch.long))
        if self.alive:
            self.method.load_state_dict(state["method"])
            self.order_random.load_state_dict(state["order"])
        self.diverged = {m: DivergedError(*where) for m, where in state["diverged"].items()}
        self.next_task = state["next_task"]
        self.train_s = state["train_s"]
        self.record.load_state_dict(state)


def check_members(method: str, states: Sequence[MemberState], benchmarks: Sequence[Benchmark],
                  dtype: torch.dtype | None) -> torch.dtype:
    """Raise RayclError unless ``states`` can be the members of one population of ``method`` on
    ``benchmarks`` (the list their benchmark indices refer to), in ``dtype`` (None: theirs); returns
    the dtype. Members of one population are at one next task and share the structural
    hyperparameters."""
    if not states:
        raise RayclError("a population needs at least one member")
    others = sorted({s.method for s in states} - {method})
    if others:
        raise RayclError(f"members of {', '.join(map(repr, others))} cannot join a population of {method!r}")
    tasks = sorted({s.next_task for s in states})
    if len(tasks) > 1:
        raise RayclError(f"members of one population must be at one next task; these are at tasks "
                         f"{', '.join(str(t + 1) for t in tasks)}")
    dtypes = {s.dtype for s in states} | ({dtype} if dtype is not None else set())
    if len(dtypes) > 1:
        raise RayclError(f"members of one population train in one dtype; these are in {sorted(map(str, dtypes))}")
    check_population([s.config for s in states], repr(method),
                     shared=get_population_method(method).shared_hyperparameters())
    outside = sorted({s.benchmark for s in states if not 0 <= s.benchmark < len(benchmarks)})
    if outside:
        raise RayclError(f"members train on benchmarks {outside} of a list of {len(benchmarks)}: give the benchmarks "
                         "list their populations were built with")
    return dtypes.pop()
