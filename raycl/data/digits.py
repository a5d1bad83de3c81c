"""seq-digits: scikit-learn's bundled 8x8 digits, the offline default (no download)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from raycl.data.base import Benchmark, class_split_tasks, stratified_split

TEST_FRACTION = 0.25


def seq_digits(val_fraction: float, seed: int) -> Benchmark:
    """5 tasks x 2 classes of 8x8 digits (1797 images), Class-IL and Task-IL."""
    digits = load_digits()
    # Pixel values are 0..16; scaled to the 0..255 range every benchmark stores.
    x = np.rint(digits.data * (255.0 / 16.0)).astype(np.uint8)
    y = digits.target.astype(np.int64)
    train, test = stratified_split(y, TEST_FRACTION, seed)
    tasks = class_split_tasks(x[train], y[train], x[test], y[test], 2, 5, val_fraction, seed)
    return Benchmark(name="seq-digits", tasks=tasks, n_classes=10, input_shape=(64,),
                     settings=("class_il", "task_il"), model="mlp",
                     defaults={"batch_size": 10, "minibatch_size": 10, "n_epochs": 5})
