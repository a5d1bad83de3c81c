"""Retrain the winning configuration on several seeds (as Ray tasks) and report test accuracy."""

from __future__ import annotations

import ray

from raycl.methods import make_config
from raycl.results import aggregate
from raycl.train import run


def _train_seed(benchmark, method: str, config: dict, seed: int, threads: int):
    import torch

    torch.set_num_threads(threads)
    return run(benchmark, method, make_config(method, config, benchmark.defaults), seed)


def evaluate_seeds(options, config: dict) -> dict:
    """Mean ± std test accuracy of ``config`` over ``options.final_eval_seeds`` seeds, on the full stream."""
    from raycl.data import load_benchmark

    # The final evaluation always covers the whole stream, whatever the search protocol.
    benchmark = load_benchmark(options.dataset, options.data_root, options.val_fraction, options.data_seed,
                               samples_per_task=options.samples_per_task)
    ref = ray.put(benchmark)
    remote = ray.remote(num_cpus=options.cpus_per_trial, num_gpus=options.gpus_per_trial)(_train_seed)
    seeds = list(range(options.seed, options.seed + options.final_eval_seeds))
    threads = max(1, int(options.cpus_per_trial))
    results = ray.get([remote.remote(ref, options.method, config, s, threads) for s in seeds])
    return {"seeds": seeds, "test": aggregate(results, "test"), "val": aggregate(results, "val")}
