"""Retrain the winning configuration on several seeds (as Ray tasks) and report test accuracy."""

from __future__ import annotations

import ray

from raycl.methods import make_config
from raycl.results import aggregate
from raycl.train import run


def _train_seed(benchmark, method: str, config: dict, seed: int, threads: int, data: dict | None = None):
    import torch

    torch.set_num_threads(threads)
    if benchmark is None:
        from raycl.data import load_benchmark

        benchmark = load_benchmark(**data)
    return run(benchmark, method, make_config(method, config, benchmark.defaults), seed)


def evaluate_seeds(options, config: dict) -> dict:
    """Mean ± std test accuracy of ``config`` over ``options.final_eval_seeds`` seeds, on the full stream.

    With ``options.final_eval_vary_data`` every seed builds its own benchmark with that seed as data
    seed (new permutations, angles and split), else all share the search's benchmark.
    """
    from raycl.data import load_benchmark

    val_fraction = options.val_fraction if options.final_eval_val_fraction is None else options.final_eval_val_fraction
    data = {"name": options.dataset, "data_root": options.data_root, "val_fraction": val_fraction,
            "samples_per_task": options.samples_per_task}
    remote = ray.remote(num_cpus=options.cpus_per_trial, num_gpus=options.gpus_per_trial)(_train_seed)
    seeds = list(range(options.seed, options.seed + options.final_eval_seeds))
    threads = max(1, int(options.cpus_per_trial))
    if options.final_eval_vary_data:
        futures = [remote.remote(None, options.method, config, s, threads, {**data, "seed": s}) for s in seeds]
    else:
        # The final evaluation always covers the whole stream, whatever the search protocol.
        ref = ray.put(load_benchmark(**data, seed=options.data_seed))
        futures = [remote.remote(ref, options.method, config, s, threads) for s in seeds]
    results = ray.get(futures)
    out = {"seeds": seeds, "test": aggregate(results, "test"),
           "data_seeds": seeds if options.final_eval_vary_data else [options.data_seed] * len(seeds),
           "val_fraction": val_fraction}
    if val_fraction > 0:
        out["val"] = aggregate(results, "val")
    return out
