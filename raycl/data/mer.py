"""The MNIST streams of the GEM and MER papers: few examples per task, one pass, batch 1; Domain-IL.

- mer-rotations: 20 tasks; task t rotates every image by one angle drawn from [9t, 9(t+1)) degrees.
- mer-permutations: 20 tasks, each with its own fixed pixel permutation.
- mer-many-permutations: 100 tasks of that kind.

Each task draws its own ``samples_per_task`` training images at random from MNIST's training set
(as GEM's continuum does) and evaluates on all 10,000 test images under its transform. The
validation images of a task come from a stratified share of the training set kept apart from every
task's training draw, ``samples_per_task * val_fraction / (1 - val_fraction)`` of them per task, so
a task trains on exactly ``samples_per_task`` examples whatever ``val_fraction`` is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raycl.data.base import Benchmark, Task, stratified_split
from raycl.data.mnist import load_mnist, permutation_map, rotation_source_index
from raycl.errors import RayclError

MER_BENCHMARKS = {
    # name: (tasks, transform kind, default samples per task)
    "mer-rotations": (20, "rotation", 1000),
    "mer-permutations": (20, "permutation", 1000),
    "mer-many-permutations": (100, "permutation", 200),
}

_PROTOCOL_DEFAULTS = {"batch_size": 1, "n_epochs": 1}
_MAX_DEGREES = 180.0


def mer_benchmark(name: str, root: Path, val_fraction: float, seed: int,
                  samples_per_task: int | None = None) -> Benchmark:
    """Benchmark ``name`` of :data:`MER_BENCHMARKS`; ``seed`` fixes draws, angles and permutations."""
    n_tasks, kind, default_samples = MER_BENCHMARKS[name]
    samples = default_samples if samples_per_task is None else int(samples_per_task)
    if samples < 1:
        raise RayclError(f"samples_per_task must be at least 1, got {samples_per_task}")
    d = load_mnist(root)
    kept, held = stratified_split(d["train_y"], val_fraction, seed)
    n_val = int(round(samples * val_fraction / (1.0 - val_fraction))) if len(held) else 0
    if samples > len(kept) or n_val > len(held):
        raise RayclError(f"samples_per_task {samples} is more than MNIST's {len(kept)} training images allow")
    rng = np.random.default_rng(seed)
    labels = d["train_y"].astype(np.int64)
    test_y = d["test_y"].astype(np.int64)
    tasks = []
    for t in range(n_tasks):
        if kind == "rotation":
            step = _MAX_DEGREES / n_tasks
            pixel_map = rotation_source_index(float(rng.uniform(step * t, step * (t + 1))))
        else:
            pixel_map = permutation_map(rng.permutation(784))
        train_idx = np.sort(rng.choice(kept, size=samples, replace=False))
        val_idx = np.sort(rng.choice(held, size=n_val, replace=False)) if n_val else held[:0]
        # Every task views the one copy of the test images through its own pixel map.
        tasks.append(Task(
            train_x=d["train_x"][train_idx], train_y=labels[train_idx],
            val_x=d["train_x"][val_idx], val_y=labels[val_idx],
            test_x=d["test_x"], test_y=test_y, classes=tuple(range(10)), pixel_map=pixel_map,
        ))
    return Benchmark(name=name, tasks=tasks, n_classes=10, input_shape=(784,), settings=("domain_il",),
                     model="mlp", defaults=dict(_PROTOCOL_DEFAULTS))
