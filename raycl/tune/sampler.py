"""The search's sampler: Optuna's TPE (multivariate, constant liar: Optuna's defaults) on a bounded
window of the study's history, so that the cost of proposing a configuration stops growing with the
number already proposed.

TPE splits the finished trials into the best ``gamma(n)`` (``l(x)``, at most 25 with Optuna's
default gamma) and the rest (``g(x)``, weighted by a ramp that gives the most recent 25 weight one
and older trials less and less), and counts running trials in the rest (constant liar). Every ask
it reads, splits and sorts the whole history in Python: its cost per ask grows with the history,
so a search's cost grows with the square of its size.

:class:`WindowedTPESampler` hands TPE, at each ask, the trials TPE would put in ``l(x)`` (the best
completed trials, then the best pruned ones by their last intermediate value, exactly TPE's own
order), the ``window`` most recently finished trials and the ``window`` most recent running ones.
Whenever the history is no longer than ``window`` it is TPE itself, proposal for proposal. Past
it, ``l(x)`` is unchanged (a window of at least 250 finished trials already gives the full 25) and
``g(x)`` is the recent history, where TPE's ramp puts nearly all its weight anyway. The window
holds no random choice: a seeded sampler proposes the same configurations run after run.

The best trials are kept in small heaps as trials finish, and so is the search space TPE samples jointly (the intersection of the
finished trials' distributions, which Optuna's ``IntersectionSearchSpace`` recomputes back to the
oldest trial still running: in a search whose configurations wait at rungs for most of it, the
whole history at every ask). The trials that finished are those Optuna tells the sampler of (its
``after_trial``), so one ask costs O(window) whatever the history's size and however many trials wait.
"""

from __future__ import annotations

import copy
import heapq
import math
from collections import deque

import optuna
from optuna.samplers._tpe.sampler import _get_pruned_trial_score
from optuna.study import StudyDirection
from optuna.trial import TrialState

# TPE's l(x) holds at most 25 trials with Optuna's default gamma (min(ceil(0.1 n), 25)).
BELOW_LIMIT = 25
# One catch-up in this many checks every open trial for one finished without the sampler being told.
FULL_SCAN_EVERY = 256


def search_sampler(options) -> optuna.samplers.BaseSampler:
    """The sampler a search (:class:`raycl.tune.options.SearchOptions`) proposes configurations with."""
    return make_sampler(options.search_seed, options.tpe_window)


def make_sampler(seed: int | None, window: int | None) -> optuna.samplers.BaseSampler:
    """TPE seeded with ``seed`` on a history window of ``window`` trials (``None`` or 0: Optuna's
    TPE on the whole history at every ask)."""
    if not window:
        return optuna.samplers.TPESampler(seed=seed)
    return WindowedTPESampler(seed=seed, window=window)


class WindowedTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPESampler (its defaults, seeded) on the best trials and a window of the recent ones."""

    def __init__(self, *, seed: int | None = None, window: int):
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        super().__init__(seed=seed)
        self.window = window
        self._forget_history()

    def _forget_history(self) -> None:
        """Start again from no trial seen: the next catch-up takes in the whole study, in order of number."""
        self._scanned = 0  # trials numbered below this were seen once
        self._open: dict[int, None] = {}  # trials seen unfinished (waiting or running), in order of number
        self._ended: list[int] = []  # trials told since the last catch-up (Optuna's after_trial)
        self._catch_ups = 0
        # The intersection of the finished (completed or pruned) trials' distributions: the joint
        # search space, as Optuna's IntersectionSearchSpace(include_pruned=True) computes it.
        self._intersection: dict | None = None
        self._recent: deque[int] = deque(maxlen=self.window)  # the most recently finished trials
        self._finished = 0
        self._ranked = 0  # finished trials TPE ranks: completed or pruned
        # The best completed and pruned trials (at most BELOW_LIMIT each), the worst of them at the root.
        self._best_complete: list[_Worst] = []
        self._best_pruned: list[_Worst] = []

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "_intersection" not in state:  # pickled by an earlier raycl (a search resumed across versions)
            self._forget_history()

    # ----- keeping up with the study ------------------------------------------------------------------------
    def after_trial(self, study, trial, state, values) -> None:
        super().after_trial(study, trial, state, values)
        self._ended.append(trial.number)

    def _catch_up(self, study: optuna.Study, trials: list) -> None:
        """Take in the trials numbered since the last ask and those of the open ones told since.

        Optuna tells the sampler of every trial told through its study; a trial finished some other
        way (another process on the same storage) is found by a scan of every open trial, one catch-up
        in FULL_SCAN_EVERY."""
        self._catch_ups += 1
        if self._catch_ups % FULL_SCAN_EVERY == 0:
            told = list(self._open)
        else:
            told = sorted({n for n in self._ended if n in self._open})
        self._ended.clear()
        new = range(self._scanned, len(trials))
        self._scanned = len(trials)
        for number in [*told, *new]:  # in order of number: new trials are numbered after every open one
            trial = trials[number]
            if trial.state.is_finished():
                self._open.pop(number, None)
                self._finished += 1
                self._recent.append(number)
                self._keep_if_best(study, trial)
                self._intersect(trial)
            elif number in new:
                self._open[number] = None

    def _intersect(self, trial) -> None:
        if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            return
        if self._intersection is None:
            self._intersection = dict(trial.distributions)
        else:
            self._intersection = {name: distribution for name, distribution in self._intersection.items()
                                  if trial.distributions.get(name) == distribution}

    def _keep_if_best(self, study: optuna.Study, trial) -> None:
        """Keep ``trial`` among the best completed or pruned trials, ranked as TPE ranks them (a
        smaller key is better; ties go to the lower number, as in TPE's stable sort)."""
        if trial.state == TrialState.COMPLETE:
            value = trial.value
            if math.isnan(value):
                rank = math.inf
            else:
                rank = -value if study.direction == StudyDirection.MAXIMIZE else value
            heap = self._best_complete
        elif trial.state == TrialState.PRUNED:
            rank = _get_pruned_trial_score(trial, study)
            heap = self._best_pruned
        else:
            return
        self._ranked += 1
        entry = _Worst((rank, trial.number))
        if len(heap) < BELOW_LIMIT:
            heapq.heappush(heap, entry)
        elif heap[0] < entry:
            heapq.heapreplace(heap, entry)

    def _trials(self, study: optuna.Study) -> list:
        """The study's trials, indexed by number, with the finished ones taken in."""
        trials = study._get_trials(deepcopy=False, use_cache=False)
        if trials and trials[-1].number != len(trials) - 1:  # numbers are positions in a study's list
            trials = sorted(trials, key=lambda t: t.number)
        self._catch_up(study, trials)
        return trials

    def _ranked_after_catching_up(self, study: optuna.Study) -> int:
        """How many trials TPE can rank (completed or pruned)."""
        self._trials(study)
        return self._ranked

    def _window(self, study: optuna.Study, current: int) -> list | None:
        """The trials TPE is shown for an ask, or None while the whole history fits in the window."""
        trials = self._trials(study)
        running = []  # the most recent running trials, one more than the window holds
        for number in reversed(self._open):
            if len(running) > self.window:
                break
            if number != current and trials[number].state == TrialState.RUNNING:
                running.append(number)
        if self._finished <= self.window and len(running) <= self.window:
            return None
        chosen = set(self._recent)
        chosen.update(running[:self.window])
        complete = [entry.key[1] for entry in sorted(self._best_complete, reverse=True)]
        pruned = [entry.key[1] for entry in sorted(self._best_pruned, reverse=True)]
        chosen.update(complete)
        chosen.update(pruned[: BELOW_LIMIT - len(complete)])
        return [trials[n] for n in sorted(chosen)]

    # ----- TPE on the window --------------------------------------------------------------------------------
    def infer_relative_search_space(self, study, trial):
        if self._group or not self._is_multivariate(study):
            return super().infer_relative_search_space(study, trial)
        self._trials(study)
        space = copy.deepcopy(self._intersection or {})
        return {name: space[name] for name in sorted(space) if not space[name].single()}

    # TPE's own versions of these three filter the whole history at every ask, only to count it
    # against n_startup_trials (the first two) or to hand it to the split (the third).
    def _sample_relative(self, study, trial, search_space):
        if search_space and self._ranked_after_catching_up(study) >= self._n_startup_trials:
            return self._sample(study, trial, search_space)
        return super()._sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        if self._ranked_after_catching_up(study) >= self._n_startup_trials and not self._warn_independent_sampling:
            return self._sample(study, trial, {param_name: param_distribution})[param_name]
        return super().sample_independent(study, trial, param_name, param_distribution)

    def _sample(self, study, trial, search_space):
        shown = self._window(study, trial.number)
        if shown is None:
            return super()._sample(study, trial, search_space)
        return super()._sample(_StudyWindow(study, shown), trial, search_space)


class _Worst:
    """A ranking key ordered the other way round, so that a min-heap of the best trials has the worst
    of them at its root."""

    __slots__ = ("key",)

    def __init__(self, key: tuple):
        self.key = key

    def __lt__(self, other: _Worst) -> bool:
        return other.key < self.key


class _StudyWindow:
    """The study as TPE's ``_sample`` sees it: its trials are the window's, everything else the study's."""

    def __init__(self, study: optuna.Study, trials: list):
        self._study = study
        self._window_trials = trials

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False) -> list:
        trials = self._window_trials
        if states is not None:
            trials = [t for t in trials if t.state in states]
        return list(trials)

    def __getattr__(self, name: str):
        return getattr(self._study, name)
