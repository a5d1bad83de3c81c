"""``launch/benchmark.py --search-scale N`` and ``--outputs-scale N ...``: what the search's machinery
costs per configuration as searches grow.

--search-scale N splits the cost of a search of N configurations into

- Optuna: the sampler the search uses (``--tpe-window``), in this process, on the method's space:
  N configurations asked (with their values suggested), each reported after a task and told
  pruned, failed or complete, with a slot's worth of them running at once (constant liar);
- rung decisions: the promotion scheduler's ``next_job`` and ``job_finished`` over a simulated
  search of N configurations (scores drawn, no training, no Ray);
- trial overhead and training: from a real search's experiment folder (``launch/tune.py --samples
  N --verbose 0``, run here unless ``--scale-experiment`` names one already run): training is the
  seconds its jobs spent in tasks (``jobs/*.json`` "seconds"); the overhead is the slot-seconds
  of the search's span (first job's start to last job's end, times the trial slots its journal
  records) that were not training; with a search run here, also the wall outside that span (Ray's
  start, the data, the export).

--outputs-scale N ... times what a search writes and shows when it holds N configurations, built
directly (no training): the trials table, the summary, the progress line's reads at every Tune
step, the report, and an Optuna study of N trials in a SQLite file and in a journal file.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TUNE = Path(__file__).resolve().parent / "tune.py"


# ----- Optuna ----------------------------------------------------------------------------------------------
def optuna_cost(samples: int, window: int | None, method: str = "sgd", dataset: str = "seq-digits", seed: int = 0,
                in_flight: int | None = None, tail: int = 100) -> dict:
    """Seconds Optuna spends on ``samples`` configurations of ``method``'s space with the search's
    sampler: asking (with the values suggested), reporting and telling; and the mean ask of the
    last ``tail`` (the cost of one ask at this size). ``in_flight`` configurations are open at once,
    by default a quarter of them, as in the promotion form, where a configuration stays running in
    Optuna while it waits at a rung (2,356 of 10,000 at most in a search of sgd on seq-digits)."""
    in_flight = max(16, samples // 4) if in_flight is None else in_flight
    import optuna
    from optuna.trial import TrialState

    from raycl.tune.options import SearchOptions
    from raycl.tune.sampler import make_sampler
    from raycl.tune.search import prepare_space
    from raycl.tune.space import DefineByRun

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = DefineByRun(prepare_space(SearchOptions(method=method, dataset=dataset)))
    study = optuna.create_study(direction="maximize", sampler=make_sampler(seed, window))
    rng = random.Random(seed)
    running, asks = [], []
    told = reported = 0.0
    while len(asks) < samples or running:
        if len(asks) < samples and len(running) < in_flight:
            start = time.perf_counter()
            trial = study.ask()
            space(trial)
            asks.append(time.perf_counter() - start)
            running.append(trial)
            continue
        trial = running.pop(rng.randrange(len(running)))
        value = rng.gauss(50, 10)
        start = time.perf_counter()
        trial.report(value, 1)
        reported += time.perf_counter() - start
        fate = rng.random()
        start = time.perf_counter()
        if fate < 0.72:  # ASHA's share at reduction factor 4, give or take
            study.tell(trial, state=TrialState.PRUNED)
        elif fate < 0.75:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, value + rng.gauss(0, 2))
        told += time.perf_counter() - start
    last = asks[-tail:]
    return {"ask_s": sum(asks), "tell_s": told, "report_s": reported, "last_ask_ms": 1000 * sum(last) / len(last)}


# ----- rung decisions ----------------------------------------------------------------------------------------
def rung_cost(samples: int, method: str = "sgd", dataset: str = "seq-digits", slots: int = 2, seed: int = 0) -> dict:
    """Seconds the promotion scheduler spends deciding a simulated search of ``samples``
    configurations with the search's rungs and widths on ``slots`` slots: each configuration's
    score a draw, each job's duration its width times its tasks."""
    import heapq

    from raycl.data import load_benchmark
    from raycl.tune.options import AUTO, SearchOptions
    from raycl.tune.promotion import FINISHED, Configuration, Outcome, PromotionScheduler, Widths
    from raycl.tune.rungs import search_rungs
    from raycl.tune.search import cohort_size, member_limit
    from raycl.vocabulary import Status

    options = SearchOptions(method=method, dataset=dataset, samples=samples, population=AUTO)
    benchmark = load_benchmark(dataset, None, options.val_fraction, options.data_seed)
    final = benchmark.n_tasks
    width, _ = cohort_size(options, slots, convolutional=benchmark.model != "mlp")
    widths = Widths(width, member_limit(options, benchmark.model != "mlp"), even=True)
    scheduler = PromotionScheduler(search_rungs(options, final), final, options.reduction_factor, samples, widths)
    rng = random.Random(seed)
    quality: dict[str, float] = {}

    def propose(structure: str = "one") -> Configuration:
        name = f"c{len(quality)}"
        quality[name] = rng.gauss(50, 10)
        config = Configuration(name, {"lr": quality[name]}, structure)
        scheduler.add(config)
        return config

    clock, running, deciding, decisions = 0.0, [], 0.0, 0
    while True:
        job = None
        while len(running) < slots:
            start = time.perf_counter()
            job = scheduler.next_job(slots - len(running), lambda group: propose(),
                                     lambda first, group: propose(first.structure))
            deciding += time.perf_counter() - start
            decisions += 1
            if job is None or job == FINISHED:
                break
            heapq.heappush(running, (clock + (2 + len(job.configs)) * job.tasks, job.id))
        if job == FINISHED:
            break
        clock, job_id = heapq.heappop(running)
        job = scheduler.jobs[job_id]
        done = job.end == final
        outcomes = {c: Outcome(Status.COMPLETED if done else Status.RUNNING, job.end, quality[c] + rng.gauss(0, 3))
                    for c in job.configs}
        start = time.perf_counter()
        scheduler.job_finished(job_id, outcomes, [2.0 + len(job.configs)] * job.tasks)
        deciding += time.perf_counter() - start
        decisions += 1
    return {"decide_s": deciding, "calls": decisions, "jobs": len(scheduler.jobs)}


# ----- a real search -----------------------------------------------------------------------------------------
def experiment_cost(experiment: str | Path) -> dict:
    """Training and trial overhead of a finished search in the promotion form, from its folder: the
    jobs' task seconds, and the slot-seconds of its span that were not training."""
    from raycl.tune.journal import read_journal
    from raycl.vocabulary import JOBS_DIR, RUNGS_FILE

    folder = Path(experiment)
    events = read_journal(str(folder / RUNGS_FILE))
    settings = next((e for e in events if e.get("event") == "search"), {})
    configurations = sum(1 for e in events if e.get("event") == "config")
    jobs = [json.loads(p.read_text()) for p in sorted((folder / JOBS_DIR).glob("*.json"))]
    if not jobs or not configurations:
        raise SystemExit(f"{folder}: no jobs/*.json or no configurations in its {RUNGS_FILE}: not a finished "
                         "search in the promotion form (--population auto or P > 1)")
    training = sum(sum(j["seconds"]) for j in jobs)
    in_jobs = sum(j["ended"] - j["started"] for j in jobs)
    span = max(j["ended"] for j in jobs) - min(j["started"] for j in jobs)
    slots = int(settings.get("slots") or 1)
    return {"configurations": configurations, "jobs": len(jobs), "slots": slots, "span_s": span,
            "training_s": training, "in_jobs_s": in_jobs, "overhead_s": max(0.0, span * slots - training)}


def run_search(samples: int, method: str, dataset: str, folder: str, window: int | None) -> tuple[Path, float]:
    """``launch/tune.py`` with ``samples`` configurations, --verbose 0; its experiment and wall time."""
    cmd = [sys.executable, str(TUNE), "--method", method, "--dataset", dataset, "--samples", str(samples),
           "--storage-path", folder, "--name", "scale", "--best-args", str(Path(folder) / "best.yaml"),
           "--verbose", "0", *(["--tpe-window", str(window or 0)] if window is not None else [])]
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"search failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return Path(folder) / "scale", wall


def search_scale(samples: int, method: str = "sgd", dataset: str = "seq-digits", window: int | None = None,
                 experiment: str | None = None) -> dict:
    """Print the machinery's cost per configuration at ``samples`` configurations; returns the parts."""
    from raycl.tune.options import SearchOptions

    window = SearchOptions.tpe_window if window is None else window
    optuna_part = optuna_cost(samples, window, method, dataset)
    rung_part = rung_cost(samples, method, dataset)
    wall = None
    with tempfile.TemporaryDirectory() as folder:
        if experiment is None:
            found, wall = run_search(samples, method, dataset, folder, window)
        else:
            found = Path(experiment)
        search = experiment_cost(found) if experiment != "-" else None
    per = 1000 / samples
    rows = [("Optuna", optuna_part["ask_s"] + optuna_part["tell_s"] + optuna_part["report_s"],
             f"ask {optuna_part['ask_s']:.2f} s, tell {optuna_part['tell_s']:.2f} s, report "
             f"{optuna_part['report_s']:.2f} s; the last asks {optuna_part['last_ask_ms']:.2f} ms each; "
             f"TPE window {window or 'none'}"),
            ("rung decisions", rung_part["decide_s"],
             f"{rung_part['calls']} calls of next_job/job_finished, {rung_part['jobs']} jobs (simulated)")]
    if search is not None:
        rows.append(("trial overhead", search["overhead_s"],
                     f"slot-seconds not training: {search['slots']} slots x {search['span_s']:.1f} s span - training;"
                     f" {search['in_jobs_s'] - search['training_s']:.1f} s of it inside jobs, beside their tasks"))
        rows.append(("training", search["training_s"], f"{search['jobs']} jobs' task seconds"))
    print(f"\nthe search's machinery at {samples} configurations ({method} on {dataset})")
    header = f"{'part':16} {'seconds':>9} {'ms per configuration':>21}  what"
    print(header + "\n" + "-" * len(header))
    for name, seconds, what in rows:
        print(f"{name:16} {seconds:9.2f} {seconds * per:21.2f}  {what}")
    if wall is not None:
        if search is not None:
            outside = wall - search["span_s"]
            print(f"{'start and end':16} {outside:9.2f} {outside * per:21.2f}  the wall outside the jobs' span: Ray "
                  "and the data before the first job, the export after the last")
        print(f"{'search wall':16} {wall:9.2f} {wall * per:21.2f}  launch/tune.py --samples {samples} --verbose 0, "
              "start to end")
    return {"optuna": optuna_part, "rungs": rung_part, "search": search, "wall_s": wall}


# ----- outputs -----------------------------------------------------------------------------------------------
def synthetic_records(samples: int, space, final_task: int, rung: int = 2, seed: int = 0) -> list:
    """``samples`` configurations as a search in the promotion form records them: values drawn from
    ``space``, a quarter completed (validation per task, a test row), the rest pruned at ``rung``, a
    few diverged; jobs of 16."""
    from raycl.tune.export import TrialRecord
    from raycl.vocabulary import Status

    rng = random.Random(seed)
    records = []
    for index in range(samples):
        config = {}
        for dim in space.dimensions:
            if dim.kind == "fixed":
                config[dim.name] = dim.values[0]
            elif dim.kind == "choice":
                config[dim.name] = rng.choice(dim.values)
            elif dim.kind == "loguniform":
                config[dim.name] = math.exp(rng.uniform(math.log(dim.low), math.log(dim.high)))
            else:
                config[dim.name] = rng.uniform(dim.low, dim.high)
        fate = rng.random()
        status = Status.COMPLETED if fate < 0.25 else Status.DIVERGED if fate > 0.99 else Status.PRUNED
        tasks = final_task if status == Status.COMPLETED else rung
        quality = rng.gauss(80, 8)
        curve = [min(100.0, quality + rng.gauss(0, 2)) for _ in range(tasks)]
        metrics = {"objective": curve[-1], **{f"val_class_il_task{j + 1}": rng.uniform(50, 100) for j in range(tasks)},
                   "val_class_il": curve[-1], "val_task_il": min(100.0, curve[-1] + 10)}
        test = {"class_il": [rng.uniform(50, 100) for _ in range(final_task)],
                "task_il": [rng.uniform(80, 100) for _ in range(final_task)]} if status == Status.COMPLETED else None
        job = f"j{index // 16}"
        records.append(TrialRecord(
            trial_id=f"{job}-{index % 16}", status=status, config=config,
            objective=None if status == Status.DIVERGED else curve[-1], tasks_trained=tasks,
            objective_by_task=curve, last_metrics=metrics, test=test, error=None, cohort=job,
            cohort_member=index % 16, trials=[job], jobs=[job] if status == Status.PRUNED else [job, f"p{index // 64}"]))
    return records


def progress_cost(records: list, final_task: int, searched: list[str], steps: int = 200) -> float:
    """Milliseconds the progress line takes at one Tune step (its status line and its table) once
    every configuration of ``records`` is known to it."""
    from raycl.tune.progress import SearchProgress
    from raycl.vocabulary import CONFIGS, JOB, SUMMARY_KEY

    class Job:
        def __init__(self, name: str, members: list):
            self.trial_id = name
            self.config = {JOB: {"configs": [{"id": r.trial_id, "params": r.config} for r in members]}}

    progress = SearchProgress(len(records), final_task, searched, stream=io.StringIO(), interval=math.inf,
                              table_interval=math.inf)
    for start in range(0, len(records), 16):
        members = records[start:start + 16]
        job = Job(members[0].cohort, members)
        progress.on_trial_start(0, [], job)
        progress.on_trial_result(0, [], job, {"task": final_task, CONFIGS: [
            {SUMMARY_KEY: r.trial_id, "status": r.status, "task": r.tasks_trained, "objective": r.objective}
            for r in members]})
        progress.on_trial_complete(0, [], job)
    start = time.perf_counter()
    for _ in range(steps):
        progress.show()
        progress.status_line()
        progress.table()
    return 1000 * (time.perf_counter() - start) / steps


def study_cost(samples: int, storage, seed: int = 0) -> dict:
    """Seconds an Optuna study in ``storage`` takes for ``samples`` trials of four values, each
    reported twice and told, with Optuna's random sampler (the storage's cost alone)."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.create_study(direction="maximize", storage=storage, study_name="scale",
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    rng = random.Random(seed)
    timed = {"ask_s": 0.0, "report_s": 0.0, "tell_s": 0.0}
    for _ in range(samples):
        start = time.perf_counter()
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        trial.suggest_float("weight", 0.1, 1.0)
        trial.suggest_categorical("beta", [0.0, 0.1, 1.0])
        trial.suggest_categorical("width", [10, 100, 1000])
        trial.set_user_attr("audit", False)
        middle = time.perf_counter()
        trial.report(rng.random(), 1)
        trial.report(rng.random(), 2)
        reported = time.perf_counter()
        if rng.random() < 0.75:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, rng.random())
        end = time.perf_counter()
        timed["ask_s"] += middle - start
        timed["report_s"] += reported - middle
        timed["tell_s"] += end - reported
    start = time.perf_counter()
    trials = study.get_trials(deepcopy=False)
    timed["read_all_s"] = time.perf_counter() - start
    assert len(trials) == samples
    return timed


def outputs_cost(samples: int, method: str = "vib", dataset: str = "seq-digits", storages: bool = True) -> dict:
    """Seconds each output of a search of ``samples`` configurations takes (built, not trained)."""
    import logging

    from raycl.data import load_benchmark
    from raycl.tune.export import export_records, print_summary
    from raycl.tune.options import SearchOptions
    from raycl.tune.report import write_report
    from raycl.tune.search import prepare_space

    logging.getLogger("raycl").setLevel(logging.WARNING)
    timed: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        options = SearchOptions(method=method, dataset=dataset, samples=samples, population=16,
                                storage_path=folder, name="scale", best_args=str(Path(folder) / "best.yaml"))
        options.validate()
        space = prepare_space(options)
        benchmark = load_benchmark(dataset, None, options.val_fraction, options.data_seed)
        records = synthetic_records(samples, space, benchmark.n_tasks)
        start = time.perf_counter()
        report = export_records(records, options, space, benchmark)
        timed["table_s"] = time.perf_counter() - start
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            print_summary(report, options, space, benchmark)
        timed["summary_s"] = time.perf_counter() - start
        timed["progress_step_ms"] = progress_cost(records, benchmark.n_tasks, space.searched)
        start = time.perf_counter()
        write_report(options.experiment_dir)
        timed["report_s"] = time.perf_counter() - start
        if storages:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            sqlite = study_cost(samples, optuna.storages.RDBStorage(f"sqlite:///{folder}/optuna.db"))
            timed["sqlite_s"] = sqlite["ask_s"] + sqlite["report_s"] + sqlite["tell_s"]
            timed["sqlite_read_s"] = sqlite["read_all_s"]
            from optuna.storages.journal import JournalFileBackend

            journal = study_cost(samples, optuna.storages.JournalStorage(JournalFileBackend(f"{folder}/optuna.log")))
            timed["journal_s"] = journal["ask_s"] + journal["report_s"] + journal["tell_s"]
            timed["journal_read_s"] = journal["read_all_s"]
    return timed


def outputs_scale(sizes: list[int], storages_up_to: int = 10_000) -> None:
    """Print :func:`outputs_cost` for each size (the Optuna storages up to ``storages_up_to``)."""
    columns = [("table_s", "trials table s"), ("summary_s", "summary s"), ("progress_step_ms", "progress ms/step"),
               ("report_s", "report s"), ("sqlite_s", "sqlite study s"), ("sqlite_read_s", "sqlite read s"),
               ("journal_s", "journal study s"), ("journal_read_s", "journal read s")]
    header = f"{'configurations':>14} " + " ".join(f"{title:>{len(title)}}" for _, title in columns)
    print(f"\nwhat a search writes and shows, by its size (built, not trained)\n{header}\n{'-' * len(header)}")
    for size in sizes:
        timed = outputs_cost(size, storages=size <= storages_up_to)
        print(f"{size:>14} " + " ".join(f"{timed[key]:>{len(title)}.3f}" if key in timed else f"{'-':>{len(title)}}"
                                        for key, title in columns), flush=True)
