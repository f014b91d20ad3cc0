"""``jobs``, ``job``, ``cancel``, ``retry``, ``workers`` and ``status``: look at and steer the queue.

Reads run as read transactions; ``cancel`` and ``retry`` are one write
transaction each through the store's queue core. The Sentinel notices their
commits by polling ``PRAGMA data_version`` (config.DEFAULT_DB_POLL_INTERVAL).
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from functools import partial
from typing import Any

from casparian_trio import _render
from casparian_trio._ops_db import (
    JobView,
    active_manifest,
    job_view,
    list_job_views,
    oldest_queued,
    session,
    throughput,
)
from casparian_trio.errors import ConfigError
from casparian_trio.store import JobStatus, queue, workers

# Worker statuses the Sentinel writes when a worker is no longer connected.
GONE_STATUSES = frozenset({"GONE", "LOST"})
# "Throughput" is what finished in this many seconds before now.
THROUGHPUT_WINDOW = 60.0
# Lines of a traceback `job ID` shows: the end is where the cause is.
TRACEBACK_TAIL = 12

_JOB_COLUMNS = [
    _render.Column("id", align_right=True, min_width=2),
    _render.Column("status", min_width=6),
    _render.Column("plugin", shrink="end", min_width=6),
    _render.Column("attempt", align_right=True, min_width=3),
    # The file name says more than the error's tail (`job ID` shows all of it),
    # so the error column gives way first.
    _render.Column("file", shrink="path", min_width=32),
    _render.Column("updated", min_width=7),
    _render.Column("error", shrink="end", min_width=10),
]


def _status_text(job: Any) -> str:
    if job.status == JobStatus.RUNNING and job.cancel_requested:
        return "CANCELLING"
    return str(job.status)


# --- jobs / job -------------------------------------------------------------------------


def cmd_jobs(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    with session(args) as db:
        views = db.run_sync(
            partial(list_job_views, status=args.status, plugin=args.plugin, limit=args.limit),
            readonly=True,
        )
    if args.json:
        print(_render.dumps([v.to_json() for v in views]))
        return 0
    if not views:
        print("no jobs" + (" matching those filters" if args.status or args.plugin else ""))
        return 0
    now = time.time()
    rows = [
        [
            str(v.job.id),
            _status_text(v.job),
            v.job.plugin_name,
            str(v.job.attempt),
            v.rel_path or f"(file version {v.job.file_version_id})",
            _render.ago(v.job.updated_at or v.job.created_at, now),
            _render.first_line(v.job.error_message),
        ]
        for v in views
    ]
    print(_render.table(_JOB_COLUMNS, rows))
    return 0


def cmd_job(args: argparse.Namespace) -> int:
    with session(args) as db:
        view = db.run_sync(partial(job_view, job_id=args.id), readonly=True)
        history = db.run_sync(partial(queue.attempts, job_id=args.id), readonly=True)
        manifest = db.run_sync(
            partial(active_manifest, plugin_name=view.job.plugin_name), readonly=True
        )
    if args.json:
        doc = {**view.to_json(), "attempt_history": history, "active_manifest": manifest}
        print(_render.dumps(doc))
        return 0
    print("\n".join(describe_job(view, history, manifest, now=time.time())))
    return 0


def describe_job(
    view: JobView, history: list[dict[str, Any]], manifest: dict[str, Any] | None, *, now: float
) -> list[str]:
    """The lines of ``job ID``: everything known about one job."""
    job = view.job
    lines = [f"job {job.id}  {_status_text(job)}"]

    def field(name: str, value: str) -> None:
        lines.append(f"  {name:<10} {value}")

    field("file", _file_text(view))
    field("plugin", _plugin_text(job.plugin_name, manifest))
    field("priority", str(job.priority))
    field(
        "attempts",
        f"{job.attempt} run(s); {job.retry_count} of {job.max_attempts} allowed failures used",
    )
    if job.status == JobStatus.QUEUED and job.not_before and job.not_before > now:
        field("next try", _render.ago(job.not_before, now))
    for name, value in (
        ("created", job.created_at),
        ("started", job.started_at),
        ("updated", job.updated_at),
    ):
        if value is not None:
            field(name, f"{_render.timestamp(value)} ({_render.ago(value, now)})")
    if job.end_time:
        field("ended", f"{job.end_time} UTC")
    if job.worker_id or job.worker_host:
        field("worker", _worker_text(job))
    if job.timeout_s:
        field("timeout", f"{job.timeout_s:g} s")
    lines += _error_lines(job)
    lines += _result_lines(job.result_summary)
    lines += _history_lines(history, now)
    return lines


def _file_text(view: JobView) -> str:
    path = view.file_path or f"(file version {view.job.file_version_id}: location unknown)"
    extras = [f"version {view.job.file_version_id}"]
    if view.content_hash:
        extras.append(f"sha256 {view.content_hash[:12]}…")
    if view.size is not None:
        extras.append(_render.human_bytes(view.size))
    return f"{path} ({', '.join(extras)})"


def _plugin_text(name: str, manifest: dict[str, Any] | None) -> str:
    if manifest is None:
        return f"{name} (not published: no ACTIVE manifest)"
    artifact = (manifest["artifact_hash"] or manifest["source_hash"] or "")[:12]
    return f"{name} {manifest['version']} (artifact {artifact}…, env {manifest['env_hash'] or 'system'})"


def _worker_text(job: Any) -> str:
    where = ", ".join(
        p for p in (job.worker_host, f"pid {job.worker_pid}" if job.worker_pid else None) if p
    )
    return f"{job.worker_id or '?'}" + (f" ({where})" if where else "")


def _error_lines(job: Any) -> list[str]:
    if not job.error_message:
        return []
    lines = [f"  {'error':<10} {_render.first_line(job.error_message)}"]
    if job.error_traceback:
        tail = job.error_traceback.rstrip().splitlines()[-TRACEBACK_TAIL:]
        lines.append(f"  traceback (last {len(tail)} lines):")
        lines += [f"    {line}" for line in tail]
    return lines


def _result_lines(summary: dict[str, Any] | None) -> list[str]:
    if not summary:
        return []
    metrics = summary.get("metrics") or {}
    parts = []
    rows = summary.get("rows", metrics.get("rows"))
    if rows is not None:
        parts.append(f"{rows} rows")
    if isinstance(metrics.get("bytes"), int | float):
        parts.append(_render.human_bytes(metrics["bytes"]))
    duration = metrics.get("duration_s", metrics.get("duration"))
    if isinstance(duration, int | float):
        parts.append(f"in {duration:.2f} s")
    lines = [f"  {'result':<10} {', '.join(parts) or _render.truncate_end(str(summary), 80)}"]
    for artifact in summary.get("artifacts") or []:
        if isinstance(artifact, dict):
            count = f" ({artifact['rows']} rows)" if artifact.get("rows") is not None else ""
            lines.append(f"    {artifact.get('topic')} → {artifact.get('uri')}{count}")
    return lines


def _history_lines(history: list[dict[str, Any]], now: float) -> list[str]:
    if not history:
        return []
    columns = [
        _render.Column("#", align_right=True, min_width=1),
        _render.Column("worker", shrink="end"),
        _render.Column("started"),
        _render.Column("took", align_right=True),
        _render.Column("outcome"),
        _render.Column("error", shrink="end", min_width=10),
    ]
    rows = []
    for h in history:
        took = (h["ended_at"] or now) - h["started_at"] if h["started_at"] else None
        rows.append(
            [
                str(h["attempt"]),
                h["worker_id"] or "-",
                _render.ago(h["started_at"], now),
                "-" if took is None else _render.short_duration(took),
                h["outcome"] or "running",
                _render.first_line(h["error_message"]),
            ]
        )
    table = _render.table(columns, rows, max_width=_render.TABLE_WIDTH - 4)
    return ["  history:"] + [f"    {line}" for line in table.splitlines()]


# --- cancel / retry -------------------------------------------------------------------


def _act(conn: sqlite3.Connection, job_id: int, action: str) -> tuple[str, str]:
    """(status before, status after) of a cancel or retry, in one transaction."""
    before = job_view(conn, job_id).job.status  # raises the friendly "no job" error
    act = queue.request_cancel if action == "cancel" else queue.retry
    return str(before), act(conn, job_id, now=time.time())


def cmd_cancel(args: argparse.Namespace) -> int:
    with session(args) as db:
        before, after = db.run_sync(partial(_act, job_id=args.id, action="cancel"))
    if before == JobStatus.QUEUED:
        print(f"job {args.id} cancelled")
    elif before == JobStatus.RUNNING:
        print(
            f"job {args.id}: cancel requested; the sentinel aborts it on its worker within a second"
        )
    else:
        print(f"job {args.id} is already {after}")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    with session(args) as db:
        before, after = db.run_sync(partial(_act, job_id=args.id, action="retry"))
    if after == JobStatus.QUEUED and before != JobStatus.QUEUED:
        print(f"job {args.id} queued again ({before} before; its failure budget is reset)")
        return 0
    if before in (JobStatus.QUEUED, JobStatus.RUNNING):
        print(f"job {args.id} is already {before}: nothing to do")
        return 0
    raise ConfigError(f"job {args.id} is {before}; only FAILED or CANCELLED jobs can be retried")


# --- workers / status -------------------------------------------------------------------


def cmd_workers(args: argparse.Namespace) -> int:
    with session(args) as db:
        rows = db.run_sync(workers.list_workers, readonly=True)
    if args.json:
        print(_render.dumps(rows))
        return 0
    if not rows:
        print("no workers have connected to a sentinel using this database")
        return 0
    now = time.time()
    columns = [
        _render.Column("worker", shrink="end", min_width=10),
        _render.Column("status"),
        _render.Column("slots", align_right=True, min_width=5),
        _render.Column("host/pid", shrink="middle"),
        _render.Column("plugins", shrink="end"),
        _render.Column("last seen"),
    ]
    table_rows = [
        [
            w["worker_id"],
            w["status"],
            str(w["slots"]),
            f"{w['host'] or '?'}/{w['pid'] or '?'}",
            ",".join(w["capabilities"]) or "-",
            _render.ago(w["last_seen"], now),
        ]
        for w in rows
    ]
    print(_render.table(columns, table_rows))
    return 0


def collect_status(conn: sqlite3.Connection, *, now: float) -> dict[str, Any]:
    """The numbers ``status`` shows (also its --json document)."""
    since = now - THROUGHPUT_WINDOW
    done, rows = throughput(conn, status=JobStatus.COMPLETED, since=since)
    failed, _ = throughput(conn, status=JobStatus.FAILED, since=since)
    known = workers.list_workers(conn)
    alive = [w for w in known if w["status"] not in GONE_STATUSES]
    oldest = oldest_queued(conn)
    return {
        "jobs": queue.stats(conn),
        "last_minute": {"completed": done, "rows": rows, "failed": failed},
        "workers": {
            "alive": len(alive),
            "slots": sum(w["slots"] for w in alive),
            "gone": len(known) - len(alive),
        },
        "oldest_queued_age_s": None if oldest is None else round(now - oldest, 3),
    }


def cmd_status(args: argparse.Namespace) -> int:
    now = time.time()
    with session(args) as db:
        doc = db.run_sync(partial(collect_status, now=now), readonly=True)
    if args.json:
        print(_render.dumps(doc))
        return 0
    jobs = " · ".join(f"{count} {name.lower()}" for name, count in doc["jobs"].items())
    minute = doc["last_minute"]
    team = doc["workers"]
    print(f"jobs       {jobs}")
    print(
        f"last 60 s  {minute['completed']} completed ({minute['rows']:,} rows) · "
        f"{minute['failed']} failed"
    )
    print(
        f"workers    {team['alive']} alive ({team['slots']} slots)"
        + (f" · {team['gone']} gone or lost" if team["gone"] else "")
    )
    if doc["oldest_queued_age_s"] is not None:
        age = _render.short_duration(doc["oldest_queued_age_s"])
        print(f"queue      oldest queued job waiting {age}")
    return 0
