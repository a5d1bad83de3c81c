"""The names Ray Tune gives a search's trials, for its folders and its tables: short, led by the
trial's id (``<id>_<number>_<n>configs``, at most MAX_LENGTH characters), instead of Tune's
trainable name, every hyperparameter and a date."""

from __future__ import annotations

from raycl.vocabulary import COHORT

MAX_LENGTH = 60


def trial_name(trial) -> str:
    """A Tune trial's name and folder name: its id, its number in the search, and how many
    configurations it trains where it trains several (a cohort, or a job listing them by id)."""
    number = str(getattr(trial, "experiment_tag", "") or "").split("_", 1)[0]
    parts = [str(trial.trial_id)]
    if number.isdigit():
        parts.append(number)
    config = trial.config or {}
    listed = config.get(COHORT)
    if not isinstance(listed, list):  # a trial that lists its configurations with their ids
        listed = (config.get("job") or {}).get("configs") if isinstance(config.get("job"), dict) else None
    if isinstance(listed, list):
        parts.append(f"{len(listed)}config" + ("s" if len(listed) != 1 else ""))
    return "_".join(parts)[:MAX_LENGTH]
