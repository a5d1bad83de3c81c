import contextlib
import os
import signal
from pathlib import Path

import pytest

# A new local Ray cluster turns token auth on unless told otherwise.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The suite trains on the CPU even on a GPU machine (launch/train.py's default device); a test that
# wants CUDA asks for it (tests/test_cuda.py). Ray trials given no GPU train on the CPU anyway.
os.environ.setdefault("RAYCL_DEVICE", "cpu")

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


def processes_mentioning(text: str) -> list[int]:
    """Ids of the live processes whose command line contains ``text`` (Linux): how a test finds the
    Ray processes it started (by their temp folder) and stops only those."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes() and Path(cmdline.parent, "stat").read_text().split()[2] != "Z":
                pids.append(int(cmdline.parent.name))
        except OSError:  # gone meanwhile
            pass
    return pids


def kill_processes_mentioning(text: str) -> None:
    """SIGKILL the live processes whose command line contains ``text`` (one gone meanwhile is fine)."""
    for pid in processes_mentioning(text):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of two CPUs in this process for a module's searches (joined, not
    restarted, if one is running). Per module, not per session: an idle cluster left running slows
    the tests that start clusters of their own."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def ray_address() -> str:
    """The address of the Ray cluster this test process runs (a module's ``ray_cluster``): a search
    started as a subprocess joins it with ``--address`` instead of starting a cluster of its own."""
    import ray

    return ray.get_runtime_context().gcs_address


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory):
    """seq-cifar10 from a synthetic CIFAR-10 folder of 20 random images a batch file (the ResNet
    benchmark, with batch norm and augmentation, without the download), on the narrower
    reduced-resnet18."""
    from raycl.data import load_benchmark
    from raycl.data.synthetic import write_cifar10

    root = write_cifar10(tmp_path_factory.mktemp("cifar"), images_per_batch=20, seed=1)
    return load_benchmark("seq-cifar10", root, backbone="reduced-resnet18")


@pytest.fixture(scope="session")
def tiny_mlp():
    """Three tasks of two classes of 16-pixel uint8 images, 24 training examples a task (the meta
    device and method state tests)."""
    import numpy as np

    from raycl.data import Benchmark, Task

    rng = np.random.default_rng(0)

    def split(classes, n):
        return rng.integers(0, 256, size=(n, 16), dtype=np.uint8), np.repeat(np.array(classes), n // 2)

    tasks = []
    for t in range(3):
        classes = (2 * t, 2 * t + 1)
        (train_x, train_y), (val_x, val_y), (test_x, test_y) = (split(classes, n) for n in (24, 8, 8))
        tasks.append(Task(train_x, train_y, val_x, val_y, test_x, test_y, classes))
    return Benchmark(name="tiny-mlp", tasks=tasks, n_classes=6, input_shape=(16,),
                     settings=("class_il", "task_il"), model="mlp")


@pytest.fixture(scope="session")
def digits():
    from raycl.data import load_benchmark

    return load_benchmark("seq-digits")


def pytest_configure(config):
    import torch

    # Tiny models: one thread is fastest and keeps parallel test workers from oversubscribing.
    torch.set_num_threads(1)


@pytest.fixture
def assert_resumes_identically():
    """Check that a stream stopped after ``after`` tasks and restored from its state dict ends
    with the same test matrix as an uninterrupted run (what a retried or resumed trial relies on)."""

    def check(benchmark, method: str, config, seed: int, after: int = 2) -> None:
        import copy

        import numpy as np

        from raycl.train import PopulationRun, run

        whole = run(benchmark, method, config, seed=seed)
        first = PopulationRun(benchmark, method, config, [seed])
        for _ in range(after):
            first.run_task()
        second = PopulationRun(benchmark, method, config, [seed])
        second.load_state_dict(copy.deepcopy(first.state_dict()))
        for _ in second:
            pass
        for setting in benchmark.settings:
            assert np.array_equal(whole.test[setting], second.result(0).test[setting], equal_nan=True), setting

    return check


@pytest.fixture(scope="session")
def few_digits(digits):
    """The first two tasks of seq-digits with 80 training and 20 validation and test images each:
    enough for every method to learn the first and replay on the second, in well under a second."""
    import dataclasses

    def cut(task):
        return dataclasses.replace(task, train_x=task.train_x[:80], train_y=task.train_y[:80],
                                   val_x=task.val_x[:20], val_y=task.val_y[:20],
                                   test_x=task.test_x[:20], test_y=task.test_y[:20])

    return dataclasses.replace(digits, tasks=[cut(t) for t in digits.tasks[:2]])
