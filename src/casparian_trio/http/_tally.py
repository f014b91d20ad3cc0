"""Counts that only grow, fed a scrape at a time with the attempts that ended since the last.

The attempt counters and the two histograms of ``/metrics`` would cost a scan
of every attempt (and a JSON parse of every completed job's summary) on each
scrape. Instead a ``Tally`` keeps them in memory and each scrape reads only
the attempts recorded after the highest id it has seen (ids only grow: an
attempt's row is written when it is claimed) plus the few it saw still
running then (at most one per worker slot). So every ended attempt is counted
exactly once, and a scrape costs the same after 100 jobs as after 100,000. The
first scrape after a start reads every attempt: the figures are the store's,
restarts included. Pure: no I/O, no clock.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

import attrs

from casparian_trio.store.dashboard import Attempt


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
class Tally:
    """Ended attempts per (plugin, outcome), claim-to-end latency, run time per plugin.

    Attributes:
        max_id: the highest attempt id read so far.
        open_ids: attempts still running when last read (read again next time).
    """

    bounds: Sequence[float]
    outcomes: dict[tuple[str, str], int] = attrs.field(factory=dict)
    latency: Buckets = attrs.field()
    runs: dict[str, Buckets] = attrs.field(factory=dict)
    max_id: int = 0
    open_ids: set[int] = attrs.field(factory=set)

    @latency.default
    def _latency(self) -> Buckets:
        return Buckets(self.bounds)

    def add(self, rows: Iterable[Attempt]) -> None:
        """Take the rows a snapshot read for ``max_id`` and ``open_ids``."""
        # The rows answer for every open id: one that is missing was deleted with its job.
        self.open_ids = set()
        for attempt_id, plugin, outcome, took_s, run_s in rows:
            self.max_id = max(self.max_id, attempt_id)
            if outcome is None:
                self.open_ids.add(attempt_id)
                continue
            key = (plugin, outcome)
            self.outcomes[key] = self.outcomes.get(key, 0) + 1
            if took_s is not None:
                self.latency.observe(max(0.0, took_s))
            if outcome == "COMPLETED" and run_s is not None:
                self.runs.setdefault(plugin, Buckets(self.bounds)).observe(max(0.0, run_s))
