"""seq-cifar100 (mammoth's ``datasets/seq_cifar100.py``): CIFAR-100's fine labels in consecutive
class groups, 10 tasks x 10 classes by default; CLS-ER's README reports 5 tasks x 20 classes
(``--benchmark-option n_tasks=5``). ResNet-18, random crop (padding 4) and flip, Class-IL and
Task-IL, batch 32, 50 epochs. mammoth also decays the learning rate at epochs 35 and 45; raycl's
loop has no scheduler, so runs here train at a constant rate."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from raycl.data.base import CLASS_INCREMENTAL, Benchmark, class_split_tasks
from raycl.data.cifar import ensure_files, read_batches
from raycl.data.options import option
from raycl.errors import RayclError

FOLDER = "cifar-100-python"
TRAIN_FILE = "train"
TEST_FILE = "test"
N_CLASSES = 100
# mammoth's constants for CIFAR-100.
MEAN = (0.5071, 0.4867, 0.4408)
STD = (0.2675, 0.2565, 0.2761)


@dataclasses.dataclass(frozen=True)
class SeqCifar100Options:
    n_tasks: int = option(10, "tasks the 100 classes are split into, consecutive groups of 100 / n_tasks",
                          low=1, high=N_CLASSES)

    def check(self) -> None:
        if N_CLASSES % self.n_tasks:
            divisors = [d for d in range(1, N_CLASSES + 1) if N_CLASSES % d == 0]
            raise RayclError(f"benchmark option n_tasks of seq-cifar100 must divide the {N_CLASSES} classes, "
                             f"got {self.n_tasks}; allowed: {', '.join(map(str, divisors))}")


def _download(root: Path) -> None:
    import torchvision  # imported only here: it costs seconds at start-up

    torchvision.datasets.CIFAR100(str(root), train=True, download=True)


def load_cifar100(root: Path) -> dict[str, np.ndarray]:
    """CIFAR-100 (fine labels) from torchvision's layout ``<root>/cifar-100-python/{train,test}``,
    downloading if absent. Images (N, 3, 32, 32) uint8, labels (N,) int64."""
    folder = root / FOLDER
    ensure_files(folder, (TRAIN_FILE, TEST_FILE), "CIFAR-100", lambda: _download(root))
    train_x, train_y = read_batches(folder, (TRAIN_FILE,), label_key="fine_labels")
    test_x, test_y = read_batches(folder, (TEST_FILE,), label_key="fine_labels")
    for path, y in ((folder / TRAIN_FILE, train_y), (folder / TEST_FILE, test_y)):
        if len(y) and (y.min() < 0 or y.max() >= N_CLASSES):
            raise RayclError(f"{path} has fine labels outside 0..{N_CLASSES - 1}; is it CIFAR-100?")
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def seq_cifar100(root: Path, val_fraction: float, seed: int, options: SeqCifar100Options) -> Benchmark:
    d = load_cifar100(root)
    per_task = N_CLASSES // options.n_tasks
    tasks = class_split_tasks(d["train_x"], d["train_y"], d["test_x"], d["test_y"], per_task, options.n_tasks,
                              val_fraction, seed)
    return Benchmark(name="seq-cifar100", tasks=tasks, n_classes=N_CLASSES, input_shape=(3, 32, 32),
                     settings=CLASS_INCREMENTAL, model="resnet18", mean=MEAN, std=STD, augment=True,
                     defaults={"batch_size": 32, "minibatch_size": 32, "n_epochs": 50},
                     options=dataclasses.asdict(options))
