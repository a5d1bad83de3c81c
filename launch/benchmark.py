"""Full-size runs on real MNIST, each as its own `launch/train.py` process, with their figures.

Prints per run: whole-process wall time, training-loop time, peak RSS and final test accuracy.
Each run uses one torch thread unless --threads says otherwise.

    python launch/benchmark.py --data-root ../shared/data
    python launch/benchmark.py --runs seq-mnist-derpp-500 --repeat 3
    python launch/benchmark.py --runs --search 64     # only the search figures
    python launch/benchmark.py --runs --search 64 --search-population 1 16
    python launch/benchmark.py --runs --population 1 2 4 8 16

--population P ... runs `train.py --seeds P` for seq-mnist DER++ 500 (DER paper arguments; others
with --population-runs) for each P, once as one population and once with --one-at-a-time (the seeds
as separate runs in one process), and prints whole-process wall time, peak RSS, the cost per member,
the mean test accuracy and the largest gap between a member and its solo run, with the ratios to
P = 1 measured in the same invocation.

    python launch/benchmark.py --runs --population 1 8 --population-runs seq-mnist-agem-500 seq-mnist-ewc

--search N also runs `launch/tune.py --method derpp --dataset seq-mnist --buffer-size 500
--samples N` (another with --search-method / --search-dataset; for each --trial-seeds S,
--search-population P and --search-grace G given) and prints its wall time, the peak memory of the
whole process tree (sum of proportional set sizes, so the object store's shared pages count once),
how many configurations the rungs stopped, the task-trainings run, each rung's signal (how many it
stopped, the rank correlation of its scores with the final objective), the edge-of-space warnings,
and the winner's test accuracy over seeds 0-4 retrained on all the training data.

    python launch/benchmark.py --runs --search 32 --search-population 1 8
    python launch/benchmark.py --runs --search 64 --search-grace 1 auto --search-audit 0.25

--full-populations N runs the N-sample seq-mnist DER++ 500 search (`--verbose 0`) twice, with
--population 1 and with the default auto (the promotion form, full populations), without a final
evaluation, and prints per run: wall time, task-trainings (member-tasks), slot use (member-tasks over
the planned width x the tasks each trial trained), the seconds the last trial ran alone, the
winner's validation objective; then the wall-time ratio.

    python launch/benchmark.py --runs --full-populations 32

--chf DROP ... runs the continual hyperparameter framework on seq-mnist (--chf-method, DER++ 500 by
default, the DER repository's grid and decay) twice per drop, in process and one thread: as
populations (the plasticity grid with every learning rate's first stability step, then the rest of
the ladder where that step falls short) and as the sequential loop of retrains that stops at the
first accepted step; prints both wall times, the retrains per task and
whether the decisions agree.

    python launch/benchmark.py --runs --chf 0.2 0.03

--gpu runs the GPU path's checks and figures on one CUDA device (launch/gpu_benchmark.py), with
torch alone (no Ray, no Optuna): every method on CUDA, float64 CUDA against CPU, resumes across
devices, then in steady state (a warm-up task, then timed tasks) member-steps per second and the
memory a GPU share needs by population size for the MLP and the ResNet, the stacked ResNet's
layouts and fp32 against TF32, fp32 against bf16, and a population kept full against one shrinking
from 256 to 64 at a rung. Where CUDA does not work it ends at once with one line naming the NVIDIA
driver, torch's CUDA version and the fix, exit 2. --device cpu --quick runs the same code at toy
sizes on the CPU (a smoke test).

    python launch/benchmark.py --gpu
    python launch/benchmark.py --gpu --device cpu --quick

--search-scale N prints the search machinery's cost per configuration at N configurations, split into
Optuna (the search's sampler, in process), rung decisions (the promotion scheduler on a simulated
search), trial overhead and training (from a real `launch/tune.py --samples N --verbose 0` search of
--scale-method on --scale-dataset, sgd on seq-digits by default, or the folder --scale-experiment
names). --outputs-scale N ... times what a search of N configurations writes and shows: the trials
table, the summary, the progress line, the report, an Optuna study in SQLite and in a journal file.

    python launch/benchmark.py --search-scale 2000
    python launch/benchmark.py --search-scale 10000 --scale-experiment experiments/sgd-seq-digits
    python launch/benchmark.py --outputs-scale 1000 10000 100000

--member-memory prints the bytes a member costs where they grew with the data (launch/memory_benchmark.py):
gen_replay's generator training on a perm-mnist task, VIB's simple replay after 20 tasks, SYNERgy's
per-example Fisher on resnet18; measured at P = 2 on the CPU and scaled to P = 256 (16 for resnet18).

    python launch/benchmark.py --member-memory --data-root ../shared/data

--mixed-structure P ... runs only the section of members that differ in a formerly structural
hyperparameter (launch/mixed_benchmark.py): DER++ member-steps per second on seq-mnist of one
population of mixed buffer sizes (200/500/5120), of per-group replay rows (the cost of mixed
minibatches) and of SGD beside Adam, against one population per value.

    python launch/benchmark.py --mixed-structure 8 16

--stacked-convs runs only the ResNet population section (launch/conv_benchmark.py): DER++ steps of
a 20-filter ResNet-18 at P = 1, 4, 16 (--convs-populations), stacked against the member loop and
against P runs one at a time, with peak RSS; then 4 seeds of DER++ on generated seq-cifar10
(reduced-resnet18, one epoch, --convs-images a task; 0 skips it) in one train.py process against 4
processes in turn.

    python launch/benchmark.py --stacked-convs
    python launch/benchmark.py --stacked-convs --convs-populations 1 4 --convs-steps 2 --convs-images 0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = Path(__file__).resolve().parent / "train.py"

# name -> train.py arguments (the DER paper's arguments for each row)
RUNS = {
    "seq-mnist-derpp-500": ["--method", "derpp", "--dataset", "seq-mnist", "--buffer-size", "500", "--lr", "0.03",
                            "--batch-size", "10", "--minibatch-size", "10", "--alpha", "1.0", "--beta", "0.5",
                            "--n-epochs", "1"],
    "seq-mnist-er-500": ["--method", "er", "--dataset", "seq-mnist", "--buffer-size", "500", "--lr", "0.1",
                         "--minibatch-size", "10"],
    "seq-mnist-sgd": ["--method", "sgd", "--dataset", "seq-mnist", "--lr", "0.03"],
    "perm-mnist-derpp-500": ["--method", "derpp", "--dataset", "perm-mnist", "--buffer-size", "500", "--lr", "0.2",
                             "--alpha", "1.0", "--beta", "0.5"],
    "rot-mnist-er-500": ["--method", "er", "--dataset", "rot-mnist", "--buffer-size", "500", "--lr", "0.2"],
    # The seed systems' published settings, shortened where a solo run would take many minutes.
    "mer-rotations-mer-500": ["--method", "mer", "--dataset", "mer-rotations", "--samples-per-task", "200",
                              "--buffer-size", "500", "--lr", "0.1", "--beta", "0.01", "--gamma", "1",
                              "--minibatch-size", "10", "--batches-per-example", "10"],
    "seq-mnist-clser-500": ["--method", "clser", "--dataset", "seq-mnist", "--buffer-size", "500", "--lr", "0.2",
                            "--batch-size", "10", "--minibatch-size", "10"],
    "seq-mnist-synergy-500": ["--method", "synergy", "--dataset", "seq-mnist", "--buffer-size", "500", "--lr", "0.2",
                              "--batch-size", "10", "--minibatch-size", "10", "--reg-weight", "1",
                              "--ema-update-freq", "1", "--penalty-weight", "1", "--fisher-alpha", "0.99",
                              "--fisher-update-freq", "0.8"],
    "seq-digits-gen_replay": ["--method", "gen_replay", "--dataset", "seq-digits"],
    "seq-mnist-agem-500": ["--method", "agem", "--dataset", "seq-mnist", "--buffer-size", "500", "--lr", "0.1",
                           "--minibatch-size", "128"],
    "seq-mnist-ewc": ["--method", "ewc", "--dataset", "seq-mnist", "--lr", "0.03", "--ewc-lambda", "100"],
}
DEFAULT_RUNS = ("seq-mnist-derpp-500", "seq-mnist-er-500", "seq-mnist-sgd", "perm-mnist-derpp-500",
                "rot-mnist-er-500")


def measure(name: str, args: list[str], data_root: str | None, threads: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run.json"
        cmd = [sys.executable, str(TRAIN), *args, "--threads", str(threads), "--seed", str(seed), "--json", str(out)]
        if data_root:
            cmd += ["--data-root", data_root]
        start = time.perf_counter()
        # wait4 gives this child's own peak RSS, not the maximum over all children so far.
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        stderr = proc.stderr.read()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{name} failed:\n{stderr[-2000:]}")
        doc = json.loads(out.read_text())
    setting = next(iter(doc["test"]))
    return {"run": name, "wall_s": wall, "train_s": doc["train_s"][0], "peak_rss_gb": usage.ru_maxrss / 2**20,
            "setting": setting, "test_acc": doc["test"][setting]["mean"], "test_std": doc["test"][setting]["std"],
            "per_seed": doc["test"][setting]["per_seed"]}


def measure_population(sizes: list[int], run_names: list[str], data_root: str | None, threads: int,
                       device: str | None) -> None:
    """train.py --seeds P for each run, as one population and one seed at a time, and how far each
    member's final test accuracy lies from the same seed's solo run."""
    header = (f"{'run':24} {'P':>4} {'mode':>13} {'wall s':>8} {'per member s':>13} {'x wall P=1':>11} "
              f"{'peak RSS GB':>12} {'test acc':>15} {'max |member - solo|':>20}")
    print(header)
    print("-" * len(header))
    for name in run_names:
        args = RUNS[name] + (["--device", device] if device else [])
        base: dict[str, float] = {}
        for size in sizes:
            together = None
            for mode, extra in (("population", []), ("one at a time", ["--one-at-a-time"])):
                if size == 1 and extra:
                    continue  # one seed is one run either way
                r = measure(f"{name} P={size}", [*args, "--seeds", str(size), *extra], data_root, threads, 0)
                base.setdefault("wall", r["wall_s"])
                gap = ""
                if together is None:
                    together = r["per_seed"]
                else:
                    gap = f"{max(abs(a - b) for a, b in zip(together, r['per_seed'])):.2f}"
                print(f"{name:24} {size:>4} {mode:>13} {r['wall_s']:8.2f} {r['wall_s'] / size:13.2f} "
                      f"{r['wall_s'] / base['wall']:11.2f} {r['peak_rss_gb']:12.3f} "
                      f"{r['test_acc']:7.2f} ± {r['test_std']:.2f} {gap:>20}", flush=True)


def tree_pss_gb(root_pid: int) -> float:
    """Sum of the proportional set size of ``root_pid`` and all its descendants, in GB."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total_kb, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
        except OSError:
            pass
    return total_kb / 2**20


def measure_search(samples: int, data_root: str | None, trial_seeds: int = 1, population: str = "1",
                   method: str = "derpp", dataset: str = "seq-mnist", grace: str = "auto", audit: float = 0.0,
                   extra: tuple[str, ...] = ()) -> float:
    """Run the search and the winner's final evaluation, print their figures; returns the wall time."""
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as folder:
        best = Path(folder) / "best.yaml"
        from raycl.hparams import param_specs
        from raycl.methods import get_method

        buffer = ["--buffer-size", "500"] if "buffer_size" in param_specs(get_method(method).Config) else []
        cmd = [sys.executable, str(TRAIN.parent / "tune.py"), "--method", method, "--dataset", dataset,
               *buffer, "--samples", str(samples), "--storage-path", folder, "--name", "bench",
               "--best-args", str(best), "--verbose", "0", "--trial-seeds", str(trial_seeds),
               "--population", str(population), "--grace-period", str(grace), "--audit-fraction", str(audit),
               *extra]
        if data_root:
            cmd += ["--data-root", data_root]
        env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        peak = 0.0
        while proc.poll() is None:
            peak = max(peak, tree_pss_gb(proc.pid))
            time.sleep(1.0)
        wall = time.perf_counter() - start
        output = proc.stdout.read()
        if proc.returncode != 0:
            raise SystemExit(f"search failed:\n{output[-3000:]}")
        rows = pq.read_table(Path(folder) / "bench" / "trials.parquet").to_pylist()
        signal = json.loads((Path(folder) / "bench" / "rung_signal.json").read_text())
        summary = [line for line in output.splitlines() if line.startswith("    after task")
                   or "edge of the space" in line or "weak evidence" in line or "cohorts of" in line
                   or "slot use" in line]
        stopped = sum(r["status"] == "pruned" for r in rows)
        n_tasks = max(r["tasks_trained"] for r in rows)
        fraction = sum(r["tasks_trained"] for r in rows) / (len(rows) * n_tasks)
        best_row = max((r for r in rows if r["status"] == "completed"), key=lambda r: r["objective"])
        out = Path(folder) / "final.json"
        final = subprocess.run([sys.executable, str(TRAIN), "--method", method, "--dataset", dataset,
                                "--load-best-args", str(best), "--seeds", "5", "--val-fraction", "0",
                                "--threads", "1", "--json", str(out),
                                *(["--data-root", data_root] if data_root else [])],
                               capture_output=True, text=True)
        if final.returncode != 0:
            raise SystemExit(f"final evaluation failed:\n{final.stderr[-3000:]}")
        doc = json.loads(out.read_text())
        setting = next(iter(doc["test"]))
        test, config = doc["test"][setting], doc["config"]
    print(f"\nsearch {dataset} {method}{' 500' if buffer else ''}, {samples} samples, {' '.join(extra)} --trial-seeds {trial_seeds} --population "
          f"{population} --grace-period {grace} --audit-fraction {audit}: wall {wall:.1f} s, peak PSS of the process "
          f"tree {peak:.2f} GB, {stopped}/{len(rows)} configurations stopped at the rungs, task-trainings run "
          f"{fraction:.3f} of samples x tasks ({sum(r['tasks_trained'] for r in rows)})")
    print(f"{signal['rungs_described']}")
    for line in summary:
        print(line.strip())
    audited = [r for r in rows if r.get("audit") and r["status"] == "completed"]
    if audited:
        # The audited configurations ran every task whatever the rungs said: an unselected sample the
        # winner can be held against.
        best_audited = max(audited, key=lambda r: r["objective"])
        beaten = sum(r["objective"] > best_row["objective"] for r in audited)
        print(f"audited sample: {len(audited)} completed, best audited objective {best_audited['objective']:.2f}; "
              f"{beaten} audited configuration(s) above the winner")
    print(f"best config {config}")
    print(f"winner's validation objective {best_row['objective']:.2f}"
          + (f" ± {best_row['objective_std']:.2f} over its {trial_seeds} seeds" if trial_seeds > 1 else ""))
    print(f"best config test {setting} over seeds 0-4, all training data: {test['mean']:.2f} ± {test['std']:.2f} "
          f"(per seed {', '.join(f'{v:.2f}' for v in test['per_seed'])})", flush=True)
    return wall


def measure_full_populations(samples: int, data_root: str | None, populations=("1", "auto"),
                             method: str = "derpp", dataset: str = "seq-mnist") -> None:
    """The search with each --population, no final evaluation: wall, task-trainings, slot use, tail."""
    import re

    import pyarrow.parquet as pq

    header = (f"{'--population':>12} {'wall s':>7} {'task-trainings':>15} {'slot use':>9} {'tail s':>7} "
              f"{'jobs/trials':>12} {'winner val':>11}")
    print(f"\n{dataset} {method} 500, {samples} samples, --verbose 0\n{header}\n{'-' * len(header)}")
    walls = {}
    for population in populations:
        with tempfile.TemporaryDirectory() as folder:
            cmd = [sys.executable, str(TRAIN.parent / "tune.py"), "--method", method, "--dataset", dataset,
                   "--buffer-size", "500", "--samples", str(samples), "--storage-path", folder, "--name", "bench",
                   "--best-args", str(Path(folder) / "best.yaml"), "--verbose", "0", "--population", population,
                   *(["--data-root", data_root] if data_root else [])]
            env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            walls[population] = wall = time.perf_counter() - start
            if proc.returncode != 0:
                raise SystemExit(f"search failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
            rows = pq.read_table(Path(folder) / "bench" / "trials.parquet").to_pylist()
            usage = re.search(r"slot use (\d+)% \((\d+) member-tasks trained\); the last (?:job|trial) ran alone "
                              r"for ([\d.]+) s", proc.stdout)
            units = re.search(r"in (\d+) (jobs|trials|cohorts)", proc.stdout)
            best = max((r["objective"] for r in rows if r["status"] == "completed"), default=float("nan"))
        slot, trained, tail = usage.groups() if usage else ("?", "?", "?")
        print(f"{population:>12} {wall:7.1f} {trained:>15} {slot + '%':>9} {tail:>7} "
              f"{units.group(1) if units else '?':>12} {best:11.2f}", flush=True)
    first = next(iter(walls.values()))
    print("wall against the first: " + ", ".join(f"--population {p} {w / first:.2f}x" for p, w in walls.items()))


def measure_chf(drops: list[float], method: str, data_root: str | None, threads: int) -> None:
    import torch

    from raycl.data import load_benchmark
    from raycl.methods import make_config
    from raycl.selection import Branches, ChfSettings, decisions, select_per_task

    torch.set_num_threads(threads)
    bench = load_benchmark("seq-mnist", data_root)
    base = make_config(method, {"buffer_size": 500, "minibatch_size": 32}, bench.defaults_for(method))
    for drop in drops:
        settings = ChfSettings(drop=drop)
        runs = {}
        for form, sequential in (("population", False), ("sequential", True)):
            start = time.perf_counter()
            result = select_per_task(Branches(bench, method, base, seed=0), "chf", settings, sequential=sequential)
            runs[form] = (time.perf_counter() - start, result)
        (pop_s, pop), (seq_s, seq) = runs["population"], runs["sequential"]
        retrains = [len(choice.candidates) for choice in seq.choices]
        print(f"chf {method} seq-mnist 500, drop {drop}: population {pop_s:.1f} s ({pop.trainings} task-trainings), "
              f"sequential {seq_s:.1f} s ({seq.trainings}; retrains per task {retrains}), ratio {pop_s / seq_s:.2f}x, "
              f"decisions {'equal' if decisions(pop) == decisions(seq) else 'DIFFER'}")
        for choice in pop.choices:
            print(f"  task {choice.task + 1}: {choice.values}  A* {choice.evidence['A*']:.2f}  "
                  f"decays {choice.evidence.get('decays')}  val {choice.winner.current:.2f}")
        test = pop.run.record.row(0, -1, bench.settings[0], "test")
        print(f"  chosen path test {bench.settings[0]} {test.mean():.2f} (per task {', '.join(f'{v:.1f}' for v in test)})",
              flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="*", default=list(DEFAULT_RUNS), choices=sorted(RUNS),
                        help="which runs (default: all; none with --search)")
    parser.add_argument("--search", type=int, default=0, metavar="N",
                        help="also measure a seq-mnist DER++ 500 search of N samples (default: skip)")
    parser.add_argument("--trial-seeds", type=int, nargs="+", default=[1], metavar="S",
                        help="run the --search once for each of these --trial-seeds (default 1)")
    parser.add_argument("--search-population", nargs="+", default=["1"], metavar="P",
                        help="run the --search once for each of these --population P or auto (default 1)")
    parser.add_argument("--search-grace", nargs="+", default=["auto"], metavar="G",
                        help="run the --search once for each of these --grace-period G (default auto)")
    parser.add_argument("--search-audit", type=float, default=0.0, metavar="F",
                        help="--audit-fraction of every --search (default 0)")
    parser.add_argument("--search-seed", type=int, nargs="+", default=[0], metavar="K",
                        help="run the --search once for each of these --search-seed K (default 0)")
    parser.add_argument("--search-method", default="derpp", help="method of the --search (default derpp)")
    parser.add_argument("--search-dataset", default="seq-mnist", help="dataset of the --search (default seq-mnist)")
    parser.add_argument("--data-root", default=None, help="folder holding MNIST/raw (default $RAYCL_DATA)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--repeat", type=int, default=1, help="repeat each run, seeds 0..N-1 (default 1)")
    parser.add_argument("--population", type=int, nargs="*", default=None, metavar="P",
                        help="measure seq-mnist DER++ 500 with --seeds P for each P (e.g. 1 2 4 8 16)")
    parser.add_argument("--population-runs", nargs="+", default=["seq-mnist-derpp-500"], choices=sorted(RUNS),
                        metavar="RUN", help="the runs of --population (default seq-mnist-derpp-500; "
                                            f"allowed: {', '.join(sorted(RUNS))})")
    parser.add_argument("--device", default=None,
                        help="torch device of the --population runs (default cpu) and of --gpu (default cuda)")
    parser.add_argument("--full-populations", type=int, default=0, metavar="N",
                        help="time an N-sample seq-mnist DER++ 500 search with --population 1 and auto: wall, "
                             "task-trainings, slot use, tail (default: skip)")
    parser.add_argument("--chf", type=float, nargs="*", default=None, metavar="DROP",
                        help="time the continual hyperparameter framework as populations and as sequential "
                             "retrains for each accuracy drop (e.g. 0.2 0.03)")
    parser.add_argument("--chf-method", default="derpp", help="method of --chf (default derpp)")
    parser.add_argument("--gpu", action="store_true",
                        help="only the GPU path's checks and figures on one CUDA device (exit 2 without one)")
    parser.add_argument("--gpu-mlp-populations", type=int, nargs="+", default=None, metavar="P",
                        help="population sizes of --gpu's seq-mnist MLP figures (default 1 16 64 256)")
    parser.add_argument("--gpu-resnet-populations", type=int, nargs="+", default=None, metavar="P",
                        help="population sizes of --gpu's ResNet figures (default 1 4 16)")
    parser.add_argument("--quick", action="store_true",
                        help="--gpu at toy sizes (with --device cpu: a smoke test of the command on a CPU)")
    parser.add_argument("--member-memory", action="store_true",
                        help="only the bytes per member of gen_replay, VIB's replay and SYNERgy's Fisher "
                             "(launch/memory_benchmark.py; needs MNIST)")
    parser.add_argument("--stacked-convs", action="store_true",
                        help="only the stacked ResNet population section (launch/conv_benchmark.py)")
    parser.add_argument("--convs-populations", type=int, nargs="+", default=[1, 4, 16], metavar="P",
                        help="population sizes of --stacked-convs (default 1 4 16)")
    parser.add_argument("--convs-steps", type=int, default=10,
                        help="timed DER++ steps per run of --stacked-convs (default 10)")
    parser.add_argument("--convs-images", type=int, default=1000,
                        help="generated CIFAR-10 images a task of --stacked-convs' target row (default 1000; "
                             "0 skips the row)")
    parser.add_argument("--mixed-structure", type=int, nargs="*", default=None, metavar="P",
                        help="only members of mixed buffer sizes, minibatches or optimisers in one population "
                             "against one population per value, at each P (launch/mixed_benchmark.py; default 8 16)")
    parser.add_argument("--mixed-steps", type=int, default=300, help="timed steps of --mixed-structure (default 300)")
    parser.add_argument("--search-scale", type=int, default=0, metavar="N",
                        help="only the search machinery's cost per configuration at N configurations: Optuna, rung "
                             "decisions, trial overhead, training (launch/scale_benchmark.py)")
    parser.add_argument("--scale-method", default="sgd", help="method of --search-scale (default sgd)")
    parser.add_argument("--scale-dataset", default="seq-digits", help="dataset of --search-scale (default seq-digits)")
    parser.add_argument("--scale-experiment", default=None, metavar="DIR",
                        help="--search-scale reads this finished search's folder instead of running one ('-': "
                             "no search, Optuna and rung decisions only)")
    parser.add_argument("--tpe-window", type=int, default=None, metavar="W",
                        help="the sampler's window for --search-scale (default: launch/tune.py's; 0: none)")
    parser.add_argument("--outputs-scale", type=int, nargs="*", default=None, metavar="N",
                        help="only the time each output of a search of N configurations takes (built, not trained): "
                             "trials table, summary, progress line, report, Optuna storages (e.g. 1000 10000)")
    args = parser.parse_args(argv)
    if args.search_scale or args.outputs_scale:
        import scale_benchmark

        if args.search_scale:
            scale_benchmark.search_scale(args.search_scale, args.scale_method, args.scale_dataset, args.tpe_window,
                                         args.scale_experiment)
        if args.outputs_scale:
            scale_benchmark.outputs_scale(args.outputs_scale)
        return 0
    if args.member_memory:
        import memory_benchmark

        return memory_benchmark.main(args.data_root)
    if args.mixed_structure is not None:
        import mixed_benchmark

        return mixed_benchmark.main(args.data_root, args.mixed_structure or [8, 16], args.mixed_steps, args.threads)
    if args.stacked_convs:
        import conv_benchmark

        return conv_benchmark.main(args.convs_populations, args.convs_steps, args.convs_images, args.threads,
                                   target=args.convs_images > 0)
    if args.gpu:
        import gpu_benchmark

        return gpu_benchmark.main(args.data_root, args.gpu_mlp_populations, args.gpu_resnet_populations,
                                  args.device or "cuda", quick=args.quick)
    if args.runs:
        measure_runs(args)
    if args.population:
        measure_population(args.population, args.population_runs, args.data_root, args.threads, args.device)
    if args.chf:
        measure_chf(args.chf, args.chf_method, args.data_root, args.threads)
    if args.full_populations:
        measure_full_populations(args.full_populations, args.data_root, method=args.search_method,
                                 dataset=args.search_dataset)
    if args.search:
        walls = {}
        for search_seed in args.search_seed:
            for trial_seeds in args.trial_seeds:
                for population in args.search_population:
                    for grace in args.search_grace:
                        walls[search_seed, trial_seeds, population, grace] = measure_search(
                            args.search, args.data_root, trial_seeds, population, args.search_method,
                            args.search_dataset, grace, args.search_audit,
                            extra=("--search-seed", str(search_seed)))
        if len(walls) > 1:
            (k0, s0, p0, g0), first = next(iter(walls.items()))
            print(f"\nsearch wall time against --search-seed {k0} --trial-seeds {s0} --population {p0} "
                  f"--grace-period {g0}: " + ", ".join(f"K={k} S={s} P={p} G={g} {wall / first:.2f}x"
                                                       for (k, s, p, g), wall in walls.items()))
    return 0


def measure_runs(args) -> None:
    header = f"{'run':24} {'seed':>4} {'wall s':>7} {'train s':>8} {'peak RSS GB':>12} {'test acc':>9}"
    print(header)
    print("-" * len(header))
    for name in args.runs:
        for seed in range(args.repeat):
            r = measure(name, RUNS[name], args.data_root, args.threads, seed)
            print(f"{name:24} {seed:>4} {r['wall_s']:7.2f} {r['train_s']:8.2f} {r['peak_rss_gb']:12.3f} "
                  f"{r['test_acc']:8.2f}%  ({r['setting']})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
