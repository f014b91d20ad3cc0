"""Which database a command uses, and opening it.

Invariant: a command that only reads or acts on existing state never creates a
database; a missing file is a one-line error naming the fix.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from casparian_trio.config import DEFAULT_DB
from casparian_trio.errors import ConfigError, StoreError
from casparian_trio.store import Database, open_database

DB_ENV = "CASPARIAN_DB"


def db_path(args: argparse.Namespace) -> Path:
    """``--db``, else $CASPARIAN_DB, else ./casparian.db."""
    return Path(args.db or os.environ.get(DB_ENV) or DEFAULT_DB)


def require_database(path: Path) -> Path:
    """``path`` when a database file is there; only ``init-db`` creates one.

    Raises:
        StoreError: a folder, or nothing, at ``path`` (a mistyped --db would
            otherwise give an empty database that a Sentinel serves as an empty queue).
    """
    if path.is_dir():
        raise StoreError(
            f"--db {path} is a directory; pass the database file, e.g. {path}/casparian.db"
        )
    if not path.exists():
        raise StoreError(
            f"no database at {path}; run `casparian-trio init-db --db {path}` or pass --db"
        )
    return path


def open_existing(path: Path) -> Database:
    """Open a database that must already exist (never creates one).

    Raises:
        StoreError: no file at ``path``, or it is not a usable database.
    """
    return open_database(require_database(path))


def init_database(path: Path) -> Database:
    """Open a database, creating (and migrating) it when missing: ``init-db`` only."""
    if not path.exists() and not path.parent.is_dir():
        raise ConfigError(
            f"cannot create database {path}: folder {path.parent} does not exist; create it or pass --db"
        )
    if path.is_dir():
        require_database(path)
    return open_database(path)


@contextlib.contextmanager
def session(args: argparse.Namespace) -> Iterator[Database]:
    """The command's database (which must exist), closed afterwards."""
    db = open_existing(db_path(args))
    try:
        yield db
    finally:
        db.close()
