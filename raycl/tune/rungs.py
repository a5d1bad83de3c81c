"""Early stopping decided per configuration: every configuration of a search is judged at each rung
against every configuration recorded at that rung so far, whichever trial (cohort) and node it runs on.

The rule and its bookkeeping are Ray Tune's ASHA (an :class:`ASHAScheduler` holds the rungs' records
and computes the cutoff): a configuration continues past a rung when its score is at least the
(1 - 1/reduction factor) quantile of the scores recorded at that rung before it. A configuration
alone in its trial is therefore judged exactly as Tune's ASHA judges a trial. The configurations of
one cohort reach a rung together; each is judged with its cohort-mates already recorded, as if they
had arrived just before it, so their order does not matter and a cohort is compared with the whole
search, not only with itself. Audited configurations (``--audit-fraction``) are recorded like any
other but never stopped: they are the unselected sample the rung diagnostic needs.

A search keeps one board in a Ray actor on the driver's node (:class:`RungService`), which writes
every judgement to the experiment's ``rungs.jsonl`` before answering: a trial retried on another
node gets its earlier decision back, and ``--resume`` starts the board from the file.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections.abc import Callable

from raycl import storage
from raycl.vocabulary import TASK

log = logging.getLogger(__name__)

# The board's file (raycl.vocabulary.RUNGS_FILE) is JSON lines (the board's settings, then one judgement a line), and not .json: Tune's
# restore copies an experiment's .json and .pkl files to its staging folder and uploads them back
# while it runs, which would put a resumed board's file back to what it held at the interruption.
_TIME, _SCORE = TASK, "score"


@dataclasses.dataclass(frozen=True)
class RungEvent:
    """One judgement: configuration ``config`` scored ``score`` after ``rung`` tasks; ``verdict`` is
    the rule's decision, ``kept`` whether it went on (audited configurations always do); ``call``
    numbers the judgements, the configurations of one cohort sharing theirs."""

    rung: int
    config: str
    score: float
    verdict: bool
    kept: bool
    audit: bool = False
    call: int = 0


@dataclasses.dataclass(frozen=True)
class _Configuration:
    """What Tune's scheduler needs of a trial: its id."""

    trial_id: str


def rung_schedule(first: int, reduction_factor: int, final_task: int) -> tuple[int, ...]:
    """The rungs (tasks trained when a configuration is judged): ``first``, then x ``reduction_factor``,
    below the last task, as Tune's ASHA places them with grace period ``first``."""
    rungs, rung = [], first
    while rung < final_task:
        rungs.append(rung)
        rung *= reduction_factor
    return tuple(rungs)


def first_rung(options) -> int:
    """The grace period in tasks: as given, or for "auto" the method's first task that uses its
    stability mechanism (``stability_task`` in its declaration)."""
    from raycl.methods import get_method
    from raycl.tune.options import AUTO

    if options.grace_period == AUTO:
        return get_method(options.method).stability_task
    return int(options.grace_period)


def search_rungs(options, final_task: int) -> tuple[int, ...]:
    """The tasks after which every live configuration is judged against the search's records."""
    if options.protocol == "end-of-training" or options.per_task:
        return ()
    return rung_schedule(first_rung(options), options.reduction_factor, final_task)


def describe_rungs(options, final_task: int) -> str:
    """The rungs in words, for the summary."""
    from raycl.tune.options import AUTO

    rungs = search_rungs(options, final_task)
    if options.protocol == "end-of-training" or options.per_task:
        return f"no early stopping (--protocol {options.protocol})"
    why = ""
    if options.grace_period == AUTO:
        first = first_rung(options)
        why = (f" (--grace-period auto: task {first} is the first that trains with {options.method}'s stability "
               "mechanism)" if first > 1 else f" (--grace-period auto: {options.method} has no stability mechanism)")
    if not rungs:
        return f"no rung before the last task {final_task}{why}: no early stopping"
    listed = ", ".join(map(str, rungs))
    return f"rungs after task{'s' if len(rungs) > 1 else ''} {listed}{why}, reduction factor {options.reduction_factor}"


class RungBoard:
    """The rung records of one search and the decisions taken on them."""

    def __init__(self, rungs: tuple[int, ...], reduction_factor: int, final_task: int,
                 events: list[RungEvent] = ()):
        if not rungs:
            raise ValueError("a rung board needs at least one rung")
        self.rungs = tuple(rungs)
        self.reduction_factor = reduction_factor
        self.final_task = final_task
        from ray.tune.schedulers import ASHAScheduler

        self._asha = ASHAScheduler(time_attr=_TIME, metric=_SCORE, mode="max", max_t=final_task,
                                   grace_period=self.rungs[0], reduction_factor=reduction_factor)
        self.events: list[RungEvent] = []
        self._decided: dict[tuple[int, str], RungEvent] = {}
        for event in events:
            self._record(event)

    @staticmethod
    def _feed(asha, rung: int, config: str, score: float) -> bool:
        """Tell ``asha`` that ``config`` scored ``score`` after ``rung`` tasks; whether it continues."""
        from ray.tune.schedulers import TrialScheduler

        trial = _Configuration(config)
        asha.on_trial_add(None, trial)  # with one bracket, adding a known configuration again changes nothing
        return asha.on_trial_result(None, trial, {_TIME: rung, _SCORE: score}) == TrialScheduler.CONTINUE

    def _record(self, event: RungEvent) -> None:
        self._feed(self._asha, event.rung, event.config, event.score)
        self.events.append(event)
        self._decided[event.rung, event.config] = event

    def judge(self, rung: int, scores: dict[str, float], audit=()) -> dict[str, bool]:
        """Whether each configuration of one cohort goes on past ``rung``, given their ``scores``
        (higher is better); configurations in ``audit`` always do. A configuration judged at this
        rung before (a retried task) gets its earlier decision."""
        if rung not in self.rungs:
            raise ValueError(f"task {rung} is not a rung of this search (rungs: {self.rungs})")
        audit = set(audit)
        new = {c: float(s) for c, s in scores.items() if (rung, c) not in self._decided}
        verdicts = {}
        for config, score in new.items():
            asha = copy.deepcopy(self._asha)
            for mate, mate_score in new.items():
                if mate != config:
                    self._feed(asha, rung, mate, mate_score)
            verdicts[config] = self._feed(asha, rung, config, score)
        call = self.events[-1].call + 1 if self.events else 0
        for config, score in new.items():
            self._record(RungEvent(rung, config, score, verdicts[config], verdicts[config] or config in audit,
                                   config in audit, call))
        return {c: self._decided[rung, c].kept for c in scores}

    # ----- the experiment's file ----------------------------------------------------------------------
    def to_json_lines(self) -> str:
        header = {"rungs": list(self.rungs), "reduction_factor": self.reduction_factor, "final_task": self.final_task}
        return "".join(json.dumps(line) + "\n" for line in [header, *map(dataclasses.asdict, self.events)])

    @classmethod
    def from_json_lines(cls, text: str) -> RungBoard:
        header, *events = (json.loads(line) for line in text.splitlines() if line.strip())
        return cls(tuple(header["rungs"]), header["reduction_factor"], header["final_task"],
                   [RungEvent(**e) for e in events])


def cohort_judge(judge: Callable[[int, dict[str, float], list[str]], dict[str, bool]], names: list[str],
                 audit: list[bool] | None = None) -> Callable[[int, dict[int, float]], set[int]]:
    """The judge a :class:`raycl.tune.trainable.Cohort` calls (configuration indices in, indices kept
    out) from a board's ``judge`` (names in): configuration c of the cohort is ``names[c]``."""
    audit = audit or [False] * len(names)

    def judge_cohort(rung: int, scores: dict[int, float]) -> set[int]:
        verdict = judge(rung, {names[c]: s for c, s in scores.items()}, [names[c] for c in scores if audit[c]])
        return {c for c in scores if verdict[names[c]]}

    return judge_cohort


def read_board(location: str) -> RungBoard | None:
    """The board saved at ``location`` (a local path or a URI), None if there is none."""
    data = storage.read_bytes(location)
    return None if data is None else RungBoard.from_json_lines(data.decode())


class RungService:
    """A search's :class:`RungBoard` as a Ray actor, saved to ``location`` after every judgement and
    started from it when it exists (a resumed search, a restarted actor)."""

    def __init__(self, location: str, rungs: tuple[int, ...], reduction_factor: int, final_task: int):
        self.location = location
        saved = read_board(location)
        if saved is not None and (saved.rungs, saved.reduction_factor) != (tuple(rungs), reduction_factor):
            log.warning("%s has rungs %s (reduction factor %s); this search asks for %s (%s): keeping the file's",
                        location, saved.rungs, saved.reduction_factor, tuple(rungs), reduction_factor)
        self.board = saved or RungBoard(rungs, reduction_factor, final_task)

    def judge(self, rung: int, scores: dict[str, float], audit=()) -> dict[str, bool]:
        before = len(self.board.events)
        decisions = self.board.judge(rung, scores, audit)
        if len(self.board.events) != before:
            storage.write_bytes(self.location, self.board.to_json_lines().encode())
        return decisions

    def events(self) -> list[RungEvent]:
        return list(self.board.events)


def start_service(location: str, rungs: tuple[int, ...], reduction_factor: int, final_task: int):
    """The board's actor, on this (the driver's) node so that losing another node never loses it;
    restarted from its file if its process dies."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    actor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(RungService).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False))
    return actor.remote(location, tuple(rungs), reduction_factor, final_task)
