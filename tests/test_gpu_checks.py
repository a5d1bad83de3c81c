"""The GPU checks (launch/benchmark.py --gpu, tests/test_cuda.py) run from the source tree with torch
alone, and fail loudly where CUDA does not work. Here they run under a Python where importing Ray
or Optuna fails, as on a GPU host that has neither."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from raycl.device import REQUIRE_CUDA, cuda_problem

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def without_ray_or_optuna(tmp_path_factory) -> dict:
    """An environment whose Python cannot import ray or optuna (a sitecustomize on PYTHONPATH marks
    them missing), running this source tree."""
    blocker = tmp_path_factory.mktemp("no-ray")
    (blocker / "sitecustomize.py").write_text(
        "import sys\nfor name in ('ray', 'optuna'):\n    sys.modules[name] = None  # import raises ImportError\n")
    env = {k: v for k, v in os.environ.items() if k != REQUIRE_CUDA}
    env["OMP_NUM_THREADS"] = "1"  # tiny models: one thread, as the suite's own (conftest)
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    check = subprocess.run([sys.executable, "-c", "import ray"], env=env, capture_output=True, text=True)
    assert check.returncode == 1 and "import of ray halted" in check.stderr
    return env


def test_the_gpu_benchmark_runs_on_the_cpu_with_torch_alone(without_ray_or_optuna):
    """``--gpu --device cpu --quick``: every section of the GPU benchmark at toy sizes on the CPU."""
    proc = subprocess.run([sys.executable, str(REPO / "launch" / "benchmark.py"), "--gpu", "--device", "cpu",
                           "--quick"], env=without_ray_or_optuna, capture_output=True, text=True, timeout=600,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "ERROR" not in out and out.count(" ok  (") == 16  # every method trained
    for section in ("== float64, cpu against CPU", "== resume across devices", "member-steps/s", "== stacked ResNet "
                    "populations", "fastest: ", "bf16/fp32", "kept full at    4", "4 -> 2 at the rung"):
        assert section in out, section
    assert "largest gap 0.0000" in out  # CPU against CPU: the same numbers


def test_the_gpu_checks_fail_in_one_line_where_cuda_does_not_work(without_ray_or_optuna):
    problem = cuda_problem()
    if problem is None:
        pytest.skip("CUDA works here: tests/test_cuda.py and benchmark.py --gpu run for real")
    env = without_ray_or_optuna
    bench = subprocess.run([sys.executable, str(REPO / "launch" / "benchmark.py"), "--gpu"], env=env,
                           capture_output=True, text=True, timeout=300, cwd=REPO)
    assert bench.returncode == 2 and bench.stdout == ""
    assert bench.stderr.splitlines() == [f"error: {problem}"]
    tests = [sys.executable, "-m", "pytest", str(REPO / "tests" / "test_cuda.py"), "-q", "-p", "no:cacheprovider"]
    skipped = subprocess.run(tests, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert skipped.returncode == 0 and " skipped" in skipped.stdout and "failed" not in skipped.stdout
    failed = subprocess.run(tests, env={**env, REQUIRE_CUDA: "1"}, capture_output=True, text=True, timeout=300,
                            cwd=REPO)
    assert failed.returncode == 1
    assert "1 failed" in failed.stdout and problem in failed.stdout.splitlines()
