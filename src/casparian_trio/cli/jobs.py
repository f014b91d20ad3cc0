"""``jobs``, ``job``, ``cancel`` and ``retry``: look at and steer the queue.

``workers`` and ``status`` live in ``_ops_workers``.

Reads run as read transactions; ``cancel`` and ``retry`` are one write
transaction each through the store's queue core. The Sentinel notices their
commits by polling ``PRAGMA data_version`` (config.DEFAULT_DB_POLL_INTERVAL).
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from functools import partial

from casparian_trio import _render
from casparian_trio._ops_db import active_manifest, job_view, list_job_views, session
from casparian_trio._ops_detail import describe_job, status_text
from casparian_trio.errors import ConfigError
from casparian_trio.store import JobStatus, queue

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
            status_text(v.job),
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
