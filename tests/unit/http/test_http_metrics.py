"""``/metrics`` families from a known store: parsed back with prometheus_client's own parser."""

from __future__ import annotations

from functools import partial

from http_seed import NOW, Seeded
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from casparian_trio.http._live import live_slots
from casparian_trio.http._tally import Tally
from casparian_trio.http.metrics import Metrics, StoreCollector
from casparian_trio.protocol import Identify
from casparian_trio.sentinel.registry import HeldJob, Registry
from casparian_trio.store import Database, queue
from casparian_trio.store import dashboard as reads

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(
    db: Database, registry: Registry | None = None, metrics: Metrics | None = None
) -> tuple[Samples, set[str]]:
    if metrics is None:
        metrics = Metrics(
            collector=StoreCollector(slots=lambda: live_slots(registry), clock=lambda: NOW)
        )
    tally = metrics.collector.tally
    read = partial(
        reads.metrics_snapshot,
        after_id=tally.max_id,
        open_ids=frozenset(tally.open_ids),
        now=NOW,
        window_s=60.0,
    )
    snapshot = db.run_sync(read, readonly=True)
    metrics.collector.take(snapshot)
    text = generate_latest(metrics.registry).decode()
    samples: Samples = {}
    kinds = set()
    for family in text_string_to_metric_families(text):
        kinds.add(f"{family.name}:{family.type}")
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, kinds


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_job_counts_and_counters_equal_the_store(db: Database, seeded: Seeded) -> None:
    samples, kinds = scrape(db)
    assert value(samples, "casparian_jobs", state="COMPLETED") == 2
    assert value(samples, "casparian_jobs", state="FAILED") == 1
    assert value(samples, "casparian_jobs", state="QUEUED") == 1
    assert value(samples, "casparian_jobs", state="RUNNING") == 0
    assert value(samples, "casparian_jobs_completed_total", plugin="sales") == 2
    assert value(samples, "casparian_jobs_failed_total", plugin="sales") == 1
    assert value(samples, "casparian_job_attempts_total", plugin="sales", outcome="FAILED") == 1
    assert ("casparian_jobs_completed_total", frozenset({("plugin", "logs")})) not in samples
    assert {
        "casparian_jobs:gauge",
        "casparian_jobs_completed:counter",
        "casparian_job_duration_seconds:histogram",
        "casparian_dispatch_conclude_latency_seconds:histogram",
        "casparian_rows_written:counter",
        "casparian_queue_oldest_age_seconds:gauge",
        "casparian_worker_slots:gauge",
    } <= kinds


def test_rows_per_topic_leave_the_quarantine_topic_out(db: Database, seeded: Seeded) -> None:
    samples, _ = scrape(db)
    assert value(samples, "casparian_rows_written_total", topic="sales") == 15
    assert value(samples, "casparian_rows_quarantined_total", topic="sales") == 2
    assert not any(
        name == "casparian_rows_written_total" and ("topic", "sales_quarantine") in labels
        for name, labels in samples
    )


def test_histograms_bucket_run_time_and_dispatch_latency(db: Database, seeded: Seeded) -> None:
    samples, _ = scrape(db)
    run = "casparian_job_duration_seconds"
    assert value(samples, f"{run}_count", plugin="sales") == 2
    assert value(samples, f"{run}_sum", plugin="sales") == 2.3
    assert value(samples, f"{run}_bucket", plugin="sales", le="0.25") == 0
    assert value(samples, f"{run}_bucket", plugin="sales", le="0.5") == 1
    assert value(samples, f"{run}_bucket", plugin="sales", le="2.5") == 2
    assert value(samples, f"{run}_bucket", plugin="sales", le="+Inf") == 2
    lat = "casparian_dispatch_conclude_latency_seconds"
    assert value(samples, f"{lat}_count") == 3  # two receipts and one failure
    assert value(samples, f"{lat}_sum") == 1.0 + 4.0 + 2.0
    assert value(samples, f"{lat}_bucket", le="1.0") == 1
    assert value(samples, f"{lat}_bucket", le="2.5") == 2
    assert value(samples, f"{lat}_bucket", le="5.0") == 3


def test_queue_age_and_live_slots(db: Database, seeded: Seeded) -> None:
    registry = Registry()
    hello = Identify(worker_id="w1", capabilities=["sales"], slots=3)
    worker, _ = registry.register(b"w1", hello, now=0.0)
    worker.jobs[9] = HeldJob(job_id=9, attempt=1, plugin_name="sales", timeout_s=60)
    samples, _ = scrape(db, registry)
    assert value(samples, "casparian_queue_oldest_age_seconds") == 30
    assert value(samples, "casparian_worker_slots", state="busy") == 1
    assert value(samples, "casparian_worker_slots", state="free") == 2


def test_an_empty_store_reports_zeros(db: Database) -> None:
    samples, _ = scrape(db)
    assert value(samples, "casparian_jobs", state="QUEUED") == 0
    assert value(samples, "casparian_queue_oldest_age_seconds") == 0
    assert value(samples, "casparian_dispatch_conclude_latency_seconds_count") == 0
    assert value(samples, "casparian_worker_slots", state="free") == 0


def test_each_ended_attempt_is_counted_once_over_many_scrapes(db: Database, seeded: Seeded) -> None:
    metrics = Metrics(collector=StoreCollector(slots=dict, clock=lambda: NOW))
    for _ in range(3):
        samples, _ = scrape(db, metrics=metrics)
        assert value(samples, "casparian_jobs_completed_total", plugin="sales") == 2
        assert value(samples, "casparian_dispatch_conclude_latency_seconds_count") == 3

    job = db.run_sync(partial(queue.claim, capabilities=("logs",), worker_id="w2", now=NOW - 12))
    assert job is not None
    samples, _ = scrape(db, metrics=metrics)  # it runs: not counted yet, but remembered
    assert metrics.collector.tally.open_ids == {4}
    assert value(samples, "casparian_dispatch_conclude_latency_seconds_count") == 3
    summary = {"metrics": {"rows": 1, "duration_s": 0.04}, "rows": 1}
    done = partial(queue.complete, job_id=job.id, attempt=job.attempt, now=NOW - 10)
    assert db.run_sync(partial(done, result_summary=summary))
    samples, _ = scrape(db, metrics=metrics)
    assert value(samples, "casparian_jobs_completed_total", plugin="logs") == 1
    assert value(samples, "casparian_jobs_completed_total", plugin="sales") == 2
    assert value(samples, "casparian_dispatch_conclude_latency_seconds_count") == 4
    assert value(samples, "casparian_job_duration_seconds_bucket", plugin="logs", le="0.05") == 1


def test_an_attempt_running_at_one_scrape_is_counted_when_it_ends() -> None:
    tally = Tally((1.0, 10.0))
    tally.add([(1, "p", "COMPLETED", 0.5, 0.2), (2, "p", None, None, None)])
    assert (tally.max_id, tally.open_ids) == (2, {2})
    # the next read: attempt 2 (asked for by id) has failed, attempt 3 is new
    tally.add([(3, "p", "COMPLETED", 20.0, 9.0), (2, "p", "FAILED", 5.0, None)])
    assert (tally.max_id, tally.open_ids) == (3, set())
    assert tally.outcomes == {("p", "COMPLETED"): 2, ("p", "FAILED"): 1}
    assert tally.latency.cumulative() == [(1.0, 1), (10.0, 2)]
    assert (tally.latency.count, tally.latency.total) == (3, 25.5)
    assert tally.runs["p"].cumulative() == [(1.0, 1), (10.0, 2)]
    tally.add([])  # nothing new: nothing changes
    assert tally.outcomes == {("p", "COMPLETED"): 2, ("p", "FAILED"): 1}
