"""One SQLite connection driven from Trio: each transaction is one sync function.

Theory of operation: a ``Database`` owns exactly one ``sqlite3`` connection.
``run(fn)`` executes ``BEGIN IMMEDIATE; fn(conn); COMMIT`` (``ROLLBACK`` if
``fn`` raises) as a single call, either in a worker thread behind a
``CapacityLimiter(1)`` or, in inline mode, directly on the Trio thread.

Invariants:
- A transaction is all-or-nothing by construction. In thread mode the thread is
  never abandoned (``abandon_on_cancel=False``): a cancel that arrives while
  ``fn`` runs takes effect at the caller's next checkpoint, after COMMIT, and
  the caller still receives the result. A cancel that arrives while waiting for
  the limiter means nothing ran.
- Inline mode (for MockClock tests) never touches a thread; virtual time cannot
  jump while a statement runs because the event loop is blocked meanwhile.
- ``run(quick=True)`` on a Database opened with ``quick=True`` (the
  Sentinel's; elsewhere the flag is ignored) marks a short transaction, the
  Sentinel's per-job ones: a few indexed statements, well under a
  millisecond. It runs on the Trio thread when that cannot wait: the connection is free and SQLite's write lock is taken with no
  busy wait. A hop to a worker thread and back costs more than such a
  transaction. When another thread holds the connection, or another process
  holds the write lock (SQLITE_BUSY at once, nothing written), it falls back
  to the thread path with the normal busy timeout, so the event loop never
  waits on a lock.
- No transaction is ever left open on the connection.
- sqlite3 errors leave this module as ``StoreError`` (``raise ... from exc``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import attrs
import trio

from casparian_trio.errors import CasparianError, StoreError
from casparian_trio.store._conn import BUSY_TIMEOUT_MS, connect, transaction
from casparian_trio.store._migrate import migrate as apply_migrations

logger = logging.getLogger(__name__)

T = TypeVar("T")


@attrs.define(eq=False)
class Database:
    """One connection; every ``run`` is one whole transaction.

    Attributes:
        path: the database file (or ':memory:').
        inline: run transactions on the calling (Trio) thread instead of a worker thread.
        quick: honour ``run(quick=True)`` (see the module docstring).
    """

    path: str
    _conn: sqlite3.Connection
    inline: bool = False
    quick: bool = False
    _limiter: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(1))
    # Serialises run() threads with run_sync() callers on other threads.
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _closed: bool = False
    _busy_ms: int = BUSY_TIMEOUT_MS  # the connection's busy timeout now

    async def run(
        self, fn: Callable[[sqlite3.Connection], T], *, readonly: bool = False, quick: bool = False
    ) -> T:
        """Run ``fn(conn)`` as one transaction without blocking the event loop.

        Args:
            fn: a sync function doing all the work of the transaction.
            readonly: use ``BEGIN DEFERRED`` (no write lock) instead of ``BEGIN IMMEDIATE``.
            quick: ``fn`` is a short transaction: run it on the Trio thread when
                that needs no wait (see the module docstring).

        Returns:
            What ``fn`` returned, after COMMIT.

        Raises:
            StoreError: SQLite failed (the transaction was rolled back).
        """
        if self.inline:
            await trio.lowlevel.checkpoint_if_cancelled()
            result = self._call(fn, readonly)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return result
        if quick and self.quick:
            await trio.lowlevel.checkpoint_if_cancelled()
            done, value = self._call_without_waiting(fn, readonly)
            if done:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return value  # type: ignore[return-value]
        return await trio.to_thread.run_sync(
            self._call, fn, readonly, limiter=self._limiter, abandon_on_cancel=False
        )

    def run_sync(self, fn: Callable[[sqlite3.Connection], T], *, readonly: bool = False) -> T:
        """Same as ``run``, on the calling thread (CLI, tools, other processes)."""
        return self._call(fn, readonly)

    def close(self) -> None:
        """Close the connection (idempotent). Do not call while a ``run`` is pending."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def _call(self, fn: Callable[[sqlite3.Connection], T], readonly: bool) -> T:
        with self._lock:
            self._set_busy_timeout(BUSY_TIMEOUT_MS)
            return self._transaction(fn, readonly)

    def _call_without_waiting(
        self, fn: Callable[[sqlite3.Connection], T], readonly: bool
    ) -> tuple[bool, T | None]:
        """(True, result), or (False, None) when it would have had to wait (nothing ran)."""
        if not self._lock.acquire(blocking=False):
            return False, None
        try:
            self._set_busy_timeout(0)
            try:
                return True, self._transaction(fn, readonly)
            except StoreError as exc:
                cause = exc.__cause__
                if isinstance(cause, sqlite3.OperationalError) and _is_busy(cause):
                    return False, None  # rolled back: the thread path runs it again
                raise
        finally:
            self._lock.release()

    def _set_busy_timeout(self, ms: int) -> None:
        if self._busy_ms != ms and not self._closed:
            self._conn.execute(f"PRAGMA busy_timeout = {ms}")
            self._busy_ms = ms

    def _transaction(self, fn: Callable[[sqlite3.Connection], T], readonly: bool) -> T:
        begin = "BEGIN DEFERRED" if readonly else "BEGIN IMMEDIATE"
        if self._closed:
            raise StoreError(f"database {self.path!r} is closed")
        try:
            return transaction(self._conn, fn, begin)
        except CasparianError:
            raise
        except sqlite3.Error as exc:
            raise StoreError(f"database {self.path!r}: {exc}") from exc


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def open_database(
    path: str | Path, *, inline: bool = False, migrate: bool = True, quick: bool = False
) -> Database:
    """Open (creating if needed) and, unless told not to, upgrade a database.

    Args:
        path: a file path or ':memory:'.
        inline: run transactions on the Trio thread (MockClock tests).
        migrate: apply pending migrations from ``schema/``.
        quick: run ``quick`` transactions on the Trio thread when they need no wait.

    Raises:
        StoreError: the file cannot be opened.
        SchemaError: the schema is newer than this code, or a migration failed.
    """
    conn = connect(path)
    try:
        if migrate:
            version = apply_migrations(conn)
            logger.debug("database %s at schema version %d", path, version)
    except BaseException:
        conn.close()
        raise
    return Database(path=str(path), conn=conn, inline=inline, quick=quick)
