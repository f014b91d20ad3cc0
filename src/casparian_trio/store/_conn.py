"""SQLite connection primitives: open a configured connection, run one transaction.

No Trio and no migrations here, so both ``_db.py`` (the Trio-facing Database)
and ``_migrate.py`` build on it without importing each other.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from casparian_trio.errors import StoreError

T = TypeVar("T")

# How long a writer waits for another process's lock before SQLITE_BUSY; long
# enough for a CLI command racing the Sentinel, short enough to surface a hang.
BUSY_TIMEOUT_MS = 5000


def _configure(conn: sqlite3.Connection) -> None:
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")  # ':memory:' stays 'memory'
    conn.execute("PRAGMA foreign_keys = ON")
    # NORMAL in WAL: durable against application crashes, and only the last
    # transactions can be lost on power failure; fsync per commit is not needed.
    conn.execute("PRAGMA synchronous = NORMAL")


def connect(path: str | Path) -> sqlite3.Connection:
    """Open a configured connection (autocommit; we issue BEGIN/COMMIT ourselves)."""
    try:
        conn = sqlite3.connect(
            str(path),
            check_same_thread=False,
            isolation_level=None,
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
        _configure(conn)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database {str(path)!r}: {exc}") from exc
    return conn


def transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], begin: str) -> T:
    """Run ``fn(conn)`` between ``begin`` and COMMIT; ROLLBACK if anything raises."""
    conn.execute(begin)
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result
