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


# ----- a GPU share holds its members and its CUDA context ------------------------------------------
def test_a_gpu_share_leaves_its_context_out_of_the_allocator_cap(monkeypatch):
    from raycl import device as devices

    gib = 2**30
    assert devices.capped_fraction(0.25, 80 * gib) == pytest.approx((20 - 1) / 80)  # 1 GiB for the context
    assert devices.capped_fraction(0.5, 16 * gib, margin_bytes=2 * gib) == pytest.approx(6 / 16)
    with pytest.raises(RayclError, match=r"^a share of 0.05 of a GPU of 16.0 GiB leaves nothing for PyTorch after "
                                         r"the 1.0 GiB a process's CUDA context takes; use a larger --gpus-per-trial"):
        devices.capped_fraction(0.05, 16 * gib)
    caps = []
    properties = types.SimpleNamespace(total_memory=80 * gib)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: properties)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, device: caps.append((f, device)))
    devices.cap_memory(torch.device("cuda", 1), 0.25)
    devices.cap_memory(torch.device("cuda", 1), 1.0)  # a whole GPU: no cap
    devices.cap_memory(torch.device("cpu"), 0.25)
    assert caps == [(pytest.approx(19 / 80), torch.device("cuda", 1))]


def test_population_widths_scale_with_the_share_of_a_gpu():
    from raycl.tune.options import SearchOptions
    from raycl.tune.placement import share_scaled_limit
    from raycl.tune.search import cohort_size

    assert [share_scaled_limit(256, g) for g in (0, 1, 0.5, 0.25, 0.3, 0.001)] == [256, 256, 128, 64, 76, 1]
    assert [share_scaled_limit(16, g) for g in (0.25, 1 / 3, 0.1)] == [4, 5, 1]

    def auto(gpus, convolutional=False, seeds=1):
        options = SearchOptions(method="derpp", samples=4000, gpus_per_trial=gpus, trial_seeds=seeds)
        return cohort_size(options, slots=1, convolutional=convolutional)[0]

    assert [auto(1), auto(0.5), auto(0.25), auto(0.25, seeds=2)] == [256, 128, 64, 32]
    assert [auto(1, True), auto(0.25, True), auto(0.1, True)] == [16, 4, 1]


# ----- GPU checks that fail loudly, --device auto that says why ------------------------------------
def test_host_values_reach_a_cuda_device_pinned_and_without_blocking(monkeypatch):
    """raycl.device.to_device's CUDA path, followed through its calls: page-locking needs a CUDA
    driver, so on this CPU the pinned tensor is a stand-in that records the copy asked of it."""
    from raycl.device import to_device

    calls = []

    class Pinned:
        def to(self, device, non_blocking=False):
            calls.append(("copy", device, non_blocking))
            return "on the device"

    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append(("pin", tuple(self.shape))) or Pinned())
    assert to_device(torch.ones(3), torch.device("cuda", 0)) == "on the device"
    assert calls == [("pin", (3,)), ("copy", torch.device("cuda", 0), True)]
    calls.clear()
    host = torch.rand(2, 5, dtype=torch.float64)
    assert to_device(host, torch.device("cpu")) is host and calls == []  # the CPU keeps its tensor: same numbers


def fake_cuda(monkeypatch, *, driver, error=None, built_for="13.0"):
    """This process as one on a host with NVIDIA ``driver`` (None: none) and torch built for CUDA
    ``built_for`` whose CUDA fails to start with ``error`` (None: CUDA works)."""
    from raycl import device as devices

    def init():
        if error:
            raise RuntimeError(error)

    monkeypatch.setattr(devices, "driver_version", lambda: driver)
    monkeypatch.setattr(torch.version, "cuda", built_for)
    monkeypatch.setattr(torch, "__version__", "2.14.1+cu130")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: error is None and built_for is not None)
    monkeypatch.setattr(torch.cuda, "init", init)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    if error is None:  # the probe tensor cannot be made on this CPU: the one seam
        monkeypatch.setattr(devices, "_probe_cuda", lambda: None)


@pytest.mark.parametrize("driver, error, built_for, expected", [
    ("550.54.15", "The NVIDIA driver on your system is too old (found version 12040). Please update your GPU driver",
     "13.0", "CUDA unusable: The NVIDIA driver on your system is too old (found version 12040); NVIDIA driver "
             "550.54.15, torch 2.14.1+cu130 built for CUDA 13.0 (torch.version.cuda; needs driver >= 580); fix: "
             "pip install torch==2.14.1 --index-url https://download.pytorch.org/whl/cu126 (CUDA 12 wheels run on "
             "driver >= 525; where that index lacks 2.14.1, its newest torch), or upgrade the driver to >= 580"),
    (None, "Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and installed a driver",
     "13.0", "CUDA unusable: Found no NVIDIA driver on your system; NVIDIA driver not found, torch 2.14.1+cu130 built "
             "for CUDA 13.0 (torch.version.cuda; needs driver >= 580); fix: install the NVIDIA driver (>= 580 for "
             "CUDA 13 wheels; >= 525 for CUDA 12 ones: pip install torch==2.14.1 --index-url "
             "https://download.pytorch.org/whl/cu126)"),
    ("470.82.01", "The NVIDIA driver on your system is too old (found version 11040)", "13.0",
     "fix: pip install torch==2.14.1 --index-url https://download.pytorch.org/whl/cu118"),
    ("418.1", "The NVIDIA driver on your system is too old (found version 10010)", "13.0",
     "fix: upgrade the NVIDIA driver to >= 525 (CUDA 12 wheels) or >= 580 (CUDA 13)"),
    ("580.65.06", "No CUDA GPUs are available", "13.0",
     "fix: the driver fits this torch: check that the GPU is visible to this process (nvidia-smi, "
     "CUDA_VISIBLE_DEVICES)"),
    ("550.54.15", None, None, "CUDA unusable: torch 2.14.1+cu130 is built without CUDA (torch.version.cuda None); "
                              "NVIDIA driver 550.54.15; fix: pip install torch==2.14.1 --index-url "
                              "https://download.pytorch.org/whl/cu126"),
])
def test_unusable_cuda_is_one_line_naming_the_driver_torchs_cuda_and_the_fix(monkeypatch, driver, error, built_for,
                                                                              expected):
    from raycl import device as devices

    fake_cuda(monkeypatch, driver=driver, error=error, built_for=built_for)
    problem = devices.cuda_problem()
    assert "\n" not in problem and expected in problem
    assert f"NVIDIA driver {driver or 'not found'}" in problem
    assert f"torch.version.cuda{'' if built_for else ' None'}" in problem
    monkeypatch.delenv(devices.REQUIRE_CUDA, raising=False)
    device, why = devices.auto_device()
    assert device == torch.device("cpu") and why == f"device auto: cpu ({problem})"
    monkeypatch.setenv(devices.REQUIRE_CUDA, "1")
    with pytest.raises(RayclError) as caught:
        devices.auto_device()
    assert str(caught.value) == problem
    with pytest.raises(RayclError, match=re.escape(f"device 'cuda' asked for, but {problem}; or use cpu")):
        devices.resolve_device("cuda")


def test_device_auto_takes_a_working_cuda_and_says_so(monkeypatch):
    from raycl import device as devices

    fake_cuda(monkeypatch, driver="580.65.06")
    monkeypatch.setenv(devices.REQUIRE_CUDA, "1")
    assert devices.cuda_problem() is None
    devices.require_cuda()
    assert devices.auto_device() == (torch.device("cuda"), "device auto: cuda (NVIDIA H100 80GB HBM3, torch "
                                                           "2.14.1+cu130 CUDA 13.0)")
    assert devices.resolve_device("auto") == torch.device("cuda")


def test_this_machine_names_its_missing_cuda(monkeypatch):
    """No monkeypatching: on a machine without a usable CUDA the line names what is missing."""
    from raycl import device as devices

    problem = devices.cuda_problem()
    if problem is None:
        pytest.skip("CUDA works here")
    assert problem.startswith("CUDA unusable: ") and "NVIDIA driver " in problem and "fix: " in problem
    assert str(torch.version.cuda) in problem and "\n" not in problem
