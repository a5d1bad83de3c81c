"""How wide a job of the promotion form is (:class:`Widths`), from what a task of each structure costs
by its width, measured as the search runs (:class:`CostModel`)."""

from __future__ import annotations

import dataclasses
import math


class CostModel:
    """Seconds per task of a population of one structure by its width, from the jobs' reports.

    Per structure and width the mean of what was measured; at a width not measured, the nearest
    measured width scaled by (overhead + P) / (overhead + P0), the overhead (in members) fitted
    over every structure measured at two widths or more; a structure never measured is taken as
    the mean of those measured (None when nothing was)."""

    DEFAULT_OVERHEAD = 4.0  # a step's fixed cost, in members' worth of arithmetic, before anything is measured

    def __init__(self):
        self._sums: dict[str, dict[int, list[float]]] = {}

    def observe(self, structure: str, width: int, seconds_per_task: float) -> None:
        if width > 0 and seconds_per_task > 0 and math.isfinite(seconds_per_task):
            total = self._sums.setdefault(structure, {}).setdefault(width, [0.0, 0])
            total[0] += seconds_per_task
            total[1] += 1

    def measured(self, structure: str) -> bool:
        return structure in self._sums

    def structures(self) -> list[str]:
        return list(self._sums)

    def overhead(self) -> float:
        """The fixed cost of a step in members' worth (a / b of t = a + b P), fitted by least squares
        per structure on its mean per width, averaged over the structures with two widths or more."""
        fits = []
        for widths in self._sums.values():
            if len(widths) < 2:
                continue
            points = [(p, s / n) for p, (s, n) in widths.items()]
            mean_p = sum(p for p, _ in points) / len(points)
            mean_t = sum(t for _, t in points) / len(points)
            var = sum((p - mean_p) ** 2 for p, _ in points)
            slope = sum((p - mean_p) * (t - mean_t) for p, t in points) / var
            intercept = mean_t - slope * mean_p
            if slope > 0 and intercept >= 0:
                fits.append(intercept / slope)
        return sum(fits) / len(fits) if fits else self.DEFAULT_OVERHEAD

    def seconds(self, structure: str, width: int) -> float | None:
        """Estimated seconds per task of ``structure`` at ``width``."""
        widths = self._sums.get(structure)
        if not widths:
            known = [self.seconds(s, width) for s in self._sums]
            return sum(known) / len(known) if known else None
        if width in widths:
            total, count = widths[width]
            return total / count
        nearest = min(widths, key=lambda p: (abs(p - width), p))
        total, count = widths[nearest]
        overhead = self.overhead()
        return total / count * (overhead + width) / (overhead + nearest)


@dataclasses.dataclass
class Widths:
    """How wide a job is: ``planned`` configurations (``--population`` or what auto chose), at most
    ``limit``; with ``even`` (auto) a structure's jobs are sized by the cost model so that they take
    about as long as a bottom job of ``planned`` configurations of a typical structure."""

    planned: int
    limit: int
    even: bool = False

    def __post_init__(self):
        self.planned = max(1, min(self.planned, self.limit))
