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
from collections.abc import Collection
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


Attempt = tuple[int, str, str | None, float | None, float | None]


@attrs.frozen(kw_only=True)
class MetricsSnapshot:
    """What one ``/metrics`` scrape reads, in one transaction.

    Attributes:
        status: the ``status`` command's numbers (jobs by state, workers, oldest queued).
        topics: ``topics.list_topics`` rows (rows written and quarantined per topic).
        attempts: attempts recorded after ``after_id`` and those of ``open_ids``:
            (id, plugin, outcome or None while running, seconds from claim to
            end, run seconds the worker measured for a completion, else None).
    """

    status: reports.StatusSnapshot
    topics: list[dict[str, Any]]
    attempts: list[Attempt]


def metrics_snapshot(
    conn: sqlite3.Connection,
    *,
    after_id: int,
    open_ids: Collection[int],
    now: float,
    window_s: float,
) -> MetricsSnapshot:
    """Every number ``/metrics`` needs; of the attempts only those new or still open.

    Args:
        after_id: the highest attempt id already read (0: none).
        open_ids: attempts that were still running when last read.
        now, window_s: the ``status`` throughput window ends at ``now``.
    """
    rows = list(conn.execute(q("dashboard_attempts_after_id"), {"after_id": after_id}))
    if open_ids:
        ids = json.dumps(sorted(open_ids))
        rows += conn.execute(q("dashboard_attempts_by_ids"), {"ids": ids}).fetchall()
    return MetricsSnapshot(
        status=reports.status_snapshot(conn, since=now - window_s),
        topics=topics.list_topics(conn),
        attempts=[
            (r["id"], r["plugin"], r["outcome"], _seconds(r["took_s"]), _seconds(r["run_s"]))
            for r in rows
        ],
    )


def _seconds(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
