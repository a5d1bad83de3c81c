"""Where trials train: --gpus-per-trial's rule, the trial slots Ray packs, a cluster without the GPUs
asked for, the device Ray assigned, precision. No GPU needed: devices are only named, never used."""

import math
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from raycl.errors import RayclError

REPO = Path(__file__).resolve().parents[1]
ALLOWED = "allowed: 0 (no GPU), a fraction in (0, 1) (trials share a GPU) or 1"


def node(cpus, gpus=0, alive=True):
    """One entry of ray.nodes()."""
    resources = {"CPU": float(cpus), "memory": 1e9, "node:10.0.0.1": 1.0}
    if gpus:
        resources["GPU"] = float(gpus)
    return {"NodeID": "n", "Alive": alive, "Resources": resources}


# ----- --gpus-per-trial ---------------------------------------------------------------------------
@pytest.mark.parametrize("value, shown", [(1.5, "1.5"), (2, "2"), (-1, "-1"), (-0.5, "-0.5"), (math.nan, "nan"),
                                          (math.inf, "inf")])
def test_gpus_per_trial_is_none_a_fraction_or_one_gpu(value, shown):
    from raycl.tune.reproduce import ReproduceOptions, reproduce
    from raycl.tune.options import SearchOptions

    message = f"--gpus-per-trial must be >= 0 and at most 1, got {shown}; {ALLOWED}"
    with pytest.raises(RayclError, match="^" + re.escape(message)):
        SearchOptions(method="derpp", gpus_per_trial=value).validate()
    with pytest.raises(RayclError, match="--gpus-per-trial must be >= 0 and at most 1"):
        reproduce(ReproduceOptions(gpus_per_trial=value, out="/nonexistent/never-made"))


@pytest.mark.parametrize("value", [0, 0.0, 0.1, 0.3, 0.5, 1, 1.0])
def test_no_gpu_a_share_of_one_or_one_whole_gpu_are_accepted(value):
    from raycl.tune.options import SearchOptions

    SearchOptions(method="derpp", gpus_per_trial=value).validate()


def test_precision_is_one_of_the_known_ones():
    from raycl.tune.options import SearchOptions

    for precision in ("fp32", "tf32", "bf16"):
        SearchOptions(method="derpp", precision=precision).validate()
    with pytest.raises(RayclError, match="unknown precision 'fp16'; allowed: bf16, fp32, tf32"):
        SearchOptions(method="derpp", precision="fp16").validate()


def test_tune_cli_rejects_more_than_one_gpu_per_trial_before_starting_ray(tmp_path):
    for value in ("1.5", "-1"):
        proc = subprocess.run([sys.executable, str(REPO / "launch" / "tune.py"), "--method", "derpp", "--samples", "2",
                               "--gpus-per-trial", value, "--storage-path", str(tmp_path / "exp")],
                              capture_output=True, text=True, timeout=180, cwd=tmp_path,
                              env={**os.environ, "RAY_AUTH_MODE": "disabled"})
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"error: --gpus-per-trial must be >= 0 and at most 1, got {value}; {ALLOWED} (a whole GPU: a trial "
            "trains on one device)"]
    assert not (tmp_path / "exp").exists()


# ----- how many trials the cluster holds at once --------------------------------------------------------
def test_trial_slots_count_as_ray_packs_gpu_shares_per_node():
    from raycl.tune.options import SearchOptions
    from raycl.tune.search import trial_slots

    def slots(nodes, gpus, cpus=0.01, **kwargs):
        return trial_slots(SearchOptions(method="derpp", gpus_per_trial=gpus, cpus_per_trial=cpus, **kwargs), nodes)

    one_gpu = [node(cpus=64, gpus=1)]
    assert slots(one_gpu, 0.1) == 10  # 1/0.1 in floating point is not below 10
    assert slots(one_gpu, 0.3) == 3
    assert slots(one_gpu, 1 / 3) == 3
    assert slots(one_gpu, 0.5) == 2
    assert slots(one_gpu, 0.4) == 2  # a share never spans two GPUs: 0.2 of each GPU is left idle
    assert slots(one_gpu, 1) == 1
    assert slots([node(cpus=64, gpus=4)], 0.3) == 12
    # Two nodes: summed, each with its own GPUs; a dead node and a node without GPUs add none.
    two = [node(cpus=64, gpus=2), node(cpus=64, gpus=1), node(cpus=64, gpus=8, alive=False), node(cpus=64)]
    assert slots(two, 0.5) == 6 and slots(two, 1) == 3 and slots(two, 0.1) == 30
    # A trial's CPUs come from its GPU's node too; --max-concurrent bounds the whole.
    assert slots([node(cpus=4, gpus=1), node(cpus=64, gpus=1)], 0.1, cpus=1) == 4 + 10
    assert slots(one_gpu, 0.1, max_concurrent=3) == 3
    # No GPU per trial: CPUs alone, node by node (two nodes of 3 CPUs hold two 2-CPU trials, not three).
    assert slots([node(cpus=3), node(cpus=3)], 0, cpus=2) == 2
    assert slots([node(cpus=2, gpus=1)], 0, cpus=1) == 2
    # A cluster that holds none (it may yet scale up) still counts one slot.
    assert slots([node(cpus=64)], 0.5) == 1


def test_a_cluster_without_the_gpus_asked_for_is_one_clear_error():
    from raycl.tune.placement import check_cluster_has_gpus

    for nodes in ([node(cpus=2)], [node(cpus=2), node(cpus=2, gpus=4, alive=False)]):
        with pytest.raises(RayclError) as caught:
            check_cluster_has_gpus(0.5, nodes)
        assert str(caught.value) == ("--gpus-per-trial 0.5: no node of the Ray cluster has that much GPU (largest: 0 "
                                     "GPUs on 1 node(s)); use --gpus-per-trial 0, or --wait-for-resources if the "
                                     "cluster is still scaling up")
    with pytest.raises(RayclError, match=r"\(largest: 0.5 GPUs on 2 node\(s\)\)"):
        check_cluster_has_gpus(1, [node(cpus=2, gpus=0.5), node(cpus=2)])
    check_cluster_has_gpus(0, [node(cpus=2)])
    check_cluster_has_gpus(0.5, [node(cpus=2), node(cpus=2, gpus=1)])
    check_cluster_has_gpus(1, [node(cpus=2, gpus=1)])


def test_a_search_asking_for_gpus_on_a_cluster_without_them_ends_at_once(tmp_path):
    """This machine's local Ray has no GPU: the search stops before any trial, instead of waiting
    for a GPU forever ("0/2 configurations finished")."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = subprocess.run([sys.executable, str(REPO / "launch" / "tune.py"), "--method", "derpp", "--samples", "2",
                           "--gpus-per-trial", "0.5", "--storage-path", str(tmp_path / "exp")],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path,
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "error: --gpus-per-trial 0.5: no node of the Ray cluster has that much GPU (largest: 0 GPUs on 1 node(s)); "
        "use --gpus-per-trial 0, or --wait-for-resources if the cluster is still scaling up"]
    assert "configurations finished" not in proc.stdout
    assert not (tmp_path / "exp").exists()


# ----- the device a trial trains on ------------------------------------------------------------
def test_the_assigned_device_is_the_gpu_ray_gave_else_the_cpu(monkeypatch):
    from raycl.device import assigned_device

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert assigned_device([]) == torch.device("cpu")  # given none: the CPU, whatever CUDA shows
    assert assigned_device(["3"]) == torch.device("cuda", 1)  # Ray's id 3 is the second visible GPU
    assert assigned_device([2]) == torch.device("cuda", 0)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert assigned_device(["1"]) == torch.device("cuda", 1)


@pytest.mark.parametrize("gpu_ids, share, model, expected", [
    ([], 0.0, "mlp", torch.device("cpu")),
    (["3"], 0.25, "mlp", torch.device("cuda", 1)),
    (["2"], 1.0, "resnet18", torch.device("cuda", 0)),
])
def test_a_trial_trains_on_its_assigned_device_capped_at_its_share(monkeypatch, gpu_ids, share, model, expected):
    import ray

    from raycl import device as devices
    from raycl.tune.placement import trial_device

    calls = []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: gpu_ids)
    monkeypatch.setattr(devices, "cap_memory", lambda device, s: calls.append(("cap", device, s)))
    monkeypatch.setattr(devices, "apply_precision", lambda p, device, convolutional: calls.append(
        ("precision", p, device, convolutional)))
    assert trial_device(share, "bf16", types.SimpleNamespace(model=model)) == expected
    assert calls == [("cap", expected, share), ("precision", "bf16", expected, model != "mlp")]


def test_cohorts_branches_and_schedules_train_where_and_as_told(digits):
    from raycl.methods import make_config
    from raycl.selection import Branches, fork
    from raycl.cohort import Cohort

    cohort = Cohort([{"lr": 0.1, "n_epochs": 1}] * 2, [digits], "sgd", [0], device="cpu", precision="bf16")
    assert cohort.population.device == torch.device("cpu") and cohort.population.precision == "bf16"
    assert Cohort([{"lr": 0.1}], [digits], "sgd", [0]).population.precision == "fp32"
    branches = Branches(digits, "sgd", make_config("sgd", {"n_epochs": 1}, digits.defaults), 0, device="cpu",
                        precision="tf32")
    assert fork(branches.chosen, 3).precision == "tf32"
