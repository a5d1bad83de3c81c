"""``launch/benchmark.py --member-memory``: the memory a member costs where it grew with the data.

Measured on the CPU, a few members at a time, each row in a process of its own: the rise of peak
RSS (``/proc/self/status`` VmHWM, reset through ``/proc/self/clear_refs``) over one operation,
per member, and scaled to the sizes of a GPU search:

- gen_replay: the generator's training at the end of a perm-mnist task (the whole task per member
  in float32 before, batches from the shared uint8 task now); scaled to P = 256.
- VIB: its simple replay (1,000 examples a task) after the 20 tasks of perm-mnist, the bytes kept
  per member (tensor sizes: the task ends reuse memory freed earlier, so RSS says little); scaled
  to P = 256.
- SYNERgy: one per-example Fisher estimate of a resnet18 population on 32x32 images, with the
  chunk the code takes at this P and with one example at a time (the chunk it takes at P = 16,
  which the per-member figure at P = 16 is scaled from).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

MIB = 2**20


def _peak_kib() -> int:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _rss_kib() -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _reset_peak() -> int:
    """Reset the peak RSS to the current RSS; returns it (KiB)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _rss_kib()


def _gen_replay(members: int, data_root: str | None) -> dict:
    from raycl.data import load_benchmark
    from raycl.device_checks import population

    bench = load_benchmark("perm-mnist", data_root)
    run = population(bench, "gen_replay", "cpu", seeds=range(members), values={"gen_epochs": 1})
    data = run._inputs(0, "train")
    start = _reset_peak()
    run.method.end_task(0, data)
    return {"peak_bytes": (_peak_kib() - start) * 1024, "examples": data.n}


def _vib(members: int, data_root: str | None) -> dict:
    from raycl.data import load_benchmark
    from raycl.device_checks import population

    bench = load_benchmark("perm-mnist", data_root)
    run = population(bench, "vib", "cpu", seeds=range(members))
    inputs = [run._inputs(task, "train") for task in range(bench.n_tasks)]
    _reset_peak()
    for task, data in enumerate(inputs):
        run.method.end_task(task, data)
    kept = run.method.replay_x.nbytes + run.method.replay_targets.nbytes
    return {"kept_bytes": kept, "tasks": bench.n_tasks}


def _synergy_one_at_a_time(members: int, data_root: str | None) -> dict:
    from raycl.methods import synergy

    synergy.FISHER_CHUNK_BYTES = 1
    return _synergy(members, data_root)


def _synergy(members: int, data_root: str | None) -> dict:
    from raycl.data.synthetic import write_cifar10
    from raycl.data import load_benchmark
    from raycl.device_checks import population
    from raycl.methods import synergy

    with tempfile.TemporaryDirectory() as folder:
        bench = load_benchmark("seq-cifar10", write_cifar10(Path(folder), images_per_batch=40), backbone="resnet18")
    run = population(bench, "synergy", "cpu", seeds=range(members), values={"buffer_size": 32, "n_epochs": 1})
    method = run.method
    data = run._inputs(0, "train")
    x, y = data.gather(torch.arange(32).expand(members, -1))
    params = list(method.ema.model.parameters())
    gradient_bytes = sum(p.numel() * p.element_size() for p in params)
    chunk = synergy.fisher_chunk(gradient_bytes) if hasattr(synergy, "fisher_chunk") else synergy.FISHER_CHUNK
    weight = torch.rand(members, 32)
    start = _reset_peak()
    method._per_example_fisher(x, y, weight)
    return {"peak_bytes": (_peak_kib() - start) * 1024, "chunk": chunk,
            "member_parameter_bytes": gradient_bytes // members,
            "chunk_at_16": (synergy.fisher_chunk(16 * gradient_bytes // members)
                            if hasattr(synergy, "fisher_chunk") else synergy.FISHER_CHUNK)}


ROWS = {"gen_replay": _gen_replay, "vib": _vib, "synergy": _synergy, "synergy-one": _synergy_one_at_a_time}


def _in_child(row: str, members: int, data_root: str | None) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", row, str(members), data_root or ""],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{row} P={members} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(data_root: str | None, members: int = 2) -> int:
    print(f"== bytes per member (CPU, P = {members}, peak RSS over the operation / P; each row its own process) ==")
    r = _in_child("gen_replay", members, data_root)
    per = r["peak_bytes"] / members
    print(f"gen_replay perm-mnist, generator training at a task's end ({r['examples']} examples): "
          f"{per / MIB:8.1f} MiB per member -> P=256: {256 * per / 2**30:6.2f} GiB", flush=True)
    r = _in_child("vib", members, data_root)
    kept = r["kept_bytes"] / members
    print(f"vib perm-mnist simple replay after {r['tasks']} tasks: kept {kept / MIB:8.1f} MiB per member "
          f"-> P=256: {256 * kept / 2**30:6.2f} GiB", flush=True)
    r = _in_child("synergy", members, data_root)
    gradient = r["member_parameter_bytes"]
    print(f"synergy resnet18 per-example Fisher, chunk {r['chunk']} at P={members}: peak "
          f"{r['peak_bytes'] / members / MIB:8.1f} MiB per member (the gradients {r['chunk'] * gradient / MIB:.1f} of it)",
          flush=True)
    if r["chunk_at_16"] == 1:
        one = _in_child("synergy-one", members, data_root)["peak_bytes"] / members
        print(f"synergy resnet18 per-example Fisher, chunk 1 (as at P=16): peak {one / MIB:8.1f} MiB per member -> "
              f"P=16: {16 * one / 2**30:6.2f} GiB", flush=True)
    else:
        per_example = r["peak_bytes"] / members / r["chunk"]
        print(f"synergy resnet18 at P=16 takes chunk {r['chunk_at_16']}: about "
              f"{r['chunk_at_16'] * per_example / MIB:.1f} MiB per member (peak per example held, scaled) -> P=16: "
              f"{16 * r['chunk_at_16'] * per_example / 2**30:6.2f} GiB", flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        torch.set_num_threads(1)
        print(json.dumps(ROWS[sys.argv[2]](int(sys.argv[3]), sys.argv[4] or None)))
        sys.exit(0)
    raise SystemExit("run through launch/benchmark.py --member-memory")
