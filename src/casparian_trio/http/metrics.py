"""``/metrics``: the store's numbers in the Prometheus text format (prometheus_client).

A custom ``Collector`` turns one ``MetricsSnapshot`` (read from the store on each
scrape, in one read transaction on the dashboard's own connection) and the
Sentinel's live slots into metric families, so every value is what the
database holds and survives Sentinel restarts. Gauges are read whole each
time; the attempt counters and the histograms are kept in a ``Tally`` that
each scrape feeds with only the attempts new or still running since the last
one (``_tally``), so a scrape costs much the same after 100 jobs as after 100,000. The dashboard's own
requests are counted in process (a ``Counter`` and a ``Histogram``).

Names follow the Prometheus conventions: a ``casparian_`` prefix, seconds as
the unit, ``_total`` on counters, labels for the dimensions:

- ``casparian_jobs{state}`` gauge: jobs in each state;
- ``casparian_jobs_completed_total{plugin}``, ``casparian_jobs_failed_total{plugin}``:
  attempts that completed / failed (a failure or a timeout; retries count each time);
- ``casparian_job_attempts_total{plugin,outcome}``: every ended attempt by outcome;
- ``casparian_job_duration_seconds{plugin}`` histogram: completed jobs' run time
  as their worker measured it;
- ``casparian_dispatch_conclude_latency_seconds`` histogram: claim to receipt;
- ``casparian_rows_written_total{topic}``, ``casparian_rows_quarantined_total{topic}``;
- ``casparian_queue_oldest_age_seconds``: the oldest QUEUED job's wait (0: none);
- ``casparian_workers{state}`` gauge: the worker table, as ``workers`` shows it;
- ``casparian_worker_slots{state="busy"|"free"}``: connected workers' slots;
- ``casparian_sentinel_start_time_seconds``: unix time the Sentinel started;
- ``process_*``: the Sentinel process (prometheus_client's ProcessCollector).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import attrs
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from casparian_trio.cli.workers import worker_views
from casparian_trio.http._live import Slots, slot_totals
from casparian_trio.http._tally import Buckets, Tally
from casparian_trio.store import JobStatus, reports
from casparian_trio.store import dashboard as reads
from casparian_trio.store.topics import QUARANTINE_SUFFIX

# Upper bounds (s) of the duration and latency histograms: from a warm guest's
# ~20 ms job to the default one-hour timeout.
BUCKETS_S = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
# Counted failures: what a retry policy retries (WORKER_LOST etc. are not the plugin's).
FAILED_OUTCOMES = frozenset({"FAILED", "TIMED_OUT"})
# The throughput window of `status` (and of its numbers here).
WINDOW_S = 60.0
# The dashboard's own request times: a page is milliseconds; few buckets keep a scrape small.
REQUEST_BUCKETS_S = (0.005, 0.025, 0.1, 0.5, 2.5)


def _hist(
    name: str, doc: str, labels: list[str], rows: dict[tuple[str, ...], Buckets]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, h in sorted(rows.items()):
        buckets: list[tuple[str, float]] = [(repr(le), float(n)) for le, n in h.cumulative()]
        buckets.append(("+Inf", float(h.count)))
        family.add_metric(list(values), buckets, sum_value=h.total)
    return family


def _outcome_families(tally: Tally) -> Iterator[Metric]:
    completed = CounterMetricFamily(
        "casparian_jobs_completed", "Job attempts that completed.", labels=["plugin"]
    )
    failed = CounterMetricFamily(
        "casparian_jobs_failed", "Job attempts that failed or timed out.", labels=["plugin"]
    )
    attempts = CounterMetricFamily(
        "casparian_job_attempts", "Ended job attempts by outcome.", labels=["plugin", "outcome"]
    )
    per_plugin: dict[str, list[int]] = {}
    for (plugin, outcome), n in sorted(tally.outcomes.items()):
        attempts.add_metric([plugin, outcome], n)
        counts = per_plugin.setdefault(plugin, [0, 0])
        counts[0] += n if outcome == "COMPLETED" else 0
        counts[1] += n if outcome in FAILED_OUTCOMES else 0
    for plugin, (done, bad) in per_plugin.items():
        completed.add_metric([plugin], done)
        failed.add_metric([plugin], bad)
    yield from (completed, failed, attempts)


def _topic_families(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    written = CounterMetricFamily(
        "casparian_rows_written", "Rows written to each topic (latest attempts).", labels=["topic"]
    )
    quarantined = CounterMetricFamily(
        "casparian_rows_quarantined", "Rows sent to each topic's quarantine.", labels=["topic"]
    )
    totals: dict[str, list[int]] = {}
    for row in rows:
        name = row["topic_name"]
        if name.endswith(QUARANTINE_SUFFIX):
            continue  # its rows are the quarantined rows of the topic it belongs to
        counts = totals.setdefault(name, [0, 0])
        counts[0] += int(row["rows"] or 0)
        counts[1] += int(row["rows_quarantined"] or 0)
    for name, (rows_written, rows_quarantined) in sorted(totals.items()):
        written.add_metric([name], rows_written)
        quarantined.add_metric([name], rows_quarantined)
    yield from (written, quarantined)


def _status_families(
    status: reports.StatusSnapshot, slots: dict[str, Slots], *, now: float
) -> Iterator[Metric]:
    jobs = GaugeMetricFamily("casparian_jobs", "Jobs in each state.", labels=["state"])
    for known_state in JobStatus:
        jobs.add_metric([str(known_state)], status.jobs.get(str(known_state), 0))
    for state, n in sorted(status.jobs.items()):
        if state not in JobStatus.__members__:
            jobs.add_metric([state], n)  # a legacy state of a seed database
    yield jobs
    oldest = status.oldest_queued_at
    yield GaugeMetricFamily(
        "casparian_queue_oldest_age_seconds",
        "Seconds the oldest QUEUED job has waited (0: none queued).",
        value=0.0 if oldest is None else max(0.0, now - oldest),
    )
    _sentinel, known = worker_views(status.sentinel, status.workers, now=now)
    workers = GaugeMetricFamily("casparian_workers", "Workers in each state.", labels=["state"])
    by_state: dict[str, int] = {}
    for row in known:
        by_state[row["status"]] = by_state.get(row["status"], 0) + 1
    for state, n in sorted(by_state.items()):
        workers.add_metric([state], n)
    yield workers
    busy, free = slot_totals(slots)
    slot_family = GaugeMetricFamily(
        "casparian_worker_slots", "Connected workers' job slots.", labels=["state"]
    )
    slot_family.add_metric(["busy"], busy)
    slot_family.add_metric(["free"], free)
    yield slot_family
    if status.sentinel is not None:
        yield GaugeMetricFamily(
            "casparian_sentinel_start_time_seconds",
            "Unix time the Sentinel started.",
            value=status.sentinel.started_at,
        )


def families(
    snapshot: reads.MetricsSnapshot, tally: Tally, slots: dict[str, Slots], *, now: float
) -> Iterator[Metric]:
    """Every store-derived metric family of one scrape (pure: ``now`` is passed in)."""
    yield from _status_families(snapshot.status, slots, now=now)
    yield from _outcome_families(tally)
    yield _hist(
        "casparian_job_duration_seconds",
        "Completed jobs' run time as their worker measured it.",
        ["plugin"],
        {(plugin,): h for plugin, h in tally.runs.items()},
    )
    yield _hist(
        "casparian_dispatch_conclude_latency_seconds",
        "Seconds from a job's dispatch (claim) to its receipt, per ended attempt.",
        [],
        {(): tally.latency},
    )
    yield from _topic_families(snapshot.topics)


@attrs.define(eq=False)
class StoreCollector(Collector):
    """Yields the families of the last snapshot read; ``/metrics`` calls ``take`` first."""

    slots: Callable[[], dict[str, Slots]]
    clock: Callable[[], float]
    tally: Tally = attrs.field(factory=lambda: Tally(BUCKETS_S))
    snapshot: reads.MetricsSnapshot | None = None

    def take(self, snapshot: reads.MetricsSnapshot) -> None:
        """Use ``snapshot`` (read for the tally's ``max_id`` and ``open_ids``) next."""
        self.tally.add(snapshot.attempts)
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        if self.snapshot is not None:
            yield from families(self.snapshot, self.tally, self.slots(), now=self.clock())

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names vary with the data; nothing to check at registration


@attrs.define(eq=False)
class Metrics:
    """The dashboard's registry: the store collector, the process, and its own requests."""

    collector: StoreCollector
    registry: CollectorRegistry = attrs.field(factory=CollectorRegistry)
    requests: Counter = attrs.field(init=False)
    request_seconds: Histogram = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # No `*_created` series beside each counter: they double a scrape's size, and
        # Prometheus needs none (this process owns its prometheus_client).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "casparian_http_requests",
            "Dashboard requests served.",
            ["route", "code"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "casparian_http_request_duration_seconds",
            "Time to serve a dashboard request.",
            ["route"],
            registry=self.registry,
            buckets=REQUEST_BUCKETS_S,
        )
