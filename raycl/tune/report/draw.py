"""What every figure of the report shares: the colour of each status, and saving a figure as a PNG.

Figures are drawn on :class:`matplotlib.figure.Figure` objects, which render with the Agg backend
without touching pyplot's global state.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from raycl.files import atomic_write_bytes
from raycl.vocabulary import Status

STATUS_COLORS = {Status.COMPLETED: "tab:blue", Status.PRUNED: "tab:gray", Status.DIVERGED: "tab:red",
                 Status.ERRORED: "black"}


def save_png(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return path
