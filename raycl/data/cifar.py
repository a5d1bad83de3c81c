"""seq-cifar10: 5 tasks x 2 classes, reduced ResNet-18, random crop and flip."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np

from raycl.data.base import Benchmark, class_split_tasks
from raycl.errors import RayclError

log = logging.getLogger(__name__)

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2615)


def _read_batches(folder: Path, names) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name in names:
        with open(folder / name, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def load_cifar10(root: Path) -> dict[str, np.ndarray]:
    """CIFAR-10 from torchvision's layout ``<root>/cifar-10-batches-py``, downloading if absent."""
    folder = root / FOLDER
    names = TRAIN_BATCHES + (TEST_BATCH,)
    if not all((folder / n).is_file() for n in names):
        log.info("CIFAR-10 not found under %s; trying to download it", folder)
        try:
            import torchvision

            torchvision.datasets.CIFAR10(str(root), train=True, download=True)
        except Exception as exc:
            raise RayclError(
                f"CIFAR-10 not found: looked in {folder} for {', '.join(names)}, and the download "
                f"failed ({exc}). Put torchvision's cifar-10-batches-py folder under --data-root "
                "(or $RAYCL_DATA)."
            ) from None
    train_x, train_y = _read_batches(folder, TRAIN_BATCHES)
    test_x, test_y = _read_batches(folder, (TEST_BATCH,))
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def seq_cifar10(root: Path, val_fraction: float, seed: int) -> Benchmark:
    d = load_cifar10(root)
    tasks = class_split_tasks(d["train_x"], d["train_y"], d["test_x"], d["test_y"], 2, 5, val_fraction, seed)
    return Benchmark(name="seq-cifar10", tasks=tasks, n_classes=10, input_shape=(3, 32, 32),
                     settings=("class_il", "task_il"), model="resnet18", mean=MEAN, std=STD,
                     augment=True, defaults={"batch_size": 32, "minibatch_size": 32, "n_epochs": 50})
