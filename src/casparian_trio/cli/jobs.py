"""``jobs``, ``cancel`` and ``retry``: look at and steer the queue.

``job ID`` lives in ``detail``; ``workers`` and ``status`` in ``workers``.

Reads run as read transactions; ``cancel`` and ``retry`` are one write
transaction each through the store's queue core. The Sentinel notices their
commits by polling ``PRAGMA data_version`` (config.DEFAULT_DB_POLL_INTERVAL).
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from typing import Any

from casparian_trio.cli import _render
from casparian_trio.cli._common import command, json_flag
from casparian_trio.cli._db import session
from casparian_trio.cli.detail import status_text
from casparian_trio.errors import ConfigError
from casparian_trio.store import Database, JobStatus, reports

DEFAULT_LIMIT = 50  # a screenful; --limit raises it


def add_commands(sub: Any) -> None:
    """``jobs``, ``cancel``, ``retry``."""
    p = command(sub, "jobs", cmd_jobs, "list jobs, newest first")
    p.add_argument(
        "--status", type=str.upper, choices=[str(s) for s in JobStatus], help="only this status"
    )
    p.add_argument("--plugin", metavar="NAME", help="only this plugin's jobs")
    p.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        help=f"at most this many (default {DEFAULT_LIMIT})",
    )
    json_flag(p)

    p = command(sub, "cancel", cmd_cancel, "cancel a queued job, or abort a running one")
    p.add_argument("id", type=int, metavar="ID", help="the job's id (see `jobs`)")
    p = command(sub, "retry", cmd_retry, "queue a FAILED or CANCELLED job again")
    p.add_argument("id", type=int, metavar="ID", help="the job's id (see `jobs`)")


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


# --- jobs -------------------------------------------------------------------------


def cmd_jobs(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    with session(args) as db:
        views = db.run_sync(
            partial(
                reports.list_job_views, status=args.status, plugin=args.plugin, limit=args.limit
            ),
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


# --- cancel / retry -------------------------------------------------------------------


def _act(db: Database, job_id: int, action: str) -> tuple[str, str]:
    """(status before, status after) of a cancel or retry, in one transaction."""
    return db.run_sync(partial(reports.steer, job_id=job_id, action=action, now=time.time()))


def cmd_cancel(args: argparse.Namespace) -> int:
    with session(args) as db:
        before, after = _act(db, args.id, "cancel")
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
        before, after = _act(db, args.id, "retry")
    if after == JobStatus.QUEUED and before != JobStatus.QUEUED:
        print(f"job {args.id} queued again ({before} before; its failure budget is reset)")
        return 0
    if before in (JobStatus.QUEUED, JobStatus.RUNNING):
        print(f"job {args.id} is already {before}: nothing to do")
        return 0
    raise ConfigError(f"job {args.id} is {before}; only FAILED or CANCELLED jobs can be retried")
