"""The Sentinel's own row's sync core (cf_sentinel): started, still here, stopped.

Informational, like the worker table: operator commands in other processes read
it to tell whether a Sentinel is running (``SentinelRecord.is_running``). A beat
or a stop names the record it started with and changes nothing once another
Sentinel has taken the row over.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import attrs

from casparian_trio.store._sql import q
from casparian_trio.store.rows import SentinelRecord


def _owner(record: SentinelRecord) -> dict[str, Any]:
    return {"pid": record.pid, "host": record.host, "started_at": record.started_at}


def record_start(conn: sqlite3.Connection, record: SentinelRecord) -> None:
    """Replace the row with this Sentinel's (stopped_at cleared)."""
    conn.execute(q("sentinel_start"), attrs.asdict(record))


def record_beat(conn: sqlite3.Connection, record: SentinelRecord, *, now: float) -> bool:
    """last_seen_at = now; False when the row is no longer this Sentinel's."""
    return conn.execute(q("sentinel_beat"), {**_owner(record), "now": now}).rowcount == 1


def record_stop(conn: sqlite3.Connection, record: SentinelRecord, *, now: float) -> bool:
    """stopped_at = now; False when the row is no longer this Sentinel's."""
    return conn.execute(q("sentinel_stop"), {**_owner(record), "now": now}).rowcount == 1


def current(conn: sqlite3.Connection) -> SentinelRecord | None:
    """The Sentinel that last started on this database (None: none ever did)."""
    row = conn.execute(q("sentinel_row")).fetchone()
    return None if row is None else SentinelRecord.from_row(row)
