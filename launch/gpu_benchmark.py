"""``launch/benchmark.py --gpu``: the GPU path on one CUDA device, in one command.

Prints, in this order: every method's run on CUDA with 2 members over the first two tasks of
seq-digits (ok, or the error); the float64 CUDA-against-CPU gap of derpp and vib over the whole of
seq-digits; the cross-device resumes (CPU -> CUDA and CUDA -> CPU); member-steps per second and
peak memory of derpp on seq-mnist at P = 1, 16, 64, 256 and of the ResNet (seq-cifar10) at P = 1,
4, 16; stacked ResNet populations (64 filters) against the member loop and against runs one at a
time at P = 1, 4, 16, with peak memory (target: stacked P = 16 at most 3x the wall time of P = 1);
fp32 against bf16 step time. seq-mnist and seq-cifar10 are read from --data-root where present,
else written as random images in their on-disk formats (speed does not depend on the pixels;
accuracy is then meaningless and not printed).
"""

from __future__ import annotations

import math
import tempfile
import time
import traceback
from pathlib import Path

import torch

import conv_benchmark
from raycl.data import load_benchmark
from raycl.data.synthetic import write_cifar10, write_mnist
from raycl.device import apply_precision
from raycl.device_checks import largest_gap, population, resumed_gap, train_tasks
from raycl.population.record import ALL
from raycl.errors import RayclError
from raycl.methods import METHODS

DERPP = {"buffer_size": 500, "lr": 0.03, "alpha": 1.0, "beta": 0.5}
# Timed DER++ steps per run of the stacked ResNet rows.
CONV_STEPS = 20


def _benchmark(name: str, data_root: str | None, scratch: Path):
    try:
        return load_benchmark(name, data_root), "real"
    except RayclError:
        writer = write_mnist if name == "seq-mnist" else lambda root: write_cifar10(root, images_per_batch=1000)
        return load_benchmark(name, writer(scratch / name)), "random images"


def _steps(run, tasks: int) -> int:
    config = run.method.config
    return sum(math.ceil(len(t.train_y) / config.batch_size) for t in run.benchmark.tasks[:tasks]) * config.n_epochs


def throughput(benchmark, sizes, device, values: dict, tasks: int, precision: str = "fp32") -> list[tuple]:
    """(P, member-steps per second of training, peak GiB) of derpp populations of each size."""
    rows = []
    for size in sizes:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            run = population(benchmark, "derpp", device, seeds=range(size), values=values, precision=precision)
            train_tasks(run, tasks)
            torch.cuda.synchronize(device)
            rate = size * _steps(run, tasks) / run.train_s
            rows.append((size, rate, torch.cuda.max_memory_allocated(device) / 2**30, run.train_s))
        except torch.cuda.OutOfMemoryError:
            rows.append((size, float("nan"), float("nan"), float("nan")))
        finally:
            run = None
    return rows


def _peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def stacked_resnet_rows(sizes, steps: int, device: torch.device, scratch: Path, backbone: str = "resnet18"):
    """Seconds of ``steps`` DER++ steps of a ``backbone`` population (64 filters) as stacked, member loop
    and one at a time for each size, their ratio to stacked P = 1, and peak memory (CUDA only)."""
    bench = conv_benchmark.generated_cifar(scratch, conv_benchmark.STEP_IMAGES, backbone)
    print(f"\n== stacked ResNet populations: DER++ ({backbone}, generated 32x32 images, batch 32), "
          f"{steps} steps: seconds, x stacked P=1, peak memory ==")
    times = {}
    for size in sizes:
        for mode in conv_benchmark.MODES:
            if size == 1 and mode == "one at a time":
                continue  # the same run as the stacked one
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            try:
                seconds = conv_benchmark.derpp_step_seconds(bench, size, mode, steps, device)
            except torch.cuda.OutOfMemoryError:
                seconds = float("nan")
            times[size, mode] = seconds
            base = times.get((sizes[0], "stacked"), seconds)
            print(f"P={size:4} {mode:>14} {seconds:8.2f} s  {seconds / base:6.2f}x  peak {_peak_gib(device):6.2f} GiB",
                  flush=True)
    if (1, "stacked") in times and (16, "stacked") in times:
        print(f"stacked P=16 / P=1: {times[16, 'stacked'] / times[1, 'stacked']:.2f}x (target: at most 3x)")
    return times


def main(data_root: str | None, mlp_sizes, resnet_sizes) -> int:
    if not torch.cuda.is_available():
        print("benchmark.py --gpu: no CUDA device visible to this process; nothing measured")
        return 2
    device = torch.device("cuda", 0)
    apply_precision("fp32", device, convolutional=True)  # fp32 exact: no TF32 unless asked for
    start = time.perf_counter()
    print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}", flush=True)
    digits = load_benchmark("seq-digits")

    print("\n== every method, 2 members, tasks 1-2 of seq-digits on CUDA ==")
    for method in sorted(METHODS):
        began = time.perf_counter()
        try:
            run = train_tasks(population(digits, method, device), 2)
            status = "ok" if not run.diverged else f"diverged: {run.diverged}"
        except Exception as error:  # the point is to list every failure, not stop at the first
            status = f"ERROR {type(error).__name__}: {error}".splitlines()[0]
            traceback.print_exc(limit=3)
        print(f"{method:12} {status}  ({time.perf_counter() - began:.1f} s)", flush=True)

    print("\n== float64, CUDA against CPU, whole seq-digits stream (accuracy points) ==")
    for method in ("derpp", "vib"):
        cpu = train_tasks(population(digits, method, "cpu", dtype=torch.float64), digits.n_tasks)
        cuda = train_tasks(population(digits, method, device, dtype=torch.float64), digits.n_tasks)
        print(f"{method:6} largest gap {largest_gap(cpu, cuda):.4f}; final Class-IL test "
              f"cpu {cpu.record.row(ALL, -1, 'class_il', 'test').mean():.2f} "
              f"cuda {cuda.record.row(ALL, -1, 'class_il', 'test').mean():.2f}",
              flush=True)

    print("\n== resume across devices (derpp, float64, task 1 on one device, task 2 on the other) ==")
    for source, target in (("cpu", device), (device, "cpu")):
        gap, devices = resumed_gap(digits, "derpp", source, target, tasks=2)
        print(f"{str(source):6} -> {str(target):6}: restored state on {sorted(devices)}, largest gap to an "
              f"uninterrupted {source} run {gap:.4f}", flush=True)

    with tempfile.TemporaryDirectory() as scratch:
        mnist, mnist_kind = _benchmark("seq-mnist", data_root, Path(scratch))
        cifar, cifar_kind = _benchmark("seq-cifar10", data_root, Path(scratch))
        print(f"\n== derpp seq-mnist ({mnist_kind}), buffer 500, tasks 1-2: member-steps/s and peak memory ==")
        for size, rate, peak, seconds in throughput(mnist, mlp_sizes, device, DERPP, tasks=2):
            print(f"P={size:4}  {rate:10.0f} member-steps/s  peak {peak:6.2f} GiB  ({seconds:.1f} s)", flush=True)
        resnet_values = {**DERPP, "n_epochs": 1}
        print(f"\n== derpp seq-cifar10 ResNet ({cifar_kind}, {len(cifar.tasks[0].train_y)} training images a task), "
              "task 1: member-steps/s and peak memory ==")
        for size, rate, peak, seconds in throughput(cifar, resnet_sizes, device, resnet_values, tasks=1):
            print(f"P={size:4}  {rate:10.0f} member-steps/s  peak {peak:6.2f} GiB  ({seconds:.1f} s)", flush=True)

        stacked_resnet_rows(resnet_sizes, CONV_STEPS, device, Path(scratch) / "convs")

        print("\n== fp32 against bf16 (training seconds; same members) ==")
        for name, bench, values, size, tasks in (("seq-mnist MLP P=16", mnist, DERPP, 16, 2),
                                                 ("seq-cifar10 ResNet P=4", cifar, resnet_values, 4, 1)):
            seconds = {p: throughput(bench, [size], device, values, tasks, precision=p)[0][3] for p in ("fp32", "bf16")}
            print(f"{name:24} fp32 {seconds['fp32']:.2f} s  bf16 {seconds['bf16']:.2f} s  "
                  f"(bf16/fp32 {seconds['bf16'] / seconds['fp32']:.2f}x)", flush=True)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0
