"""The promotion form's scheduler, on simulated searches (no Ray, no training): ASHA's promotion rule,
pruning only the hopeless, full jobs of one structure sized by their cost, the end of a search
spread over the slots, and a search rebuilt from its journal keeping every decision."""

import heapq
import json
import random

import pytest

from raycl.tune.journal import Journal, read_journal, repair_journal
from raycl.tune.costs import CostModel, Widths
from raycl.tune.promotion import FINISHED, WAITING, Configuration, Outcome, PromotionScheduler
from raycl.vocabulary import Status

STRUCTURES = {"mb10": 1.0, "mb32": 1.5, "mb64": 2.5, "mb128": 4.0}


class Simulation:
    """A search of ``samples`` configurations on ``slots`` slots: each configuration's score at a rung
    is a fixed function of its hidden quality, and a job takes (overhead + width) x cost x tasks."""

    def __init__(self, samples=32, slots=2, rungs=(2,), final=5, eta=4, widths=Widths(8, 16), seed=0,
                 structures=STRUCTURES, audit_fraction=0.0, diverge=0.0, events=None, groups=("",), mixable=False):
        self.random = random.Random(seed)
        self.eta = eta
        self.structures = structures
        self.slots = slots
        self.audit_fraction = audit_fraction
        self.diverge = diverge
        self.events = [] if events is None else events
        self.scheduler = PromotionScheduler(rungs, final, eta, samples, widths, record=self.events.append,
                                            groups=groups, mixable=mixable)
        self.quality = {}
        self.clock = 0.0
        self.running = []  # (end time, sequence, job id)
        self.log = []  # (time, what, job)
        self.promotion_checks = []
        self._count = 0

    def propose(self, group="", structure=None):
        self._count += 1
        name = f"c{self._count}"
        structure = structure or self.random.choice(sorted(self.structures))
        self.quality[name] = self.random.gauss(50, 10)
        config = Configuration(name, {"structure": structure}, structure, group=group,
                               audit=self.random.random() < self.audit_fraction)
        self.scheduler.add(config)
        return config

    def score(self, config, rung):
        return round(self.quality[config] + 3 * ((hash((config, rung)) % 1000) / 1000 - 0.5), 3)

    def seconds(self, job):
        return (4 + len(job.configs)) * self.structures[job.structure] * job.tasks

    def fill(self):
        while len(self.running) < self.slots:
            free = self.slots - len(self.running)
            before = {key: set(records.promoted) for key, records in self.scheduler.records.items()}
            job = self.scheduler.next_job(free, self.propose, lambda first, group: self.propose(group, first.structure))
            if job is None or job == FINISHED:
                return job
            if job.start > 0:
                for config in job.configs:
                    group = self.scheduler.configs[config].group
                    records = self.scheduler.records[group, job.start]
                    # ASHA's top 1/eta, at least the best one (the paper's rule, not the scheduler's quota)
                    top = set(records.top_list(max(1, len(records) // self.eta)))
                    self.promotion_checks.append((config, top, before.get((group, job.start), set())))
            self.log.append((self.clock, "start", job.id))
            heapq.heappush(self.running, (self.clock + self.seconds(job), job.id))
        return None

    def finish_next(self):
        self.clock, job_id = heapq.heappop(self.running)
        job = self.scheduler.jobs[job_id]
        outcomes = {}
        for config in job.configs:
            if self.random.random() < self.diverge:
                outcomes[config] = Outcome(Status.DIVERGED, job.start + 1)
            else:
                status = Status.COMPLETED if job.end == self.scheduler.final_task else Status.RUNNING
                outcomes[config] = Outcome(status, job.end, self.score(config, job.end))
        per_task = (4 + len(job.configs)) * self.structures[job.structure]
        self.scheduler.job_finished(job_id, outcomes, [per_task] * job.tasks)
        self.log.append((self.clock, "end", job_id))

    def run(self, stop_after=None):
        finished = 0
        while True:
            if self.fill() == FINISHED:
                return True
            if stop_after is not None and finished >= stop_after:
                return False
            self.finish_next()
            finished += 1


def test_every_configuration_ends_once_and_trains_each_segment_once():
    sim = Simulation(samples=40, rungs=(1, 4), final=9)
    assert sim.run()
    scheduler = sim.scheduler
    assert len(scheduler.configs) == 40
    assert all(c.ended for c in scheduler.configs.values())
    for config in scheduler.configs.values():
        segments = [(scheduler.jobs[j].start, scheduler.jobs[j].end) for j in config.jobs]
        assert segments == sorted(set(segments))  # each segment once, in order
        assert segments[0][0] == 0 and all(a[1] == b[0] for a, b in zip(segments, segments[1:]))
        assert len({scheduler.jobs[j].structure for j in config.jobs}) == 1 == len({config.structure})
    for job in scheduler.jobs.values():
        assert {scheduler.configs[c].structure for c in job.configs} == {job.structure}


@pytest.mark.parametrize("seed", range(3))
def test_promotions_follow_ashas_rule(seed):
    """A promoted configuration was, when promoted, in the top 1/eta of its rung's records; every
    configuration in the final top 1/eta of a rung was promoted."""
    sim = Simulation(samples=48, rungs=(1, 3), final=8, seed=seed)
    assert sim.run()
    assert sim.promotion_checks
    for config, top, promoted_before in sim.promotion_checks:
        assert config in top and config not in promoted_before
    for (_, rung), records in sim.scheduler.records.items():
        final_top = records.top_list(max(1, len(records) // sim.eta))
        assert set(final_top) <= records.promoted


@pytest.mark.parametrize("seed", range(4))
def test_only_hopeless_configurations_are_pruned_before_the_end(seed):
    """A configuration pruned before the search's end is outside the final top 1/eta of its rung,
    whatever came after it: pruning never lost a configuration ASHA would have promoted."""
    events = []
    sim = Simulation(samples=64, rungs=(2,), final=5, seed=seed, events=events)
    assert sim.run()
    end = next(i for i, e in enumerate(events) if e["event"] == "end")
    early = [e["id"] for e in events[:end] if e["event"] == "pruned"]
    assert len(early) > 10  # most pruning happens as the search goes, not at its end
    records = sim.scheduler.records["", 2]
    final_top = set(records.top_list(len(records) // 4))
    assert not set(early) & final_top


def test_audited_configurations_are_always_promoted():
    sim = Simulation(samples=40, rungs=(2,), final=5, audit_fraction=0.3, seed=1)
    assert sim.run()
    audited = [c for c in sim.scheduler.configs.values() if c.audit]
    assert audited and all(c.status == Status.COMPLETED for c in audited)
    assert any(c.status == Status.PRUNED for c in sim.scheduler.configs.values())


def test_a_search_of_fewer_configurations_than_eta_still_completes_its_best():
    sim = Simulation(samples=3, slots=1, rungs=(1, 4), final=5, widths=Widths(2, 4), structures={"only": 1.0})
    assert sim.run()
    completed = [c for c in sim.scheduler.configs.values() if c.status == Status.COMPLETED]
    assert len(completed) == 1 and max(sim.quality, key=sim.quality.get) == completed[0].id


def test_diverged_configurations_end_alone_and_the_rest_go_on():
    sim = Simulation(samples=32, rungs=(2,), final=5, diverge=0.1, seed=2)
    assert sim.run()
    statuses = [c.status for c in sim.scheduler.configs.values()]
    assert Status.DIVERGED in statuses and Status.COMPLETED in statuses and WAITING not in statuses


def test_jobs_of_a_dearer_structure_are_narrower_and_take_about_as_long():
    sim = Simulation(samples=200, slots=2, rungs=(2,), final=5, widths=Widths(16, 64, even=True), seed=3)
    for structure, cost in STRUCTURES.items():  # every structure measured once already
        sim.scheduler.costs.observe(structure, 16, (4 + 16) * cost)
    assert sim.run()
    bottom = [j for j in sim.scheduler.jobs.values() if j.start == 0 and len(j.configs) == j.planned]
    by_cost = sorted({j.structure for j in bottom}, key=STRUCTURES.get)
    assert len(by_cost) >= 3
    widths = [{len(j.configs) for j in bottom if j.structure == s} for s in by_cost]
    assert all(min(cheaper) > max(dearer) for cheaper, dearer in zip(widths, widths[1:]))
    durations = [sim.seconds(j) for j in bottom]
    assert max(durations) < 1.3 * min(durations)


def test_the_last_jobs_spread_over_the_free_slots():
    """With nothing left to propose, the promotable configurations are split so no slot idles."""
    sim = Simulation(samples=32, slots=2, rungs=(2,), final=5, widths=Widths(8, 16), seed=4,
                     structures={"only": 1.0})
    assert sim.run()
    last = [j for j in sim.scheduler.jobs.values() if j.start == 2]
    assert len(last) >= 2 and max(len(j.configs) for j in last) < 8
    ends = sorted(t for t, what, _ in sim.log if what == "end")
    assert ends[-1] - ends[-2] < 0.15 * ends[-1]  # the last job ran alone for a small part of the search


def test_slot_use_counts_members_against_the_planned_width():
    sim = Simulation(samples=16, slots=1, rungs=(), final=3, widths=Widths(8, 16), structures={"only": 1.0})
    assert sim.run()
    assert sim.scheduler.slot_use() == 1.0
    sim = Simulation(samples=12, slots=1, rungs=(), final=3, widths=Widths(8, 16), structures={"only": 1.0})
    assert sim.run()
    assert sim.scheduler.slot_use() == pytest.approx(12 / 16)  # two jobs of 6 where 8 were planned


@pytest.mark.parametrize("cut", [2, 5, 8])
def test_a_search_rebuilt_from_its_journal_keeps_every_decision(cut, tmp_path):
    """Stop a search after ``cut`` jobs ended (jobs still running are lost), rebuild the scheduler from
    the journal, run the lost jobs again and go on: every decision recorded before the stop is kept,
    no configuration is proposed or trains a segment twice."""
    journal = Journal(str(tmp_path / "rungs.jsonl"))
    sim = Simulation(samples=40, rungs=(1, 3), final=8, seed=cut, events=[])
    sim.scheduler.record = lambda event: (sim.events.append(event), journal.append(event))
    assert not sim.run(stop_after=cut)
    recorded = read_journal(journal.location)
    assert recorded == sim.events

    resumed = Simulation(samples=40, rungs=(1, 3), final=8, seed=cut, events=[])
    resumed.quality, resumed._count, resumed.random = sim.quality, sim._count, sim.random
    unfinished = resumed.scheduler.replay(recorded)
    resumed.scheduler.record = lambda event: (resumed.events.append(event), journal.append(event))
    assert {j.id for j in unfinished} == {job for _, job in sim.running}
    for job in unfinished:  # handed out again first, with the same members
        heapq.heappush(resumed.running, (resumed.clock + resumed.seconds(job), job.id))
    assert resumed.run()

    everything = read_journal(journal.location)
    proposed = [e["id"] for e in everything if e["event"] == "config"]
    assert len(proposed) == len(set(proposed)) == 40
    jobs = [e for e in everything if e["event"] == "job"]
    assert len({e["id"] for e in jobs}) == len(jobs)
    trained = [(c, e["start"]) for e in jobs for c in e["configs"]]
    assert len(trained) == len(set(trained))
    results = [e["job"] for e in everything if e["event"] == "result"]
    assert len(results) == len(set(results)) == len(jobs)
    before = {(e["id"]) for e in recorded if e["event"] == "pruned"}
    assert before <= {c for c, conf in resumed.scheduler.configs.items() if conf.status == Status.PRUNED}


def test_a_torn_last_line_is_skipped_and_cut_off(tmp_path):
    path = tmp_path / "rungs.jsonl"
    path.write_text(json.dumps({"event": "config", "id": "a"}) + "\n" + '{"event": "job", "id": "jo')
    assert read_journal(str(path)) == [{"event": "config", "id": "a"}]
    repair_journal(str(path))
    Journal(str(path)).append({"event": "end"})
    assert [e["event"] for e in read_journal(str(path))] == ["config", "end"]


def test_the_cost_model_fits_a_fixed_cost_per_step():
    costs = CostModel()
    for width in (2, 8):
        costs.observe("a", width, 1.0 * (4 + width))  # a = 4, b = 1
    costs.observe("b", 8, 24.0)
    assert costs.overhead() == pytest.approx(4.0)
    assert costs.seconds("a", 16) == pytest.approx(20.0)
    assert costs.seconds("b", 2) == pytest.approx(24.0 * 6 / 12)
    assert costs.seconds("never", 8) == pytest.approx((12.0 + 24.0) / 2)


@pytest.mark.parametrize("seed", range(3))
def test_rung_records_keep_their_top_and_hopeless_boundary_as_a_full_sort_would(seed):
    """After every arrival the incremental top equals the first quota(n) of a full sort, and past()
    hands out exactly the entries at the boundary or later, each once."""
    from raycl.tune.rung_records import RungRecords

    rng = random.Random(seed)
    records = RungRecords(lambda n: max(1, n // 4) if n else 0)
    scores, handed = {}, []
    remaining, i = 300, 0  # configurations that may still arrive
    while remaining > 0:
        name, i = f"c{i}", i + 1
        scores[name] = round(rng.gauss(50, 10), 1)  # ties happen
        _, _, landed_past = records.add(name, scores[name])
        remaining -= 1
        if landed_past:
            handed.append(name)
        ranked = sorted(scores, key=lambda c: (-scores[c], int(c[1:])))
        assert records.ranked() == ranked
        assert records.top == set(ranked[: max(1, len(ranked) // 4)])
        if rng.random() < 0.3:
            remaining = max(0, remaining - rng.randrange(5))  # some ended below the rung
        boundary = max(1, (len(ranked) + remaining) // 4)
        handed += records.past(boundary)
        assert sorted(handed) == sorted(ranked[boundary:])  # each once, all of them


@pytest.mark.parametrize("cut", [3, 6, 9])
def test_a_scheduler_replayed_from_its_events_is_in_the_state_of_the_original(cut):
    sim = Simulation(samples=40, rungs=(1, 3), final=8, seed=cut, events=[], audit_fraction=0.2)
    assert not sim.run(stop_after=cut)
    again = PromotionScheduler((1, 3), 8, 4, 40, Widths(8, 16))
    again.replay(sim.events)
    original = sim.scheduler
    assert {k: v for k, v in again._live.items()} == {k: v for k, v in original._live.items()}
    assert again.ready == original.ready
    assert {k: r.ranked() for k, r in again.records.items()} == {k: r.ranked() for k, r in original.records.items()}
    assert {c: (x.status, x.tasks, x.jobs) for c, x in again.configs.items()} == \
        {c: (x.status, x.tasks, x.jobs) for c, x in original.configs.items()}
    assert [j.id for j in again.running_jobs()] == [j.id for j in original.running_jobs()]


@pytest.mark.parametrize("mixable", [False, True])
def test_groups_are_searched_each_as_if_alone(mixable):
    """Three groups (a table's buffer sizes): each gets its samples and its winner, is compared at a
    rung only with itself; groups share jobs only where they may."""
    groups = ("200", "500", "5120")
    sim = Simulation(samples=16, slots=2, rungs=(2,), final=5, widths=Widths(8, 16), seed=5,
                     structures={"only": 1.0}, groups=groups, mixable=mixable)
    assert sim.run()
    scheduler = sim.scheduler
    assert sorted(c.group for c in scheduler.configs.values()) == sorted(g for g in groups for _ in range(16))
    assert {g for g, _ in scheduler.records} == set(groups)
    for (group, rung), records in scheduler.records.items():
        assert {scheduler.configs[c].group for c in records.ranked()} == {group}
    for config, top, _ in sim.promotion_checks:
        assert config in top  # the top of its own group's records
    for group in groups:
        assert any(c.status == Status.COMPLETED for c in scheduler.configs.values() if c.group == group)
    mixed = [j for j in scheduler.jobs.values() if len({scheduler.configs[c].group for c in j.configs}) > 1]
    assert bool(mixed) == mixable


def test_a_journal_in_an_object_store_is_written_in_bounded_segments(tmp_path, monkeypatch):
    """An object store cannot append: each event rewrites only the last segment, and a journal picked
    up again (a resumed search) continues it."""
    import pickle

    import raycl.tune.journal as journal_module

    monkeypatch.setattr(journal_module, "SEGMENT_EVENTS", 3)
    location = f"file://{tmp_path}/rungs.jsonl"  # pyarrow's local filesystem behind a URI
    journal = Journal(location)
    for i in range(7):
        journal.append({"event": "config", "id": f"c{i}"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"rungs.jsonl.part-0000{i}" for i in range(3)]
    again = pickle.loads(pickle.dumps(journal))
    again.append({"event": "end"})
    events = read_journal(location)
    assert [e["id"] for e in events[:-1]] == [f"c{i}" for i in range(7)] and events[-1] == {"event": "end"}
    assert len((tmp_path / "rungs.jsonl.part-00002").read_text().splitlines()) == 2


def recorded_search(name: str) -> list[dict]:
    import gzip
    from pathlib import Path

    with gzip.open(Path(__file__).parent / "data" / name, "rt") as stream:
        return [json.loads(line) for line in stream]


def test_the_scheduler_takes_a_recorded_search_s_decisions_again():
    """The rungs.jsonl of a real search (the main job: vib, seq-digits, 200 configurations, auto
    widths), its results fed back in the order they came: at every point the scheduler hands out the
    jobs the search handed out (the same configurations, segments and widths, from the same free
    slots) and prunes the configurations it pruned."""
    events = recorded_search("rungs-vib-seq-digits-200.jsonl.gz")
    settings = events[0]
    widths = Widths(settings["planned_width"], settings["width_limit"], even=settings["even"])
    made = []
    scheduler = PromotionScheduler(tuple(settings["rungs"]), settings["final_task"], settings["reduction_factor"],
                                   settings["samples"], widths, record=made.append, seeds=settings["trial_seeds"])
    proposals = iter([e for e in events if e["event"] == "config"])

    def propose(*_):  # the searcher's next proposal, as recorded
        event = next(proposals)
        config = Configuration(event["id"], dict(event["params"]), event["structure"], event.get("group", ""),
                               bool(event.get("audit")))
        scheduler.add(config)
        return config

    running = 0
    recorded = [e for e in events[1:] if e["event"] != "config"]
    for event in recorded:
        if event["event"] == "job":
            job = scheduler.next_job(settings["slots"] - running, propose, propose)
            assert (job.id, job.start, job.end, job.configs, job.planned) == (
                event["id"], event["start"], event["end"], event["configs"], event["planned"])
            running += 1
        elif event["event"] == "result":
            running -= 1
            scheduler.job_finished(event["job"], {c: Outcome(**o) for c, o in event["outcomes"].items()},
                                   event["seconds"], event["trial"])
        elif event["event"] == "end":
            assert scheduler.next_job(settings["slots"], propose, propose) == FINISHED
    decisions = [e for e in made if e["event"] in ("job", "pruned", "end")]
    assert decisions == [e for e in recorded if e["event"] in ("job", "pruned", "end")]
    assert sum(e["event"] == "pruned" for e in decisions) == 139
