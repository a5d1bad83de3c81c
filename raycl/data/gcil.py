"""gcil-cifar100 (NeurAI-Lab CLS-ER / SYNERgy ``datasets/gcil_cifar100.py``): CIFAR-100 sampled into
20 phases by the GCIL sampler, Class-IL only (phases share classes).

Each phase, following CLS-ER's sampler:

1. a number of classes k, uniform in 1 .. min(classes with images left, ``phase_class_upper``);
2. k of the classes with images left, uniformly without replacement;
3. ``epoch_size`` draws from those k classes with probabilities proportional to their weights (1
   each for ``unif``, 0.984**class for ``longtail``), redrawn until every chosen class appears;
4. per class, min(its draw count, its images left) images, without replacement: no image trains in
   two phases.

Choices where CLS-ER's code leaves raycl to decide:

- Validation is held out *before* sampling: ``val_fraction`` of every class of the training set,
  stratified by the data seed, is never drawn by the sampler, so no validation image ever trains.
- Test follows CLS-ER: phase ``j``'s test set is CIFAR-100's test images of every class seen in
  phases 0..j (its cumulative test loader). Phase ``j``'s validation set mirrors it: the held-out
  images of those classes. So R[i, j] is accuracy on everything seen up to phase j. Each phase
  holds its own copy of these sets: about 0.9 GB of uint8 images at the defaults (seq-cifar100: 0.2).
- Labels stay CIFAR-100's fine labels (CLS-ER renumbers them by first appearance, which a
  Class-IL network with 100 outputs cannot tell apart).
- The sampler's own random streams (numpy generators seeded with ``sampler_seed``) choose the
  classes and counts and, separately, the images, so the phase plan (classes and counts) does not
  depend on ``val_fraction`` or the data seed. Phases are therefore not CLS-ER's phases image for
  image (its sampler shares numpy's global stream with training).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from raycl.data.base import Benchmark, Task, stratified_split
from raycl.data.cifar import MEAN, STD
from raycl.data.cifar100 import N_CLASSES, load_cifar100
from raycl.data.options import option
from raycl.errors import RayclError

WEIGHT_DISTS = ("unif", "longtail")
LONGTAIL_BASE = 0.984
# A phase redraws its epoch until every chosen class appears; this bounds the redraws for
# options under which that almost never happens (an epoch barely larger than the class count).
MAX_REDRAWS = 1000
DEFAULTS = {"batch_size": 32, "minibatch_size": 32, "n_epochs": 50}


@dataclasses.dataclass(frozen=True)
class GcilOptions:
    """The GCIL sampler's settings; defaults as CLS-ER's ``utils/args.py``."""

    weight_dist: str = option("longtail", "class weights: unif (all 1) or longtail (0.984**class)",
                              choices=WEIGHT_DISTS)
    epoch_size: int = option(1000, "images drawn per phase (before capping by the images a class has left)", low=1)
    phase_class_upper: int = option(50, "most classes in one phase", low=1, high=N_CLASSES)
    sampler_seed: int = option(1993, "seed of the sampler (CLS-ER's --gil_seed)")
    n_phases: int = option(20, "phases (tasks) of the stream", low=1)

    def check(self) -> None:
        if self.epoch_size < self.phase_class_upper:
            raise RayclError(f"benchmark option epoch_size of gcil-cifar100 ({self.epoch_size}) must be at least "
                             f"phase_class_upper ({self.phase_class_upper}): every class of a phase needs a draw")


def class_weights(weight_dist: str, n_classes: int = N_CLASSES) -> np.ndarray:
    if weight_dist == "longtail":
        return LONGTAIL_BASE ** np.arange(n_classes, dtype=np.float64)
    return np.ones(n_classes)


def plan_phases(available: np.ndarray, options: GcilOptions) -> list[dict[int, int]]:
    """The classes and image counts of every phase, ``{class: count}``, given ``available[c]``
    images of class ``c`` to draw from."""
    rng = np.random.default_rng([options.sampler_seed, 0])
    left = np.asarray(available, dtype=np.int64).copy()
    weights = class_weights(options.weight_dist, len(left))
    phases = []
    for phase in range(options.n_phases):
        non_empty = np.flatnonzero(left > 0)
        if not len(non_empty):
            raise RayclError(f"gcil-cifar100: every class ran out of training images after {phase} phases; "
                             "lower epoch_size or n_phases")
        k = int(rng.integers(min(len(non_empty), options.phase_class_upper))) + 1
        chosen = rng.choice(non_empty, size=k, replace=False)
        p = weights[chosen] / weights[chosen].sum()
        for _ in range(MAX_REDRAWS):
            counts = np.bincount(rng.choice(k, size=options.epoch_size, p=p), minlength=k)
            if (counts > 0).all():
                break
        else:
            raise RayclError(f"gcil-cifar100: {MAX_REDRAWS} epochs of {options.epoch_size} draws never covered "
                             f"all {k} classes of phase {phase}; raise epoch_size")
        sizes = {int(c): int(min(n, left[c])) for c, n in zip(chosen, counts)}
        for c, n in sizes.items():
            left[c] -= n
        phases.append(dict(sorted(sizes.items())))
    return phases


def gcil_cifar100(root: Path, val_fraction: float, seed: int, options: GcilOptions) -> Benchmark:
    d = load_cifar100(root)
    kept, held = stratified_split(d["train_y"], val_fraction, seed)
    pool_y = d["train_y"][kept]
    plan = plan_phases(np.bincount(pool_y, minlength=N_CLASSES), options)
    image_rng = np.random.default_rng([options.sampler_seed, 1])
    # Per class, the pool's images in one random order; phases take consecutive runs of it, so no
    # image is drawn twice.
    order = {c: kept[image_rng.permutation(np.flatnonzero(pool_y == c))] for c in range(N_CLASSES)}
    taken = np.zeros(N_CLASSES, dtype=np.int64)
    val_y, test_y = d["train_y"][held], d["test_y"]
    seen: set[int] = set()
    tasks = []
    for sizes in plan:
        train_idx = []
        for c, n in sizes.items():
            train_idx.append(order[c][taken[c]: taken[c] + n])
            taken[c] += n
        train_idx = np.concatenate(train_idx)
        seen.update(sizes)
        classes = sorted(seen)
        val_idx = held[np.isin(val_y, classes)]
        test_idx = np.flatnonzero(np.isin(test_y, classes))
        tasks.append(Task(
            train_x=d["train_x"][train_idx], train_y=d["train_y"][train_idx],
            val_x=d["train_x"][val_idx], val_y=d["train_y"][val_idx],
            test_x=d["test_x"][test_idx], test_y=test_y[test_idx],
            classes=tuple(sizes),
        ))
    return Benchmark(name="gcil-cifar100", tasks=tasks, n_classes=N_CLASSES, input_shape=(3, 32, 32),
                     settings=("class_il",), model="resnet18", mean=MEAN, std=STD, augment=True,
                     defaults=dict(DEFAULTS), method_defaults=method_defaults(options.weight_dist),
                     options=dataclasses.asdict(options))


def method_defaults(weight_dist: str) -> dict[str, dict]:
    """The published arguments at buffer 500 for ``weight_dist``: CLS-ER's utils/best_args.py for
    clser (100 epochs), SYNERgy's for synergy (50 epochs)."""
    clser_reg = {"unif": 0.15, "longtail": 0.1}[weight_dist]
    clser_plastic = {"unif": 0.9, "longtail": 0.7}[weight_dist]
    return {
        "clser": {"lr": 0.1, "n_epochs": 100, "reg_weight": clser_reg, "stable_update_freq": 0.6,
                  "stable_alpha": 0.999, "plastic_update_freq": clser_plastic, "plastic_alpha": 0.999},
        "synergy": {"lr": 0.05, "n_epochs": 50, "reg_weight": 0.2, "ema_update_freq": 0.3 if weight_dist == "unif" else 0.2,
                    "ema_alpha": 0.999, "penalty_weight": 1.0, "fisher_alpha": 0.999, "fisher_update_freq": 0.005},
    }
