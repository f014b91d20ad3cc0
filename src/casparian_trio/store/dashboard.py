"""What the web dashboard and ``/metrics`` read: pages of jobs, throughput, metric totals.

Sync core like ``reports``: each function takes the connection first and runs
inside one read transaction of the dashboard's own connection; the SQL is in
``schema/queries.sql`` (``dashboard`` section). Everything the command line
already reads (status numbers, a job, its attempts, topics, the worker table)
comes from ``reports``, ``queue`` and ``topics`` unchanged, so a page and the
command that prints the same facts cannot disagree.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

import attrs

from casparian_trio.store import queue, reports, topics
from casparian_trio.store._sql import q
from casparian_trio.store.rows import JobView


@attrs.frozen(kw_only=True)
class JobFilter:
    """The jobs page's filters (None: any) and page.

    Attributes:
        status, plugin, topic: exact names.
        file: any part of the file's path under its source.
        offset: jobs skipped (newest first); limit: jobs on the page.
    """

    status: str | None = None
    plugin: str | None = None
    topic: str | None = None
    file: str | None = None
    offset: int = 0
    limit: int = 50


def job_page(conn: sqlite3.Connection, selection: JobFilter) -> tuple[list[JobView], bool]:
    """(one page of jobs, newest first; whether a next page exists)."""
    params = {
        "status": selection.status,
        "plugin": selection.plugin,
        "topic": selection.topic,
        "file": selection.file,
        "offset": selection.offset,
        "limit": selection.limit + 1,  # one more tells whether a next page exists
    }
    views = [JobView.from_row(r) for r in conn.execute(q("dashboard_job_page"), params)]
    return views[: selection.limit], len(views) > selection.limit


def filter_choices(conn: sqlite3.Connection) -> tuple[list[str], list[str]]:
    """(published plugin names, topic names): the jobs page's drop-downs."""
    plugins = [r[0] for r in conn.execute(q("dashboard_plugin_names"))]
    names = [r[0] for r in conn.execute(q("dashboard_topic_names"))]
    return plugins, names


@attrs.frozen(kw_only=True)
class JobDetail:
    """Everything the job page shows, read in one transaction."""

    view: JobView
    attempts: list[dict[str, Any]]
    manifest: dict[str, Any] | None
    outputs: list[dict[str, Any]]


def job_detail(conn: sqlite3.Connection, job_id: int) -> JobDetail:
    """One job with its attempts, its plugin's ACTIVE manifest and its topics.

    Raises:
        StoreError: no such job.
    """
    view = reports.job_view(conn, job_id)
    return JobDetail(
        view=view,
        attempts=queue.attempts(conn, job_id),
        manifest=reports.active_manifest(conn, view.job.plugin_name),
        outputs=topics.job_outputs(conn, job_id),
    )


def throughput(
    conn: sqlite3.Connection, *, since: float, bucket_s: float, buckets: int
) -> list[dict[str, int]]:
    """Attempts that ended in each of ``buckets`` windows of ``bucket_s`` from ``since``.

    Returns:
        One ``{outcome: count}`` per window, oldest first (an empty dict: nothing ended).
    """
    found: list[dict[str, int]] = [{} for _ in range(buckets)]
    params = {"since": since, "bucket_s": bucket_s}
    for row in conn.execute(q("dashboard_throughput"), params):
        if 0 <= row["bucket"] < buckets and row["outcome"] is not None:
            found[row["bucket"]][row["outcome"]] = row["jobs"]
    return found


@attrs.frozen(kw_only=True)
class Histogram:
    """Cumulative bucket counts as Prometheus wants them.

    Attributes:
        buckets: (upper bound in seconds, observations at or below it), bounds ascending.
        count: all observations; total: their sum in seconds.
    """

    buckets: tuple[tuple[float, int], ...]
    count: int
    total: float


def _histogram(
    rows: Sequence[sqlite3.Row], bounds: Sequence[float], count: int, total: float
) -> Histogram:
    at = {float(r["le"]): int(r["n"]) for r in rows}
    return Histogram(
        buckets=tuple((b, at.get(float(b), 0)) for b in bounds), count=count, total=total
    )


@attrs.frozen(kw_only=True)
class MetricsSnapshot:
    """What one ``/metrics`` scrape reports, read in one transaction.

    Attributes:
        status: the ``status`` command's numbers (jobs by state, workers, oldest queued).
        outcomes: ended attempts per (plugin, outcome).
        durations: completed jobs' run time per plugin.
        latency: dispatch to conclusion of every ended attempt.
        topics: ``topics.list_topics`` rows (rows written and quarantined per topic).
    """

    status: reports.StatusSnapshot
    outcomes: dict[tuple[str, str], int]
    durations: dict[str, Histogram]
    latency: Histogram
    topics: list[dict[str, Any]]


def metrics_snapshot(
    conn: sqlite3.Connection, *, bounds: Sequence[float], now: float, window_s: float
) -> MetricsSnapshot:
    """Every number ``/metrics`` shows; ``bounds`` are the histograms' upper bounds (s)."""
    bounds_json = json.dumps(list(bounds))
    outcomes = {
        (r["plugin"], r["outcome"]): int(r["n"])
        for r in conn.execute(q("dashboard_attempt_outcomes"))
    }
    by_plugin: dict[str, list[sqlite3.Row]] = {}
    for row in conn.execute(q("dashboard_duration_buckets"), {"bounds": bounds_json}):
        by_plugin.setdefault(row["plugin"], []).append(row)
    durations = {
        r["plugin"]: _histogram(by_plugin.get(r["plugin"], []), bounds, r["n"], r["total"])
        for r in conn.execute(q("dashboard_duration_totals"))
    }
    latency_rows = conn.execute(q("dashboard_latency_buckets"), {"bounds": bounds_json}).fetchall()
    totals = conn.execute(q("dashboard_latency_totals")).fetchone()
    return MetricsSnapshot(
        status=reports.status_snapshot(conn, since=now - window_s),
        outcomes=outcomes,
        durations=durations,
        latency=_histogram(latency_rows, bounds, int(totals["n"]), float(totals["total"])),
        topics=topics.list_topics(conn),
    )
