"""Hyperparameters chosen task by task (continual hyperparameter selection), on the population engine.

Branch and select: a run holds one *chosen* state at each task boundary. The task's candidates start
from copies of it (network, optimiser, buffer and random streams: common random numbers) and differ
only in per-member hyperparameters; they train the task as one population; a rule picks one, whose
state is the next task's start. So the chosen path is exactly the run that trains only the chosen
candidate of each task (the *schedule*), alone (``tests/test_selection.py``, float64).

Rules, all on validation data only:

- ``chf``: the DER repository's continual hyperparameter framework (De Lange et al.; FACIL's
  ``gridsearch.py``). *Maximal plasticity*: fine-tune (the method with its stability hyperparameters
  at 0) from the chosen state for every learning rate of a grid; A* is the best accuracy on the
  task's validation split. *Stability decay*: with the best learning rate, the stability
  hyperparameters start at their most stable value (declared with the method, ``most_stable``) and
  are multiplied by ``decay`` until the task's validation accuracy reaches (1 - ``drop``) A*, at most
  ``decay_limit`` times. The sequential framework retrains once per step of that ladder, stopping
  at the first accepted one; here the grid and the ladder's first step train as one population and
  the rest of the ladder, when needed, as a second, and the first accepted step is taken, so the
  decisions are the same. (A ladder step is not an ASHA rung: rungs are the search's early stopping,
  :mod:`raycl.tune.rungs`.)
- ``current-task`` and ``seen-tasks-val`` (Lee et al. 2024): K candidates per task proposed by
  Optuna's TPE, which sees every earlier task's candidates (the task index is one of its
  parameters, fixed at the current task), chosen by the accuracy on the task's validation split,
  or by the mean over the validation splits of every task seen.
- ``pbt``: population-based training over task boundaries. Each Tune trial holds a *centre*
  (per-member hyperparameters); its K candidates are the centre and K - 1 perturbations of it
  (x 0.8 or x 1.25 per hyperparameter, within the space's bounds); the best by the mean validation
  accuracy over the tasks seen becomes the chosen state and the next centre (the exploit inside a
  trial). Across trials Ray Tune's PopulationBasedTraining copies a top trial's checkpoint into a
  bottom one and mutates its centre at every task.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from raycl.data import Benchmark
from raycl.errors import RayclError
from raycl.hparams import param_specs, stability_hyperparameters
from raycl.population.record import AccuracyRecord
from raycl.train import PopulationRun

log = logging.getLogger(__name__)

PER_TASK_PROTOCOLS = ("chf", "current-task", "seen-tasks-val", "pbt")
# The search's random stream for PBT's perturbations inside a trial (named apart from the
# sampler's and from the audit draw's).
PBT_STREAM = 2
PERTURBATION_FACTORS = (0.8, 1.25)
# The DER repository's learning-rate grid (its hyperparameters/*.yaml) and framework settings.
CHF_GRID = (0.1, 0.05, 0.03, 0.01)


@dataclasses.dataclass
class ChfSettings:
    grid: tuple[float, ...] = CHF_GRID
    drop: float = 0.2
    decay: float = 0.5
    decay_limit: int = 7

    def validate(self) -> None:
        if not self.grid or any(lr <= 0 for lr in self.grid):
            raise RayclError(f"--chf-grid needs positive learning rates, got {list(self.grid)}")
        if not 0.0 <= self.drop < 1.0:
            raise RayclError(f"--chf-drop must be in [0, 1), got {self.drop}")
        if not 0.0 < self.decay < 1.0:
            raise RayclError(f"--chf-decay must be in (0, 1), got {self.decay}")
        if self.decay_limit < 0:
            raise RayclError(f"--chf-decay-limit must be at least 0, got {self.decay_limit}")


@dataclasses.dataclass
class Candidate:
    """One candidate of one task: the hyperparameters it differs by, and its validation evidence."""

    values: dict
    phase: str  # "plasticity", "stability" or "proposal"
    current: float | None = None  # validation accuracy on the task just trained (primary setting)
    seen: float | None = None  # mean validation accuracy over every task seen
    diverged: bool = False
    number: int | None = None  # its Optuna trial number, for the proposal protocols


@dataclasses.dataclass
class TaskChoice:
    task: int  # 0-based
    candidates: list[Candidate]
    chosen: int
    evidence: dict = dataclasses.field(default_factory=dict)

    @property
    def winner(self) -> Candidate:
        return self.candidates[self.chosen]

    @property
    def values(self) -> dict:
        return self.winner.values


def fork(run: PopulationRun, size: int) -> PopulationRun:
    """``size`` copies of the one-member ``run`` as a new run (``run`` itself is left as it is); the
    benchmarks are shared, not copied."""
    shared = {id(b): b for b in run.benchmarks}
    shared.update({id(run.benchmark): run.benchmark})
    copied = copy.deepcopy(run, memo=shared)
    copied.broadcast(copied.alive[0], size)
    return copied


class Branches:
    """A run's chosen state and the candidates trained from it, task by task."""

    def __init__(self, benchmarks: Benchmark | Sequence[Benchmark], method: str, base_config, seed: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, precision: str = "fp32"):
        self.base = base_config
        self.method = method
        # Every candidate is a copy of this run (``fork``): same device and precision.
        self.chosen = PopulationRun(benchmarks, method, [base_config], [seed], device=device, dtype=dtype,
                                    test_every_task=False, precision=precision)
        self.setting = self.chosen.benchmark.settings[0]
        self._phases: list[PopulationRun | list[PopulationRun]] = []
        self.trainings = 0  # member-tasks trained, every candidate counted
        self.train_s = 0.0

    @property
    def next_task(self) -> int:
        return self.chosen.next_task

    @property
    def finished(self) -> bool:
        return self.chosen.finished

    def config(self, values: dict):
        return dataclasses.replace(self.base, **values)

    def train(self, candidates: list[Candidate], sequential: bool = False) -> None:
        """Train the next task for every candidate from the chosen state, filling in their evidence:
        as one population, or (``sequential``) one run after another, as the published frameworks do."""
        task = self.chosen.next_task
        start = time.perf_counter()
        if sequential:
            runs = []
            for candidate in candidates:
                run = fork(self.chosen, 1)
                run.set_configs([self.config(candidate.values)])
                run.run_task()
                runs.append(run)
                self._evidence(run, [candidate], task)
            self._phases.append(runs)
        else:
            run = fork(self.chosen, len(candidates))
            run.set_configs([self.config(c.values) for c in candidates])
            run.run_task()
            self._evidence(run, candidates, task)
            self._phases.append(run)
        self.trainings += len(candidates)
        self.train_s += time.perf_counter() - start

    def _evidence(self, run: PopulationRun, candidates: list[Candidate], task: int) -> None:
        record: AccuracyRecord = run.record
        for member, candidate in enumerate(candidates):
            candidate.diverged = member in run.diverged
            if not candidate.diverged:
                candidate.current = record.current(member, task, self.setting)
                candidate.seen = float(record.seen(member, task, self.setting).mean())

    def choose(self, phase: int, position: int) -> None:
        """The candidate at ``position`` of training call ``phase`` (of this task) is the chosen state."""
        trained = self._phases[phase]
        run = trained[position] if isinstance(trained, list) else trained
        member = 0 if isinstance(trained, list) else position
        run.broadcast(member, 1)
        self.chosen = run
        self._phases = []


# ----- the rules ------------------------------------------------------------------------------------------
def chf_task(branches: Branches, settings: ChfSettings, sequential: bool = False) -> TaskChoice:
    """One task of the continual hyperparameter framework (see the module's doc).

    As populations: the plasticity grid and the first step of the stability ladder for every
    learning rate of the grid train as one population (the step of the best learning rate is the
    one the sequential loop trains first, and on many benchmarks the one it keeps); only when that
    step falls short do the remaining steps, with the best learning rate, train as a second one.
    """
    stability = stability_hyperparameters(type(branches.base))
    task = branches.next_task

    def ladder_step(lr: float, k: int) -> Candidate:
        """Step ``k`` of the stability ladder: the stability hyperparameters decayed ``k`` times."""
        return Candidate({"lr": lr, **{n: v * settings.decay ** k for n, v in stability.items()}}, "stability")

    plasticity = [Candidate({"lr": lr, **{n: 0.0 for n in stability}}, "plasticity") for lr in settings.grid]
    first_steps = [ladder_step(lr, 0) for lr in settings.grid] if stability and not sequential else []
    branches.train(plasticity + first_steps, sequential)
    if all(c.diverged for c in plasticity):
        raise RayclError(f"task {task + 1}: every learning rate of the grid {list(settings.grid)} diverged")
    best = max((i for i, c in enumerate(plasticity) if not c.diverged), key=lambda i: (plasticity[i].current, -i))
    a_star, lr = plasticity[best].current, plasticity[best].values["lr"]
    evidence = {"rule": "chf", "A*": a_star, "best_lr": lr}
    if not stability:  # plasticity only (ER, SGD): the fine-tuned candidate is the method itself
        branches.choose(0, best)
        return TaskChoice(task, plasticity, best, evidence)
    threshold = (1.0 - settings.drop) * a_star
    evidence["threshold"] = threshold

    def accepted(candidate: Candidate) -> bool:
        return not candidate.diverged and candidate.current >= threshold

    candidates = plasticity + first_steps
    if sequential:  # the published loop: retrain until a step is accepted
        for k in range(settings.decay_limit + 1):
            candidate = ladder_step(lr, k)
            branches.train([candidate], sequential=True)
            candidates.append(candidate)
            if accepted(candidate):
                break
        ladder = candidates[len(plasticity):]
        places = [(1 + k, 0) for k in range(len(ladder))]  # one training call per step
    else:
        # Where each step of the ladder was trained: (training call of this task, member in it).
        ladder, places = [first_steps[best]], [(0, len(plasticity) + best)]
        if not accepted(ladder[0]) and settings.decay_limit > 0:
            rest = [ladder_step(lr, k) for k in range(1, settings.decay_limit + 1)]
            branches.train(rest)
            candidates += rest
            ladder += rest
            places += [(1, i) for i in range(len(rest))]
    finite = [k for k, c in enumerate(ladder) if not c.diverged]
    if not finite:
        raise RayclError(f"task {task + 1}: every stability candidate diverged")
    k = next((k for k, c in enumerate(ladder) if accepted(c)), finite[-1])
    evidence.update(accepted=accepted(ladder[k]), decays=k)
    branches.choose(*places[k])
    return TaskChoice(task, candidates, candidates.index(ladder[k]), evidence)


def proposal_task(branches: Branches, study, define: Callable, k: int, by: str) -> TaskChoice:
    """K candidates from Optuna's sampler for the next task, chosen by ``by`` ("current" or "seen")."""
    from optuna.trial import TrialState

    task = branches.next_task
    trials, candidates = [], []
    for _ in range(k):
        trial = study.ask()
        trial.suggest_int("task", 0, branches.chosen.benchmark.n_tasks - 1)
        trials.append(trial)
        candidates.append(Candidate(define(trial), "proposal", number=trial.number))
    branches.train(candidates)
    for trial, candidate in zip(trials, candidates):
        if candidate.diverged:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, getattr(candidate, by))
    finite = [i for i, c in enumerate(candidates) if not c.diverged]
    if not finite:
        raise RayclError(f"task {task + 1}: every one of the {k} candidates diverged")
    chosen = max(finite, key=lambda i: (getattr(candidates[i], by), -i))
    branches.choose(0, chosen)
    return TaskChoice(task, candidates, chosen, {"rule": by})


def perturbed(centre: dict, space, rng: np.random.Generator) -> dict:
    """``centre`` with every searched number scaled by 0.8 or 1.25 (within its range) and every
    choice redrawn with probability 1/4."""
    out = dict(centre)
    for dim in space.dimensions:
        if dim.name not in centre or dim.kind == "fixed":
            continue
        if dim.kind == "choice":
            if rng.random() < 0.25:
                out[dim.name] = dim.values[int(rng.integers(len(dim.values)))]
            continue
        value = float(np.clip(centre[dim.name] * PERTURBATION_FACTORS[int(rng.integers(2))], dim.low, dim.high))
        out[dim.name] = int(round(value)) if dim.kind == "int" else value
    return out


def pbt_task(branches: Branches, centre: dict, space, k: int, rng: np.random.Generator) -> TaskChoice:
    """The centre and K - 1 perturbations of it from the chosen state; the best over the tasks seen
    is chosen (and is the next centre)."""
    task = branches.next_task
    candidates = [Candidate(dict(centre), "proposal")] + [Candidate(perturbed(centre, space, rng), "proposal")
                                                           for _ in range(k - 1)]
    branches.train(candidates)
    finite = [i for i, c in enumerate(candidates) if not c.diverged]
    if not finite:
        raise RayclError(f"task {task + 1}: every one of the {k} candidates diverged")
    chosen = max(finite, key=lambda i: (candidates[i].seen, -i))
    branches.choose(0, chosen)
    return TaskChoice(task, candidates, chosen, {"rule": "seen"})


def proposal_study(space, seed: int, storage=None, name: str | None = None):
    """The Optuna study of a proposal protocol and its define-by-run function over the space's
    per-member hyperparameters: multivariate TPE whose task parameter the caller fixes each task."""
    import optuna

    from raycl.tune.space import DefineByRun

    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler, storage=storage, study_name=name,
                                load_if_exists=storage is not None)
    define = DefineByRun(space)

    def values(trial) -> dict:
        fixed = define(trial)  # suggests the searched ones into trial.params, returns the fixed ones
        return {k: v for k, v in {**trial.params, **fixed}.items() if k != "task"}

    return study, values


def fix_task(study, task: int) -> None:
    """Point the study's sampler at ``task``: the task parameter is fixed, the rest sampled with the
    history of every task."""
    import warnings

    import optuna

    base = getattr(study, "_raycl_base_sampler", study.sampler)
    study._raycl_base_sampler = base
    with warnings.catch_warnings():  # experimental in Optuna's terms since 2.4, and kept since
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.sampler = optuna.samplers.PartialFixedSampler({"task": task}, base)


def per_member_space(space, config_cls: type):
    """The part of a search space a task's candidates may vary: its per-member hyperparameters that
    may change between tasks."""
    specs = param_specs(config_cls)
    kept = [d for d in space.dimensions if d.kind != "fixed" and specs[d.name].changes_between_tasks]
    return dataclasses.replace(space, dimensions=tuple(kept))


def schedule_configs(config: dict, n_tasks: int) -> list[dict]:
    """One config per task from a config whose values may be lists (one value per task)."""
    lists = {k: v for k, v in config.items() if isinstance(v, (list, tuple))}
    for name, values in lists.items():
        if len(values) != n_tasks:
            raise RayclError(f"the schedule of {name!r} has {len(values)} values for {n_tasks} tasks")
    return [{**config, **{k: v[t] for k, v in lists.items()}} for t in range(n_tasks)]


def schedule_of(choices: list[TaskChoice]) -> dict[str, list]:
    """hyperparameter -> its value at each task, for the ones the choices set."""
    names = sorted({k for c in choices for k in c.values})
    return {n: [c.values.get(n) for c in choices] for n in names}


def run_schedule(benchmarks, method: str, configs: list, seeds: Sequence[int], device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, on_task=None, precision: str = "fp32") -> PopulationRun:
    """Train a population whose hyperparameters follow ``configs`` (one config object per task)."""
    run = PopulationRun(benchmarks, method, configs[0], seeds, device=device, dtype=dtype, precision=precision)
    for task_config in configs:
        run.set_configs([task_config] * len(run.alive))
        report = run.run_task()
        if on_task is not None:
            on_task(report)
        if run.finished:
            break
    return run


@dataclasses.dataclass
class SelectionResult:
    protocol: str
    choices: list[TaskChoice]
    run: PopulationRun  # the chosen path, one member
    trainings: int
    train_s: float


def choose_next_task(branches: Branches, protocol: str, chf: ChfSettings | None = None, study=None, define=None,
                     candidates: int = 8, sequential: bool = False) -> TaskChoice:
    """The next task by ``protocol``'s rule: chf, or Optuna's proposals chosen on the current task
    or on every task seen (PBT's candidates depend on its trial's centre: see ``pbt_task``)."""
    if protocol == "chf":
        return chf_task(branches, chf or ChfSettings(), sequential)
    if protocol in ("current-task", "seen-tasks-val"):
        fix_task(study, branches.next_task)
        return proposal_task(branches, study, define, candidates, "current" if protocol == "current-task" else "seen")
    raise RayclError(f"unknown per-task protocol {protocol!r}; allowed: {', '.join(PER_TASK_PROTOCOLS)}")


def select_per_task(branches: Branches, protocol: str, chf: ChfSettings | None = None, study=None, define=None,
                    candidates: int = 8, sequential: bool = False,
                    on_task: Callable[[TaskChoice], None] | None = None) -> SelectionResult:
    """Run ``protocol`` over every task left in ``branches``."""
    choices = []
    while not branches.finished:
        choice = choose_next_task(branches, protocol, chf, study, define, candidates, sequential)
        choices.append(choice)
        if on_task is not None:
            on_task(choice)
    return SelectionResult(protocol, choices, branches.chosen, branches.trainings, branches.train_s)


def decisions(result: SelectionResult) -> list[tuple[int, dict]]:
    """(task, chosen values) per task: what two runs of a rule must agree on."""
    return [(c.task, {k: float(v) for k, v in c.values.items()}) for c in result.choices]
