"""What a finished search writes, for every protocol: the trials table, the space file, the best-args
entry with its provenance, and (for stream searches with rungs) the rung signal.

The protocol families (:mod:`raycl.tune.export` for stream searches, :mod:`raycl.tune.export_schedule`
for per-task selection) only say what goes in: the table's rows, the config to keep, the provenance
that is theirs, the signal. Where each file goes and how it is written is said here once, so a new
output is one function here (and its file name in :mod:`raycl.vocabulary`).
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
from pathlib import Path

import yaml

import raycl
from raycl import storage
from raycl.files import save_best_args
from raycl.tune import rung_signal
from raycl.tune.rungs import describe_rungs
from raycl.vocabulary import SIGNAL_FILE, SPACE_FILE, TRIALS_FILE


@dataclasses.dataclass(frozen=True)
class Written:
    """Where a search's outputs went."""

    table_path: str
    best_args_path: Path | None
    mammoth_config_path: Path | None = None


def plain_config(config: dict) -> dict:
    """``config`` with NumPy scalars (as Optuna may hand them) turned into Python values."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in config.items()}


def provenance(options, space, **specific) -> dict:
    """What a best-args entry records of how it was found: the search's settings shared by every
    protocol, and the family's ``specific`` ones."""
    return {
        "protocol": options.protocol, "search_space": {"source": space.source, "params": space.to_dict()},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "raycl_version": raycl.__version__, "experiment": str(options.experiment_dir), "seed": options.seed,
        "search_seed": options.search_seed, "val_fraction": options.val_fraction, "data_seed": options.data_seed,
        "samples_per_task": options.samples_per_task,
        # The benchmark as the trials saw it: launch/train.py --load-best-args replays on the same.
        "benchmark_options": dict(options.benchmark_options), "backbone": options.backbone,
        # What the trials trained at: a winner found at bf16 or tf32 is replayed knowing it.
        "precision": options.precision, **specific,
    }


def write_table(path: str, rows: list[dict]) -> None:
    """The rows as one Parquet table at ``path`` (a local path or a URI)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    storage.write_bytes(path, sink.getvalue())


def write_space(options, space) -> None:
    # The space goes with the experiment, so a report made elsewhere knows each parameter's scale.
    storage.write_bytes(storage.join(options.experiment_dir, SPACE_FILE), yaml.safe_dump(
        {"method": options.method, "params": space.to_dict()}, sort_keys=False).encode())


def write_signal(options, final_task: int, rungs: tuple[int, ...], signal: list[rung_signal.RungSignal],
                 name: str = SIGNAL_FILE) -> None:
    storage.write_bytes(storage.join(options.experiment_dir, name), json.dumps(
        {"rungs": list(rungs), "rungs_described": describe_rungs(options, final_task),
         "reduction_factor": options.reduction_factor, "audit_fraction": options.audit_fraction,
         "signal": [s.to_dict() for s in signal]}, indent=1).encode())


def best_args_path(options) -> Path:
    return Path(options.best_args or f"best_args/{options.dataset}.yaml")


def write_best_args(options, config: dict, provenance: dict) -> Path:
    path = best_args_path(options)
    save_best_args(path, options.dataset, options.method, config, provenance)
    return path


def write_mammoth_config(options, config: dict) -> Path:
    """``config`` merged into mammoth's ``models/config/<model>.yaml`` beside the best-args file
    (``<its folder>/models/config/``, mammoth's layout); the best-args file keeps the provenance."""
    from raycl.tune.mammoth import mammoth_model, save_model_config

    path = best_args_path(options).parent / "models" / "config" / f"{mammoth_model(options.method)}.yaml"
    save_model_config(path, options.dataset, options.method, config)
    return path


def write_outputs(options, space, rows: list[dict] | None, best: tuple[dict, dict] | None = None,
                  signal: tuple[int, tuple[int, ...], list] | None = None,
                  trained_config: dict | None = None, signal_name: str = SIGNAL_FILE) -> Written:
    """Every output of a finished search: the table of ``rows``, the space, the best-args entry when
    there is a ``best`` (config, provenance), and the rung ``signal`` (final task, rungs, signal)
    when the protocol has one; with ``--export-format mammoth`` also mammoth's configuration of the
    winner's every hyperparameter as it trained (``trained_config``, else the best config). ``rows``
    None: the table is written by the caller (a table search writes one for every buffer size)."""
    table_path = options.parquet or storage.join(options.experiment_dir, TRIALS_FILE)
    if rows is not None:
        write_table(table_path, rows)
        write_space(options, space)
    if signal is not None:
        write_signal(options, *signal, name=signal_name)
    best_args = write_best_args(options, *best) if best is not None else None
    mammoth_config = None
    if best is not None and options.export_format == "mammoth":
        mammoth_config = write_mammoth_config(options, trained_config or best[0])
    return Written(table_path, best_args, mammoth_config)
