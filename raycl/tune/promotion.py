"""Full populations: ASHA's promotion rule (Li et al., "A System for Massively Parallel
Hyperparameter Tuning", MLSys 2020) handing out jobs of one structure.

A *job* trains several configurations of one *structure* (the hyperparameters a population
shares) over one *segment* of the stream: from the first task to the first rung, from a rung to
the next, or from the last rung to the last task. When a trial slot is free the scheduler hands
out the next job:

1. if some rung holds configurations in its top 1/eta not yet promoted, enough of one structure
   to fill a population, the job promotes them (each continues from its saved member state);
2. else, while configurations are left to propose, the job starts new ones at the bottom;
3. else whatever is promotable goes, split over the free slots so that none runs alone; with
   nothing promotable the slot waits for the running jobs, and when none runs the search is over.

A configuration waiting at a rung is pruned as soon as it can no longer be promoted whatever the
configurations still to come score, and at the latest when the search ends. Audited
configurations (``--audit-fraction``) are ranked with the others and always promoted.

Jobs are sized to take about the same time: the seconds a task costs a population of a structure,
by its width, are measured from the jobs' reports (:class:`CostModel`), and a dearer structure gets
fewer members. Among jobs ready to start the dearest goes first.

Every decision is an event (a dict) handed to ``record`` before it takes effect: the search writes
them to its ``rungs.jsonl``, and :meth:`PromotionScheduler.replay` rebuilds the scheduler from
them after an interruption, so no decision is taken twice.

No Ray, no Optuna here: :mod:`raycl.tune.promotion_search` asks Optuna for configurations and tells
it the outcomes, and :mod:`raycl.tune.job` trains a job under Tune.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable, Iterable

from raycl.tune.costs import CostModel, Widths
from raycl.tune.rung_records import RungRecords
from raycl.vocabulary import Status

WAITING = "waiting"  # trained to a rung, not (yet) promoted: still running as Optuna and the table see it
FINISHED = "finished"  # next_job's answer when the search is over


@dataclasses.dataclass
class Configuration:
    """One configuration of the search: its values, its structure and group, and where it stands."""

    id: str
    params: dict
    structure: str  # the values a population shares, as one key
    group: str = ""  # compared at a rung only with configurations of its group
    audit: bool = False
    status: str = Status.RUNNING
    tasks: int = 0  # tasks trained
    scores: dict[int, float] = dataclasses.field(default_factory=dict)  # rung -> score
    jobs: list[str] = dataclasses.field(default_factory=list)
    job: str | None = None  # the job training it now

    @property
    def ended(self) -> bool:
        return self.status not in (Status.RUNNING, WAITING)


@dataclasses.dataclass
class Job:
    """Configurations ``configs`` of one structure trained from task ``start`` to task ``end`` (tasks
    trained before and after), as one population; ``planned`` is the width the rule planned for it."""

    id: str
    start: int
    end: int
    configs: list[str]
    structure: str
    planned: int
    done: bool = False

    @property
    def tasks(self) -> int:
        return self.end - self.start


@dataclasses.dataclass
class Outcome:
    """What a job reports of one of its configurations: its status after the segment, the tasks it
    trained, its rung score (None where it diverged)."""

    status: str
    tasks: int
    score: float | None = None


class PromotionScheduler:
    """The decisions of a search in the promotion form (see the module's docstring).

    ``rungs`` are the tasks after which configurations are compared (none: every job trains the
    whole stream), ``final_task`` the stream's length, ``samples`` how many configurations to
    propose, ``seeds`` the members each configuration brings (``--trial-seeds``).

    ``groups`` searches several groups at once, each as if alone (a paper's table: one group per
    buffer size): ``samples`` configurations each, proposed each from its own history, compared at a
    rung only within their group. With ``mixable`` the groups' configurations of one structure share
    populations (jobs are filled from every group); otherwise a job holds one group."""

    def __init__(self, rungs: Iterable[int], final_task: int, reduction_factor: int, samples: int,
                 widths: Widths, record: Callable[[dict], None] | None = None, seeds: int = 1,
                 audit_fraction: float = 0.0, groups: Iterable[str] = ("",), mixable: bool = False):
        self.rungs = tuple(sorted(rungs))
        self.final_task = final_task
        self.eta = reduction_factor
        self.groups = tuple(groups)
        self.mixable = mixable
        self.samples = samples * len(self.groups)
        self._proposed = collections.Counter()
        self.widths = widths
        self.seeds = seeds
        self.audit_fraction = audit_fraction
        self.record = record or (lambda event: None)
        self.costs = CostModel()
        self.configs: dict[str, Configuration] = {}
        self.jobs: dict[str, Job] = {}
        self.records: dict[tuple[str, int], RungRecords] = {}
        self.ready: dict[tuple[str, int], set[str]] = {}  # (group, rung) -> promotable now
        # group -> tasks trained -> configurations not ended there: who may still arrive at a rung.
        self._live = collections.defaultdict(collections.Counter)
        self._running: dict[str, Job] = {}
        self._job_count = 0

    # ----- what the search asks ---------------------------------------------------------------------
    @property
    def proposed(self) -> int:
        return len(self.configs)

    @property
    def left_to_propose(self) -> int:
        return self.samples - self.proposed

    def left_in(self, group: str) -> int:
        """Configurations of ``group`` still to propose."""
        return self.samples // len(self.groups) - self._proposed[group]

    def running_jobs(self) -> list[Job]:
        return list(self._running.values())

    def segment_after(self, start: int) -> tuple[int, int]:
        """The segment that starts after ``start`` tasks: to the next rung, or to the last task."""
        end = next((r for r in self.rungs if r > start), self.final_task)
        return start, end

    def width(self, structure: str, segment: tuple[int, int]) -> int:
        """The planned width of a job of ``structure`` (over ``segment``): with even widths, the most
        members whose task costs what a task of ``planned`` members of a typical structure (the median
        measured) costs, so that a task of every job takes about as long; a structure not measured
        yet gets ``planned``. A job's length in tasks is its segment's: the dearest starts first."""
        widths = self.widths
        if not widths.even:
            return widths.planned
        members = self.seeds
        typical = self._typical_seconds(widths.planned * members)
        if typical is None or not self.costs.measured(structure):
            return widths.planned
        best = 1
        for p in range(1, widths.limit + 1):
            if self.costs.seconds(structure, p * members) <= typical * 1.1:
                best = p
        return best

    def _typical_seconds(self, width: int) -> float | None:
        measured = sorted(self.costs.seconds(k, width) for k in self.costs.structures())
        return measured[len(measured) // 2] if measured else None

    def estimated_seconds(self, job: Job) -> float:
        seconds = self.costs.seconds(job.structure, len(job.configs) * self.seeds)
        return (seconds or 0.0) * job.tasks

    # ----- handing out jobs ----------------------------------------------------------------------------
    def next_job(self, free_slots: int, propose_first: Callable[[str], Configuration],
                 propose_like: Callable[[Configuration, str], Configuration]) -> Job | str | None:
        """The job for a free slot (``free_slots`` counts this one), None to wait for running jobs,
        or FINISHED. ``propose_first(group)`` asks the searcher for a new configuration of ``group``,
        ``propose_like(c, group)`` for one of ``group`` with ``c``'s structure; both come back
        registered (:meth:`add`)."""
        full = self._promotions(full_only=True)
        if full:
            return self._start(full[0])
        if self.left_to_propose > 0:
            return self._start(self._new_job(propose_first, propose_like))
        ready = self._promotions(full_only=False, free_slots=free_slots)
        if ready:
            return self._start(ready[0])
        if self.running_jobs():
            return None
        self._prune_waiting("the search ended before it was promoted")
        self.record({"event": "end"})
        return FINISHED

    def add(self, config: Configuration) -> None:
        """A configuration the searcher proposed."""
        self.configs[config.id] = config
        self._proposed[config.group] += 1
        self._live[config.group][config.tasks] += 1
        self.record({"event": "config", "id": config.id, "params": config.params, "structure": config.structure,
                     "group": config.group, "audit": config.audit})

    def _new_job(self, propose_first, propose_like) -> Job:
        group = max(self.groups, key=self.left_in)  # the group with the most left, the first of them on a tie
        first = propose_first(group)
        segment = self.segment_after(0)
        planned = self.width(first.structure, segment)
        left = (self.left_to_propose if self.mixable else self.left_in(group)) + 1  # with the first
        size = min(planned, left)
        if planned < left < 2 * planned:
            # The last new configurations are split evenly over the two jobs they need, so that the
            # last of them is not a sliver.
            size = math.ceil(left / 2)
        members = [first]
        for _ in range(size - 1):
            if self.mixable:  # filled from every group, the one with the most left first
                group = max(self.groups, key=self.left_in)
            members.append(propose_like(first, group))
        return Job("", *segment, [c.id for c in members], first.structure, planned)

    def _promotions(self, full_only: bool, free_slots: int = 1) -> list[Job]:
        """Jobs of the promotable configurations of the highest rung that has some, dearest first.
        With ``full_only`` only jobs as wide as planned; else every promotable configuration, spread
        over as many jobs as there are ``free_slots`` where one structure's would fill them."""
        for rung in sorted(self.rungs, reverse=True):
            together: dict[tuple[str, str], list[str]] = {}  # (structure, group unless mixable) -> ready
            for config in self._promotable(rung):
                c = self.configs[config]
                together.setdefault((c.structure, "" if self.mixable else c.group), []).append(config)
            segment = self.segment_after(rung)
            jobs = []
            for (structure, _), ready in together.items():
                planned = self.width(structure, segment)
                if full_only:
                    jobs += [Job("", *segment, ready[i:i + planned], structure, planned)
                             for i in range(0, len(ready) - planned + 1, planned)]
                    continue
                count = max(math.ceil(len(ready) / planned), min(free_slots, len(ready)))
                size = math.ceil(len(ready) / count)
                jobs += [Job("", *segment, ready[i:i + size], structure, planned) for i in range(0, len(ready), size)]
            if jobs:
                return sorted(jobs, key=lambda j: -self.estimated_seconds(j))
        return []

    def quota(self, recorded: int) -> int:
        """How many of ``recorded`` configurations at a rung go on: the top 1/eta, and at least the best
        one, so that a search of fewer than eta configurations still completes one (as Tune's ASHA
        lets the first configuration at a rung through)."""
        return max(1, recorded // self.eta) if recorded else 0

    def _promotable(self, rung: int) -> list[str]:
        """The configurations waiting at ``rung`` that ASHA promotes now: in the top 1/eta of their
        group's records there, or audited; best first."""
        ready = [c for (group, at), configs in self.ready.items() if at == rung for c in configs]
        return sorted(ready, key=lambda c: (-self.configs[c].scores[rung], c))

    def _records(self, group: str, rung: int) -> RungRecords:
        key = (group, rung)
        if key not in self.records:
            self.records[key] = RungRecords(self.quota)
            self.ready[key] = set()
        return self.records[key]

    def _start(self, job: Job) -> Job:
        if not job.id:
            self._job_count += 1
            job.id = f"job{self._job_count:05d}"
        self.jobs[job.id] = job
        self._running[job.id] = job
        for config in job.configs:
            c = self.configs[config]
            if job.start > 0:
                self.records[c.group, job.start].promoted.add(config)
                self.ready[c.group, job.start].discard(config)
            c.status, c.job = Status.RUNNING, job.id
            c.jobs.append(job.id)
        self.record({"event": "job", "id": job.id, "start": job.start, "end": job.end, "configs": job.configs,
                     "structure": job.structure, "planned": job.planned})
        return job

    # ----- results -------------------------------------------------------------------------------------
    def job_finished(self, job_id: str, outcomes: dict[str, Outcome], seconds_per_task: list[float] = (),
                     trial: str | None = None) -> list[tuple[str, str]]:
        """Record a job's outcome (its configurations' statuses and rung scores, the seconds each
        of its tasks took); returns the configurations that ended with it or because of it, as
        (configuration, status) pairs, in order."""
        job = self.jobs[job_id]
        if job.done:
            return []
        job.done = True
        del self._running[job_id]
        ended, past = [], []
        self.record({"event": "result", "job": job_id, "trial": trial, "seconds": list(seconds_per_task),
                     "outcomes": {c: dataclasses.asdict(o) for c, o in outcomes.items()}})
        for config in job.configs:
            c = self.configs[config]
            outcome = outcomes.get(config, Outcome(Status.ERRORED, c.tasks))
            self._live[c.group][c.tasks] -= 1
            c.job, c.tasks = None, max(c.tasks, outcome.tasks)
            if outcome.status in (Status.DIVERGED, Status.ERRORED):
                c.status = outcome.status
            elif c.tasks >= self.final_task:
                c.status = Status.COMPLETED
            else:
                c.status = WAITING
                self._live[c.group][c.tasks] += 1
                past += self._record_at_rung(c, outcome.score)
            if c.ended:
                ended.append((config, c.status))
        width = sum(1 for _ in job.configs) * self.seeds
        # The first task of a population pays for the warm-up of its process: the later ones say what a
        # task costs.
        steady = list(seconds_per_task[1:]) or list(seconds_per_task)
        if steady:
            self.costs.observe(job.structure, width, sum(steady) / len(steady))
        ended.extend(self._prune_hopeless(past))
        return ended

    def job_failed(self, job_id: str, trial: str | None = None) -> list[tuple[str, str]]:
        """A job whose trial failed for good: its configurations errored."""
        job = self.jobs[job_id]
        return self.job_finished(job_id, {c: Outcome(Status.ERRORED, self.configs[c].tasks) for c in job.configs},
                                 trial=trial)

    def _record_at_rung(self, c: Configuration, score: float) -> list[str]:
        """``c`` waits at the rung of its tasks with ``score``: the rung's top and its promotable set
        follow; returns ``c`` when it landed past the rung's hopeless boundary."""
        rung = c.tasks
        c.scores[rung] = score
        records = self._records(c.group, rung)
        entered, left, landed_past = records.add(c.id, score)
        ready = self.ready[c.group, rung]
        for config in entered:
            if self.configs[config].status == WAITING and config not in records.promoted:
                ready.add(config)
        for config in left:
            if not self.configs[config].audit:
                ready.discard(config)
        if c.audit:
            ready.add(c.id)
        return [c.id] if landed_past else []

    def _arrivals(self, group: str, rung: int) -> int:
        """At most how many more configurations of ``group`` can still be recorded at ``rung``: those
        not ended below it, and every configuration not proposed yet."""
        live = self._live[group]
        return sum(count for tasks, count in live.items() if tasks < rung) + self.left_in(group)

    def _prune_hopeless(self, landed: list[str] = ()) -> list[tuple[str, str]]:
        """Prune the waiting configurations that no future arrival can bring into the top 1/eta of
        their rung (those ranked r, 0-based, with r >= quota(recorded + arrivals)): each is looked at
        once, when it crosses that boundary (:meth:`RungRecords.past`)."""
        candidates = list(landed)
        for (group, rung), records in self.records.items():
            candidates += records.past(self.quota(len(records) + self._arrivals(group, rung)))
        pruned = []
        for config in candidates:
            c = self.configs[config]
            if c.status == WAITING and not c.audit and config not in self.records[c.group, c.tasks].promoted:
                pruned.append(config)
                self._prune(config, "it can no longer reach the top of its rung")
        return [(c, Status.PRUNED) for c in pruned]

    def _prune(self, config: str, why: str) -> None:
        c = self.configs[config]
        c.status = Status.PRUNED
        self._live[c.group][c.tasks] -= 1
        self.ready.get((c.group, c.tasks), set()).discard(config)
        self.record({"event": "pruned", "id": config, "rung": c.tasks, "why": why})

    def _prune_waiting(self, why: str) -> list[str]:
        waiting = [c.id for c in self.configs.values() if c.status == WAITING]
        for config in waiting:
            self._prune(config, why)
        return waiting

    # ----- what the search has done ---------------------------------------------------------------------
    def slot_use(self) -> float | None:
        """Member-tasks trained over planned members x tasks, summed over the finished jobs."""
        trained = planned = 0
        for job in self.jobs.values():
            if job.done:
                trained += len(job.configs) * self.seeds * job.tasks
                planned += job.planned * self.seeds * job.tasks
        return trained / planned if planned else None

    # ----- after an interruption ------------------------------------------------------------------------
    def replay(self, events: Iterable[dict]) -> list[Job]:
        """Rebuild the decisions from recorded ``events`` (without recording them again); returns the
        jobs started but not finished, which the search hands out again first."""
        record, self.record = self.record, (lambda event: None)
        try:
            for event in events:
                kind = event.get("event")
                if kind == "config":
                    self.add(Configuration(event["id"], dict(event["params"]), event["structure"],
                                           event.get("group", ""), bool(event.get("audit"))))
                elif kind == "job":
                    self._job_count = max(self._job_count, int(event["id"].removeprefix("job")))
                    self._start(Job(event["id"], event["start"], event["end"], list(event["configs"]),
                                    event["structure"], event["planned"]))
                elif kind == "result":
                    self.job_finished(event["job"], {c: Outcome(**o) for c, o in event["outcomes"].items()},
                                      event.get("seconds") or [], event.get("trial"))
                elif kind == "pruned":
                    if self.configs[event["id"]].status == WAITING:
                        self._prune(event["id"], event.get("why", ""))
        finally:
            self.record = record
        return self.running_jobs()
