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


def write_cifar100(root: Path, train_per_class: int = 5, test_per_class: int = 2, seed: int = 1) -> Path:
    """torchvision's ``cifar-100-python/{train,test}`` pickles under ``root`` (``data`` as (N, 3072)
    uint8, ``fine_labels``, ``coarse_labels``), random images with every class equally often.
    Returns ``root``."""
    from raycl.data.cifar100 import FOLDER, N_CLASSES, TEST_FILE, TRAIN_FILE

    folder = Path(root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, per_class in ((TRAIN_FILE, train_per_class), (TEST_FILE, test_per_class)):
        labels = np.tile(np.arange(N_CLASSES), per_class)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8),
                         "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist(),
                         "filenames": [f"{i}.png" for i in range(len(labels))], "batch_label": name}, f)
    return Path(root)


def _tiny_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random 64x64 RGB images (N, 64, 64, 3) uint8, smooth enough that JPEG keeps them close."""
    coarse = rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
    return coarse.repeat(8, axis=1).repeat(8, axis=2)


def write_tinyimg_processed(root: Path, train_per_class: int = 3, val_per_class: int = 1, seed: int = 1,
                            arrays: dict[str, np.ndarray] | None = None) -> Path:
    """mammoth's ``TINYIMG/processed/{x,y}_{train,val}_{01..20}.npy`` under ``root``: x float32 in
    [0, 1], (N, 64, 64, 3), y int64, each split cut into 20 files. ``arrays`` (``train_x``,
    ``train_y``, ``val_x``, ``val_y``; x uint8 NHWC) writes those images instead of random ones.
    Returns ``root``."""
    from raycl.data.tinyimg import N_CLASSES, N_FILES, processed_files

    rng = np.random.default_rng(seed)
    if arrays is None:
        arrays = {}
        for split, per_class in (("train", train_per_class), ("val", val_per_class)):
            labels = np.tile(np.arange(N_CLASSES), per_class)
            arrays[f"{split}_x"], arrays[f"{split}_y"] = _tiny_images(rng, len(labels)), labels
    (Path(root) / processed_files("train")[0][0]).parent.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        x_parts = np.array_split(arrays[f"{split}_x"].astype(np.float32) / 255.0, N_FILES)
        y_parts = np.array_split(np.asarray(arrays[f"{split}_y"], dtype=np.int64), N_FILES)
        for (x_name, y_name), x, y in zip(processed_files(split), x_parts, y_parts):
            np.save(Path(root) / x_name, x)
            np.save(Path(root) / y_name, y)
    return Path(root)


def write_tiny_imagenet_jpegs(root: Path, train_per_class: int = 3, val_per_class: int = 1, seed: int = 1) -> Path:
    """The original ``tiny-imagenet-200/`` tree under ``root``: ``wnids.txt`` (200 made-up wnids, not
    in sorted order), ``train/<wnid>/images/<wnid>_<k>.JPEG`` and ``val/images/val_<k>.JPEG`` with
    ``val/val_annotations.txt``, random 64x64 images. Returns ``root``."""
    from PIL import Image

    from raycl.data.tinyimg import JPEG_TREE, N_CLASSES

    tree = Path(root) / JPEG_TREE
    rng = np.random.default_rng(seed)
    wnids = [f"n{w:08d}" for w in rng.choice(10 ** 8, size=N_CLASSES, replace=False)]
    (tree / "val" / "images").mkdir(parents=True, exist_ok=True)
    (tree / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    for wnid, images in zip(wnids, _tiny_images(rng, N_CLASSES * train_per_class).reshape(
            N_CLASSES, train_per_class, 64, 64, 3)):
        folder = tree / "train" / wnid / "images"
        folder.mkdir(parents=True, exist_ok=True)
        for k, image in enumerate(images):
            Image.fromarray(image).save(folder / f"{wnid}_{k}.JPEG", quality=95)
    val_labels = rng.permutation(np.tile(np.arange(N_CLASSES), val_per_class))
    lines = []
    for k, (c, image) in enumerate(zip(val_labels, _tiny_images(rng, len(val_labels)))):
        Image.fromarray(image).save(tree / "val" / "images" / f"val_{k}.JPEG", quality=95)
        lines.append(f"val_{k}.JPEG\t{wnids[c]}\t0\t0\t63\t63\n")
    (tree / "val" / "val_annotations.txt").write_text("".join(lines))
    return Path(root)
