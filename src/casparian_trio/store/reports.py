"""The command line's view of the store: the jobs, manifests and numbers it shows, and steering.

Sync cores like ``queue`` and ``catalog``: each function takes the connection
first and runs inside one transaction; the SQL is in ``schema/queries.sql``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import attrs

from casparian_trio.errors import StoreError
from casparian_trio.store import queue, sentinels, topics, workers
from casparian_trio.store._sql import q
from casparian_trio.store.rows import JobStatus, JobView, SentinelRecord


def list_job_views(
    conn: sqlite3.Connection, *, status: str | None, plugin: str | None, limit: int
) -> list[JobView]:
    """Newest jobs first, optionally filtered, each with its file."""
    params = {"status": status, "plugin": plugin, "limit": limit}
    return [JobView.from_row(r) for r in conn.execute(q("job_views"), params)]


def job_view(conn: sqlite3.Connection, job_id: int) -> JobView:
    """One job with its file.

    Raises:
        StoreError: no such job.
    """
    row = conn.execute(q("job_view"), {"id": job_id}).fetchone()
    if row is None:
        raise StoreError(f"no job {job_id}; list jobs with `casparian-trio jobs`")
    return JobView.from_row(row)


def job_ids(
    conn: sqlite3.Connection,
    *,
    ids: Sequence[int] = (),
    status: str | None = None,
    plugin: str | None = None,
) -> list[int]:
    """The jobs a command acts on: ``ids`` (each must exist) plus those the filters match.

    With ids and filters both given, an id is kept only when the filters match it.

    Raises:
        StoreError: one of ``ids`` is no job.
    """
    for job_id in ids:
        job_view(conn, job_id)  # the friendly "no job" error
    if status is None and plugin is None:
        return sorted(set(ids))
    matching = [
        r[0] for r in conn.execute(q("job_ids_matching"), {"status": status, "plugin": plugin})
    ]
    if ids:
        wanted = set(ids)
        return [i for i in matching if i in wanted]
    return matching


def steer(
    conn: sqlite3.Connection, job_id: int, action: str, *, now: float, force: bool = False
) -> tuple[str, str]:
    """(status before, status after) of ``action`` ('cancel' or 'retry') on one job.

    ``force`` (retry only): re-run a COMPLETED, SUPERSEDED or SKIPPED job too.

    Raises:
        StoreError: no such job.
    """
    before = job_view(conn, job_id).job.status  # the friendly "no job" error
    if action == "cancel":
        return str(before), queue.request_cancel(conn, job_id, now=now)
    return str(before), queue.retry(conn, job_id, now=now, force=force)


def steer_jobs(
    conn: sqlite3.Connection,
    *,
    action: str,
    ids: Sequence[int] = (),
    status: str | None = None,
    plugin: str | None = None,
    now: float,
    force: bool = False,
) -> list[tuple[int, str, str]]:
    """(id, status before, status after) of ``action`` on every selected job, in one transaction.

    Raises:
        StoreError: one of ``ids`` is no job (then nothing changes).
    """
    selected = job_ids(conn, ids=ids, status=status, plugin=plugin)
    return [(job_id, *steer(conn, job_id, action, now=now, force=force)) for job_id in selected]


def active_manifest(conn: sqlite3.Connection, plugin_name: str) -> dict[str, Any] | None:
    """The ACTIVE manifest's version and hashes (None: the plugin is not published)."""
    row = conn.execute(q("manifest_summary"), {"plugin_name": plugin_name}).fetchone()
    return None if row is None else dict(row)


def throughput(conn: sqlite3.Connection, *, status: str, since: float) -> tuple[int, int]:
    """(jobs, rows) that reached ``status`` at or after ``since`` (unix time)."""
    row = conn.execute(q("throughput"), {"status": status, "since": since}).fetchone()
    return int(row["jobs"]), int(row["rows"] or 0)


def oldest_queued(conn: sqlite3.Connection) -> float | None:
    """Creation time of the oldest QUEUED job (how far behind the queue is)."""
    value = conn.execute(q("oldest_queued")).fetchone()[0]
    return None if value is None else float(value)


def files_per_source(conn: sqlite3.Connection) -> dict[int, int]:
    """How many files the catalog knows under each source root."""
    return {row[0]: row[1] for row in conn.execute(q("files_per_source"))}


def schema_version(conn: sqlite3.Connection) -> int:
    """The database's migration number (PRAGMA user_version)."""
    return int(conn.execute(q("schema_version")).fetchone()[0])


@attrs.frozen(kw_only=True)
class StatusSnapshot:
    """What ``status`` shows, read in one transaction (the decisions about it are the CLI's).

    Attributes:
        sentinel: the Sentinel that last started on the database (None: never).
        workers: the worker table's rows.
        jobs: job count per status.
        completed, rows, failed: jobs (and their rows) that ended since the window began.
        oldest_queued_at: creation time of the oldest QUEUED job.
        rows_quarantined: rows every job's latest attempt sent to a quarantine topic.
    """

    sentinel: SentinelRecord | None
    workers: list[dict[str, Any]]
    jobs: dict[str, int]
    completed: int
    rows: int
    failed: int
    oldest_queued_at: float | None
    rows_quarantined: int = 0


def worker_table(conn: sqlite3.Connection) -> tuple[SentinelRecord | None, list[dict[str, Any]]]:
    """(the Sentinel's record, the worker rows): together, since one vouches for the other."""
    return sentinels.current(conn), workers.list_workers(conn)


def status_snapshot(conn: sqlite3.Connection, *, since: float) -> StatusSnapshot:
    """The queue, throughput since ``since`` (unix time) and the worker table at once."""
    completed, rows = throughput(conn, status=JobStatus.COMPLETED, since=since)
    failed, _ = throughput(conn, status=JobStatus.FAILED, since=since)
    sentinel, known = worker_table(conn)
    return StatusSnapshot(
        sentinel=sentinel,
        workers=known,
        jobs=queue.stats(conn),
        completed=completed,
        rows=rows,
        failed=failed,
        oldest_queued_at=oldest_queued(conn),
        rows_quarantined=topics.rows_quarantined_total(conn),
    )
