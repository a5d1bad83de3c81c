"""Many seeds' results as one summary: the JSON document and the table ``launch/train.py`` prints."""

from __future__ import annotations

import math
import warnings

import numpy as np

from raycl.train import RunResult

METRICS = ("acc", "bwt", "forgetting", "fwt", "learning_acc", "bti")


def _stats(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=float)
    finite = arr[np.isfinite(arr)]
    mean = float(finite.mean()) if len(finite) else float("nan")
    std = float(finite.std()) if len(finite) else float("nan")
    return {"mean": mean, "std": std, "per_seed": [float(v) for v in arr]}


def aggregate(results: list[RunResult], split: str) -> dict[str, dict]:
    """setting -> {mean, std, per_seed} of the final accuracy, plus the other metrics likewise."""
    out = {}
    for setting in results[0].settings:
        metrics = [getattr(r, f"{split}_metrics")[setting] for r in results]
        entry = _stats([m["acc"] for m in metrics])
        for name in METRICS[1:]:
            entry[name] = _stats([m[name] for m in metrics])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # never-evaluated cells stay NaN
            mean_matrix = np.nanmean(np.stack([getattr(r, split)[setting] for r in results]), axis=0)
        entry["matrix_mean"] = [[None if math.isnan(v) else round(float(v), 3) for v in row] for row in mean_matrix]
        out[setting] = entry
    return out


def _fmt(stat: dict, seeds: int) -> str:
    if not math.isfinite(stat["mean"]):
        return "-"
    return f"{stat['mean']:.2f} ± {stat['std']:.2f}" if seeds > 1 else f"{stat['mean']:.2f}"


def summary_table(summary: dict, seeds: int) -> str:
    """A plain-text table: one row per setting, final test and val accuracy (ACC, the MER paper's
    retained accuracy RA), BWT, forgetting, FWT, learning accuracy LA and BTI = RA - LA (test)."""
    header = ("setting", "test ACC", "val ACC", "BWT", "forgetting", "FWT", "LA", "BTI")
    rows = []
    for setting, test in summary["test"].items():
        val = summary["val"].get(setting)
        rows.append((setting, _fmt(test, seeds), _fmt(val, seeds) if val else "-", _fmt(test["bwt"], seeds),
                     _fmt(test["forgetting"], seeds), _fmt(test["fwt"], seeds), _fmt(test["learning_acc"], seeds),
                     _fmt(test["bti"], seeds)))
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *map(line, rows)])
