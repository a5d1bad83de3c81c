"""Small files in a benchmark's exact on-disk format, from random pixels: for tests and benchmarks
on machines without the real data (the loaders read them as they would the real files)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from raycl.data.cifar import FOLDER, TEST_BATCH, TRAIN_BATCHES


def write_cifar10(root: Path, images_per_batch: int = 20, seed: int = 1) -> Path:
    """torchvision's ``cifar-10-batches-py`` under ``root``: five training batches and a test batch of
    ``images_per_batch`` random images each, every class equally often. Returns ``root``."""
    folder = Path(root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = np.resize(np.arange(10), images_per_batch)
    for name in TRAIN_BATCHES + (TEST_BATCH,):
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, size=(images_per_batch, 3072), dtype=np.uint8),
                         "labels": labels.tolist()}, f)
    return Path(root)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, seed: int = 1) -> Path:
    """torchvision's ``MNIST/raw`` IDX files under ``root`` at MNIST's sizes (the loader checks
    them) with random 28x28 images, every digit equally often. Returns ``root``."""
    from raycl.data.mnist import _FILES

    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", 60000), ("test", 10000)):
        _write_idx(raw / _FILES[f"{split}_x"], rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8))
        _write_idx(raw / _FILES[f"{split}_y"], np.resize(np.arange(10), n))
    return Path(root)
