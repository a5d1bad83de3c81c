import os
from pathlib import Path

import pytest

# A new local Ray cluster turns token auth on unless told otherwise.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]


def mnist_root() -> Path | None:
    candidates = [os.environ.get("RAYCL_DATA"), str(REPO.parent / "shared" / "data")]
    for c in candidates:
        if c and (Path(c) / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def mnist_data_root() -> Path:
    root = mnist_root()
    if root is None:
        pytest.skip("real MNIST not found (set RAYCL_DATA to the folder holding MNIST/raw)")
    return root


@pytest.fixture(scope="session")
def digits():
    from raycl.data import load_benchmark

    return load_benchmark("seq-digits")


def pytest_configure(config):
    import torch

    # Tiny models: one thread is fastest and keeps parallel test workers from oversubscribing.
    torch.set_num_threads(1)
