"""The worker table's sync core: what the Sentinel knows of its workers.

Rows are informational (for operators and restart recovery); the Sentinel's
in-memory registry is the authority while it runs.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

from casparian_trio.store._sql import q

logger = logging.getLogger(__name__)


def upsert_worker(
    conn: sqlite3.Connection,
    *,
    worker_id: str,
    host: str | None,
    pid: int | None,
    capabilities: Sequence[str],
    slots: int,
    status: str,
    now: float,
) -> None:
    """Insert or refresh a worker (last_seen = now; first_seen kept)."""
    conn.execute(
        q("upsert_worker"),
        {
            "worker_id": worker_id,
            "host": host,
            "pid": pid,
            "capabilities": json.dumps(list(capabilities)),
            "slots": slots,
            "status": status,
            "now": now,
        },
    )


def set_worker_status(conn: sqlite3.Connection, worker_id: str, status: str, *, now: float) -> None:
    """Change a known worker's status (e.g. LOST, GONE, UNHEALTHY); unknown ids are ignored."""
    cursor = conn.execute(
        q("set_worker_status"), {"worker_id": worker_id, "status": status, "now": now}
    )
    if cursor.rowcount == 0:
        logger.debug("status %s for unknown worker %s ignored", status, worker_id)


def touch_worker(conn: sqlite3.Connection, worker_id: str, status: str, *, now: float) -> None:
    """Record a heartbeat: status as reported, last_seen = now."""
    conn.execute(q("touch_worker"), {"worker_id": worker_id, "status": status, "now": now})


def list_workers(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every worker row, capabilities decoded to a list."""
    workers = []
    for row in conn.execute(q("list_workers")):
        worker = dict(row)
        worker["capabilities"] = json.loads(worker["capabilities"] or "[]")
        workers.append(worker)
    return workers


def prune_workers(conn: sqlite3.Connection, *, before: float) -> int:
    """Delete LOST/GONE/STOPPED workers last seen before ``before``; returns how many."""
    return conn.execute(q("prune_workers"), {"before": before}).rowcount
