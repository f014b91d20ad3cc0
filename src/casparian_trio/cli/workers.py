"""``workers`` and ``status``: what runs, as far as the database can tell.

The worker table is what the Sentinel last wrote; only a running Sentinel keeps
it true. So every view first asks whether the Sentinel runs (its own row,
``SentinelRecord.is_running``) and shows a worker as alive only while it does
and has heard from that worker since it started; otherwise the worker's state
is UNKNOWN, with the last known one beside it. Workers that ended (STOPPED,
LOST, GONE) keep their status: it stays true whatever runs now.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from casparian_trio.cli import _render
from casparian_trio.cli._common import command, json_flag
from casparian_trio.cli._db import session
from casparian_trio.errors import ConfigError
from casparian_trio.store import Database, SentinelRecord, reports

# Worker statuses the Sentinel writes when a worker is no longer connected.
GONE_STATUSES = frozenset({"GONE", "LOST"})
STOPPED = "STOPPED"  # it said goodbye (a stopping HEARTBEAT)
ENDED_STATUSES = GONE_STATUSES | {STOPPED}
# A worker that was connected when the Sentinel was last seen: nobody knows now.
UNKNOWN = "UNKNOWN"
# "Throughput" is what finished in this many seconds before now.
THROUGHPUT_WINDOW = 60.0
# `status --watch` redraws this often by default: live, and one small read each time.
WATCH_INTERVAL = 1.0


def add_commands(sub: Any) -> None:
    """``workers``, ``status``."""
    p = command(sub, "workers", cmd_workers, "list the workers the sentinel knows")
    json_flag(p)
    p = command(sub, "status", cmd_status, "queue counts, throughput and workers at a glance")
    json_flag(p)
    p.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=WATCH_INTERVAL,
        default=None,
        metavar="SECONDS",
        help=f"redraw in place every SECONDS (default {WATCH_INTERVAL:g}) until Ctrl-C",
    )


_WORKER_COLUMNS = [
    _render.Column("worker", shrink="end", min_width=10),
    _render.Column("status"),
    _render.Column("slots", align_right=True, min_width=5),
    _render.Column("host/pid", shrink="middle"),
    _render.Column("plugins", shrink="end"),
    _render.Column("last seen"),
]


# --- decisions (pure: the time is an argument) -------------------------------------------


def worker_state(row: Mapping[str, Any], sentinel: SentinelRecord | None, *, now: float) -> str:
    """A worker's status as of ``now``: the recorded one only while a Sentinel vouches for it."""
    status = str(row["status"])
    if status in ENDED_STATUSES:
        return status
    if sentinel is None or not sentinel.is_running(now):
        return UNKNOWN
    if (row["last_seen"] or 0.0) < sentinel.started_at:
        return UNKNOWN  # not back since this Sentinel started (a restart): maybe never
    return status


def sentinel_doc(record: SentinelRecord | None, *, now: float) -> dict[str, Any]:
    """The ``sentinel`` object of ``status --json``: running or not, and since when."""
    if record is None:
        return {"running": False, "reason": "never started on this database"}
    running = record.is_running(now)
    doc: dict[str, Any] = {
        "running": running,
        "pid": record.pid,
        "host": record.host,
        "bind": record.bind,
        "started_at": record.started_at,
        "last_seen_at": record.last_seen_at,
        "last_seen_age_s": round(now - record.last_seen_at, 3),
        "stopped_at": record.stopped_at,
    }
    if running:
        doc["uptime_s"] = round(now - record.started_at, 3)
    else:
        doc["reason"] = "stopped" if record.stopped_at is not None else "no heartbeat"
    return doc


def sentinel_text(doc: Mapping[str, Any]) -> str:
    """'running on ADDR (pid P on HOST, up 5m)' or 'not running (last seen 32s ago)'."""
    if doc["running"]:
        uptime = _render.short_duration(doc["uptime_s"])
        return f"running on {doc['bind']} (pid {doc['pid']} on {doc['host'] or '?'}, up {uptime})"
    if "last_seen_age_s" not in doc:
        return f"not running ({doc['reason']})"
    return f"not running (last seen {_render.short_duration(doc['last_seen_age_s'])} ago)"


# --- reads ---------------------------------------------------------------------------------


def worker_views(
    record: SentinelRecord | None, known: list[dict[str, Any]], *, now: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the sentinel document, every worker row with ``state`` and ``alive`` added)."""
    rows = []
    for row in known:
        state = worker_state(row, record, now=now)
        alive = state not in ENDED_STATUSES and state != UNKNOWN
        rows.append({**row, "status": state, "last_known_status": row["status"], "alive": alive})
    return sentinel_doc(record, now=now), rows


def collect_status(snapshot: reports.StatusSnapshot, *, now: float) -> dict[str, Any]:
    """The numbers ``status`` shows (also its --json document)."""
    sentinel, known = worker_views(snapshot.sentinel, snapshot.workers, now=now)
    oldest = snapshot.oldest_queued_at
    return {
        "sentinel": sentinel,
        "jobs": snapshot.jobs,
        "last_minute": {
            "completed": snapshot.completed,
            "rows": snapshot.rows,
            "failed": snapshot.failed,
        },
        "workers": _worker_counts(known),
        "oldest_queued_age_s": None if oldest is None else round(now - oldest, 3),
        "rows_quarantined": snapshot.rows_quarantined,
    }


def _worker_counts(known: list[dict[str, Any]]) -> dict[str, int]:
    alive = [w for w in known if w["alive"]]
    return {
        "alive": len(alive),
        "slots": sum(w["slots"] for w in alive),
        "unknown": sum(w["status"] == UNKNOWN for w in known),
        "stopped": sum(w["status"] == STOPPED for w in known),
        "gone": sum(w["status"] in GONE_STATUSES for w in known),
    }


# --- commands --------------------------------------------------------------------------


def cmd_workers(args: argparse.Namespace) -> int:
    now = time.time()
    with session(args) as db:
        record, known = db.run_sync(reports.worker_table, readonly=True)
    sentinel, rows = worker_views(record, known, now=now)
    note = None if sentinel["running"] else f"sentinel {sentinel_text(sentinel)}"
    if args.json:  # the document stays a list of workers; the note is for the operator
        if note and rows:
            print(f"{note}: worker states are unknown", file=sys.stderr)
        print(_render.dumps(rows))
        return 0
    if not rows:
        print("no workers have connected to a sentinel using this database")
        return 0
    if note:
        print(f"{note}: states below are the last known")
    print(workers_table(rows))
    return 0


def workers_table(rows: list[dict[str, Any]]) -> str:
    """The ``workers`` table of ``worker_views`` rows."""
    return _render.table(_WORKER_COLUMNS, [_worker_cells(w) for w in rows])


def _worker_cells(worker: Mapping[str, Any]) -> list[str]:
    status = worker["status"]
    if status == UNKNOWN:
        status = f"UNKNOWN (was {worker['last_known_status']})"
    return [
        worker["worker_id"],
        status,
        str(worker["slots"]),
        f"{worker['host'] or '?'}/{worker['pid'] or '?'}",
        ",".join(worker["capabilities"]) or "-",
        _render.time_text(worker["last_seen"]),
    ]


def cmd_status(args: argparse.Namespace) -> int:
    if args.watch is not None:
        if args.json:
            raise ConfigError("--watch redraws a table for people; drop --json (or --watch)")
        if args.watch <= 0:
            raise ConfigError(f"--watch SECONDS must be > 0, got {args.watch:g}")
        from casparian_trio.cli._watch import watch_status

        with session(args) as db:
            watch_status(db, interval_s=args.watch)
        return 0
    now = time.time()
    with session(args) as db:
        doc = read_status(db, now=now)
    if args.json:
        print(_render.dumps(doc))
        return 0
    print("\n".join(status_lines(doc)))
    return 0


def read_status(db: Database, *, now: float) -> dict[str, Any]:
    """The ``status`` document as of ``now``, read in one transaction."""
    snapshot = db.run_sync(
        partial(reports.status_snapshot, since=now - THROUGHPUT_WINDOW), readonly=True
    )
    return collect_status(snapshot, now=now)


def status_lines(doc: Mapping[str, Any]) -> list[str]:
    """The lines ``status`` prints (and ``status --watch`` redraws)."""
    jobs = " · ".join(f"{count} {name.lower()}" for name, count in doc["jobs"].items())
    minute = doc["last_minute"]
    lines = [
        f"sentinel   {sentinel_text(doc['sentinel'])}",
        f"jobs       {jobs}",
        f"last 60 s  {minute['completed']} completed ({minute['rows']:,} rows) · "
        f"{minute['failed']} failed",
        f"workers    {_workers_text(doc['workers'])}",
    ]
    if doc["rows_quarantined"]:
        lines.append(f"quarantine {doc['rows_quarantined']:,} rows quarantined (see `topics`)")
    if doc["oldest_queued_age_s"] is not None:
        age = _render.short_duration(doc["oldest_queued_age_s"])
        lines.append(f"queue      oldest queued job waiting {age}")
    return lines


def _workers_text(team: Mapping[str, int]) -> str:
    parts = [f"{team['alive']} alive ({team['slots']} slots)"]
    if team["unknown"]:
        parts.append(f"{team['unknown']} unknown (last known alive)")
    if team["stopped"]:
        parts.append(f"{team['stopped']} stopped")
    if team["gone"]:
        parts.append(f"{team['gone']} gone or lost")
    return " · ".join(parts)
