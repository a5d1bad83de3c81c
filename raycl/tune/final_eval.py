"""Retrain the winning configuration on several seeds, as one population in one Ray task, and
report test accuracy."""

from __future__ import annotations

import ray

from raycl.methods import make_config
from raycl.results import aggregate
from raycl.train import run_population


def _train_seeds(benchmarks, method: str, config: dict, seeds: list[int], threads: int,
                 data: dict | None = None, gpus: float = 0.0, precision: str = "fp32"):
    """Train ``config`` on ``seeds`` as one population, on the GPU Ray assigned this task (``gpus`` of
    one), else the CPU, at ``precision``."""
    import torch

    from raycl.tune.placement import trial_device

    torch.set_num_threads(threads)
    if benchmarks is None:
        from raycl.data import load_benchmark

        benchmarks = [load_benchmark(**data, seed=s) for s in seeds]
    device = trial_device(gpus, precision, benchmarks[0])
    from raycl.selection import run_schedule, schedule_configs

    defaults = benchmarks[0].defaults_for(method)
    if any(isinstance(v, (list, tuple)) for v in config.values()):  # a per-task schedule
        configs = [make_config(method, c, defaults) for c in schedule_configs(config, benchmarks[0].n_tasks)]
        population = run_schedule(benchmarks, method, configs, seeds, device=device, precision=precision)
    else:
        population = run_population(benchmarks, method, make_config(method, config, defaults), seeds,
                                    device=device, precision=precision)
    return [population.result(m) for m in population.alive], [seeds[m] for m in population.diverged]


def evaluate_seeds(options, config: dict) -> dict:
    """Mean ± std test accuracy of ``config`` over ``options.final_eval_seeds`` seeds, on the full stream.

    With ``options.final_eval_vary_data`` every seed builds its own benchmark with that seed as data
    seed (new permutations, angles and split), else all share the search's benchmark.
    """
    from raycl.data import load_benchmark

    val_fraction = options.val_fraction if options.final_eval_val_fraction is None else options.final_eval_val_fraction
    data = {"name": options.dataset, "data_root": options.data_root, "val_fraction": val_fraction,
            "samples_per_task": options.samples_per_task, "backbone": options.backbone,
            "options": options.benchmark_options}
    remote = ray.remote(num_cpus=options.cpus_per_trial, num_gpus=options.gpus_per_trial)(_train_seeds)
    seeds = list(range(options.seed, options.seed + options.final_eval_seeds))
    threads = max(1, int(options.cpus_per_trial))
    device = {"gpus": options.gpus_per_trial, "precision": options.precision}
    if options.final_eval_vary_data:
        future = remote.remote(None, options.method, config, seeds, threads, data, **device)
    else:
        # The final evaluation always covers the whole stream, whatever the search protocol.
        future = remote.remote([load_benchmark(**data, seed=options.data_seed)], options.method, config, seeds,
                               threads, **device)
    results, diverged = ray.get(future)
    out = {"seeds": [r.seed for r in results], "diverged_seeds": diverged,
           "data_seeds": [r.seed for r in results] if options.final_eval_vary_data
           else [options.data_seed] * len(results),
           "val_fraction": val_fraction, "precision": options.precision}
    if results:
        out["test"] = aggregate(results, "test")
        if val_fraction > 0:
            out["val"] = aggregate(results, "val")
    return out
