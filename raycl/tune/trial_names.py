"""The names Ray Tune gives a search's trials, for its folders and its tables: short, led by the
trial's id (``<id>_<number>_<n>configs``, at most MAX_LENGTH characters), instead of Tune's
trainable name, every hyperparameter and a date."""

from __future__ import annotations

from raycl.vocabulary import COHORT

MAX_LENGTH = 60


def trial_name(trial) -> str:
    """A Tune trial's name and folder name: its id, its number in the search, and how many
    configurations it trains where it trains a cohort."""
    number = str(getattr(trial, "experiment_tag", "") or "").split("_", 1)[0]
    parts = [str(trial.trial_id)]
    if number.isdigit():
        parts.append(number)
    cohort = (trial.config or {}).get(COHORT)
    if isinstance(cohort, list):
        parts.append(f"{len(cohort)}config" + ("s" if len(cohort) != 1 else ""))
    return "_".join(parts)[:MAX_LENGTH]
