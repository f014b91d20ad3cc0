"""SQLite sink: rows go to a staging table, promoted into the target in one transaction.

Role: ``sqlite://PATH/TABLE`` (PATH relative to the output root). Batches are
inserted (in a writer thread) into ``_cf_stage_<table>_<job>_<random>`` in the
same database; commit() moves them into TABLE and drops the staging table in a
single ``BEGIN IMMEDIATE ... COMMIT``, so readers of TABLE see all of a job's
rows or none. abort() drops the staging table.

Output identity is (topic, source file): ``append`` first deletes TABLE's rows
of this job and of ``replaces_jobs`` (the plugin's jobs for earlier versions of
the same file, ``_cf_job_id``), in the same transaction that inserts the new
rows, so a re-run or a new version replaces instead of duplicating. Rows of a
newer version of the file already in TABLE make the job stale
(``OutputSuperseded``). ``replace`` empties TABLE first; ``error`` refuses
when TABLE already holds rows of another source file. ``retract()`` deletes
the file's rows (a deleted source file).
Arrow types map to INTEGER (ints, bools), REAL (floats), BLOB (binary) and
TEXT (strings and anything else, cast to its string form).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import attrs
import pyarrow as pa
import pyarrow.types as pat

from casparian_trio.errors import OutputSuperseded, SinkError
from casparian_trio.protocol.messages import Artifact
from casparian_trio.sinks._schema import QUARANTINE_SUFFIX, Conformer

logger = logging.getLogger(__name__)

# Writers wait this long for another process's transaction on the same file.
BUSY_TIMEOUT_S = 30.0


@attrs.define(eq=False)
class SqliteSink:
    """Writes one topic of one job to a staging table, then promotes it."""

    topic: str
    db_path: Path
    table: str
    job_id: int
    mode: str
    # None: batches are written as they come (the quarantine sink's are ready-made).
    conformer: Conformer | None
    rows: int = 0
    rows_quarantined: int = 0
    bytes_written: int = 0
    quarantine_artifact: Artifact | None = None
    file_version_id: int = 0
    replaces_jobs: tuple[int, ...] = ()
    _conn: sqlite3.Connection | None = None
    _stage: str | None = None
    _columns: list[str] = attrs.field(factory=list)
    _quarantine: SqliteSink | None = None

    @property
    def location(self) -> str:
        """Where this topic's output goes, for error messages."""
        return f"table {self.table!r} in {self.db_path}"

    def prepare(self) -> None:
        """The mode check (a table's columns are its contract: see ``_add_missing_to_table``)."""
        self.check()

    def check(self) -> None:
        """Raise if the job's output is stale or mode 'error' forbids writing.

        Raises:
            OutputSuperseded: TABLE holds rows of a newer version of the file.
            SinkError: mode 'error' and TABLE holds rows of another source file.
        """
        conn = self._connect()
        if not _exists(conn, self.table):
            return
        if self._newer_rows(conn):
            raise OutputSuperseded(
                f"topic {self.topic!r}: {self.location} already holds rows of a newer "
                f"version of the file than version {self.file_version_id}"
            )
        if self.mode == "error" and self._other_rows(conn):
            raise SinkError(
                f"topic {self.topic!r}: mode 'error' and table {self.table!r} in "
                f"{self.db_path} already holds rows of another job"
            )

    def write(self, batch: pa.RecordBatch) -> None:
        if self.conformer is not None:
            conformed = self.conformer.conform(batch)
            if conformed.quarantine is not None:
                self._quarantine_sink().write(conformed.quarantine)
                self.rows_quarantined += conformed.quarantine.num_rows
            batch = conformed.batch
        conn = self._connect()
        if self._stage is None:
            self._create_stage(conn, batch.schema)
        else:
            self._add_columns(conn, batch.schema)
        names = ", ".join(quote(n) for n in batch.schema.names)
        columns = [_pylist(col) for col in batch.columns]
        marks = ", ".join("?" * len(columns))
        try:
            conn.execute("BEGIN")
            conn.executemany(
                f"INSERT INTO {quote(self._stage_name())} ({names}) VALUES ({marks})",
                zip(*columns, strict=True),
            )
            conn.execute("COMMIT")
        except (sqlite3.Error, OverflowError) as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise SinkError(
                f"topic {self.topic!r}: writing to {self.location} failed: {exc}"
            ) from exc
        self.rows += batch.num_rows

    def commit(self) -> Artifact | None:
        """Promote the staged rows in one transaction (after the quarantine's).

        The stale and mode checks run first, so a job a newer version overtook
        during its run leaves no quarantine rows behind (and again inside the
        promoting transaction).
        """
        if self.conformer is not None:
            self.conformer.check_invalid_fraction()
        self.check()
        if self._quarantine is not None:
            self.quarantine_artifact = self._quarantine.commit()
        elif self.conformer is not None:
            self._quarantine_sink(create=False).retract()
        conn = self._connect()
        if self._stage is None:
            if self.conformer is None or self.conformer.target is None:
                # nothing arrived and no schema is known: the file's earlier rows go
                self._delete_own(conn, check=True)
                self._close()
                return None
            self._create_stage(conn, self.conformer.output_schema())
        cols = ", ".join(quote(c) for c in self._columns)
        table, stage = quote(self.table), quote(self._stage_name())
        conn.execute("BEGIN IMMEDIATE")  # the mode check and the promote: one step
        try:
            self.check()
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM {stage} WHERE 0")
            self._add_missing_to_table(conn)
            if self.mode == "replace":
                conn.execute(f"DELETE FROM {table}")
            else:
                conn.execute(
                    f'DELETE FROM {table} WHERE "_cf_job_id" IN ({_marks(self._own_jobs())})',
                    self._own_jobs(),
                )
            conn.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage}")
            conn.execute(f"DROP TABLE {stage}")
            conn.execute("COMMIT")
        except (sqlite3.Error, SinkError) as exc:
            with contextlib.suppress(sqlite3.Error):  # never mask the real error
                conn.execute("ROLLBACK")
            if isinstance(exc, SinkError):
                raise
            raise SinkError(
                f"topic {self.topic!r}: promoting into {self.location} failed: {exc}"
            ) from exc
        self._stage = None
        contract = self._contract(conn)
        self._close()
        return Artifact(
            topic=self.topic,
            uri=f"sqlite://{self.db_path}/{self.table}",
            rows=self.rows,
            contract=contract,
        )

    def retract(self) -> int:
        """Delete this source file's rows from TABLE and its quarantine; the row count.

        Nothing is deleted when TABLE holds rows of a newer version of the file.
        """
        removed = self._delete_own(self._connect(), check=False)
        if self.conformer is not None:
            removed += self._quarantine_sink(create=False).retract()
        self._close()
        return removed

    def _own_jobs(self) -> tuple[int, ...]:
        return (self.job_id, *self.replaces_jobs)

    def _delete_own(self, conn: sqlite3.Connection, *, check: bool) -> int:
        """One transaction: unless a newer version is in TABLE, delete the file's rows."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not _exists(conn, self.table) or self._newer_rows(conn):
                conn.execute("ROLLBACK")
                return 0
            if check:
                self.check()
            jobs = self._own_jobs()
            cursor = conn.execute(
                f'DELETE FROM {quote(self.table)} WHERE "_cf_job_id" IN ({_marks(jobs)})', jobs
            )
            conn.execute("COMMIT")
        except (sqlite3.Error, SinkError) as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, SinkError):
                raise
            raise SinkError(
                f"topic {self.topic!r}: removing earlier rows from {self.location} failed: {exc}"
            ) from exc
        return max(cursor.rowcount, 0)

    def _newer_rows(self, conn: sqlite3.Connection) -> bool:
        if not self.replaces_jobs:
            return False
        jobs = self.replaces_jobs
        sql = (
            f'SELECT 1 FROM {quote(self.table)} WHERE "_cf_job_id" IN ({_marks(jobs)}) '
            'AND "_cf_file_version_id" > ? LIMIT 1'
        )
        try:
            return conn.execute(sql, (*jobs, self.file_version_id)).fetchone() is not None
        except sqlite3.OperationalError:  # a table without lineage: not ours to judge
            return False

    def abort(self) -> None:
        if self._quarantine is not None:
            self._quarantine.abort()
        try:
            if self._conn is not None and self._stage is not None:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                self._conn.execute(f"DROP TABLE IF EXISTS {quote(self._stage)}")
        except sqlite3.Error:
            logger.warning("could not drop staging table %s", self._stage, exc_info=True)
        self._stage = None
        self._close()

    def _contract(self, conn: sqlite3.Connection) -> dict[str, Any]:
        """``Artifact.contract``: the table's columns, version 1 always (no versions here)."""
        rows = conn.execute(f"PRAGMA table_info({quote(self.table)})").fetchall()
        columns = [{"name": r[1], "type": r[2] or "ANY"} for r in rows]
        return {"version": 1, "columns": columns}

    def _stage_name(self) -> str:
        assert self._stage is not None
        return self._stage

    def _quarantine_sink(self, *, create: bool = True) -> SqliteSink:
        if self._quarantine is not None:
            return self._quarantine
        sink = SqliteSink(
            f"{self.topic}{QUARANTINE_SUFFIX}",
            self.db_path,
            f"{self.table}{QUARANTINE_SUFFIX}",
            self.job_id,
            "append",
            None,
            file_version_id=self.file_version_id,
            replaces_jobs=self.replaces_jobs,
        )
        if create:
            self._quarantine = sink
        return sink

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            # Writer threads differ from call to call; calls never overlap.
            self._conn = sqlite3.connect(
                self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _create_stage(self, conn: sqlite3.Connection, schema: pa.Schema) -> None:
        _check_case_collisions(self.topic, schema.names)
        self._stage = f"_cf_stage_{self.table}_{self.job_id}_{secrets.token_hex(3)}"
        self._columns = list(schema.names)
        ddl = ", ".join(f"{quote(f.name)} {_affinity(f.type)}" for f in schema)
        conn.execute(f"CREATE TABLE {quote(self._stage)} ({ddl})")

    def _add_columns(self, conn: sqlite3.Connection, schema: pa.Schema) -> None:
        """A column that appeared in a later batch joins the staging table (earlier rows NULL)."""
        new = [f for f in schema if f.name not in self._columns]
        if not new:
            return
        _check_case_collisions(self.topic, [*self._columns, *(f.name for f in new)])
        for field in new:
            conn.execute(
                f"ALTER TABLE {quote(self._stage_name())} "
                f"ADD COLUMN {quote(field.name)} {_affinity(field.type)}"
            )
            self._columns.append(field.name)

    def _add_missing_to_table(self, conn: sqlite3.Connection) -> None:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({quote(self.table)})")}
        for name in self._columns:
            if name not in have:
                conn.execute(f"ALTER TABLE {quote(self.table)} ADD COLUMN {quote(name)}")

    def _other_rows(self, conn: sqlite3.Connection) -> bool:
        table = quote(self.table)
        jobs = self._own_jobs()
        try:
            sql = (
                f'SELECT 1 FROM {table} WHERE "_cf_job_id" IS NULL '
                f'OR "_cf_job_id" NOT IN ({_marks(jobs)}) LIMIT 1'
            )
            return conn.execute(sql, jobs).fetchone() is not None
        except sqlite3.OperationalError:  # a table without lineage: someone else's
            return conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None


def _marks(values: tuple[int, ...]) -> str:
    return ", ".join("?" * len(values))


def quote(identifier: str) -> str:
    """An SQL identifier, double-quoted with any ``"`` doubled (SQL standard; SQLite's rule)."""
    return '"' + identifier.replace('"', '""') + '"'


def _check_case_collisions(topic: str, names: list[str]) -> None:
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(name.casefold(), name)
        if other != name:
            raise SinkError(
                f"topic {topic!r}: columns {other!r} and {name!r} differ only in case, which "
                "SQLite treats as one name; rename one in the plugin"
            )


def _exists(conn: sqlite3.Connection, table: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)
    ).fetchone()
    return row is not None


def _affinity(t: pa.DataType) -> str:
    if pat.is_integer(t) or pat.is_boolean(t):
        return "INTEGER"
    if pat.is_floating(t):
        return "REAL"
    if pat.is_binary(t) or pat.is_large_binary(t):
        return "BLOB"
    return "TEXT"


def _pylist(col: pa.Array) -> Any:  # a list of Python values
    t = col.type
    if pat.is_integer(t) or pat.is_floating(t) or pat.is_boolean(t) or pat.is_string(t):
        return col.to_pylist()
    if pat.is_binary(t) or pat.is_large_binary(t) or pat.is_large_string(t):
        return col.to_pylist()
    # Dates, timestamps, decimals, nested types: store their string form.
    try:
        return col.cast(pa.string()).to_pylist()
    except pa.ArrowException:
        return [None if v is None else str(v) for v in col.to_pylist()]
