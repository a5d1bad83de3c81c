"""MNIST streams: seq-mnist (Class-IL), perm-mnist and rot-mnist (Domain-IL), DER protocol."""

from __future__ import annotations

import gzip
import logging
import math
from pathlib import Path

import numpy as np

from raycl.data.base import CLASS_INCREMENTAL, Benchmark, Task, apply_pixel_map, class_split_tasks, stratified_split
from raycl.errors import RayclError

log = logging.getLogger(__name__)

_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as a uint8 array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    n_dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(n_dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * n_dims).reshape(shape)


def _find(raw: Path, stem: str) -> Path | None:
    for candidate in (raw / stem, raw / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _download(root: Path) -> None:
    import torchvision  # imported only here: it costs seconds and memory at start-up

    for train in (True, False):
        torchvision.datasets.MNIST(str(root), train=train, download=True)


def load_mnist(root: Path) -> dict[str, np.ndarray]:
    """The four MNIST arrays from ``<root>/MNIST/raw`` (torchvision's layout), downloading if absent.

    Images are (N, 784) uint8, labels (N,) uint8.
    """
    raw = root / "MNIST" / "raw"
    if any(_find(raw, stem) is None for stem in _FILES.values()):
        log.info("MNIST not found under %s; trying to download it", raw)
        try:
            _download(root)
        except Exception as exc:  # any network or filesystem failure means the same to the user
            looked = ", ".join(f"{stem}[.gz]" for stem in _FILES.values())
            raise RayclError(
                f"MNIST not found: looked in {raw} for {looked}, and the download failed "
                f"({str(exc).strip().splitlines()[0]}). "
                "Put the four MNIST .gz files there, or point --data-root (or $RAYCL_DATA) at the "
                "folder that holds MNIST/raw/."
            ) from None
    arrays = {key: _read_idx(_find(raw, stem)) for key, stem in _FILES.items()}
    for part, n in (("train", 60000), ("test", 10000)):
        if arrays[f"{part}_x"].shape != (n, 28, 28) or arrays[f"{part}_y"].shape != (n,):
            raise RayclError(f"MNIST files in {raw} are corrupt: unexpected {part} shapes")
    arrays["train_x"] = arrays["train_x"].reshape(60000, 784)
    arrays["test_x"] = arrays["test_x"].reshape(10000, 784)
    return arrays


def rotation_source_index(degrees: float, side: int = 28) -> np.ndarray:
    """For each output pixel, the input pixel a counter-clockwise rotation by ``degrees`` about the
    image centre reads (nearest neighbour, as PIL's and torchvision's default), or ``side**2`` where
    it falls outside the image."""
    theta = math.radians(degrees)
    centre = (side - 1) / 2.0
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    x, y = cols - centre, rows - centre
    src_x = np.rint(math.cos(theta) * x - math.sin(theta) * y + centre).astype(np.int64)
    src_y = np.rint(math.sin(theta) * x + math.cos(theta) * y + centre).astype(np.int64)
    inside = (src_x >= 0) & (src_x < side) & (src_y >= 0) & (src_y < side)
    return np.where(inside, src_y * side + src_x, side * side).ravel()


def permutation_map(permutation: np.ndarray) -> np.ndarray:
    """A permutation of the pixels as a :class:`raycl.data.base.Task` pixel map."""
    return np.asarray(permutation, dtype=np.int64)


def rotate(images: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate flat 28x28 uint8 images about their centre: one gather for the whole batch."""
    return apply_pixel_map(images, rotation_source_index(degrees))


def _mlp_benchmark(name, tasks, settings, defaults) -> Benchmark:
    return Benchmark(name=name, tasks=tasks, n_classes=10, input_shape=(784,), settings=settings,
                     model="mlp", defaults=defaults)


def seq_mnist(root: Path, val_fraction: float, seed: int) -> Benchmark:
    """5 tasks of 2 consecutive digits; Class-IL and Task-IL; batch 10 as in the DER paper."""
    d = load_mnist(root)
    tasks = class_split_tasks(d["train_x"], d["train_y"], d["test_x"], d["test_y"], 2, 5, val_fraction, seed)
    return _mlp_benchmark("seq-mnist", tasks, CLASS_INCREMENTAL,
                          {"batch_size": 10, "minibatch_size": 10, "n_epochs": 1})


def _domain_tasks(d: dict, pixel_maps, val_fraction: float, seed: int) -> list[Task]:
    """One task per pixel map, all views of one copy of the images and the same validation split."""
    kept, held = stratified_split(d["train_y"], val_fraction, seed)
    labels = d["train_y"].astype(np.int64)
    train_x, val_x = np.ascontiguousarray(d["train_x"][kept]), np.ascontiguousarray(d["train_x"][held])
    train_y, val_y, test_y = labels[kept], labels[held], d["test_y"].astype(np.int64)
    return [Task(train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y, test_x=d["test_x"], test_y=test_y,
                 classes=tuple(range(10)), pixel_map=pixel_map) for pixel_map in pixel_maps]


def perm_mnist(root: Path, val_fraction: float, seed: int, n_tasks: int = 20) -> Benchmark:
    """20 tasks, each all of MNIST under its own fixed pixel permutation; Domain-IL."""
    d = load_mnist(root)
    rng = np.random.default_rng(seed)
    perms = [permutation_map(rng.permutation(784)) for _ in range(n_tasks)]
    tasks = _domain_tasks(d, perms, val_fraction, seed)
    return _mlp_benchmark("perm-mnist", tasks, ("domain_il",),
                          {"batch_size": 128, "minibatch_size": 128, "n_epochs": 1})


def rot_mnist(root: Path, val_fraction: float, seed: int, n_tasks: int = 20) -> Benchmark:
    """20 tasks, each all of MNIST rotated by an angle drawn from U(0, 180); Domain-IL."""
    d = load_mnist(root)
    rng = np.random.default_rng(seed)
    angles = [float(rng.uniform(0.0, 180.0)) for _ in range(n_tasks)]
    tasks = _domain_tasks(d, [rotation_source_index(a) for a in angles], val_fraction, seed)
    return _mlp_benchmark("rot-mnist", tasks, ("domain_il",),
                          {"batch_size": 128, "minibatch_size": 128, "n_epochs": 1})
