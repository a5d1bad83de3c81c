"""``launch/benchmark.py --mixed-structure``: members that differ in a hyperparameter that was
structural, in one population against one population per value.

DER++ steps on real seq-mnist (the MLP), float32, CPU, one thread. For each population size P and
each mix, member-steps per second (the best of ``repeat`` measurements) of:

- ``one population``: the P members together (a population of mixed values where the value is
  per-member);
- ``apart``: one population per value, trained one after another over the same steps (what a
  search gets where the value is structural);
- ``uniform``: P members of one value together (the best a structural value allows, for scale).

Mixes: buffer sizes 200 / 500 / 5120 (while 5120 fills and after it is full); minibatches 32 / 128
beside buffers where a member holds fewer rows than the minibatch (the per-group steps a
per-member minibatch would take: members of the 64-example buffer replay 64 rows, the others 128);
SGD beside Adam (apart and uniform only: a population holds one optimiser kind; uniform is all Adam,
what a population of both would not exceed: one forward and backward, Adam's update for some).
"""

from __future__ import annotations

import time

import torch

from raycl.data import load_benchmark
from raycl.methods import get_population_method, make_config
from raycl.population.inputs import MemberInputs

DERPP = {"lr": 0.03, "alpha": 0.2, "beta": 1.0, "batch_size": 10, "minibatch_size": 32, "n_epochs": 1,
         "buffer_size": 500}


def member_steps_per_second(bench, populations: list[list[dict]], steps: int, warmup: int, repeat: int = 1) -> float:
    """Member-steps per second of ``steps`` DER++ steps of each population (a list of config rows),
    one population after another, each after ``warmup`` untimed steps (which fill its buffers); the
    best of ``repeat`` measurements."""
    return max(_member_steps_per_second(bench, populations, steps, warmup) for _ in range(repeat))


def _member_steps_per_second(bench, populations: list[list[dict]], steps: int, warmup: int) -> float:
    seconds, member_steps = 0.0, 0
    for rows in populations:
        configs = [make_config("derpp", {**DERPP, **row}, bench.defaults_for("derpp")) for row in rows]
        seeds = list(range(len(rows)))
        method = get_population_method("derpp")(configs, seeds, bench, torch.device("cpu"))
        method.train()
        data = MemberInputs([bench], [0] * len(seeds), 0, "train", torch.device("cpu"), torch.float32)
        batch = configs[0].batch_size
        for k in range(warmup + steps):
            if k == warmup:
                began = time.perf_counter()
            first = (k * batch) % (data.n - batch)
            rows_now = torch.arange(first, first + batch).expand(len(seeds), -1)
            method.observe(*data.gather(rows_now), 0)
        seconds += time.perf_counter() - began
        member_steps += steps * len(rows)
    return member_steps / seconds


def split(values: list[dict], size: int) -> list[list[dict]]:
    """``size`` members cycling through ``values``, grouped by value."""
    members = [values[i % len(values)] for i in range(size)]
    return [[m for m in members if m == v] for v in values]


def main(data_root: str, sizes: list[int], steps: int, threads: int, repeat: int = 3) -> int:
    torch.set_num_threads(threads)
    bench = load_benchmark("seq-mnist", data_root)
    mixes = {
        "buffer 200/500/5120, 5120 filling": ([{"buffer_size": b} for b in (200, 500, 5120)], 60),
        "buffer 200/500/5120, all full": ([{"buffer_size": b} for b in (200, 500, 5120)], 520),
        "minibatch 64/128 rows (per group)": ([{"buffer_size": 64, "minibatch_size": 128},
                                               {"buffer_size": 500, "minibatch_size": 128}], 60),
        "optimiser sgd/adam": ([{"optimizer": "sgd"}, {"optimizer": "adam", "lr": 1e-3}], 60),
    }
    print(f"\n== DER++ on seq-mnist, float32, CPU, {threads} thread(s), {steps} timed steps: "
          "member-steps per second ==")
    header = f"{'mix':>36} {'P':>4} {'one population':>15} {'apart':>8} {'uniform':>8} {'one / apart':>12}"
    print(header)
    print("-" * len(header))
    for name, (values, warmup) in mixes.items():
        for size in sizes:
            apart = member_steps_per_second(bench, [g for g in split(values, size) if g], steps, warmup, repeat)
            uniform = member_steps_per_second(bench, [[values[-1]] * size], steps, warmup, repeat)
            if name.startswith("optimiser"):
                together = float("nan")
            else:
                together = member_steps_per_second(bench, [[values[i % len(values)] for i in range(size)]], steps,
                                                   warmup, repeat)
            print(f"{name:>36} {size:>4} {together:>15.0f} {apart:>8.0f} {uniform:>8.0f} {together / apart:>12.2f}",
                  flush=True)
    return 0
