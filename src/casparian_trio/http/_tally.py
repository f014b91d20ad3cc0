"""Counts that only grow, fed a scrape at a time with what ended since the last one.

The attempt counters and the two histograms of ``/metrics`` would cost a scan
of every attempt (and a JSON parse of every completed job's summary) on each
scrape. Instead a ``Tally`` keeps them in memory: each scrape reads only rows
that ended after ``attempts_after()`` / ``completions_after()`` and adds them. The window overlaps the last one
by ``OVERLAP_S`` and rows are remembered by id while inside it, so a row
committed a little after a later one (the wall clock is read before a
transaction waits for the writer) is still counted once. The first scrape
after a start reads everything: the figures are the store's, restarts included.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Hashable, Iterable, Sequence

import attrs

# Longer than any wait between reading the wall clock and committing a receipt:
# the writer's busy timeout (store._conn.BUSY_TIMEOUT_MS, 5 s) plus a margin.
# Each scrape re-reads this many seconds of rows, so it is not much longer.
OVERLAP_S = 6.0


@attrs.define(eq=False)
class Buckets:
    """One histogram: observations per bucket (not cumulative), their count and sum."""

    bounds: Sequence[float]
    counts: list[int] = attrs.field()
    count: int = 0
    total: float = 0.0

    @counts.default
    def _zeros(self) -> list[int]:
        return [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        at = bisect.bisect_left(self.bounds, value)  # the first bound >= value ("le")
        if at < len(self.counts):
            self.counts[at] += 1
        self.count += 1
        self.total += value

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it) as Prometheus buckets want them."""
        found, running = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            running += n
            found.append((bound, running))
        return found


@attrs.define(eq=False)
class Seen:
    """Ids taken inside the overlap window, and the latest time taken."""

    latest: float = -math.inf
    recent: dict[Hashable, float] = attrs.field(factory=dict)

    def first_time(self, key: Hashable, at: float) -> bool:
        if key in self.recent or at <= self.latest - OVERLAP_S:
            return False
        self.recent[key] = at
        self.latest = max(self.latest, at)
        return True

    def prune(self) -> None:
        floor = self.latest - OVERLAP_S
        self.recent = {k: at for k, at in self.recent.items() if at > floor}


@attrs.define(eq=False)
class Tally:
    """Attempt outcomes per (plugin, outcome), latency, and run time per plugin."""

    bounds: Sequence[float]
    outcomes: dict[tuple[str, str], int] = attrs.field(factory=dict)
    latency: Buckets = attrs.field()
    runs: dict[str, Buckets] = attrs.field(factory=dict)
    _attempts: Seen = attrs.field(factory=Seen)
    _completions: Seen = attrs.field(factory=Seen)

    @latency.default
    def _latency(self) -> Buckets:
        return Buckets(self.bounds)

    def attempts_after(self) -> float:
        """Read attempts that ended after this (unix time; -inf: every one)."""
        return self._attempts.latest - OVERLAP_S

    def completions_after(self) -> float:
        """Read jobs that completed after this (unix time; -inf: every one)."""
        return self._completions.latest - OVERLAP_S

    def add_attempts(self, rows: Iterable[tuple[int, str, str, float, float]]) -> None:
        """(attempt id, plugin, outcome, ended_at, seconds from claim to end) rows."""
        for attempt_id, plugin, outcome, ended_at, took_s in rows:
            if self._attempts.first_time(attempt_id, ended_at):
                key = (plugin, outcome)
                self.outcomes[key] = self.outcomes.get(key, 0) + 1
                self.latency.observe(max(0.0, took_s))
        self._attempts.prune()

    def add_completions(self, rows: Iterable[tuple[int, str, float, float | None]]) -> None:
        """(job id, plugin, updated_at, run seconds or None) rows of COMPLETED jobs."""
        for job_id, plugin, updated_at, run_s in rows:
            # A job completed again (a new plugin version) is a new observation.
            if self._completions.first_time((job_id, updated_at), updated_at) and run_s is not None:
                self.runs.setdefault(plugin, Buckets(self.bounds)).observe(max(0.0, run_s))
        self._completions.prune()
