"""The configurations recorded at one rung, kept sorted so that every question the promotion rule asks
costs O(log N): who is in the top 1/eta now, and who fell past the point no later arrival can bring
back from.

Entries are (-score, arrival, configuration), so the best comes first and equal scores keep their
order of arrival. Two boundaries move as configurations arrive:

- the *top*: the first ``quota(len)`` entries. One arrival changes it by at most two configurations
  (the one that arrived, and the one pushed out or, when the quota grows, pulled in), so
  :meth:`RungRecords.add` says which entered and which left;
- the *hopeless boundary*: entries at index ``quota(recorded + possible arrivals)`` or later can
  never be in the top. Arrivals only push entries further down and the possible arrivals only
  shrink, so once past it an entry stays past it; :meth:`RungRecords.past` hands out each entry that
  crosses it once.
"""

from __future__ import annotations

from collections.abc import Callable

from sortedcontainers import SortedList


class RungRecords:
    """One group's configurations recorded at one rung, those promoted from it, and the two boundaries
    of the module's docstring, for ``quota(recorded)`` (how many of ``recorded`` go on)."""

    def __init__(self, quota: Callable[[int], int]):
        self.quota = quota
        self._order = SortedList()  # (-score, arrival, configuration)
        self._keys: dict[str, tuple] = {}
        self._arrivals = 0
        self.promoted: set[str] = set()
        self.top: set[str] = set()
        # The last hopeless boundary given to past(), and the index from which every entry is past it and
        # has been handed out (min(boundary, len), kept as entries arrive before it).
        self._boundary = float("inf")
        self._checked_from = 0

    def __len__(self) -> int:
        return len(self._order)

    def add(self, config: str, score: float) -> tuple[set[str], set[str], bool]:
        """Record ``config``'s ``score``; returns the configurations that entered the top, those that
        left it, and whether ``config`` landed where :meth:`past` had already looked (it is then past
        the hopeless boundary, and the caller judges it at once)."""
        entry = self._keys[config] = (-score, self._arrivals, config)
        self._arrivals += 1
        position = self._order.bisect_left(entry)
        before = self.quota(len(self._order))
        self._order.add(entry)
        after = self.quota(len(self._order))
        entered, left = set(), set()
        if position < after:
            entered.add(config)
        if after > before and position >= after:
            entered.add(self._order[after - 1][2])  # pulled into a grown top
        if after == before and position < after and after < len(self._order):
            left.add(self._order[after][2])  # pushed out of it
        self.top |= entered
        self.top -= left
        # Past the boundary among the entries handed out: the caller judges it now. Past it but before
        # them, the next past() hands it out with the entries it pushed over the boundary.
        landed_past = position >= self._checked_from and position >= self._boundary
        if position < self._checked_from:
            self._checked_from += 1  # the entries handed out move down one
        elif not landed_past:
            self._checked_from = len(self._order)  # it arrived last, before the boundary
        return entered, left, landed_past

    def past(self, boundary: int) -> list[str]:
        """The configurations at index ``boundary`` or later not handed out before (each once): those
        the arrivals to come can no longer bring into the top. ``boundary`` never grows."""
        self._boundary = min(self._boundary, boundary)
        start = max(0, min(self._boundary, len(self._order)))
        fresh = [self._order[i][2] for i in range(start, self._checked_from)]
        self._checked_from = min(self._checked_from, start)
        return fresh

    def best_first(self, configs) -> list[str]:
        """``configs`` (recorded here) in the rung's order."""
        return sorted(configs, key=self._keys.__getitem__)

    def ranked(self) -> list[str]:
        return [c for *_, c in self._order]

    def top_list(self, count: int) -> list[str]:
        return [c for *_, c in self._order[:count]]
