"""seq-tinyimg (mammoth's ``datasets/seq_tinyimagenet.py``): Tiny ImageNet's 200 classes of 64x64
images in 10 tasks x 20 classes, ResNet-18, random crop (padding 4) and flip, Class-IL and Task-IL,
batch 32, 50 epochs. The val split of Tiny ImageNet (its test labels are not public) is the test
split, as in mammoth.

Two layouts under the data root, tried in this order:

- mammoth's processed arrays, ``TINYIMG/processed/{x,y}_{train,val}_{01..20}.npy``: x float in
  [0, 1], (N, 64, 64, 3); y the class index. The twenty files of a split are concatenated.
- the original ``tiny-imagenet-200/`` folder of JPEGs: ``wnids.txt``, ``train/<wnid>/images/*.JPEG``,
  ``val/images/*.JPEG`` with ``val/val_annotations.txt`` (file name, wnid per line). Class ``c`` is
  the wnid on line ``c`` of ``wnids.txt``: the order of mammoth's class-name list for its processed
  labels (egyptian_cat, reel, volleyball, ...), so both layouts make the same tasks. Training
  images go class by class, by file name; val images in ``val_annotations.txt`` order. Grey images
  are converted to RGB.

Images are stored as uint8 (N, 3, 64, 64): the processed floats times 255, rounded.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from raycl.data.base import CLASS_INCREMENTAL, Benchmark, class_split_tasks
from raycl.errors import RayclError

log = logging.getLogger(__name__)

PROCESSED = Path("TINYIMG") / "processed"
JPEG_TREE = "tiny-imagenet-200"
N_FILES = 20
N_CLASSES = 200
N_TASKS = 10
SIDE = 64
# mammoth's constants for Tiny ImageNet.
MEAN = (0.4802, 0.4480, 0.3975)
STD = (0.2770, 0.2691, 0.2821)
DEFAULTS = {"batch_size": 32, "minibatch_size": 32, "n_epochs": 50}
# The published arguments at buffer 500 (the structure has one entry per benchmark and method):
# CLS-ER's utils/best_args.py for clser, SYNERgy's for synergy.
METHOD_DEFAULTS = {
    "clser": {"lr": 0.05, "reg_weight": 0.1, "stable_update_freq": 0.05, "stable_alpha": 0.999,
              "plastic_update_freq": 0.08, "plastic_alpha": 0.999},
    "synergy": {"lr": 0.05, "reg_weight": 0.1, "ema_update_freq": 0.05, "ema_alpha": 0.999, "penalty_weight": 0.1,
                "fisher_alpha": 0.999, "fisher_update_freq": 0.0004},
}


def processed_files(split: str) -> list[tuple[Path, Path]]:
    """The (x, y) file pairs of ``split`` ("train" or "val"), relative to the data root."""
    return [(PROCESSED / f"x_{split}_{i:02d}.npy", PROCESSED / f"y_{split}_{i:02d}.npy")
            for i in range(1, N_FILES + 1)]


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise RayclError(f"{path} is not a readable .npy array ({exc}); the file may be truncated: "
                         "copy it again") from None


def _read_processed(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for x_name, y_name in processed_files(split):
        x, y = _load_npy(root / x_name), _load_npy(root / y_name).reshape(-1)
        if x.ndim != 4 or x.shape[1:] != (SIDE, SIDE, 3) or len(x) != len(y):
            raise RayclError(f"{root / x_name}: expected (N, {SIDE}, {SIDE}, 3) images and as many labels in "
                             f"{y_name}, got {x.shape} and {y.shape}")
        if x.dtype != np.uint8:  # mammoth's floats in [0, 1]
            if len(x) and (x.min() < 0.0 or x.max() > 1.0):
                raise RayclError(f"{root / x_name}: expected pixel values in [0, 1] (mammoth's processed "
                                 f"arrays), found {x.min()} .. {x.max()}")
            x = np.rint(x * 255.0).astype(np.uint8)
        xs.append(x.transpose(0, 3, 1, 2))
        ys.append(y.astype(np.int64))
    return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)


def _read_jpeg(path: Path) -> np.ndarray:
    from PIL import Image  # pillow comes with torchvision; imported only for this layout

    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise RayclError(f"{path} is missing (listed in the Tiny ImageNet folder's annotations)") from None
    except OSError as exc:  # truncated or not an image
        raise RayclError(f"{path} is not a readable image ({exc}); the file may be truncated: copy it again") from None
    if pixels.shape != (SIDE, SIDE, 3):
        raise RayclError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]}, not {SIDE}x{SIDE}")
    return pixels


def _read_images(paths: list[Path]) -> np.ndarray:
    if not paths:
        return np.zeros((0, 3, SIDE, SIDE), dtype=np.uint8)
    # Decoding releases the GIL, so threads read a 100,000-file tree several times faster.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        images = list(pool.map(_read_jpeg, paths, chunksize=256))
    return np.stack(images).transpose(0, 3, 1, 2).copy()


def _read_jpeg_tree(tree: Path) -> dict[str, np.ndarray]:
    wnids_file = tree / "wnids.txt"
    annotations = tree / "val" / "val_annotations.txt"
    for needed in (wnids_file, annotations):
        if not needed.is_file():
            raise RayclError(f"Tiny ImageNet folder {tree} lacks {needed.relative_to(tree)}")
    wnids = [line.strip() for line in wnids_file.read_text().splitlines() if line.strip()]
    if len(wnids) != N_CLASSES or len(set(wnids)) != N_CLASSES:
        raise RayclError(f"{wnids_file} lists {len(set(wnids))} distinct classes, not {N_CLASSES}")
    index = {wnid: c for c, wnid in enumerate(wnids)}
    train_paths, train_y = [], []
    for c, wnid in enumerate(wnids):
        files = sorted((tree / "train" / wnid / "images").glob("*.JPEG"))
        if not files:
            raise RayclError(f"Tiny ImageNet folder {tree}: no images in train/{wnid}/images/")
        train_paths += files
        train_y += [c] * len(files)
    val_paths, val_y = [], []
    for number, line in enumerate(annotations.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise RayclError(f"{annotations} line {number}: expected 'file<TAB>wnid' with a wnid of wnids.txt, "
                             f"got {line!r}")
        val_paths.append(tree / "val" / "images" / fields[0])
        val_y.append(index[fields[1]])
    log.info("reading %d Tiny ImageNet JPEGs from %s", len(train_paths) + len(val_paths), tree)
    return {"train_x": _read_images(train_paths), "train_y": np.asarray(train_y, dtype=np.int64),
            "test_x": _read_images(val_paths), "test_y": np.asarray(val_y, dtype=np.int64)}


def load_tinyimg(root: Path) -> dict[str, np.ndarray]:
    """Tiny ImageNet from mammoth's processed arrays, else from the JPEG tree (see the module's
    docstring): train images and labels, and the val split as test."""
    processed = [root / p for split in ("train", "val") for pair in processed_files(split) for p in pair]
    missing = [p for p in processed if not p.is_file()]
    tree = root / JPEG_TREE
    if not missing:
        train_x, train_y = _read_processed(root, "train")
        test_x, test_y = _read_processed(root, "val")
        data = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
    elif (tree / "wnids.txt").is_file():
        data = _read_jpeg_tree(tree)
    else:
        some = ", ".join(str(p.relative_to(root)) for p in missing[:4])
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        raise RayclError(
            f"Tiny ImageNet not found under {root}: expected mammoth's processed arrays "
            f"{PROCESSED}/{{x,y}}_{{train,val}}_{{01..20}}.npy (missing: {some}{more}), or the original "
            f"{JPEG_TREE}/ folder (wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, "
            "val/val_annotations.txt). Put either under --data-root (or $RAYCL_DATA)."
        )
    for split in ("train", "test"):
        y = data[f"{split}_y"]
        if len(y) and (y.min() < 0 or y.max() >= N_CLASSES):
            raise RayclError(f"Tiny ImageNet under {root}: {split} labels outside 0..{N_CLASSES - 1}")
    return data


def seq_tinyimg(root: Path, val_fraction: float, seed: int) -> Benchmark:
    d = load_tinyimg(root)
    tasks = class_split_tasks(d["train_x"], d["train_y"], d["test_x"], d["test_y"], N_CLASSES // N_TASKS,
                              N_TASKS, val_fraction, seed)
    return Benchmark(name="seq-tinyimg", tasks=tasks, n_classes=N_CLASSES, input_shape=(3, SIDE, SIDE),
                     settings=CLASS_INCREMENTAL, model="resnet18", mean=MEAN, std=STD, augment=True,
                     defaults=dict(DEFAULTS), method_defaults={k: dict(v) for k, v in METHOD_DEFAULTS.items()})
