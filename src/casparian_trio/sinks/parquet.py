"""Parquet sink: one file per (job, topic), staged then promoted by rename.

Role: receives conformed record batches (in a writer thread), coalesces them
into row groups, and on commit renames the staged file into place.

Invariants:
- The final name is a function of (dataset dir, topic, job id) only:
  ``DIR/<topic>.job-<job_id>.parquet``, so a re-run replaces its own file.
- Until commit the data lives in ``DIR/.<final name>.<random>.staging`` (a dot
  file in the same directory: ``*.parquet`` globs never see it and the final
  ``os.replace`` is atomic). abort() deletes it; nothing partial is ever visible.
- Modes: ``append`` adds this job's file next to other jobs' files;
  ``replace`` makes this job's file the topic's only file in DIR (the others are
  deleted after the rename, so readers never see an empty dataset);
  ``error`` refuses to run when another job's file for the topic is already in
  DIR (checked at open and again at commit; the job's own earlier file is
  replaced, so retries stay idempotent).
- Row groups: batches are buffered up to ROW_GROUP_ROWS rows or
  ROW_GROUP_BYTES bytes, then written as one row group (per-batch row groups
  make files ~20% larger than ``pq.write_table``).
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import attrs
import pyarrow as pa
import pyarrow.parquet as pq

from casparian_trio.errors import SinkError
from casparian_trio.protocol.messages import Artifact
from casparian_trio.sinks._schema import Conformer
from casparian_trio.sinks._uri import safe_name

logger = logging.getLogger(__name__)

# pq.write_table's default maximum row-group length.
ROW_GROUP_ROWS = 1024 * 1024
# Also flush on bytes: the buffer is the bulk of the host's memory per job, and
# 32 MiB groups compress within ~1-2% of 1 Mi-row groups on typical tables.
ROW_GROUP_BYTES = 32 * 1024 * 1024


@attrs.define(eq=False)
class ParquetSink:
    """Writes one topic of one job to a staged Parquet file."""

    topic: str
    directory: Path
    job_id: int
    mode: str
    conformer: Conformer
    rows: int = 0
    bytes_written: int = 0
    _writer: pq.ParquetWriter | None = None
    _staging: Path | None = None
    _buffer: list[pa.RecordBatch] = attrs.field(factory=list)
    _buffer_rows: int = 0
    _buffer_bytes: int = 0

    @property
    def final_path(self) -> Path:
        return self.directory / f"{safe_name(self.topic)}.job-{self.job_id}.parquet"

    def check(self) -> None:
        """Fail early (before the guest runs) if mode=error forbids writing."""
        if self.mode == "error":
            others = self._other_files()
            if others:
                raise SinkError(
                    f"topic {self.topic!r}: mode 'error' and {self.directory} already holds "
                    f"output of another job ({others[0].name})"
                )

    def write(self, batch: pa.RecordBatch) -> None:
        batch = self.conformer.conform(batch)
        self._buffer.append(batch)
        self._buffer_rows += batch.num_rows
        self._buffer_bytes += batch.nbytes
        self.rows += batch.num_rows
        if self._buffer_rows >= ROW_GROUP_ROWS or self._buffer_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def commit(self) -> Artifact | None:
        """Finish the file and rename it into place; None if the topic got no data."""
        self._flush()
        if self._writer is None and self.conformer.declared is not None:
            self._open(self.conformer.output_schema())  # an empty file still has the schema
        self.check()
        if self._writer is None:
            self._delete_others_if_replace()
            return None
        self._writer.close()
        self._writer = None
        assert self._staging is not None
        self.bytes_written = self._staging.stat().st_size
        os.replace(self._staging, self.final_path)
        self._staging = None
        self._delete_others_if_replace()
        logger.debug("promoted %s (%d rows)", self.final_path, self.rows)
        return Artifact(topic=self.topic, uri=str(self.final_path), rows=self.rows)

    def abort(self) -> None:
        """Drop the staged file (idempotent, never raises)."""
        self._buffer.clear()
        try:
            if self._writer is not None:
                self._writer.close()
        except Exception:
            logger.debug("closing an aborted parquet writer failed", exc_info=True)
        self._writer = None
        if self._staging is not None:
            self._staging.unlink(missing_ok=True)
            self._staging = None

    def _flush(self) -> None:
        if not self._buffer:
            return
        table = pa.Table.from_batches(self._buffer)
        self._buffer = []
        self._buffer_rows = self._buffer_bytes = 0
        if self._writer is None:
            self._open(table.schema)
        assert self._writer is not None
        self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)

    def _open(self, schema: pa.Schema) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f".{self.final_path.name}.{secrets.token_hex(4)}.staging"
        self._staging = self.directory / name
        self._writer = pq.ParquetWriter(self._staging, schema)

    def _other_files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        mine = self.final_path
        pattern = f"{safe_name(self.topic)}.job-*.parquet"
        return sorted(p for p in self.directory.glob(pattern) if p != mine)

    def _delete_others_if_replace(self) -> None:
        if self.mode != "replace":
            return
        for path in self._other_files():
            path.unlink(missing_ok=True)
