"""Database access for the operator commands: which file, open it, and the joined reads.

Commands use the store's sync cores through ``Database.run_sync``; the few reads
the store has no query for (a job with its file path, throughput) live here as
plain SQL, each run as one read transaction.

Invariant: a command that only reads or acts on existing state never creates a
database; a missing file is a one-line error naming the fix.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from casparian_trio.config import DEFAULT_DB
from casparian_trio.errors import ConfigError, StoreError
from casparian_trio.store import Database, JobRow, open_database

logger = logging.getLogger(__name__)

DB_ENV = "CASPARIAN_DB"

_JOB_SELECT = """
SELECT q.*, l.rel_path AS file_rel_path, r.path AS file_root_path,
       v.content_hash AS file_content_hash, v.size_bytes AS file_size
  FROM cf_processing_queue AS q
  LEFT JOIN cf_file_version AS v ON v.id = q.file_version_id
  LEFT JOIN cf_file_location AS l ON l.id = v.location_id
  LEFT JOIN cf_source_root AS r ON r.id = l.source_root_id
"""

# json_valid guards against the seed's legacy free-text result_summary values.
_THROUGHPUT = """
SELECT count(*) AS jobs,
       coalesce(sum(CASE WHEN json_valid(result_summary)
                         THEN json_extract(result_summary, '$.rows') END), 0) AS rows
  FROM cf_processing_queue
 WHERE status = :status AND updated_at >= :since
"""


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


# --- joined reads ---------------------------------------------------------------


@attrs.frozen
class JobView:
    """A job row with the file it is about."""

    job: JobRow
    rel_path: str | None
    root_path: str | None
    content_hash: str | None = None
    size: int | None = None

    @classmethod
    def from_row(cls, row: Any) -> JobView:  # a sqlite3.Row
        return cls(
            job=JobRow.from_row(row),
            rel_path=row["file_rel_path"],
            root_path=row["file_root_path"],
            content_hash=row["file_content_hash"],
            size=row["file_size"],
        )

    @property
    def file_path(self) -> str | None:
        if self.rel_path is None or self.root_path is None:
            return None
        return os.path.join(self.root_path, self.rel_path)

    def to_json(self) -> dict[str, Any]:
        doc = attrs.asdict(self.job)
        doc.update(
            file_rel_path=self.rel_path,
            file_path=self.file_path,
            file_content_hash=self.content_hash,
            file_size=self.size,
        )
        return doc


def list_job_views(
    conn: sqlite3.Connection, *, status: str | None, plugin: str | None, limit: int
) -> list[JobView]:
    """Newest jobs first, optionally filtered, each with its file."""
    clauses, params = [], {"limit": limit, "status": status, "plugin": plugin}
    if status is not None:
        clauses.append("q.status = :status")
    if plugin is not None:
        clauses.append("q.plugin_name = :plugin")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = f"{_JOB_SELECT} {where} ORDER BY q.id DESC LIMIT :limit"
    return [JobView.from_row(r) for r in conn.execute(sql, params)]


def job_view(conn: sqlite3.Connection, job_id: int) -> JobView:
    """One job with its file.

    Raises:
        StoreError: no such job.
    """
    row = conn.execute(f"{_JOB_SELECT} WHERE q.id = :id", {"id": job_id}).fetchone()
    if row is None:
        raise StoreError(f"no job {job_id}; list jobs with `casparian-trio jobs`")
    return JobView.from_row(row)


def active_manifest(conn: sqlite3.Connection, plugin_name: str) -> dict[str, Any] | None:
    """The ACTIVE manifest's version and hashes (None: the plugin is not published)."""
    row = conn.execute(
        "SELECT id, version, artifact_hash, source_hash, env_hash, deployed_at"
        "  FROM cf_plugin_manifest WHERE plugin_name = ? AND status = 'ACTIVE'"
        " ORDER BY id DESC LIMIT 1",
        (plugin_name,),
    ).fetchone()
    return None if row is None else dict(row)


def throughput(conn: sqlite3.Connection, *, status: str, since: float) -> tuple[int, int]:
    """(jobs, rows) that reached ``status`` at or after ``since`` (unix time)."""
    row = conn.execute(_THROUGHPUT, {"status": status, "since": since}).fetchone()
    return int(row["jobs"]), int(row["rows"] or 0)


def oldest_queued(conn: sqlite3.Connection) -> float | None:
    """Creation time of the oldest QUEUED job (how far behind the queue is)."""
    value = conn.execute(
        "SELECT min(created_at) FROM cf_processing_queue WHERE status = 'QUEUED'"
    ).fetchone()[0]
    return None if value is None else float(value)
