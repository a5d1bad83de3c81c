"""``launch/benchmark.py --gpu``: the GPU path on one CUDA device, in one command, with torch alone
(neither Ray nor Optuna is imported).

CUDA must work: ``$RAYCL_REQUIRE_CUDA`` is set, and a missing or unusable CUDA ends the command at
once with one line naming the NVIDIA driver, torch's CUDA version and the fix (exit 2).

Prints, in this order: every method's run on CUDA with 2 members over the first two tasks of
seq-digits (ok, or the error); the float64 CUDA-against-CPU gap of derpp and vib over the whole of
seq-digits; the cross-device resumes (CPU -> CUDA and CUDA -> CPU); then figures in steady state,
each row a population trained over an untimed warm-up task (allocations, cuDNN's autotuning, the
buffer's first fill) and then timed tasks: member-steps and member-tasks per second of derpp on
seq-mnist and of the ResNet on seq-cifar10 by population size, with the memory a GPU share must
hold (PyTorch's peak reserved pool plus the CUDA context and library handles); stacked ResNet
populations against the member loop and runs one at a time (after warm-up steps); the stacked
ResNet in channels-last and default layouts, fp32 and TF32, and which was fastest; fp32 against
bf16; member-tasks per second of a derpp population kept full at 256 against one that shrinks
from 256 to 64 at a rung. A row that runs out of memory says so, and the pool is emptied before the
next. seq-mnist and seq-cifar10 are read from --data-root where present, else written as random
images in their on-disk formats (speed does not depend on the pixels).

``--device cpu --quick`` runs the same code on the CPU at toy sizes (seq-digits and a few
generated CIFAR images): a smoke test of the command, not a measurement.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

import conv_benchmark
from raycl.data import load_benchmark
from raycl.data.synthetic import write_cifar10, write_mnist
from raycl.device import CONTEXT_MARGIN_BYTES, REQUIRE_CUDA, apply_precision, driver_version, require_cuda
from raycl.device_checks import largest_gap, population, resumed_gap, train_tasks
from raycl.errors import RayclError
from raycl.hparams import param_specs
from raycl.methods import METHODS, get_method
from raycl.population.convnet import StackedResNet
from raycl.population.record import ALL

DERPP = {"buffer_size": 500, "lr": 0.03, "alpha": 1.0, "beta": 0.5}
GIB = 2**30
# --quick: every method's values made small (where the method has them), seq-digits cut to three
# tasks of 80 training images, generated CIFAR-10 of 40 images a batch file (36 a task).
QUICK_VALUES = {"batch_size": 10, "minibatch_size": 5, "buffer_size": 20, "gen_epochs": 1, "gen_hidden": 32,
                "n_replay": 10, "batches_per_example": 1}
QUICK_IMAGES = 80


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much the command measures: the full default for a GPU, or toys for ``--quick``."""

    mlp_populations: tuple[int, ...]
    resnet_populations: tuple[int, ...]
    timed_tasks: int  # timed tasks after the warm-up task of each throughput row
    conv_steps: int  # timed DER++ steps per stacked ResNet run
    conv_warmup: int  # untimed steps before them
    full: int  # the population kept full, and the width it shrinks to at the rung
    shrunk: int
    digits_tasks: int  # seq-digits tasks of the float64 comparison


GPU_SIZES = Sizes(mlp_populations=(1, 16, 64, 256), resnet_populations=(1, 4, 16), timed_tasks=2, conv_steps=20,
                  conv_warmup=5, full=256, shrunk=64, digits_tasks=5)
QUICK_SIZES = Sizes(mlp_populations=(1, 2), resnet_populations=(2,), timed_tasks=1, conv_steps=1, conv_warmup=1,
                    full=4, shrunk=2, digits_tasks=2)


@dataclasses.dataclass
class Row:
    """One steady-state measurement; ``error`` instead of figures where it failed (out of memory)."""

    members: int
    member_steps_per_s: float = math.nan
    member_tasks_per_s: float = math.nan
    seconds: float = math.nan
    share_gib: float = math.nan  # peak reserved pool + CUDA context and handles
    error: str = ""

    def line(self) -> str:
        if self.error:
            return f"P={self.members:4}  {self.error}"
        return (f"P={self.members:4}  {self.member_steps_per_s:10.0f} member-steps/s  {self.member_tasks_per_s:8.3f} "
                f"member-tasks/s  share {self.share_gib:6.2f} GiB  ({self.seconds:.1f} s timed)")


class Memory:
    """What a GPU share must hold: PyTorch's reserved pool at its peak, plus what the process holds
    outside it (its CUDA context, cuBLAS/cuDNN handles and workspaces), found as the device's used
    memory less the pool (so on a GPU nobody else uses). Nothing on other devices."""

    def __init__(self, device: torch.device):
        self.device = device

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def reset(self) -> None:
        """Empty the pool (after a row, or an out-of-memory row) and restart the peak."""
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def outside_pool(self) -> int:
        if not self.cuda:
            return 0
        free, total = torch.cuda.mem_get_info(self.device)
        return total - free - torch.cuda.memory_reserved(self.device)

    def share_gib(self) -> float:
        if not self.cuda:
            return math.nan
        return (torch.cuda.max_memory_reserved(self.device) + self.outside_pool()) / GIB

    def synchronize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def _steps(run, tasks: range) -> int:
    config = run.method.config
    return sum(math.ceil(len(run.benchmark.tasks[t].train_y) / config.batch_size) for t in tasks) * config.n_epochs


def steady_row(bench, method: str, members: int, device, memory: Memory, values: dict, timed_tasks: int,
               precision: str = "fp32", shrink_to: int | None = None) -> Row:
    """A population of ``members`` over an untimed warm-up task, then ``timed_tasks`` timed ones;
    with ``shrink_to``, all but that many members are dropped after the first timed task (a rung)."""
    memory.reset()
    run = None
    try:
        run = population(bench, method, device, seeds=range(members), values=values, precision=precision)
        run.run_task()  # warm-up, untimed
        before, member_tasks, member_steps = run.train_s, 0, 0
        for k in range(min(timed_tasks, bench.n_tasks - 1)):
            if shrink_to is not None and k == 1:
                run.drop(run.alive[shrink_to:])
            task = run.next_task
            run.run_task()  # train_s counts the training only, to its last read of the losses
            member_tasks += len(run.alive)
            member_steps += len(run.alive) * _steps(run, range(task, task + 1))
        memory.synchronize()
        seconds = run.train_s - before
        return Row(members, member_steps / seconds, member_tasks / seconds, seconds, memory.share_gib())
    except torch.OutOfMemoryError:
        return Row(members, error="out of memory")
    finally:
        run = None
        memory.reset()


@contextlib.contextmanager
def default_layout():
    """Stacked ResNets run their grouped convolutions on contiguous [n, P * C, H, W] activations
    (the default layout) instead of channels-last."""
    channels_last = StackedResNet.forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, n, channels = x.shape[:3]
        grouped = x.transpose(0, 1).reshape(n, p * channels, *x.shape[3:])
        features = self.resnet.features(grouped)
        return self.resnet.classifier(features.view(n, p, -1).transpose(0, 1))

    StackedResNet.forward = forward
    try:
        yield
    finally:
        StackedResNet.forward = channels_last


def _conv_seconds(bench, size: int, mode: str, sizes: Sizes, device, memory: Memory) -> float:
    memory.reset()
    try:
        return conv_benchmark.derpp_step_seconds(bench, size, mode, sizes.conv_steps, device, warmup=sizes.conv_warmup)
    except torch.OutOfMemoryError:
        return math.nan
    finally:
        memory.reset()


def stacked_resnet_rows(bench, backbone: str, sizes: Sizes, device, memory: Memory) -> None:
    """Seconds of DER++ steps of a population as stacked, member loop and one at a time for each
    size, their ratio to stacked P = 1, and the share each needed."""
    print(f"\n== stacked ResNet populations: DER++ ({backbone}, generated 32x32 images, batch 32), {sizes.conv_steps} "
          f"steps after {sizes.conv_warmup} untimed: seconds, x stacked P=1, share ==")
    times = {}
    for size in sizes.resnet_populations:
        for mode in conv_benchmark.MODES:
            if size == 1 and mode == "one at a time":
                continue  # the same run as the stacked one
            seconds = times[size, mode] = _conv_seconds(bench, size, mode, sizes, device, memory)
            base = times.get((sizes.resnet_populations[0], "stacked"), seconds)
            print(f"P={size:4} {mode:>14} {seconds:8.2f} s  {seconds / base:6.2f}x  share "
                  f"{memory.share_gib():6.2f} GiB", flush=True)
    first, last = sizes.resnet_populations[0], sizes.resnet_populations[-1]
    if first != last and (first, "stacked") in times and (last, "stacked") in times:
        print(f"stacked P={last} / P={first}: {times[last, 'stacked'] / times[first, 'stacked']:.2f}x "
              "(target at P=16: at most 3x)")


def layout_rows(bench, sizes: Sizes, device, memory: Memory) -> None:
    """The stacked ResNet's step in both layouts and both float32 precisions, and the fastest."""
    print(f"\n== stacked ResNet layout and precision: DER++ steps, {sizes.conv_steps} after {sizes.conv_warmup} "
          "untimed (default: channels-last, fp32) ==")
    convolutional = True
    for size in sizes.resnet_populations[-2:]:
        seconds = {}
        for precision in ("fp32", "tf32"):
            apply_precision(precision, device, convolutional)
            for layout, context in (("channels-last", contextlib.nullcontext), ("default", default_layout)):
                with context():
                    seconds[layout, precision] = _conv_seconds(bench, size, "stacked", sizes, device, memory)
        apply_precision("fp32", device, convolutional)
        timed = {k: v for k, v in seconds.items() if not math.isnan(v)}
        fastest = min(timed, key=timed.get) if timed else None
        cells = "  ".join(f"{layout} {precision} {value:7.2f} s" for (layout, precision), value in seconds.items())
        print(f"P={size:4}  {cells}  fastest: {' '.join(fastest) if fastest else 'none'}", flush=True)


def main(data_root: str | None, mlp_sizes=None, resnet_sizes=None, device_name: str = "cuda",
         quick: bool = False) -> int:
    device = torch.device(device_name)
    if device.type == "cuda":
        os.environ[REQUIRE_CUDA] = "1"
        try:
            require_cuda()
        except RayclError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    sizes = QUICK_SIZES if quick else GPU_SIZES
    sizes = dataclasses.replace(sizes, mlp_populations=tuple(mlp_sizes or sizes.mlp_populations),
                                resnet_populations=tuple(resnet_sizes or sizes.resnet_populations))
    memory = Memory(device)
    apply_precision("fp32", device, convolutional=True)  # fp32 exact: no TF32 unless asked for
    start = time.perf_counter()
    if memory.cuda:
        torch.ones(1, device=device)  # the CUDA context exists from here
        print(f"device: {torch.cuda.get_device_name(device)}, NVIDIA driver {driver_version()}, torch "
              f"{torch.__version__}, CUDA {torch.version.cuda}; outside PyTorch's pool after start "
              f"{memory.outside_pool() / GIB:.2f} GiB", flush=True)
    else:
        print(f"device: {device} (a smoke run of the GPU benchmark's code: no figure here means anything)", flush=True)
    digits = load_benchmark("seq-digits")
    method_values = {m: {} for m in METHODS}
    if quick:
        digits = _first_images(digits, QUICK_IMAGES)
        method_values = {m: {k: v for k, v in QUICK_VALUES.items() if k in param_specs(get_method(m).Config)}
                         for m in METHODS}

    print(f"\n== every method, 2 members, tasks 1-2 of seq-digits on {device} ==")
    for method in sorted(METHODS):
        began = time.perf_counter()
        try:
            run = train_tasks(population(digits, method, device, values=method_values[method]), 2)
            status = "ok" if not run.diverged else f"diverged: {run.diverged}"
        except Exception as error:  # the point is to list every failure, not stop at the first
            status = f"ERROR {type(error).__name__}: {error}".splitlines()[0]
            traceback.print_exc(limit=3)
        print(f"{method:12} {status}  ({time.perf_counter() - began:.1f} s)", flush=True)

    print(f"\n== float64, {device} against CPU, {sizes.digits_tasks} tasks of seq-digits (accuracy points) ==")
    for method in ("derpp", "vib"):
        cpu = train_tasks(population(digits, method, "cpu", dtype=torch.float64), sizes.digits_tasks)
        there = train_tasks(population(digits, method, device, dtype=torch.float64), sizes.digits_tasks)
        last = min(sizes.digits_tasks, digits.n_tasks) - 1
        print(f"{method:6} largest gap {largest_gap(cpu, there):.4f}; Class-IL test after task {last + 1} "
              f"cpu {cpu.record.row(ALL, last, 'class_il', 'test').mean():.2f} "
              f"{device.type} {there.record.row(ALL, last, 'class_il', 'test').mean():.2f}", flush=True)

    print("\n== resume across devices (derpp, float64, task 1 on one device, task 2 on the other) ==")
    for source, target in (("cpu", device), (device, "cpu")):
        gap, devices = resumed_gap(digits, "derpp", source, target, tasks=2)
        print(f"{str(source):6} -> {str(target):6}: restored state on {sorted(devices)}, largest gap to an "
              f"uninterrupted {source} run {gap:.4f}", flush=True)

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if quick:
            mnist, mnist_kind = digits, "seq-digits in place of seq-mnist"
            cifar = load_benchmark("seq-cifar10", write_cifar10(scratch / "cifar", images_per_batch=QUICK_IMAGES // 2),
                                   backbone="reduced-resnet18")
            backbone = "reduced-resnet18"
            cifar_kind = f"{QUICK_IMAGES // 2} random images a batch file, {backbone}"
            conv_bench = cifar
        else:
            mnist, mnist_kind = _benchmark("seq-mnist", data_root, scratch)
            cifar, cifar_kind = _benchmark("seq-cifar10", data_root, scratch)
            backbone = "resnet18"
            conv_bench = conv_benchmark.generated_cifar(scratch / "convs", conv_benchmark.STEP_IMAGES, backbone)
        resnet_values = {**DERPP, "n_epochs": 1}
        timed = f"a warm-up task, then {sizes.timed_tasks} timed"

        print(f"\n== derpp {mnist.name} ({mnist_kind}), buffer 500, {timed}: throughput and the share it needs ==")
        for size in sizes.mlp_populations:
            print(steady_row(mnist, "derpp", size, device, memory, DERPP, sizes.timed_tasks).line(), flush=True)
        print(f"\n== derpp seq-cifar10 ResNet ({cifar_kind}, {len(cifar.tasks[0].train_y)} training images a task), "
              f"{timed}: throughput and the share it needs ==")
        for size in sizes.resnet_populations:
            print(steady_row(cifar, "derpp", size, device, memory, resnet_values, sizes.timed_tasks).line(), flush=True)

        stacked_resnet_rows(conv_bench, backbone, sizes, device, memory)
        layout_rows(conv_bench, sizes, device, memory)

        print(f"\n== fp32 against bf16 ({timed}; same members) ==")
        mlp_size, resnet_size = (s[min(1, len(s) - 1)] for s in (sizes.mlp_populations, sizes.resnet_populations))
        for name, bench, values, size in ((f"{mnist.name} MLP P={mlp_size}", mnist, DERPP, mlp_size),
                                          (f"seq-cifar10 ResNet P={resnet_size}", cifar, resnet_values, resnet_size)):
            rows = {p: steady_row(bench, "derpp", size, device, memory, values, sizes.timed_tasks, precision=p)
                    for p in ("fp32", "bf16")}
            print(f"{name:28} fp32 {rows['fp32'].seconds:.2f} s  bf16 {rows['bf16'].seconds:.2f} s  "
                  f"(bf16/fp32 {rows['bf16'].seconds / rows['fp32'].seconds:.2f}x)", flush=True)

        print(f"\n== a population kept full against one shrinking at a rung: derpp {mnist.name}, {timed}, the rung "
              f"after the first timed task ==")
        full = steady_row(mnist, "derpp", sizes.full, device, memory, DERPP, max(2, sizes.timed_tasks))
        shrinking = steady_row(mnist, "derpp", sizes.full, device, memory, DERPP, max(2, sizes.timed_tasks),
                               shrink_to=sizes.shrunk)
        print(f"kept full at {sizes.full:4}:        {full.member_tasks_per_s:8.3f} member-tasks/s  "
              f"({full.seconds:.1f} s)")
        print(f"{sizes.full} -> {sizes.shrunk} at the rung: {shrinking.member_tasks_per_s:8.3f} member-tasks/s  "
              f"({shrinking.seconds:.1f} s; {shrinking.member_tasks_per_s / full.member_tasks_per_s:.2f}x of full)",
              flush=True)

    if memory.cuda:
        print(f"\noutside PyTorch's pool at the end (CUDA context, cuBLAS/cuDNN handles and workspaces): "
              f"{memory.outside_pool() / GIB:.2f} GiB; a GPU share leaves {CONTEXT_MARGIN_BYTES / GIB:.2f} GiB for it "
              "(raycl.device.CONTEXT_MARGIN_BYTES)")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


def _first_images(bench, count: int):
    """``bench``'s first three tasks, each cut to its first ``count`` training images (a quarter as
    many validation and test images)."""
    def cut(task):
        return dataclasses.replace(task, train_x=task.train_x[:count], train_y=task.train_y[:count],
                                   val_x=task.val_x[:count // 4], val_y=task.val_y[:count // 4],
                                   test_x=task.test_x[:count // 4], test_y=task.test_y[:count // 4])

    return dataclasses.replace(bench, tasks=[cut(t) for t in bench.tasks[:3]])


def _benchmark(name: str, data_root: str | None, scratch: Path):
    try:
        return load_benchmark(name, data_root), "real"
    except RayclError:
        writer = write_mnist if name == "seq-mnist" else lambda root: write_cifar10(root, images_per_batch=1000)
        return load_benchmark(name, writer(scratch / name)), "random images"
