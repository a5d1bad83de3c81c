"""seq-cifar10: 5 tasks x 2 classes, ResNet-18, random crop and flip, batch 32, 50 epochs.

Also the CIFAR readers seq-cifar100 and gcil-cifar100 share: torchvision's pickled batches, read
as uint8 (N, 3, 32, 32) images."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np

from raycl.data.base import CLASS_INCREMENTAL, Benchmark, class_split_tasks
from raycl.errors import RayclError

log = logging.getLogger(__name__)

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2615)
# The published arguments at buffer 500 (the structure has one entry per benchmark and method):
# CLS-ER's utils/best_args.py for clser, SYNERgy's for synergy.
METHOD_DEFAULTS = {
    "clser": {"lr": 0.1, "reg_weight": 0.15, "stable_update_freq": 0.1, "stable_alpha": 0.999,
              "plastic_update_freq": 0.9, "plastic_alpha": 0.999},
    "synergy": {"lr": 0.05, "reg_weight": 0.2, "ema_update_freq": 0.4, "ema_alpha": 0.999, "penalty_weight": 5.0,
                "fisher_alpha": 0.999, "fisher_update_freq": 0.007},
}


def read_batches(folder: Path, names, label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """The pickled batches ``names`` of ``folder``: images (N, 3, 32, 32) uint8 and labels (N,) int64.
    A file that does not unpickle to a batch (truncated, another format) is one RayclError naming it."""
    xs, ys = [], []
    for name in names:
        path = folder / name
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(entry[label_key], dtype=np.int64)
        except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RayclError(f"{path} is not a CIFAR batch with 'data' and '{label_key}' "
                             f"({type(exc).__name__}: {exc}); the file may be truncated: download it again") from None
        if len(x) != len(y):
            raise RayclError(f"{path} holds {len(x)} images but {len(y)} labels; the file is corrupt")
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def ensure_files(folder: Path, names, what: str, download) -> None:
    """Make sure ``folder`` holds ``names``, calling ``download()`` once if not; a failed download
    is one RayclError listing the files expected where."""
    if all((folder / n).is_file() for n in names):
        return
    log.info("%s not found under %s; trying to download it", what, folder)
    try:
        download()
    except Exception as exc:  # any network or filesystem failure means the same to the user
        missing = [n for n in names if not (folder / n).is_file()]
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RayclError(
            f"{what} not found: looked in {folder} for {', '.join(names)} (missing: {', '.join(missing)}), "
            f"and the download failed ({reason}). Put torchvision's {folder.name} folder under --data-root "
            "(or $RAYCL_DATA)."
        ) from None
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise RayclError(f"{what}: {folder} still lacks {', '.join(missing)} after the download")


def _download_cifar10(root: Path) -> None:
    import torchvision  # imported only here: it costs seconds at start-up

    torchvision.datasets.CIFAR10(str(root), train=True, download=True)


def load_cifar10(root: Path) -> dict[str, np.ndarray]:
    """CIFAR-10 from torchvision's layout ``<root>/cifar-10-batches-py``, downloading if absent."""
    folder = root / FOLDER
    ensure_files(folder, TRAIN_BATCHES + (TEST_BATCH,), "CIFAR-10", lambda: _download_cifar10(root))
    train_x, train_y = read_batches(folder, TRAIN_BATCHES)
    test_x, test_y = read_batches(folder, (TEST_BATCH,))
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def seq_cifar10(root: Path, val_fraction: float, seed: int) -> Benchmark:
    d = load_cifar10(root)
    tasks = class_split_tasks(d["train_x"], d["train_y"], d["test_x"], d["test_y"], 2, 5, val_fraction, seed)
    return Benchmark(name="seq-cifar10", tasks=tasks, n_classes=10, input_shape=(3, 32, 32),
                     settings=CLASS_INCREMENTAL, model="resnet18", mean=MEAN, std=STD,
                     augment=True, defaults={"batch_size": 32, "minibatch_size": 32, "n_epochs": 50},
                     method_defaults={k: dict(v) for k, v in METHOD_DEFAULTS.items()})
