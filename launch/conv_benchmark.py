"""``launch/benchmark.py --stacked-convs``: ResNet populations, stacked against the alternatives.

Two tables, on the CPU, from generated CIFAR-10 files (speed does not depend on the pixels):

1. DER++ steps (batch and buffer minibatches of 32) of a 20-filter ResNet-18 on 32x32 images, a
   fixed number of steps per run, at each population size P: the stacked population (one pass per
   part for all members), the member loop (each member's pass in turn; what ResNet populations were
   before), and P populations of one trained one after another. Wall time of the steps, its ratio
   to the stacked form's and to P = 1, and the peak RSS; each measurement in a process of its own,
   so that peak RSS is its own.
2. The target row: 4 seeds of DER++ on seq-cifar10 (reduced-resnet18, one epoch) as one
   ``launch/train.py --seeds 4`` process against the same 4 seeds as 4 ``launch/train.py``
   processes one after another, process starts included (target: stacked at most 0.8x).

:func:`derpp_step_seconds` is also what ``launch/gpu_benchmark.py`` times on CUDA.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import raycl.population.nets
from raycl.data import load_benchmark
from raycl.data.synthetic import write_cifar10
from raycl.methods import get_population_method, make_config
from raycl.population.inputs import MemberInputs

TRAIN = Path(__file__).resolve().parent / "train.py"
MODES = ("stacked", "member loop", "one at a time")
DERPP = {"buffer_size": 500, "lr": 0.03, "alpha": 1.0, "beta": 0.5, "batch_size": 32, "minibatch_size": 32,
         "n_epochs": 1}
# Training images a task of the generated seq-cifar10 of table 1 (its steps cycle over them).
STEP_IMAGES = 200


@contextlib.contextmanager
def member_loop_only():
    """Populations built inside run the ResNet member by member (MemberLoop), as before it was stacked."""
    stackable = raycl.population.nets.stackable_resnet
    raycl.population.nets.stackable_resnet = lambda module: False
    try:
        yield
    finally:
        raycl.population.nets.stackable_resnet = stackable


def generated_cifar(root: Path, images_per_task: int, backbone: str):
    """seq-cifar10 on ``backbone`` from generated files of ``images_per_task`` images per task."""
    return load_benchmark("seq-cifar10", write_cifar10(root, images_per_batch=images_per_task), backbone=backbone)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def derpp_step_seconds(bench, size: int, mode: str, steps: int, device: torch.device | str, warmup: int = 1) -> float:
    """Seconds of ``steps`` DER++ steps of ``size`` members as ``mode`` (one of MODES), after ``warmup``
    untimed steps per population (which also put examples in its buffer)."""
    device = torch.device(device)
    groups = [list(range(size))] if mode != "one at a time" else [[seed] for seed in range(size)]
    loop = member_loop_only() if mode == "member loop" else contextlib.nullcontext()
    total = 0.0
    for seeds in groups:
        configs = [make_config("derpp", DERPP, bench.defaults_for("derpp"))] * len(seeds)
        with loop:
            method = get_population_method("derpp")(configs, seeds, bench, device)
        method.train()
        data = MemberInputs([bench], [0] * len(seeds), 0, "train", device, torch.float32)
        batch = method.config.batch_size
        starts = range(0, data.n - batch + 1, batch)
        for k in range(warmup + steps):
            if k == warmup:
                _synchronize(device)
                began = time.perf_counter()
            first = starts[k % len(starts)]
            rows = torch.arange(first, first + batch, device=device).expand(len(seeds), -1)
            method.observe(*data.gather(rows), 0)
        _synchronize(device)
        total += time.perf_counter() - began
    return total


def _child(argv: list[str]) -> int:
    """One measurement of table 1, in this process: prints its seconds and peak RSS as JSON."""
    mode, size, steps, filters, threads = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4])
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as folder:
        bench = generated_cifar(Path(folder), STEP_IMAGES, "reduced-resnet18")
        with _filters(filters):
            seconds = derpp_step_seconds(bench, size, mode, steps, "cpu")
    print(json.dumps({"seconds": seconds, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
    return 0


@contextlib.contextmanager
def _filters(filters: int):
    """The reduced ResNet built with ``filters`` base filters."""
    import raycl.models

    saved = raycl.models.BASE_FILTERS["reduced-resnet18"]
    raycl.models.BASE_FILTERS["reduced-resnet18"] = filters
    try:
        yield
    finally:
        raycl.models.BASE_FILTERS["reduced-resnet18"] = saved


def _in_child(mode: str, size: int, steps: int, filters: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, str(size), str(steps), str(filters), str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{mode} P={size} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def step_table(sizes: list[int], steps: int, threads: int, filters: int = 20) -> None:
    print(f"\n== DER++ steps of a {filters}-filter ResNet-18, generated 32x32 images, {steps} steps per run, "
          f"{threads} thread(s), CPU ==")
    header = (f"{'P':>4} {'mode':>14} {'steps s':>9} {'x stacked':>10} {'x stacked P=1':>14} "
              f"{'per member s':>13} {'peak RSS GB':>12}")
    print(header)
    print("-" * len(header))
    base = None
    for size in sizes:
        stacked = None
        for mode in MODES:
            if size == 1 and mode == "one at a time":
                continue  # the same run as the stacked one
            r = _in_child(mode, size, steps, filters, threads)
            stacked = stacked or r["seconds"]
            base = base or r["seconds"]
            print(f"{size:>4} {mode:>14} {r['seconds']:9.2f} {r['seconds'] / stacked:10.2f} "
                  f"{r['seconds'] / base:14.2f} {r['seconds'] / size:13.3f} {r['peak_rss_gb']:12.3f}", flush=True)


def _train_process(args: list[str]) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (GB) and CPU seconds (user and system) of one launch/train.py process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(TRAIN), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"train.py {' '.join(args)} failed:\n{proc.stderr.read()[-3000:]}")
    return wall, usage.ru_maxrss / 2**20, usage.ru_utime + usage.ru_stime


def target_row(images_per_task: int, threads: int, seeds: int = 4) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = write_cifar10(Path(folder), images_per_batch=images_per_task)
        common = ["--method", "derpp", "--dataset", "seq-cifar10", "--backbone", "reduced-resnet18",
                  "--data-root", str(root), "--device", "cpu", "--threads", str(threads), "--buffer-size", "500",
                  "--lr", "0.03", "--alpha", "1.0", "--beta", "0.5", "--n-epochs", "1"]
        together, together_rss, together_cpu = _train_process([*common, "--seed", "0", "--seeds", str(seeds)])
        apart = [_train_process([*common, "--seed", str(seed), "--seeds", "1"]) for seed in range(seeds)]
    apart_wall, apart_cpu = sum(run[0] for run in apart), sum(run[2] for run in apart)
    print(f"\n== target: {seeds} seeds of DER++ on seq-cifar10 (reduced-resnet18, one epoch, {images_per_task} "
          f"generated images a task), {threads} thread(s), whole train.py processes ==")
    # CPU seconds too: on a machine shared with other work they say more than the wall time.
    print(f"stacked, one process     {together:9.1f} s  CPU {together_cpu:9.1f} s  peak RSS {together_rss:.3f} GB")
    print(f"{seeds} processes in turn      {apart_wall:9.1f} s  CPU {apart_cpu:9.1f} s  peak RSS "
          f"{max(run[1] for run in apart):.3f} GB (each: {', '.join(f'{run[0]:.1f}' for run in apart)} s)")
    print(f"stacked / in turn        {together / apart_wall:9.2f}x  CPU {together_cpu / apart_cpu:.2f}x  "
          f"(target: wall at most 0.80x)", flush=True)


def main(sizes: list[int], steps: int, images_per_task: int, threads: int, target: bool = True) -> int:
    step_table(sizes, steps, threads)
    if target:
        target_row(images_per_task, threads)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.exit(_child(sys.argv[2:]))
    raise SystemExit("run through launch/benchmark.py --stacked-convs")
