"""The job queue's sync core: every function is (part of) one transaction.

Each function takes the connection first and plain values after, and is run by
``Database.run`` inside ``BEGIN IMMEDIATE … COMMIT``; they never commit.

Invariants:
- A job is RUNNING exactly while it has an open cf_job_attempt row (ended_at
  NULL) for its current ``attempt``; claim opens it, every conclusion closes it.
- ``attempt`` only grows (+1 per claim). A receipt names the attempt it is for;
  one for another attempt, or for a job no longer RUNNING, is stale: no change.
- A job whose cancel was requested ends CANCELLED, whatever receipt arrives.
- ``retry_count`` counts counted failures; at ``max_attempts`` the job FAILS,
  otherwise it waits ``backoff_delay(retry_count)`` seconds before the next claim.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sqlite3
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from casparian_trio.errors import CatalogError, StoreError
from casparian_trio.filenames import shown
from casparian_trio.store._sql import q
from casparian_trio.store.rows import (
    JOB_RETRACT,
    TERMINAL_STATUSES,
    JobRow,
    JobStatus,
    Outcome,
    backoff_delay,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 3  # mirrors the column default of 002_lifecycle.sql
DEFAULT_BACKOFF_BASE_S = 2.0  # seconds after the first failure
DEFAULT_BACKOFF_CAP_S = 300.0  # a flapping job retries at least every 5 minutes


def iso_time(now: float) -> str:
    """Unix time as the seed's TEXT timestamp format (UTC, like CURRENT_TIMESTAMP)."""
    second = math.floor(now)
    if now - second > 0.999999:  # datetime rounds to the microsecond: maybe the next second
        return datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    return _iso_second(second)


@functools.lru_cache(maxsize=4)
def _iso_second(second: int) -> str:
    # Whole seconds only: a busy queue writes the same few strings thousands of times.
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


# --- enqueue and claim --------------------------------------------------------


def enqueue(
    conn: sqlite3.Connection,
    file_version_id: int,
    plugin_name: str,
    *,
    now: float,
    priority: int = 0,
    config_overrides: dict[str, Any] | None = None,
    max_attempts: int | None = None,
    timeout_s: float | None = None,
    kind: str = "parse",
) -> tuple[int, bool]:
    """Queue a job unless one exists for (file version, plugin, kind); return (id, created).

    ``kind`` is 'parse' or 'retract' (remove a deleted file's output).
    """
    params = {
        "kind": kind,
        "file_version_id": file_version_id,
        "plugin_name": plugin_name,
        "config_overrides": _json(config_overrides),
        "priority": priority,
        "max_attempts": DEFAULT_MAX_ATTEMPTS if max_attempts is None else max_attempts,
        "timeout_s": timeout_s,
        "now": now,
    }
    try:
        cursor = conn.execute(q("enqueue_job"), params)
    except sqlite3.IntegrityError as exc:
        raise CatalogError(
            f"cannot queue {plugin_name!r} on file version {file_version_id}: {exc} "
            "(scan the file first so its version exists)"
        ) from exc
    if cursor.rowcount == 1:
        job_id = int(cursor.lastrowid or 0)
        superseded = conn.execute(q("supersede_queued"), params).rowcount
        if superseded:
            logger.info(
                "%d queued %s job(s) superseded by file version %d",
                superseded,
                plugin_name,
                file_version_id,
            )
        return job_id, True
    row = conn.execute(q("job_id_by_file_plugin"), params).fetchone()
    return int(row[0]), False


def claim_query(capabilities: Collection[str]) -> tuple[str, dict[str, Any]] | None:
    """The SELECT that picks the next claimable job for these capabilities (None: none)."""
    caps = [capabilities] if isinstance(capabilities, str) else list(capabilities)
    if not caps:
        return None
    if "*" in caps:
        return q("claim_next_any"), {}
    return q("claim_next_for_plugins"), {"plugins": json.dumps(sorted(set(caps)))}


def claim(
    conn: sqlite3.Connection,
    *,
    capabilities: Collection[str],
    worker_id: str,
    now: float,
    worker_host: str | None = None,
    worker_pid: int | None = None,
) -> JobRow | None:
    """Take the best claimable job (priority DESC, id ASC) for a worker, or None."""
    query = claim_query(capabilities)
    if query is None:
        return None
    sql, params = query
    found = conn.execute(sql, {**params, "now": now}).fetchone()
    if found is None:
        return None
    rows = conn.execute(
        q("mark_claimed"),
        {
            "id": found[0],
            "worker_id": worker_id,
            "worker_host": worker_host,
            "worker_pid": worker_pid,
            "claim_time": iso_time(now),
            "now": now,
        },
    ).fetchall()
    job = JobRow.from_row(rows[0])
    conn.execute(
        q("attempt_start"),
        {"job_id": job.id, "attempt": job.attempt, "worker_id": worker_id, "now": now},
    )
    return job


# --- conclusions ----------------------------------------------------------------


def _running(conn: sqlite3.Connection, job_id: int, attempt: int) -> JobRow | None:
    row = conn.execute(q("job_by_id"), {"id": job_id}).fetchone()
    if row is None or row["status"] != JobStatus.RUNNING or row["attempt"] != attempt:
        return None
    return JobRow.from_row(row)


def _end_attempt(
    conn: sqlite3.Connection, job: JobRow, outcome: str, error: str | None, now: float
) -> None:
    conn.execute(
        q("attempt_end"),
        {
            "job_id": job.id,
            "attempt": job.attempt,
            "outcome": str(Outcome(outcome)),
            "error_message": None if error is None else shown(error),
            "now": now,
        },
    )


def _conclude(
    conn: sqlite3.Connection,
    job: JobRow,
    status: JobStatus,
    *,
    now: float,
    **changes: Any,
) -> None:
    """Write the job's new status; fields not in ``changes`` keep their value."""
    holder = status != JobStatus.QUEUED  # a requeued job is held by nobody
    params = {
        "id": job.id,
        "status": str(status),
        "retry_count": job.retry_count,
        "not_before": None,
        "error_message": job.error_message,
        "error_traceback": job.error_traceback,
        "result_summary": None,
        "worker_id": job.worker_id if holder else None,
        "worker_host": job.worker_host if holder else None,
        "worker_pid": job.worker_pid if holder else None,
        "end_time": iso_time(now) if status in TERMINAL_STATUSES else None,
        "now": now,
    }
    params.update(changes)
    for key in ("error_message", "error_traceback"):  # a path with undecodable bytes in it
        value = params[key]
        if isinstance(value, str):
            params[key] = shown(value)
    conn.execute(q("job_conclude"), params)
    # DEBUG: the Sentinel logs each outcome once, with its worker (reactions.py);
    # a second INFO line per job was a measurable share of its per-job cost.
    logger.debug(
        "job %d attempt %d → %s",
        job.id,
        job.attempt,
        status,
        extra={"event": "job.concluded", "job_id": job.id, "status": str(status)},
    )


def complete(
    conn: sqlite3.Connection,
    job_id: int,
    attempt: int,
    *,
    result_summary: dict[str, Any],
    now: float,
) -> bool:
    """Record a successful attempt; False (no change) unless RUNNING with that attempt.

    A job whose cancel was requested ends CANCELLED (its summary is still kept).
    """
    job = _running(conn, job_id, attempt)
    if job is None:
        return False
    status = JobStatus.CANCELLED if job.cancel_requested else JobStatus.COMPLETED
    _conclude(
        conn,
        job,
        status,
        now=now,
        result_summary=_json(result_summary),
        error_message=None,
        error_traceback=None,
    )
    _end_attempt(conn, job, Outcome.COMPLETED, None, now)
    return True


def _after_failure(
    job: JobRow, *, counted: bool, now: float, base_s: float, cap_s: float, final: bool = False
) -> tuple[JobStatus, int, float | None]:
    """(new status, retry_count, not_before) after a failed or handed-back attempt.

    ``final``: the failure is deterministic (it would recur): FAILED now, no retry.
    """
    retry_count = job.retry_count + (1 if counted else 0)
    if job.cancel_requested:
        return JobStatus.CANCELLED, retry_count, None
    if counted and (final or retry_count >= job.max_attempts):
        return JobStatus.FAILED, retry_count, None
    if not counted:
        return JobStatus.QUEUED, retry_count, None
    return (
        JobStatus.QUEUED,
        retry_count,
        now + backoff_delay(retry_count, base_s=base_s, cap_s=cap_s),
    )


def requeue(
    conn: sqlite3.Connection,
    job_id: int,
    attempt: int,
    *,
    reason: str,
    now: float,
    counted: bool,
    outcome: str,
    traceback: str | None = None,
    backoff_base_s: float = DEFAULT_BACKOFF_BASE_S,
    backoff_cap_s: float = DEFAULT_BACKOFF_CAP_S,
    final: bool = False,
) -> str | None:
    """End a RUNNING attempt that did not succeed; return the new status (None: stale).

    ``counted``: a failure (retry_count+1, backoff, FAILED after max_attempts);
    otherwise (shutdown handback, unroutable dispatch) QUEUED again at once.
    """
    job = _running(conn, job_id, attempt)
    if job is None:
        return None
    status, retry_count, not_before = _after_failure(
        job, counted=counted, now=now, base_s=backoff_base_s, cap_s=backoff_cap_s, final=final
    )
    changes: dict[str, Any] = {"retry_count": retry_count, "not_before": not_before}
    if counted:
        changes.update(error_message=reason, error_traceback=traceback)
    _conclude(conn, job, status, now=now, **changes)
    _end_attempt(conn, job, outcome, reason, now)
    if status == JobStatus.QUEUED and not_before is not None:
        logger.warning(
            "job %d failed (%d/%d), retry in %.1f s",
            job.id,
            retry_count,
            job.max_attempts,
            not_before - now,
            extra={"event": "job.backoff", "job_id": job.id},
        )
    return str(status)


def fail(
    conn: sqlite3.Connection,
    job_id: int,
    attempt: int,
    *,
    error: str,
    now: float,
    outcome: str = Outcome.FAILED,
    traceback: str | None = None,
    backoff_base_s: float = DEFAULT_BACKOFF_BASE_S,
    backoff_cap_s: float = DEFAULT_BACKOFF_CAP_S,
    final: bool = False,
) -> str | None:
    """A counted failure of a RUNNING attempt (see ``requeue``); None if stale.

    ``final``: deterministic, so FAILED at once whatever attempts remain.
    """
    return requeue(
        conn,
        job_id,
        attempt,
        reason=error,
        now=now,
        counted=True,
        outcome=outcome,
        traceback=traceback,
        backoff_base_s=backoff_base_s,
        backoff_cap_s=backoff_cap_s,
        final=final,
    )


def end_unretried(
    conn: sqlite3.Connection,
    job_id: int,
    attempt: int,
    *,
    status: str,
    reason: str,
    now: float,
) -> str | None:
    """End a RUNNING attempt as SUPERSEDED or SKIPPED; return the new status (None: stale).

    The input is no longer the queued version, so the attempt is not counted
    (retry_count unchanged) and never retried; the attempt's outcome is the same
    word. A job whose cancel was requested ends CANCELLED.
    """
    ended = JobStatus(status)
    if ended not in (JobStatus.SUPERSEDED, JobStatus.SKIPPED):
        raise ValueError(f"end_unretried: {status!r} is not SUPERSEDED or SKIPPED")
    job = _running(conn, job_id, attempt)
    if job is None:
        return None
    final = JobStatus.CANCELLED if job.cancel_requested else ended
    _conclude(conn, job, final, now=now, error_message=reason, error_traceback=None)
    _end_attempt(conn, job, Outcome(str(ended)), reason, now)
    return str(final)


# --- operator actions -------------------------------------------------------------


def get_job(conn: sqlite3.Connection, job_id: int) -> JobRow | None:
    row = conn.execute(q("job_by_id"), {"id": job_id}).fetchone()
    return None if row is None else JobRow.from_row(row)


def _require_job(conn: sqlite3.Connection, job_id: int) -> JobRow:
    job = get_job(conn, job_id)
    if job is None:
        raise StoreError(f"no job with id {job_id}")
    return job


def _cancel(conn: sqlite3.Connection, job: JobRow, now: float) -> None:
    conn.execute(q("cancel_job"), {"id": job.id, "end_time": iso_time(now), "now": now})
    if job.status == JobStatus.RUNNING:
        _end_attempt(conn, job, Outcome.CANCELLED, "cancelled", now)


def mark_cancelled(
    conn: sqlite3.Connection, job_id: int, attempt: int | None, *, now: float
) -> bool:
    """Make a QUEUED or RUNNING job CANCELLED now (given ``attempt``: only that RUNNING one)."""
    job = get_job(conn, job_id)
    if job is None or job.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
        return False
    if attempt is not None and (job.status != JobStatus.RUNNING or job.attempt != attempt):
        return False
    _cancel(conn, job, now)
    return True


def request_cancel(conn: sqlite3.Connection, job_id: int, *, now: float) -> str:
    """QUEUED → CANCELLED; RUNNING → cancel_requested (returns 'RUNNING'); else unchanged.

    Raises:
        StoreError: no such job.
    """
    job = _require_job(conn, job_id)
    if job.status == JobStatus.QUEUED:
        _cancel(conn, job, now)
        return str(JobStatus.CANCELLED)
    if job.status == JobStatus.RUNNING:
        conn.execute(q("request_cancel_running"), {"id": job_id, "now": now})
    return str(job.status)


# What ``retry --force`` also re-runs: the job ended without failing.
FORCE_RETRYABLE = (JobStatus.COMPLETED, JobStatus.SUPERSEDED, JobStatus.SKIPPED)


def retry(conn: sqlite3.Connection, job_id: int, *, now: float, force: bool = False) -> str:
    """Operator retry: FAILED/CANCELLED → QUEUED with a fresh retry budget; else unchanged.

    ``force`` also re-runs a COMPLETED, SUPERSEDED or SKIPPED job (its output is
    replaced by the new run's: output identity is (topic, source file)). A
    retraction job whose file is back (not deleted) is never re-run: it would
    remove that file's current rows.

    Raises:
        StoreError: no such job.
    """
    job = _require_job(conn, job_id)
    allowed = (JobStatus.FAILED, JobStatus.CANCELLED, *(FORCE_RETRYABLE if force else ()))
    if job.status not in allowed or (job.kind == JOB_RETRACT and _file_is_back(conn, job)):
        return str(job.status)
    conn.execute(q("retry_job"), {"id": job_id, "now": now})
    return str(JobStatus.QUEUED)


def _file_is_back(conn: sqlite3.Connection, job: JobRow) -> bool:
    row = conn.execute(q("version_location_deleted"), {"id": job.file_version_id}).fetchone()
    return row is not None and row["deleted_at"] is None


def rerun(conn: sqlite3.Connection, job_id: int, *, now: float, priority: int) -> bool:
    """Re-run an ended job (any state but QUEUED/RUNNING) at ``priority``; False if not ended."""
    params = {"id": job_id, "now": now, "priority": priority}
    return conn.execute(q("requeue_job"), params).rowcount == 1


def cancel_queued_requests(conn: sqlite3.Connection, *, now: float) -> int:
    """QUEUED jobs flagged cancel_requested → CANCELLED; returns how many."""
    cursor = conn.execute(q("cancel_queued_requests"), {"end_time": iso_time(now), "now": now})
    return cursor.rowcount


# --- reads --------------------------------------------------------------------------


def running_jobs(conn: sqlite3.Connection) -> list[JobRow]:
    return [JobRow.from_row(r) for r in conn.execute(q("running_jobs"))]


def cancel_requested_jobs(conn: sqlite3.Connection) -> list[JobRow]:
    return [JobRow.from_row(r) for r in conn.execute(q("cancel_requested_jobs"))]


def next_wakeup(conn: sqlite3.Connection, *, now: float) -> float | None:
    """The earliest backoff end after ``now`` among QUEUED jobs (None: nothing waits)."""
    value = conn.execute(q("next_wakeup"), {"now": now}).fetchone()[0]
    return None if value is None else float(value)


def data_version(conn: sqlite3.Connection) -> int:
    """Changes whenever another connection (any process) commits to the file."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def stats(conn: sqlite3.Connection) -> dict[str, int]:
    """Job count per status; every JobStatus key is always present."""
    counts = {str(s): 0 for s in JobStatus}
    for status, count in conn.execute(q("count_by_status")):
        counts[status] = count
    return counts


def list_jobs(
    conn: sqlite3.Connection,
    *,
    status: str | None = None,
    plugin: str | None = None,
    limit: int = 50,
) -> list[JobRow]:
    """Newest jobs first, optionally filtered by status and plugin."""
    clauses: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    if status is not None:
        clauses.append("status = :status")
        params["status"] = status.upper()
    if plugin is not None:
        clauses.append("plugin_name = :plugin")
        params["plugin"] = plugin
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = f"SELECT * FROM cf_processing_queue {where} ORDER BY id DESC LIMIT :limit"
    return [JobRow.from_row(r) for r in conn.execute(sql, params)]


def attempts(conn: sqlite3.Connection, job_id: int) -> list[dict[str, Any]]:
    """The job's attempt history, oldest first."""
    return [dict(r) for r in conn.execute(q("attempts_of_job"), {"job_id": job_id})]
