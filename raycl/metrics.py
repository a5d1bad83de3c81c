"""Continual-learning metrics from an accuracy matrix R[i, j] (accuracy on task j after task i)."""

from __future__ import annotations

import numpy as np


def summarize(matrix: np.ndarray, baseline: np.ndarray | None = None) -> dict[str, float]:
    """ACC, BWT, FWT and forgetting of a T x T accuracy matrix (entries in percent).

    - acc: mean of the last row.
    - bwt: mean over j < T-1 of R[T-1, j] - R[j, j].
    - fwt: mean over j > 0 of R[j-1, j] - baseline[j] (accuracy of the untrained network);
      NaN without a baseline.
    - forgetting: mean over j < T-1 of max_{j <= i < T-1} R[i, j] - R[T-1, j] (best accuracy
      after learning task j, minus the final one).
    - learning_acc (LA): mean of the diagonal; retained_acc (RA) = acc; bti = RA - LA.
    """
    r = np.asarray(matrix, dtype=float)
    t = r.shape[0]
    last = r[t - 1]
    diag = np.diag(r)
    out = {"acc": float(np.mean(last)), "learning_acc": float(np.mean(diag))}
    out["retained_acc"] = out["acc"]
    out["bti"] = out["retained_acc"] - out["learning_acc"]
    if t > 1:
        out["bwt"] = float(np.mean(last[:-1] - diag[:-1]))
        best = [np.max(r[j:t - 1, j]) for j in range(t - 1)]
        out["forgetting"] = float(np.mean(np.asarray(best) - last[:-1]))
        if baseline is not None:
            b = np.asarray(baseline, dtype=float)
            out["fwt"] = float(np.mean([r[j - 1, j] - b[j] for j in range(1, t)]))
        else:
            out["fwt"] = float("nan")
    else:
        out.update(bwt=0.0, forgetting=0.0, fwt=float("nan"))
    return out
