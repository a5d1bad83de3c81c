"""Solo runs whose numbers must not change: existing best-args files replay as before.

``python tests/solo_reference.py OUT.json`` (run from the repository root, with PYTHONPATH on the
code to record) writes every case's accuracy matrices and the hashes of its final networks and
buffer; ``tests/test_mixed_capacities.py`` recomputes them with the code as it is and compares bit
for bit. ``tests/data/solo_numbers.json`` was written so from the code before buffer sizes became
per-member (commit b4743fb). Float64 results depend on the CPU's kernels and torch's version, so
the file records where it was made and the comparison runs only there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
ERACE = "raycl_erace.method:ErAce"
REPLAY = {"n_epochs": 1, "buffer_size": 30, "minibatch_size": 8, "lr": 0.05}
CASES = {
    "er": REPLAY,
    "der": {**REPLAY, "alpha": 0.5},
    "derpp": {**REPLAY, "alpha": 0.3, "beta": 0.7},
    "derpp-adam": {**REPLAY, "alpha": 0.3, "beta": 0.7, "optimizer": "adam", "lr": 1e-3},
    "agem": {**REPLAY, "buffer_size": 40},
    "clser": {**REPLAY, "reg_weight": 0.5, "stable_update_freq": 0.6, "plastic_update_freq": 0.8},
    "synergy": {**REPLAY, "ema_update_freq": 0.7, "fisher_update_freq": 0.5, "penalty_weight": 1.0},
    "mer": {**REPLAY, "buffer_size": 20, "minibatch_size": 3, "batches_per_example": 2, "beta": 0.3},
    "mer-batched": {**REPLAY, "buffer_size": 20, "minibatch_size": 3, "batches_per_example": 2,
                    "variant": "batched"},
    "erace": {**REPLAY, "replay_weight": 0.8},
}
RESNET_CASES = {"derpp-resnet": {"n_epochs": 1, "batch_size": 4, "minibatch_size": 4, "buffer_size": 8,
                                 "alpha": 0.3, "beta": 0.5}}
SEED = 7
N_TRAIN = 120


def environment() -> dict:
    """Where float64 numbers are reproducible bit for bit."""
    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability(), "machine": platform.machine()}


def short(benchmark, n_train: int = N_TRAIN):
    tasks = [dataclasses.replace(t, train_x=t.train_x[:n_train], train_y=t.train_y[:n_train]) for t in benchmark.tasks]
    return dataclasses.replace(benchmark, tasks=tasks)


def method_of(case: str) -> str:
    name = case.split("-")[0]
    return ERACE if name == "erace" else name


def digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def numbers(benchmark, case: str, row: dict) -> dict:
    """The solo run's accuracy matrices, validation losses and hashes of its networks and buffer."""
    from raycl.methods import make_config
    from raycl.train import run_population

    method = method_of(case)
    config = make_config(method, row, benchmark.defaults)
    run = run_population(benchmark, method, [config], [SEED], dtype=torch.float64)
    state = run.method.state_dict()
    networks = {f"net.{k}": v for k, v in run.method.net.state_dict().items()}
    for name in ("stable", "plastic", "ema"):
        if name in state:
            networks.update({f"{name}.{k}": v for k, v in state[name]["model"].items()})
    buffer = state["buffer"]
    return {"test": {s: run.test[s][0].tolist() for s in benchmark.settings},
            "val": {s: run.val[s][0].tolist() for s in benchmark.settings},
            "val_loss": np.asarray(run.val_loss[0]).tolist(),
            "networks": digest(networks),
            "buffer": digest({k: buffer[k] for k in ("examples", "labels", "logits", "tasks")
                              if buffer[k] is not None}),
            "seen": buffer["seen"]}


def narrow_cifar(root: Path):
    """A synthetic seq-cifar10 on a reduced-resnet18 of 4 base filters."""
    import raycl.models
    from raycl.data import load_benchmark
    from raycl.data.synthetic import write_cifar10

    folder = write_cifar10(root, images_per_batch=20, seed=1)
    benchmark = load_benchmark("seq-cifar10", folder, backbone="reduced-resnet18")
    raycl.models.BASE_FILTERS[benchmark.model] = 4
    return benchmark


def all_numbers(cifar_root: Path) -> dict:
    from raycl.data import load_benchmark

    torch.set_num_threads(1)
    digits = short(load_benchmark("seq-digits"))
    out = {case: numbers(digits, case, row) for case, row in CASES.items()}
    cifar = narrow_cifar(cifar_root)
    out.update({case: numbers(cifar, case, row) for case, row in RESNET_CASES.items()})
    return out


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(REPO / "examples" / "raycl-erace"))
    with tempfile.TemporaryDirectory() as folder:
        result = {"environment": environment(), "cases": all_numbers(Path(folder))}
    Path(sys.argv[1]).write_text(json.dumps(result, indent=1) + "\n")
