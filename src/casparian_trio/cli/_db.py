"""Which database a command uses, and opening it.

Invariant: a command that only reads or acts on existing state never creates a
database; a missing file is a one-line error naming the fix.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from casparian_trio.config import DEFAULT_DB
from casparian_trio.errors import ConfigError, StoreError
from casparian_trio.store import Database, open_database

DB_ENV = "CASPARIAN_DB"


def db_path(args: argparse.Namespace) -> Path:
    """``--db``, else $CASPARIAN_DB, else ./casparian.db."""
    return Path(args.db or os.environ.get(DB_ENV) or DEFAULT_DB)


def open_existing(path: Path) -> Database:
    """Open a database that must already exist (never creates one).

    Raises:
        StoreError: no file at ``path``, or it is not a usable database.
    """
    if path.is_dir():
        raise StoreError(
            f"--db {path} is a directory; pass the database file, e.g. {path}/casparian.db"
        )
    if not path.exists():
        raise StoreError(
            f"no database at {path}; run `casparian-trio init-db --db {path}` or pass --db"
        )
    return open_database(path)


def open_or_create(path: Path) -> Database:
    """Open a database, creating (and migrating) it when missing."""
    if path.exists():
        return open_existing(path)
    if not path.parent.is_dir():
        raise ConfigError(
            f"cannot create database {path}: folder {path.parent} does not exist; create it or pass --db"
        )
    db = open_database(path)
    print(f"created database {path}", file=sys.stderr)
    return db


@contextlib.contextmanager
def session(args: argparse.Namespace, *, create: bool = False) -> Iterator[Database]:
    """The command's database, closed afterwards."""
    path = db_path(args)
    db = open_or_create(path) if create else open_existing(path)
    try:
        yield db
    finally:
        db.close()
