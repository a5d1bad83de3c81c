"""Tasks and benchmarks: tensors loaded once, split once, shared by every trial."""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from raycl.errors import RayclError

SETTINGS = ("class_il", "masked_class_il", "task_il", "domain_il")
# A class-incremental stream (tasks of their own classes) is scored three ways: Class-IL (the argmax
# over every class), Task-IL (over the task's own classes) and masked Class-IL, the DER repository's
# "CIL" (its metric.py): task j is scored over the classes of tasks 0..j only, those of later tasks
# masked out. It lies between the other two, and on the first task equals Task-IL.
CLASS_INCREMENTAL = ("class_il", "masked_class_il", "task_il")


def apply_pixel_map(images: np.ndarray, pixel_map: np.ndarray) -> np.ndarray:
    """Flat images [N, D] read through ``pixel_map`` (indices into each image padded with one zero
    pixel, index D): one gather for the whole batch."""
    padded = np.concatenate([images, np.zeros((len(images), 1), dtype=images.dtype)], axis=1)
    return np.take(padded, pixel_map, axis=1)


@dataclasses.dataclass
class Task:
    """One task of a stream. Inputs are uint8 arrays, labels int64 arrays.

    Arrays rather than tensors so that Ray's object store hands them to trials without a copy.
    ``classes`` are the labels this task uses (Task-IL masks every other logit).

    ``pixel_map`` (optional) makes the task a view: its inputs are ``x[:, pixel_map]`` of the
    stored arrays padded with one zero pixel (index ``x.shape[1]``). A permutation or a
    nearest-neighbour rotation is such a map, so the tasks of perm-mnist and rot-mnist share one
    copy of the images, and :meth:`inputs` materialises a task only when it is used.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[int, ...]
    pixel_map: np.ndarray | None = None

    def inputs(self, split: str) -> np.ndarray:
        """The inputs of ``split`` ("train", "val" or "test") as the task presents them."""
        x = getattr(self, f"{split}_x")
        return x if self.pixel_map is None else apply_pixel_map(x, self.pixel_map)


@dataclasses.dataclass
class Benchmark:
    """A stream of tasks and what a run needs to know about it.

    ``settings`` lists the evaluation scenarios this benchmark is reported in; ``defaults`` holds
    the protocol's customary hyperparameters (batch size, epochs) applied before user values, and
    ``method_defaults`` a method's own where its paper defaults assume a longer stream.
    ``options`` are the benchmark options it was built with, defaults filled in
    (:mod:`raycl.data.options`).
    """

    name: str
    tasks: list[Task]
    n_classes: int
    input_shape: tuple[int, ...]
    settings: tuple[str, ...]
    model: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    augment: bool = False
    defaults: dict = dataclasses.field(default_factory=dict)
    method_defaults: dict[str, dict] = dataclasses.field(default_factory=dict)
    options: dict = dataclasses.field(default_factory=dict)

    def defaults_for(self, method: str) -> dict:
        """The protocol defaults, then ``method``'s own on this benchmark."""
        return {**self.defaults, **self.method_defaults.get(method, {})}

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    def to_tensor(self, x: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """uint8 inputs as float tensors in [0, 1], normalised where the benchmark says so."""
        with warnings.catch_warnings():
            # Arrays from the object store are read-only; nothing writes through this view.
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.from_numpy(x)
        return self.scale(raw.to(device))

    def scale(self, raw: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 inputs (a tensor, any leading dimensions) as floats in [0, 1], normalised where the
        benchmark says so."""
        return self.scaler(raw.device, dtype)(raw)

    def scaler(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> Scaler:
        """The benchmark's uint8-to-float map on ``device``, its constants made once."""
        return Scaler(self.mean, self.std, len(self.input_shape), torch.device(device), dtype)


class Scaler:
    """uint8 images to the floats a network sees (``x / 255``, then ``(x - mean) / std`` where the
    benchmark normalises), and back: ``to_uint8`` recovers the stored bytes exactly from scaled
    images, since the round trip's error stays far below half a grey level."""

    def __init__(self, mean: tuple[float, ...] | None, std: tuple[float, ...] | None, input_dims: int,
                 device: torch.device, dtype: torch.dtype):
        self.dtype = dtype
        self.mean = self.std = None
        if mean is not None:
            shape = (-1,) + (1,) * (input_dims - 1)
            self.mean = torch.tensor(mean, device=device, dtype=dtype).view(shape)
            self.std = torch.tensor(std, device=device, dtype=dtype).view(shape)

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        out = raw.to(self.dtype).div_(255.0)
        if self.mean is not None:
            out = out.sub_(self.mean).div_(self.std)
        return out

    def to_uint8(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled images back to their uint8 bytes."""
        x = x.detach().to(self.dtype)
        if self.mean is not None:
            x = x * self.std + self.mean
        return x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    """``--data-root``, else ``$RAYCL_DATA``, else ``~/.cache/raycl``."""
    if data_root:
        return Path(data_root).expanduser()
    if os.environ.get("RAYCL_DATA"):
        return Path(os.environ["RAYCL_DATA"]).expanduser()
    return Path("~/.cache/raycl").expanduser()


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out) with ``fraction`` of every class held out, reproducibly."""
    # Written out rather than sklearn's train_test_split: importing sklearn.model_selection costs
    # over a second, a fifth of a whole seq-mnist run.
    if fraction <= 0:
        return np.arange(len(labels)), np.arange(0)
    if not 0 < fraction < 1:
        raise RayclError(f"val_fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        n_held = int(round(fraction * len(members)))
        held.append(rng.choice(members, size=n_held, replace=False))
    held = np.sort(np.concatenate(held))
    kept = np.setdiff1d(np.arange(len(labels)), held, assume_unique=True)
    return kept, held


def make_task(train_x, train_y, test_x, test_y, classes, val_fraction: float, seed: int) -> Task:
    """A task whose validation split is carved, stratified, from its training data."""
    kept, held = stratified_split(train_y, val_fraction, seed)
    return Task(
        train_x=np.ascontiguousarray(train_x[kept]), train_y=train_y[kept].astype(np.int64),
        val_x=np.ascontiguousarray(train_x[held]), val_y=train_y[held].astype(np.int64),
        test_x=np.ascontiguousarray(test_x), test_y=test_y.astype(np.int64),
        classes=tuple(int(c) for c in classes),
    )


def class_split_tasks(train_x, train_y, test_x, test_y, classes_per_task: int, n_tasks: int,
                      val_fraction: float, seed: int) -> list[Task]:
    """Tasks made of consecutive class groups: (0, 1), (2, 3), ..."""
    tasks = []
    for t in range(n_tasks):
        classes = list(range(t * classes_per_task, (t + 1) * classes_per_task))
        in_train = np.isin(train_y, classes)
        in_test = np.isin(test_y, classes)
        tasks.append(make_task(train_x[in_train], train_y[in_train], test_x[in_test], test_y[in_test],
                               classes, val_fraction, seed + t))
    return tasks
