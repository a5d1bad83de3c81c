"""How much a search's rungs knew: for every rung, how many configurations it judged and stopped, and
Spearman's rank correlation between a configuration's objective at the rung and its final objective.

Early stopping is only as good as the evidence at its rungs: if the scores after task 2 do not rank
configurations the way the final objective does, stopping there is close to random. The correlation
can only be measured on configurations that completed. Those that survived every rung are a selected,
narrow sample: the rungs cut the range of scores, which biases the correlation low however good the
rung is. Configurations audited with ``--audit-fraction`` were never stopped, so their correlation
comes from an unselected sample. Both are given, each with its count; only the audited one can call
a rung weak, since a low correlation among survivors is what range restriction produces anyway.

Works on plain rows (the trials table's columns ``status``, ``objective``, ``objective_by_task``,
``tasks_trained``, ``audit``), so the summary and the report compute the same numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping

from raycl.vocabulary import Status

# A correlation over fewer completed configurations than this is not called weak or strong.
MIN_COMPLETED = 10
WEAK_BELOW = 0.3


@dataclasses.dataclass(frozen=True)
class Correlation:
    """Spearman's rho over ``n`` completed configurations of one ``sample`` (None: fewer than three,
    or no spread)."""

    rho: float | None
    n: int
    sample: str

    def describe(self) -> str:
        value = "n/a" if self.rho is None else f"{self.rho:+.2f}"
        return f"{value} over {self.n} {self.sample}"


@dataclasses.dataclass(frozen=True)
class RungSignal:
    rung: int  # tasks trained when judged
    judged: int
    stopped: int
    survivors: Correlation  # completed configurations that were not audited: selected by the rungs
    audited: Correlation  # completed audited configurations: never stopped, an unselected sample

    @property
    def evidence(self) -> Correlation:
        """The correlation to judge the rung by: the audited one when there is one, else the survivors'
        (which describes, but cannot judge)."""
        return self.audited if self.audited.n >= 3 else self.survivors

    @property
    def weak(self) -> bool:
        """Whether configurations never stopped early show that the rung ranks them unlike the final
        objective; survivors alone never make a rung weak."""
        audited = self.audited
        return audited.rho is not None and audited.n >= MIN_COMPLETED and audited.rho < WEAK_BELOW

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation (ties take their mean rank), None when it is undefined."""
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    from scipy.stats import spearmanr

    rho = spearmanr(xs, ys).statistic
    return None if rho is None or math.isnan(rho) else float(rho)


def _get(row, key, default=None):
    return row.get(key, default) if isinstance(row, Mapping) else getattr(row, key, default)


def rung_signal(rows: Iterable, rungs: Iterable[int]) -> list[RungSignal]:
    """The signal of every rung in ``rungs`` from configuration ``rows`` (mappings or records)."""
    rows = list(rows)
    out = []
    for rung in rungs:
        judged = stopped = 0
        pairs = {"survivors": ([], []), "audited": ([], [])}
        for row in rows:
            status, tasks = _get(row, "status"), int(_get(row, "tasks_trained") or 0)
            # A configuration that diverged during the rung's task never reached the judgement.
            if tasks > rung or (tasks == rung and status != Status.DIVERGED):
                judged += 1
            if status == Status.PRUNED and tasks == rung:
                stopped += 1
            curve = list(_get(row, "objective_by_task") or [])
            final = _get(row, "objective")
            if status == Status.COMPLETED and final is not None and len(curve) >= rung:
                xs, ys = pairs["audited" if _get(row, "audit") else "survivors"]
                xs.append(float(curve[rung - 1]))
                ys.append(float(final))
        out.append(RungSignal(rung, judged, stopped,
                              *(Correlation(spearman(*pairs[s]), len(pairs[s][0]), s) for s in ("survivors", "audited"))))
    return out


def inferred_rungs(rows: Iterable) -> list[int]:
    """The rungs of an experiment that did not record them: where configurations were stopped."""
    return sorted({int(_get(r, "tasks_trained")) for r in rows if _get(r, "status") == Status.PRUNED})


def unjudged_note(signals: list[RungSignal]) -> str | None:
    """The line that says the rungs went unjudged, when no rung has an audited sample to judge it by."""
    if not signals or any(s.audited.n >= MIN_COMPLETED for s in signals):
        return None
    return ("rungs not judged: the survivors' correlation is range-restricted by the rungs themselves; "
            "--audit-fraction 0.2 measures it on configurations never stopped early")


def describe(signal: RungSignal) -> str:
    """One line for the summary."""
    line = f"after task {signal.rung}: judged {signal.judged}, stopped {signal.stopped}; rank correlation with " \
           f"the final objective {signal.survivors.describe()}"
    if signal.survivors.n:
        line += " (selected by the rungs: range-restricted, biased low, not a verdict on the rung)"
    if signal.audited.n:
        line += f", {signal.audited.describe()} (unselected)"
    return line


def weak_warning(signal: RungSignal) -> str:
    """The one line the summary prints for a weak rung."""
    return (f"weak evidence at the rung after task {signal.rung}: on configurations never stopped early its "
            f"objective ranks them almost unlike the final one ({signal.audited.describe()}), so stopping "
            f"there is close to random: move the first rung later with --grace-period, or turn early "
            f"stopping off with --protocol end-of-training")
