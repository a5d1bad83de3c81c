"""Full-size runs on real MNIST, each as its own `launch/train.py` process, with their figures.

Prints per run: whole-process wall time, training-loop time, peak RSS and final test accuracy.
Each run uses one torch thread unless --threads says otherwise.

    python launch/benchmark.py --data-root ../shared/data
    python launch/benchmark.py --runs seq-mnist-derpp-500 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = Path(__file__).resolve().parent / "train.py"

# name -> train.py arguments (the DER paper's arguments for each row)
RUNS = {
    "seq-mnist-derpp-500": ["--method", "derpp", "--dataset", "seq-mnist", "--buffer-size", "500", "--lr", "0.03",
                            "--batch-size", "10", "--minibatch-size", "10", "--alpha", "1.0", "--beta", "0.5",
                            "--n-epochs", "1"],
    "seq-mnist-er-500": ["--method", "er", "--dataset", "seq-mnist", "--buffer-size", "500", "--lr", "0.1",
                         "--minibatch-size", "10"],
    "seq-mnist-sgd": ["--method", "sgd", "--dataset", "seq-mnist", "--lr", "0.03"],
    "perm-mnist-derpp-500": ["--method", "derpp", "--dataset", "perm-mnist", "--buffer-size", "500", "--lr", "0.2",
                             "--alpha", "1.0", "--beta", "0.5"],
    "rot-mnist-er-500": ["--method", "er", "--dataset", "rot-mnist", "--buffer-size", "500", "--lr", "0.2"],
}
DEFAULT_RUNS = ("seq-mnist-derpp-500", "seq-mnist-er-500", "seq-mnist-sgd", "perm-mnist-derpp-500",
                "rot-mnist-er-500")


def measure(name: str, args: list[str], data_root: str | None, threads: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run.json"
        cmd = [sys.executable, str(TRAIN), *args, "--threads", str(threads), "--seed", str(seed), "--json", str(out)]
        if data_root:
            cmd += ["--data-root", data_root]
        start = time.perf_counter()
        # wait4 gives this child's own peak RSS, not the maximum over all children so far.
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        stderr = proc.stderr.read()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{name} failed:\n{stderr[-2000:]}")
        doc = json.loads(out.read_text())
    setting = next(iter(doc["test"]))
    return {"run": name, "wall_s": wall, "train_s": doc["train_s"][0], "peak_rss_gb": usage.ru_maxrss / 2**20,
            "setting": setting, "test_acc": doc["test"][setting]["mean"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), choices=sorted(RUNS),
                        help="which runs (default: all)")
    parser.add_argument("--data-root", default=None, help="folder holding MNIST/raw (default $RAYCL_DATA)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--repeat", type=int, default=1, help="repeat each run, seeds 0..N-1 (default 1)")
    args = parser.parse_args(argv)
    header = f"{'run':24} {'seed':>4} {'wall s':>7} {'train s':>8} {'peak RSS GB':>12} {'test acc':>9}"
    print(header)
    print("-" * len(header))
    for name in args.runs:
        for seed in range(args.repeat):
            r = measure(name, RUNS[name], args.data_root, args.threads, seed)
            print(f"{name:24} {seed:>4} {r['wall_s']:7.2f} {r['train_s']:8.2f} {r['peak_rss_gb']:12.3f} "
                  f"{r['test_acc']:8.2f}%  ({r['setting']})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
