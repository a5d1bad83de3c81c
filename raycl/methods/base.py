"""The method contract and shared configs.

A method is written once, in population form: :class:`PopulationMethod` trains P members at once
on batches shaped [P, batch, ...], a solo run being a population of one; it is the only contract
the loop knows. The few methods without a vectorised form (GEM, joint training, a network per task,
a task input layer) are solo learners (:class:`ContinualMethod`, one network each) that the loop
never sees: one adapter, :class:`MemberwiseMethod`, runs them member by member behind the
population contract, turning a solo learner's DivergedError into the contract's divergence mask.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import torch
from torch import nn
from torch.func import functional_call

import torch.nn.functional as F

from raycl.augment import crop_flip, random_crop_flip
from raycl.buffer import BufferSample, MemberGroup, PopulationReservoir, RaggedSample
from raycl.data import Benchmark
from raycl.device import full_precision, to_device
from raycl.errors import DivergedError, RayclError
from raycl.hparams import SCHEDULE, check_changes, check_population, hp, param_specs, structural_names
from raycl.models import build_model
from raycl.methods.state import HostTensor, Learners, Part, StateRegistry, part_for
from raycl.population.nets import member_template, stack_members
from raycl.population.optim import PopulationOptimizer
from raycl.population.random import MemberRandom, Stream, from_host_state, host_state, stream_generator
from raycl.solo_optim import solo_optimizer


@dataclasses.dataclass
class TrainConfig:
    """Hyperparameters every method has."""

    lr: float = hp(0.03, "learning rate", low=0.0, per_member=True)
    batch_size: int = hp(10, "examples of the current task per step", low=1)
    n_epochs: int = hp(1, "passes over each task's training data", low=1)
    optimizer: str = hp("sgd", "optimiser: plain SGD (the DER protocol) or Adam", choices=("sgd", "adam"))


@dataclasses.dataclass
class ReplayConfig(TrainConfig):
    """Hyperparameters of methods that replay from a reservoir buffer."""

    buffer_size: int = hp(500, "examples the reservoir buffer holds", low=1, per_member=True, fixed_in_run=True)
    minibatch_size: int = hp(10, "buffer examples replayed per step", low=1)


class ContinualMethod:
    """A learner that sees a stream of tasks one batch at a time.

    The training loop calls ``begin_task``, then ``observe`` once per batch, then ``end_task``
    with the task's whole training data; evaluation calls ``predict`` in eval mode.
    """

    name: ClassVar[str]
    Config: ClassVar[type] = TrainConfig
    # Methods that work on FlatSGD's flat parameter and gradient vectors (projections, Reptile
    # steps) say why here; they then accept only the plain SGD optimiser.
    sgd_only_reason: ClassVar[str | None] = None
    # The first task whose training uses the method's stability mechanism (replay, a penalty,
    # distillation, a projection): where its stability hyperparameters start to act, so where the
    # first rung of --grace-period auto sits. Methods without one say 1.
    stability_task: ClassVar[int] = 2

    def __init__(self, config: Any, model: nn.Module, benchmark: Benchmark, device: torch.device, seed: int):
        self.config = config
        self.net = model.to(device)
        self.benchmark = benchmark
        self.device = device
        self.seed = seed
        self.n_tasks = benchmark.n_tasks
        self.augment_generator = stream_generator(seed, Stream.AUGMENT)
        self.opt = self.make_optimizer(self.net.parameters())

    def make_optimizer(self, params):
        """This learner's optimiser over ``params`` (:func:`raycl.solo_optim.solo_optimizer`)."""
        check_optimizer(self.name, self.sgd_only_reason, self.config.optimizer)
        return solo_optimizer(self.config.optimizer, params, self.config.lr)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Training-time augmentation of the benchmark (identity where it has none)."""
        if not self.benchmark.augment:
            return x
        return random_crop_flip(x, generator=self.augment_generator)

    def set_config(self, config) -> None:
        """Train with ``config`` from now on (its learning rate too); the caller has checked that
        only per-member hyperparameters changed."""
        self.config = config
        if isinstance(self.opt, torch.optim.Optimizer):
            for group in self.opt.param_groups:
                group["lr"] = config.lr
        else:
            self.opt.lr = config.lr

    def step(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def begin_task(self, task: int) -> None:
        pass

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        """Learn from one batch of the current task; returns the (detached) loss."""
        raise NotImplementedError

    def end_task(self, task: int, train_x: torch.Tensor, train_y: torch.Tensor) -> None:
        pass

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """Logits for evaluation on examples of ``task`` (the loop has put the method in eval mode).

        Most methods ignore ``task``; those with task-specific parts (one model per task, a task
        input layer) use it, which is only fair in settings where the task is known at test time.
        """
        return self.net(x)

    def train(self, mode: bool = True) -> None:
        self.net.train(mode)

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(),
                "augment_rng": host_state(self.augment_generator.get_state())}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.augment_generator.set_state(from_host_state(state["augment_rng"]))


def check_optimizer(method: str, sgd_only_reason: str | None, optimizer: str) -> None:
    """Raise unless ``optimizer`` suits a method that takes plain SGD steps only (it says why in
    ``sgd_only_reason``; None: any optimiser)."""
    if sgd_only_reason and optimizer != "sgd":
        raise RayclError(f"method {method!r} {sgd_only_reason}; optimizer must be 'sgd', got {optimizer!r}")


def member_init(seed: int, build) -> tuple[Any, torch.Tensor]:
    """``build()`` under the global torch seed ``seed``, and the global random state it left: a
    member's initial weights depend on its seed alone, as a solo run's do."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(), torch.get_rng_state()


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-member mean cross-entropy: logits [P, n, C], targets [P, n] (labels) or [P, n, C]
    (probabilities) -> [P]."""
    p, n, c = logits.shape
    if targets.dim() == 2:
        return F.cross_entropy(logits.reshape(p * n, c), targets.reshape(p * n), reduction="none").view(p, n).mean(1)
    return -(targets * F.log_softmax(logits, -1)).sum(-1).mean(1)


def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-member mean squared error over everything but the member dimension -> [P]."""
    return (outputs - targets).pow(2).flatten(1).mean(1)


class PopulationMethod:
    """P members of one method trained in lockstep (the vectorised form of a method).

    Members share the structural hyperparameters of ``configs`` and may differ in those declared
    ``per_member`` (read them with :meth:`member_values`) and in their seeds. Every loss is a [P] vector and
    the population loss its sum, so each member's gradient is its solo gradient.

    Every piece of the members' state is registered once (:meth:`register`); from the registry this
    class selects members, and saves and restores checkpoints (docs/methods.md).
    """

    name: ClassVar[str]
    Config: ClassVar[type] = TrainConfig
    # Methods that change the SGD step itself (projections, Reptile steps) say why here; they then
    # accept only the plain SGD optimiser.
    sgd_only_reason: ClassVar[str | None] = None
    # The first task whose training uses the method's stability mechanism (replay, a penalty,
    # distillation, a projection): where its stability hyperparameters start to act, so where the
    # first rung of --grace-period auto sits. Methods without one say 1.
    stability_task: ClassVar[int] = 2

    def __init__(self, configs: list, seeds: list[int], benchmark: Benchmark, device: torch.device,
                 dtype: torch.dtype = torch.float32, member_benchmarks: list[Benchmark] | None = None):
        check_population(configs, repr(self.name), shared=self.shared_hyperparameters())
        self.config = configs[0]  # the structural values, shared by every member
        self.benchmark = benchmark
        self.device = device
        self.dtype = dtype
        self._state = StateRegistry()
        self._set_members(list(configs), list(seeds))
        # Each member sees its own benchmark (its data seed's split, permutations or angles).
        self.build(member_benchmarks or [benchmark] * len(seeds))

    def _set_members(self, configs: list, seeds: list[int]) -> None:
        """The members' configs and seeds; the per-member values are derived from them when read."""
        self.configs, self.seeds = configs, seeds
        self._member_value_cache: dict[tuple[str, str], torch.Tensor] = {}

    def register(self, name: str, value: Any, part: Part | None = None) -> None:
        """Make ``value`` this method's attribute ``name`` and a piece of its members' state: from now
        on :meth:`select` keeps its members, and checkpoints save and restore it (onto the run's
        device), whatever value the attribute holds then. ``part`` says how (raycl.methods.state); it
        is found from the value for random streams, optimisers, buffers, moving averages
        (``Component``), stacked networks (``Network``), device tensors [P, ...] or lists of them
        (``Tensors``) and plain numbers shared by the members (``Value``)."""
        self._state.add(name, part or part_for(name, value))
        setattr(self, name, value)

    def registered(self) -> list[str]:
        """The names of the registered state, in registration order."""
        return list(self._state.parts)

    def build(self, member_benchmarks: list[Benchmark]) -> None:
        """The members' learning machinery: one stacked network, its optimiser and the method's own
        random streams (the member-by-member adapter builds one solo learner per member instead)."""
        self.register("random", MemberRandom(self.seeds, Stream.METHOD, self.device))
        net = stack_members([member_init(seed, self.build_member_net)[0] for seed in self.seeds])
        self.register("net", net.to(self.device, self.dtype))
        self.register("opt", self.make_optimizer(self.net.parameters()))

    @classmethod
    def shared_hyperparameters(cls) -> list[str]:
        """The hyperparameters every member of one population must share."""
        return structural_names(cls.Config)

    @property
    def size(self) -> int:
        return len(self.seeds)

    def build_member_net(self) -> nn.Module:
        """One member's network (the loop stacks P of them)."""
        return build_model(self.benchmark)

    def make_optimizer(self, params) -> PopulationOptimizer:
        """The members' optimiser over the stacked ``params``, each with its own learning rate."""
        check_optimizer(self.name, self.sgd_only_reason, self.config.optimizer)
        return PopulationOptimizer(self.config.optimizer, params, self.member_values("lr"))

    def member_values(self, name: str) -> torch.Tensor:
        """The per-member hyperparameter ``name`` of the current members as a [P] tensor on the device."""
        return self._member_value_tensor(name, "device")

    def host_member_values(self, name: str) -> torch.Tensor:
        """The same values as :meth:`member_values` (in the method's dtype) on the CPU: what host-side
        decisions (update coins, which members compute a term) compare with, so that a step never
        waits for the device."""
        return self._member_value_tensor(name, "host")

    def _member_value_tensor(self, name: str, where: str) -> torch.Tensor:
        cached = self._member_value_cache.get((name, where))
        if cached is None:
            spec = param_specs(type(self.config)).get(name)
            if spec is None or not spec.per_member or spec.type not in (float, int):
                raise RayclError(f"{name!r} is not a numeric per-member hyperparameter of method {self.name!r}")
            host = torch.tensor([float(getattr(c, name)) for c in self.configs], dtype=self.dtype)
            cached = self._member_value_cache[(name, where)] = host if where == "host" else to_device(host, self.device)
        return cached

    def augment(self, x: torch.Tensor, random: MemberRandom | None = None) -> torch.Tensor:
        """Training-time augmentation of [P, n, C, H, W] inputs (identity where the benchmark has none),
        drawn from ``random`` (the members' streams, or some members' of them: ``Members.augment``)."""
        if not self.benchmark.augment:
            return x
        p, n = x.shape[:2]
        uniforms = (random or self.random).uniform(n, 3, dtype=torch.float32).reshape(p * n, 3)
        return crop_flip(x.flatten(0, 1), uniforms).view(x.shape)

    @property
    def everyone(self) -> Members:
        """Every member, as :meth:`per_group` gives them to a computation where nothing is ragged."""
        return Members(self, None)

    def per_group(self, replay, compute, only: torch.Tensor | None = None):
        """``compute(members, replay)`` -> a [G, ...] tensor (or a tuple or list of them) per member.

        Where ``replay`` is one sample for every member (a BufferSample, a list of them, or None),
        ``compute`` runs once on :attr:`everyone`, exactly as a solo run's step. Where it is a
        :class:`~raycl.buffer.RaggedSample` (members of different buffer sizes hold different
        numbers of rows), it runs once per group of members with the same number of rows, on
        those members alone (their slices of the stacked state: each member computes as in a
        population of its group, so as alone), with the group's rows (None where the group's
        buffers are empty); the groups' results are joined in member order, gradients flowing
        back to every member's own parameters.

        ``only`` (a [P] bool tensor on the host): compute for the flagged members alone, as a
        member that would not compute alone draws nothing; the others' rows of the result are zeros.
        """
        everyone = only is None or bool(only.all())
        if not isinstance(replay, RaggedSample) and everyone:
            return compute(self.everyone, replay)
        groups = replay.groups if isinstance(replay, RaggedSample) else [MemberGroup(torch.arange(self.size), replay)]
        if not everyone:
            groups = [_flagged(group, only) for group in groups]
            groups = [group for group in groups if len(group.positions)]
        results = [compute(Members(self, group.positions), group.sample) for group in groups]
        return _member_order(results, torch.cat([group.positions for group in groups]), self.size)

    def forward_parts(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """The network's outputs on batches ``parts`` (each [P, n_i, ...]), concatenated along the
        examples. Without batch statistics one pass over all of them gives the same numbers at a
        fraction of the calls; a network with batch norm (the ResNet) takes one pass per part, as
        the DER paper's code does, so that current examples are normalised by their own batch
        statistics and not with the replayed ones."""
        if len(parts) == 1 or not self.batch_statistics:
            return self.net(torch.cat(parts, 1))
        return torch.cat([self.net(part) for part in parts], 1)

    @functools.cached_property
    def batch_statistics(self) -> bool:
        """Whether the network normalises by batch statistics in training (batch norm); asked at every
        step, fixed by the architecture, so found once."""
        return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in self.member_modules())

    def member_modules(self):
        """The modules of one member's network (the stacked network's template where there is one)."""
        return member_template(self.net).modules()

    def step(self, losses: torch.Tensor) -> None:
        """One optimiser step for every member on the sum of the members' losses (outside any
        autocast of the forward passes: gradients and weights stay in full precision)."""
        with full_precision(self.device):
            self.opt.step(self.opt.backward(losses.sum()))

    def begin_task(self, task: int) -> None:
        pass

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        """Learn from one batch per member (x [P, n, ...], y [P, n]); returns the detached losses [P]."""
        raise NotImplementedError

    def end_task(self, task: int, data) -> torch.Tensor | None:
        """``data`` is the task's training split for every member (:class:`raycl.population.inputs.MemberInputs`).
        Returns a [P] mask of members that diverged here, or None."""

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """Logits [P, n, C] for evaluation on examples [P, n, ...] of ``task`` (in eval mode)."""
        return self.net(x)

    def train(self, mode: bool = True) -> None:
        self.net.train(mode)

    def set_configs(self, configs: list) -> None:
        """Every member trains with its config of ``configs`` from now on; only per-member
        hyperparameters may change."""
        check_changes(self.configs, configs, repr(self.name))
        self._set_members(list(configs), self.seeds)
        self.opt.set_lr(self.member_values("lr"))

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members at positions ``keep`` (a CPU int64 tensor) in every piece of
        registered state; the others cost nothing from now on. A position given more than once
        becomes that many independent copies of the member (how a branch forks a chosen state)."""
        positions = keep.tolist()
        self._set_members([self.configs[i] for i in positions], [self.seeds[i] for i in positions])
        self._state.select(self, keep)

    def state_dict(self) -> dict:
        """Every piece of registered state, by its name."""
        return self._state.state_dict(self)

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (saved on any device) of a method built with the same members:
        every piece of registered state is restored, in registration order, onto this method's device."""
        self._state.load_state_dict(self, state)

    def member_states(self, positions: list[int]) -> list[dict]:
        """The members at ``positions``, each as its piece of every piece of registered state, by name
        (copies of their own: this method goes on unchanged; :mod:`raycl.population.members`)."""
        return self._state.member_states(self, positions)

    def load_members(self, pieces: list[dict]) -> None:
        """Continue as the members whose ``pieces`` (:meth:`member_states` of any populations) these
        are, in order: this method was built with their configs and seeds. RayclError where they
        cannot continue together (a value they share by construction differs)."""
        self.load_state_dict(self._state.join(self, pieces))


def _flagged(group: MemberGroup, only: torch.Tensor) -> MemberGroup:
    """The members of ``group`` flagged in ``only`` ([P] bool, host), with their rows."""
    keep = only[group.positions].nonzero()[:, 0]
    if group.sample is None:
        return MemberGroup(group.positions[keep], None)

    def rows(sample: BufferSample) -> BufferSample:
        index = to_device(keep, sample.y.device)
        return BufferSample(*(None if t is None else t.index_select(0, index)
                              for t in (sample.x, sample.y, sample.logits, sample.task)))

    sample = [rows(s) for s in group.sample] if isinstance(group.sample, list) else rows(group.sample)
    return MemberGroup(group.positions[keep], sample)


def _member_order(results: list, positions: torch.Tensor, size: int):
    """Per-group results (tensors [G, ...], tuples or lists of them, None) of the members at
    ``positions`` (the groups' in turn) as one [size, ...] in member order, zeros for members not in
    ``positions``."""
    first = results[0]
    if first is None:
        return None
    if isinstance(first, (tuple, list)):
        return type(first)(_member_order([r[i] for r in results], positions, size) for i in range(len(first)))
    together = torch.cat(results)
    if len(positions) == size:
        return together[to_device(torch.argsort(positions), together.device)]
    return together.new_zeros((size, *together.shape[1:])).index_copy(0, to_device(positions, together.device), together)


class Members:
    """The members a step's computation runs on (:meth:`PopulationMethod.per_group`): every member
    (``positions`` None: plain calls on the stacked state, the very operations of a solo run) or a
    group of them (their slices of the stacked state, sliced once per network so that every use of
    a parameter within the computation goes through one tensor, as in a population of the group)."""

    def __init__(self, method: PopulationMethod, positions: torch.Tensor | None):
        """``positions``: the members' positions, an int64 tensor on the host (None: every member)."""
        self.method = method
        self._host = None if positions is None else positions.tolist()
        self.positions = None if positions is None else to_device(positions, method.device)
        self._sliced: dict[int, dict[str, torch.Tensor]] = {}

    @property
    def size(self) -> int:
        return self.method.size if self.positions is None else len(self._host)

    def rows(self, value: torch.Tensor | None) -> torch.Tensor | None:
        """These members' rows of a stacked [P, ...] tensor."""
        if value is None or self.positions is None:
            return value
        return value.index_select(0, self.positions.to(value.device))

    def values(self, name: str) -> torch.Tensor:
        """These members' per-member hyperparameter ``name`` on the device ([G])."""
        return self.rows(self.method.member_values(name))

    def tensors(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """These members' slices of ``module``'s parameters and buffers, by name (its own tensors for
        every member)."""
        if self.positions is None:
            return {**dict(module.named_parameters()), **dict(module.named_buffers())}
        sliced = self._sliced.get(id(module))
        if sliced is None:
            sliced = self._sliced[id(module)] = {
                name: t.index_select(0, self.positions.to(t.device)) if t.dim() > 0 else t
                for name, t in (*module.named_parameters(), *module.named_buffers())}
        return sliced

    def parameters(self, module: nn.Module) -> list[torch.Tensor]:
        """These members' slices of ``module.parameters()``, in order."""
        if self.positions is None:
            return list(module.parameters())
        tensors = self.tensors(module)
        return [tensors[name] for name, _ in module.named_parameters()]

    def __call__(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``module`` (a stacked network) on these members' inputs ``x`` [G, ...]. Running statistics a
        training pass updates in the slices are written back to the members' rows."""
        if self.positions is None:
            return module(x)
        tensors = self.tensors(module)
        out = functional_call(module, tensors, (x,))
        if module.training:
            with torch.no_grad():
                for name, buffer in module.named_buffers():
                    if buffer.dim() > 0:
                        buffer.index_copy_(0, self.positions.to(buffer.device), tensors[name])
        return out

    def forward_parts(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """:meth:`PopulationMethod.forward_parts` for these members."""
        if len(parts) == 1 or not self.method.batch_statistics:
            return self(self.method.net, torch.cat(parts, 1))
        return torch.cat([self(self.method.net, part) for part in parts], 1)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`PopulationMethod.augment` of these members' inputs, from their own streams only."""
        if self.positions is None:
            return self.method.augment(x)
        return self.method.augment(x, self.method.random.members(self._host))


class ReplayPopulationMethod(PopulationMethod):
    """A vectorised method with a reservoir buffer per member, of the member's ``buffer_size``
    examples (members may differ in it: a buffer size is a per-member hyperparameter, fixed for the
    run). Where members of different sizes hold different numbers of rows for a draw, the buffer
    gives a :class:`~raycl.buffer.RaggedSample`: compute on it with :meth:`per_group`."""

    Config: ClassVar[type] = ReplayConfig
    stores_logits: ClassVar[bool] = False

    def __init__(self, configs: list, seeds: list[int], benchmark: Benchmark, device: torch.device,
                 dtype: torch.dtype = torch.float32, member_benchmarks: list[Benchmark] | None = None):
        super().__init__(configs, seeds, benchmark, device, dtype, member_benchmarks)
        random = MemberRandom(seeds, Stream.BUFFER, device)
        self.register("buffer", PopulationReservoir([c.buffer_size for c in configs], benchmark.input_shape,
                                                    benchmark.n_classes, random, device, dtype,
                                                    store_logits=self.stores_logits, images=benchmark))


class MemberwiseMethod(PopulationMethod):
    """A population of a method without a vectorised form: one solo method per member, run in turn.

    Each member has its own network, so members may differ in every hyperparameter but the step
    schedule (batch size and epochs) that keeps them in lockstep.
    """

    solo: ClassVar[type]

    @classmethod
    def shared_hyperparameters(cls) -> list[str]:
        return [name for name in SCHEDULE if name in param_specs(cls.Config)]

    def build(self, member_benchmarks: list[Benchmark]) -> None:
        built = [member_init(s, lambda c=c, s=s, b=b: self.solo(c, build_model(b), b, self.device, s))
                 for c, s, b in zip(self.configs, self.seeds, member_benchmarks)]
        self.register("members", [member for member, _ in built], Learners())
        # Each member's global torch random state, one row per member.
        self.register("rng_states", torch.stack([state for _, state in built]), HostTensor())

    def _each(self, call) -> list:
        """``call(position, member)`` for every member, each under its own global torch random
        state (solo methods that draw from it, as a new task network does, stay independent)."""
        out = []
        for p, member in enumerate(self.members):
            with torch.random.fork_rng(devices=[]):
                torch.set_rng_state(self.rng_states[p].clone())  # it ignores a view's offset: a tensor of its own
                out.append(call(p, member))
                self.rng_states[p] = torch.get_rng_state()
        return out

    def begin_task(self, task: int) -> None:
        self._each(lambda p, m: m.begin_task(task))

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int) -> torch.Tensor:
        return torch.stack(self._each(lambda p, m: m.observe(x[p].float(), y[p], task).to(self.device)))

    def end_task(self, task: int, data) -> torch.Tensor:
        """Returns which members diverged in their end-of-task training (joint training has one)."""
        def end(p, member) -> bool:
            x, y = data.member(p)
            try:
                member.end_task(task, x.float(), y)
            except DivergedError:
                return True
            return False

        return torch.tensor(self._each(end), dtype=torch.bool, device=self.device)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return torch.stack(self._each(lambda p, m: m.predict(x[p].float(), task)))

    def train(self, mode: bool = True) -> None:
        for member in self.members:
            member.train(mode)

    def set_configs(self, configs: list) -> None:
        check_changes(self.configs, configs, repr(self.name))
        self._set_members(list(configs), self.seeds)
        for member, config in zip(self.members, configs):
            member.set_config(config)


def population_class(method_cls: type) -> type:
    """The population form of a registered method class."""
    if issubclass(method_cls, PopulationMethod):
        return method_cls
    return type(f"Memberwise{method_cls.__name__}", (MemberwiseMethod,),
                {"solo": method_cls, "name": method_cls.name, "Config": method_cls.Config})
