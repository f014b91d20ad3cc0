"""``jobs``, ``cancel`` and ``retry``: look at and steer the queue.

``job ID`` lives in ``detail``; ``workers`` and ``status`` in ``workers``.

Reads run as read transactions; ``cancel`` and ``retry`` are one write
transaction each through the store's queue core. The Sentinel notices their
commits by polling ``PRAGMA data_version`` (config.DEFAULT_DB_POLL_INTERVAL).
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from typing import Any

from casparian_trio.cli import _render
from casparian_trio.cli._common import command, json_flag
from casparian_trio.cli._db import session
from casparian_trio.cli.detail import status_text
from casparian_trio.errors import ConfigError
from casparian_trio.filenames import shown
from casparian_trio.store import JobStatus, reports

DEFAULT_LIMIT = 50  # a screenful; --limit raises it


def add_commands(sub: Any) -> None:
    """``jobs``, ``cancel``, ``retry``."""
    p = command(sub, "jobs", cmd_jobs, "list jobs, newest first")
    p.add_argument(
        "--status",
        type=str.upper,
        choices=[str(s) for s in JobStatus],
        help="only this status (default: any)",
    )
    p.add_argument("--plugin", metavar="NAME", help="only this plugin's jobs (default: any)")
    p.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        help=f"at most this many (default {DEFAULT_LIMIT})",
    )
    json_flag(p)

    p = command(sub, "cancel", cmd_cancel, "cancel queued jobs, or abort running ones")
    _selection(p)
    p = command(sub, "retry", cmd_retry, "queue FAILED or CANCELLED jobs again")
    _selection(p)
    p.add_argument(
        "--force",
        action="store_true",
        help="also re-run COMPLETED, SUPERSEDED or SKIPPED jobs (their output is replaced)",
    )


def _selection(p: argparse.ArgumentParser) -> None:
    """IDs and/or filters: the jobs a cancel or retry acts on."""
    p.add_argument("ids", type=int, nargs="*", metavar="ID", help="job ids (see `jobs`)")
    p.add_argument(
        "--status",
        type=str.upper,
        choices=[str(s) for s in JobStatus],
        help="every job with this status (with IDs: those of them with it; default: any)",
    )
    p.add_argument(
        "--plugin",
        metavar="NAME",
        help="every job of this plugin (with IDs: of them; default: any)",
    )
    json_flag(p)


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
    rows = [
        [
            str(v.job.id),
            status_text(v.job),
            v.job.plugin_name,
            str(v.job.attempt),
            shown(v.rel_path) if v.rel_path else f"(file version {v.job.file_version_id})",
            _render.time_text(v.job.updated_at or v.job.created_at),
            _render.first_line(v.job.error_message),
        ]
        for v in views
    ]
    print(_render.table(_JOB_COLUMNS, rows))
    return 0


# --- cancel / retry -------------------------------------------------------------------


def _steer(args: argparse.Namespace, action: str) -> list[tuple[int, str, str]]:
    if not args.ids and args.status is None and args.plugin is None:
        raise ConfigError(f"{action} which jobs? give IDs, --status or --plugin")
    steer = partial(
        reports.steer_jobs,
        action=action,
        ids=args.ids,
        status=args.status,
        plugin=args.plugin,
        now=time.time(),
        force=getattr(args, "force", False),
    )
    with session(args) as db:
        return db.run_sync(steer)


def _cancel_outcome(before: str, after: str) -> str:
    if before == JobStatus.QUEUED:
        return "cancelled"
    if before == JobStatus.RUNNING:
        return "cancel requested"
    return "unchanged"


def _retry_outcome(before: str, after: str) -> str:
    if after == JobStatus.QUEUED and before != JobStatus.QUEUED:
        return "queued"
    if before in (JobStatus.QUEUED, JobStatus.RUNNING):
        return "unchanged"
    return "refused"


def _report(args: argparse.Namespace, results: list[dict[str, object]]) -> None:
    if args.json:
        print(_render.dumps(results))
    elif not results:
        print("no jobs match those filters")


def cmd_cancel(args: argparse.Namespace) -> int:
    results = [
        {"job_id": i, "before": b, "after": a, "outcome": _cancel_outcome(b, a)}
        for i, b, a in _steer(args, "cancel")
    ]
    _report(args, results)
    for r in [] if args.json else results:
        if r["outcome"] == "cancelled":
            print(f"job {r['job_id']} cancelled")
        elif r["outcome"] == "cancel requested":
            print(
                f"job {r['job_id']}: cancel requested; "
                "the sentinel aborts it on its worker within a second"
            )
        else:
            print(f"job {r['job_id']} is already {r['after']}")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    results = [
        {"job_id": i, "before": b, "after": a, "outcome": _retry_outcome(b, a)}
        for i, b, a in _steer(args, "retry")
    ]
    refused = [r for r in results if r["outcome"] == "refused"]
    if len(results) == 1 and refused and not args.json:
        job_id, before = refused[0]["job_id"], refused[0]["before"]
        if before in RETRYABLE or args.force:
            raise ConfigError(_refused_retraction(job_id))
        raise ConfigError(
            f"job {job_id} is {before}; only FAILED or CANCELLED jobs can be retried "
            "(`retry --force` re-runs it anyway)"
        )
    _report(args, results)
    for r in [] if args.json else results:
        if r["outcome"] == "queued":
            print(
                f"job {r['job_id']} queued again ({r['before']} before; its failure budget is reset)"
            )
        elif r["outcome"] == "unchanged":
            print(f"job {r['job_id']} is already {r['before']}: nothing to do")
        elif r["before"] in RETRYABLE or args.force:
            print(_refused_retraction(r["job_id"]), file=sys.stderr)
        else:
            print(
                f"job {r['job_id']} is {r['before']}: not retried "
                "(only FAILED or CANCELLED jobs; --force re-runs it)",
                file=sys.stderr,
            )
    return 1 if refused else 0


# What retry takes without --force; one of these refused is a retraction whose file is back.
RETRYABLE = (JobStatus.FAILED, JobStatus.CANCELLED)


def _refused_retraction(job_id: object) -> str:
    return (
        f"job {job_id} is a retraction and its file is back: not retried (it would remove "
        "the file's current rows; `scan` queues a retraction if the file is deleted again)"
    )
