"""Numbered migrations ``schema/NNN_name.sql``, version kept in PRAGMA user_version.

Invariants: each migration runs in its own ``BEGIN IMMEDIATE`` transaction
together with the ``user_version`` bump, so a database is always at a whole
version. The version is re-read under the write lock, so two processes opening
the same file at once apply each migration once. A database newer than the
code is refused (SchemaError) rather than written to.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import re
import sqlite3

from casparian_trio.errors import SchemaError
from casparian_trio.store._conn import transaction
from casparian_trio.store._sql import split_statements

logger = logging.getLogger(__name__)

SCHEMA_PACKAGE = "casparian_trio.schema"
_MIGRATION_NAME = re.compile(r"^(\d{3})_[A-Za-z0-9_]+\.sql$")


@functools.cache
def migrations() -> tuple[tuple[int, str, str], ...]:
    """(version, file name, SQL text) for every migration, in order."""
    found = []
    for entry in importlib.resources.files(SCHEMA_PACKAGE).iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise SchemaError(f"migrations in {SCHEMA_PACKAGE} are not numbered 1..N: {versions}")
    return tuple(found)


def latest_version() -> int:
    return len(migrations())


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _check_not_newer(conn: sqlite3.Connection) -> int:
    current = user_version(conn)
    if current > latest_version():
        raise SchemaError(
            f"database schema version {current} is newer than this casparian_trio "
            f"understands ({latest_version()}); upgrade casparian_trio to open it"
        )
    return current


def _apply(conn: sqlite3.Connection, version: int, name: str, sql: str) -> None:
    def step(conn: sqlite3.Connection) -> None:
        if _check_not_newer(conn) >= version:
            return  # another process applied it while we waited for the lock
        for statement in split_statements(sql):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")

    try:
        transaction(conn, step, "BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise SchemaError(f"migration {name} failed and was rolled back: {exc}") from exc
    logger.info("applied migration %s", name, extra={"event": "store.migrated", "version": version})


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations; return the resulting user_version.

    Raises:
        SchemaError: the database is newer than the code, or a migration failed.
    """
    current = _check_not_newer(conn)
    for version, name, sql in migrations():
        if version > current:
            _apply(conn, version, name, sql)
    return user_version(conn)
