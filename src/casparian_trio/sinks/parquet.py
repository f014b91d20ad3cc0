"""Parquet sink: one file per (topic, source file, plugin), staged then promoted by rename.

Role: receives conformed record batches (in a writer thread), coalesces them
into row groups, and on commit renames the staged file into place.

Invariants:
- Output identity is (topic, source file): the final name is a function of the
  dataset dir, the topic, the file's location id and the plugin only:
  ``DIR/<topic>.src-<location id>.<plugin>.parquet``. A job for a newer version
  of the file, or a re-run by a newer plugin version, replaces the earlier
  output with one ``os.replace``: readers see the old rows or the new ones,
  never both and never neither. A Dispatch without ``source_file_id`` (an old
  Sentinel) gets the job-named ``DIR/<topic>.job-<job_id>.parquet``.
- Each file records the file version it was parsed from (key-value metadata
  ``casparian.file_version_id``, read from the footer only). A job whose
  version is older than the promoted one is stale: it raises
  ``OutputSuperseded`` and promotes nothing. No other file of the topic is read.
- A job that produced no rows and no schema for a topic removes that source
  file's earlier output of the topic (and of its quarantine): the dataset holds
  the file's current rows, which are none. ``retract()`` does the same for a
  deleted source file.
- Job-named files of the jobs in ``replaces_jobs`` (written before output
  identity existed) are deleted right after the rename.
- Until commit the data lives in ``DIR/.<final name>.<random>.staging`` (a dot
  file in the same directory: ``*.parquet`` globs never see it and the final
  ``os.replace`` is atomic). abort() deletes it; nothing partial is ever visible.
- Modes: ``append`` keeps other source files' outputs beside this one;
  ``replace`` makes this job's file the topic's only file in DIR (the others are
  deleted after the rename, so readers never see an empty dataset);
  ``error`` refuses to run when another source file's output for the topic is
  already in DIR (checked at open and again at commit; the file's own earlier
  output is replaced, so retries stay idempotent).
- Row groups: batches are buffered up to ROW_GROUP_ROWS rows or
  ROW_GROUP_BYTES bytes, then written as one row group (per-batch row groups
  make files ~20% larger than ``pq.write_table``). When the first group has
  at least REPEAT_MIN_ROWS rows, the file's later groups take its row count
  (but for a job's last rows, and a group of wider rows that reaches
  WIDER_GROUP_BYTES first): alike groups share one encoding of the lineage
  columns (``_parallel_parquet``'s repeated columns).
- Dictionary encoding is on (pyarrow's default) except for numeric and
  temporal columns that are (nearly) all distinct in the first row group: for
  those a dictionary only adds index bytes until it overflows its 1 MiB page
  and falls back to PLAIN, again in every row group (a unique int64 column:
  +25% on the first 128 Ki rows of each group). Files come out a little
  smaller than ``pq.write_table``'s and encode faster.
- Smaller row groups would cut the host's memory (8 MiB: ~30 MB less peak
  RSS) but cost file size on tables with mid-cardinality strings, whose
  dictionaries repeat per group (4 columns of 20k distinct strings: 1.21x
  write_table's size at 32 MiB, 1.41x at 16 MiB, 1.63x at 8 MiB). So when the
  first group would be cut by its bytes, its text dictionaries are weighed
  first (``dictionary_heavy``): when they are a notable share of it, the file's
  groups are cut as write_table cuts them (ROW_GROUP_ROWS rows, up to
  DICTIONARY_GROUP_BYTES), the job's last rows in one group: a 2 M-row file
  with 4 columns of 20k distinct strings, 1.14x write_table's size before,
  1.00x now, at the cost of the host's memory for such files.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pyarrow as pa
import pyarrow.parquet as pq

from casparian_trio.errors import CasparianError, OutputSuperseded, SinkError
from casparian_trio.protocol.messages import Artifact
from casparian_trio.sinks import _parallel_parquet
from casparian_trio.sinks._contract import (
    Contract,
    Reconciled,
    read_contract,
    reconcile,
    write_contract,
)
from casparian_trio.sinks._parallel_parquet import ROW_GROUP_ROWS, ParallelParquetWriter
from casparian_trio.sinks._schema import LINEAGE, QUARANTINE_SUFFIX, Conformer
from casparian_trio.sinks._uri import safe_name

logger = logging.getLogger(__name__)

# Also flush on bytes: the buffer is the bulk of the host's memory per job, and
# 32 MiB groups compress within ~1-2% of 1 Mi-row groups on typical tables.
ROW_GROUP_BYTES = 32 * 1024 * 1024
# A later group is cut by bytes only past its first's limit and a quarter (its rows
# wider than the first's): a little slack, so rows as wide as the first group's
# are cut by their count.
WIDER_GROUP_BYTES = ROW_GROUP_BYTES + ROW_GROUP_BYTES // 4
# When a row group's dictionaries are a notable share of it, every cut writes them
# again: a 2 M-row file with 4 columns of 20k distinct strings came out 1.14x
# write_table's size in 32 MiB groups, 1.00x in 1 Mi-row groups. Such a file's
# groups are cut at 1 Mi rows (write_table's) or this many bytes.
DICTIONARY_GROUP_BYTES = 128 * 1024 * 1024
# ... a notable share: its distinct values (each column's up to the 1 MiB
# dictionary page Parquet falls back to PLAIN after) at least this share of the
# group's Arrow bytes. Measured: 0.06 for the file above, under 0.002 for the
# README's benchmark files (ints, floats, timestamps, a 4096-value text column).
DICTIONARY_HEAVY_SHARE = 0.01
DICTIONARY_PAGE_BYTES = 1024 * 1024  # pyarrow's dictionary_pagesize_limit default
# A job's last rows are cut into one row group per encoding thread only when
# each piece is at least this big: smaller ones cost more in file size
# (dictionaries repeat per group) than their parallel encoding saves.
TAIL_PIECE_BYTES = 8 * 1024 * 1024
# Footer key-value metadata: the file version a promoted file was parsed from.
VERSION_KEY = b"casparian.file_version_id"
# A column is "unique" when this share of the first row group's values are distinct.
UNIQUE_RATIO = 0.9
# Decide only on a sample this large; smaller files keep pyarrow's default.
DICTIONARY_SAMPLE_ROWS = 10_000
# ... and on at most about this many of its values per column.
DICTIONARY_SAMPLE_MAX = 64 * 1024


@attrs.define(eq=False)
class ParquetSink:
    """Writes one topic of one job to a staged Parquet file."""

    topic: str
    directory: Path
    job_id: int
    mode: str
    # None: batches are written as they come (the quarantine sink's are ready-made).
    conformer: Conformer | None
    rows: int = 0
    rows_quarantined: int = 0
    bytes_written: int = 0
    quarantine_artifact: Artifact | None = None
    evolve: str = "none"
    contract_version: int | None = None
    # Output identity (see the module docstring); None: job-named files.
    source_file_id: int | None = None
    plugin: str = ""
    file_version_id: int = 0
    replaces_jobs: tuple[int, ...] = ()
    _current: Contract | None = None
    _writer: ParallelParquetWriter | None = None
    _staging: Path | None = None
    # The staged file's Arrow schema as a reader sees it (the closed writer's footer):
    # Parquet stores some types in a wider unit (date64 → date32, time32[s] → [ms]).
    _staged_schema: pa.Schema | None = None
    _buffer: list[pa.RecordBatch] = attrs.field(factory=list)
    _buffer_rows: int = 0
    _buffer_bytes: int = 0
    # Rows per row group once the first is written (bytes may have cut it short).
    _group_rows: int | None = None
    # Bytes that cut a group: ROW_GROUP_BYTES, or DICTIONARY_GROUP_BYTES once the
    # first group's dictionaries showed that a cut costs file size (``dictionary_heavy``).
    _group_bytes: int | None = None  # None: ROW_GROUP_BYTES
    _weighed: bool = False  # the first group's dictionaries were weighed
    _quarantine: ParquetSink | None = None

    @property
    def location(self) -> str:
        """Where this topic's output goes, for error messages."""
        return str(self.directory)

    @property
    def final_path(self) -> Path:
        if self.source_file_id is None:
            return self._job_path(self.job_id)
        name = f"{safe_name(self.topic)}.src-{self.source_file_id}.{safe_name(self.plugin)}"
        return self.directory / f"{name}.parquet"

    def _job_path(self, job_id: int) -> Path:
        return self.directory / f"{safe_name(self.topic)}.job-{job_id}.parquet"

    def _replaced_paths(self) -> list[Path]:
        """Job-named files this promotion supersedes (this job's and ``replaces_jobs``')."""
        if self.source_file_id is None:
            return []
        return [self._job_path(j) for j in (self.job_id, *self.replaces_jobs)]

    def check(self) -> None:
        """Fail early (before the guest runs) if the output is stale or mode=error forbids it.

        Raises:
            OutputSuperseded: a newer version of the source file is already promoted.
            SinkError: mode 'error' and another source file's output is in DIR.
        """
        promoted = promoted_version(self.final_path)
        if promoted is not None and promoted > self.file_version_id:
            raise OutputSuperseded(
                f"topic {self.topic!r}: {self.final_path.name} already holds a newer version "
                f"of the file (version {promoted} > {self.file_version_id})"
            )
        if self.mode == "error":
            others = self._other_files()
            if others:
                raise SinkError(
                    f"topic {self.topic!r}: mode 'error' and {self.directory} already holds "
                    f"output of another job ({others[0].name})"
                )

    def write(self, batch: pa.RecordBatch) -> None:
        if self.conformer is not None:
            conformed = self.conformer.conform(batch)
            if conformed.retargeted:
                self._retarget(self.conformer.output_schema())
            if conformed.quarantine is not None:
                self._quarantine_sink().write(conformed.quarantine)
                self.rows_quarantined += conformed.quarantine.num_rows
            batch = conformed.batch
        self._buffer.append(batch)
        self._buffer_rows += batch.num_rows
        self._buffer_bytes += batch.nbytes
        self.rows += batch.num_rows
        # Once the first group set the rows per group, bytes only cut a group
        # whose rows came out much wider than the first's.
        if self._group_bytes is None:
            first, wider = ROW_GROUP_BYTES, WIDER_GROUP_BYTES
        else:
            first, wider = self._group_bytes, self._group_bytes + self._group_bytes // 4
        group, most = (
            (ROW_GROUP_ROWS, first) if self._group_rows is None else (self._group_rows, wider)
        )
        if self._buffer_rows >= group or self._buffer_bytes >= most:
            if (
                self._group_rows is None
                and DICTIONARY_SAMPLE_ROWS <= self._buffer_rows < group
                and not self._weighed
            ):
                # The first group would be cut short by its bytes: worth it unless its
                # dictionaries would be written again in every smaller group.
                self._weighed = True
                if dictionary_heavy(pa.Table.from_batches(self._buffer)):
                    self._group_bytes = DICTIONARY_GROUP_BYTES
                    return
            self._flush(background=True)

    def commit(self) -> Artifact | None:
        """Finish the file, meet the topic's contract, rename it into place.

        Returns None if the topic got no data and no schema. The contract step
        (``_contract.reconcile``) runs under the directory lock with the rename.
        """
        self._flush(background=True, last=True)
        self._wait_encoded()
        if (
            self._writer is None
            and self.conformer is not None
            and self.conformer.target is not None
        ):
            self._open(self.conformer.output_schema())  # an empty file still has the schema
        if self._writer is not None:
            writer, self._writer = self._writer, None
            with self._writing():
                writer.close()
            self._staged_schema = writer.read_back_schema()
        if self._staging is None and self.mode != "replace":
            # Nothing to promote: the file's earlier output (if any) goes, and no
            # empty topic folder is left behind.
            self.retract()
            return None
        # check → contract → rename → delete-others as one step per sink directory:
        # two jobs promoting into one topic at once must not both decide its schema.
        contract: dict[str, Any] = {}  # for the Sentinel to record (Artifact.contract)
        with _dir_lock(self.directory):
            self.check()
            if self._staging is None:
                self._forget_own()
                self._delete_others_if_replace()
                self._retract_quarantine()
                return None
            if self.conformer is not None:
                decided = self._meet_contract(self.conformer)
                self.conformer.check_invalid_fraction()
                self._record_contract(decided)
                contract = contract_report(decided.contract)
            if self._quarantine is not None:
                self.quarantine_artifact = self._quarantine.commit()
            else:
                self._retract_quarantine()
            self.bytes_written = self._staging.stat().st_size
            os.replace(self._staging, self.final_path)
            self._staging = None
            for path in self._replaced_paths():
                if path != self.final_path:
                    path.unlink(missing_ok=True)
            self._delete_others_if_replace()
        logger.debug("promoted %s (%d rows)", self.final_path, self.rows)
        return Artifact(
            topic=self.topic, uri=str(self.final_path), rows=self.rows, contract=contract
        )

    def retract(self) -> int:
        """Remove this source file's output of the topic and of its quarantine.

        Under the directory lock; nothing is removed when a newer version of the
        file is promoted (``OutputSuperseded`` is not raised: a retraction that
        lost the race changes nothing). Returns the number of files removed.
        """
        if not self.directory.is_dir():
            return self._retract_quarantine()
        with _dir_lock(self.directory):
            promoted = promoted_version(self.final_path)
            if promoted is not None and promoted > self.file_version_id:
                return 0
            removed = self._forget_own()
        return removed + self._retract_quarantine()

    def _forget_own(self) -> int:
        removed = 0
        for path in {self.final_path, *self._replaced_paths()}:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        return removed

    def _retract_quarantine(self) -> int:
        if self.conformer is None or self.source_file_id is None:
            return 0  # a quarantine sink has none of its own; job-named files stay
        if self._quarantine is None and not os.path.isdir(self._quarantine_directory()):
            return 0  # no quarantine folder: nothing to remove (the common case)
        return self._quarantine_sink(create=False).retract()

    def prepare(self) -> None:
        """The mode check, then conform from the first batch to the topic's contract if any."""
        self.check()
        if self.conformer is None or self.mode == "replace":
            return
        contract = read_contract(self.directory, self.topic)
        if contract is not None:
            self.conformer.adopt(contract.schema)

    def _meet_contract(self, conformer: Conformer) -> Reconciled:
        """Decide the promotion against the current contract; conform the staged file if needed."""
        assert self._staging is not None
        staged = self._staged_schema or pq.read_schema(self._staging)
        self._current = (
            None if self.mode == "replace" else read_contract(self.directory, self.topic)
        )
        decided = reconcile(
            self._current, staged, topic=self.topic, job_id=self.job_id, evolve=self.evolve
        )
        if decided.restage:
            self._restage(conformer, decided.contract.schema)
        return decided

    def _record_contract(self, decided: Reconciled) -> None:
        """After every check passed: rewrite older files to a new version, write the contract."""
        if decided.migrate:
            self._migrate_others(decided.contract.schema)
        current = self._current
        if current is None or decided.contract.version != current.version:
            write_contract(self.directory, decided.contract)
        self.contract_version = decided.contract.version

    def _restage(self, conformer: Conformer, schema: pa.Schema) -> None:
        """Conform the staged file to ``schema`` by the drift rules (a contract appeared)."""
        assert self._staging is not None
        again = conformer.for_contract(schema)
        old = self._staging
        staged = pq.ParquetFile(old)
        self._open(schema)
        assert self._writer is not None
        self.rows = 0
        try:
            for group in range(staged.num_row_groups):
                table = staged.read_row_group(group).drop_columns(list(LINEAGE))
                for batch in table.to_batches():
                    done = again.conform(batch)
                    if done.quarantine is not None:
                        self._quarantine_sink().write(done.quarantine)
                        self.rows_quarantined += done.quarantine.num_rows
                    self._writer.write_table(pa.Table.from_batches([done.batch], schema))
                    self.rows += done.batch.num_rows
            self._writer.close()
        finally:
            staged.close()
            self._writer.abort()  # after close(): nothing left to do
            self._writer = None
            old.unlink(missing_ok=True)
        conformer.rows_invalid += again.rows_invalid

    def _migrate_others(self, schema: pa.Schema) -> None:
        """Rewrite the topic's other files to a new contract version (casts and nulls only)."""
        for path in self._other_files():
            table = pq.read_table(path)
            if table.schema.equals(schema):
                continue
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.migrating")
            kept = schema.with_metadata(table.schema.metadata)  # its file version stays
            try:
                pq.write_table(
                    _cast_table(table, schema).replace_schema_metadata(kept.metadata), tmp
                )
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            logger.info("topic %r: %s rewritten to the new contract", self.topic, path.name)

    def abort(self) -> None:
        """Drop the staged file (idempotent, never raises)."""
        if self._quarantine is not None:
            self._quarantine.abort()
        self._buffer.clear()
        if self._writer is not None:
            self._writer.abort()  # row groups being encoded finish first (bounded)
        self._writer = None
        if self._staging is not None:
            self._staging.unlink(missing_ok=True)
            self._staging = None

    def _quarantine_sink(self, *, create: bool = True) -> ParquetSink:
        if self._quarantine is not None:
            return self._quarantine
        name = f"{self.topic}{QUARANTINE_SUFFIX}"
        sink = ParquetSink(
            name,
            self._quarantine_directory(),
            self.job_id,
            "append",
            None,
            source_file_id=self.source_file_id,
            plugin=self.plugin,
            file_version_id=self.file_version_id,
            replaces_jobs=self.replaces_jobs,
        )
        if create:
            self._quarantine = sink
        return sink

    def _quarantine_directory(self) -> Path:
        return self.directory.with_name(f"{self.directory.name}{QUARANTINE_SUFFIX}")

    def _retarget(self, schema: pa.Schema) -> None:
        """The job's schema grew (lossless): recast what is buffered and what is staged."""
        self._buffer = [_cast_batch(b, schema) for b in self._buffer]
        if self._writer is None:
            return
        with self._writing():
            self._writer.close()
        self._writer = None
        assert self._staging is not None
        old = self._staging
        staged = pq.ParquetFile(old)
        self._open(schema)
        assert self._writer is not None
        for group in range(staged.num_row_groups):
            self._writer.write_table(_cast_table(staged.read_row_group(group), schema))
        staged.close()
        old.unlink(missing_ok=True)

    def _flush(self, *, background: bool = False, last: bool = False) -> None:
        """Write what is buffered as row groups (``background``: on the encoding threads).

        Encoding a row group takes as long as parsing one: done in line, the
        stream would stop for it (the guest blocks once the pipeline is full),
        so a full group is handed to the writer's threads while the next one is
        buffered, and groups encode side by side (``_parallel_parquet``); memory
        stays at the groups in flight plus the buffer. ``last``: the job's
        stream has ended; a big remainder is cut in one piece per encoding
        thread (``tail_pieces``), since nothing else overlaps its encoding.
        """
        if not self._buffer:
            return
        table = pa.Table.from_batches(self._buffer)
        self._buffer = []
        first = self._writer is None and background and not last
        if first and table.num_rows >= _parallel_parquet.REPEAT_MIN_ROWS:
            # The first group sets the file's row count per group (bytes may cut it);
            # a first group cut short by a few wide rows sets nothing (groups of
            # its few rows would follow, and the lineage split is off below that).
            self._group_rows = min(table.num_rows, ROW_GROUP_ROWS)
        group = self._group_rows or ROW_GROUP_ROWS
        whole = table.num_rows - table.num_rows % group
        if background and not last and whole and whole < table.num_rows:
            # Whole groups go; the rest starts the next one: written too, each
            # flush would leave a small group behind, and kept longer, narrow
            # rows would pile up.
            self._buffer = table.slice(whole).to_batches()
            table = table.slice(0, whole)
        self._buffer_rows = sum(b.num_rows for b in self._buffer)
        self._buffer_bytes = sum(b.nbytes for b in self._buffer)
        if self._writer is None:
            self._open(table.schema, use_dictionary=dictionary_columns(table))
        writer = self._writer
        assert writer is not None
        if last:
            pieces = (
                1  # each piece would repeat the dictionaries the bigger groups are for
                if self._group_bytes is not None
                else tail_pieces(table.num_rows, table.nbytes, writer.threads)
            )
            step = max(1, -(-table.num_rows // pieces))  # no rows: the file keeps the schema
        else:
            step = group if whole == table.num_rows else max(1, table.num_rows)
        with self._writing():
            for start in range(0, table.num_rows, step):
                writer.write_table(table.slice(start, step), background=background)

    def _wait_encoded(self) -> None:
        """Until every row group handed to the writer is in the file; an encoding error is raised here."""
        if self._writer is not None:
            with self._writing():
                self._writer.wait()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """The writer's errors (pyarrow's, the disk's) as one SinkError naming the topic."""
        try:
            yield
        except CasparianError:
            raise
        except Exception as exc:
            raise SinkError(
                f"topic {self.topic!r} ({self.location}): writing failed: {exc}"
            ) from exc

    def _open(self, schema: pa.Schema, use_dictionary: bool | list[str] = True) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f".{self.final_path.name}.{secrets.token_hex(4)}.staging"
        self._staging = self.directory / name
        stamped = schema.with_metadata(
            {**(schema.metadata or {}), VERSION_KEY: str(self.file_version_id).encode()}
        )
        lineage = len(LINEAGE) if tuple(schema.names[-len(LINEAGE) :]) == LINEAGE else 0
        self._writer = ParallelParquetWriter(
            self._staging,
            stamped,
            use_dictionary=use_dictionary,
            row_group_rows=ROW_GROUP_ROWS,
            repeated_columns=lineage,
        )

    def _other_files(self) -> list[Path]:
        """The topic's files in DIR of other source files (both naming schemes)."""
        if not self.directory.is_dir():
            return []
        mine = {self.final_path, *self._replaced_paths()}
        topic = safe_name(self.topic)
        found = [
            *self.directory.glob(f"{topic}.job-*.parquet"),
            *self.directory.glob(f"{topic}.src-*.parquet"),
        ]
        return sorted(p for p in found if p not in mine)

    def _delete_others_if_replace(self) -> None:
        if self.mode != "replace":
            return
        for path in self._other_files():
            path.unlink(missing_ok=True)


def promoted_version(path: Path) -> int | None:
    """The file version a promoted file was parsed from (its footer), None if unknown/absent."""
    try:
        with open(path, "rb") as file:  # missing: the common case, one failed open()
            metadata = pq.read_schema(file).metadata or {}
    except FileNotFoundError:
        return None
    except (OSError, pa.ArrowException):
        logger.warning("cannot read the footer of %s; replacing it", path)
        return None
    value = metadata.get(VERSION_KEY)
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def tail_pieces(rows: int, nbytes: int, threads: int) -> int:
    """Row groups for a job's last ``rows`` (``nbytes`` of Arrow data): one per thread
    when each piece keeps at least TAIL_PIECE_BYTES, else one."""
    return max(1, min(threads, nbytes // TAIL_PIECE_BYTES, rows))


def contract_report(contract: Contract) -> dict[str, Any]:
    """``Artifact.contract``: the version and its columns (lineage included) with Arrow types."""
    columns = [{"name": f.name, "type": str(f.type)} for f in contract.schema]
    return {"version": contract.version, "columns": columns}


def _cast_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` under a grown schema: widened columns cast, new ones null."""
    columns = [
        batch.column(batch.schema.get_field_index(f.name)).cast(f.type)
        if f.name in batch.schema.names
        else pa.nulls(batch.num_rows, f.type)
        for f in schema
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _cast_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_batches([_cast_batch(b, schema) for b in table.to_batches()], schema)


def dictionary_columns(table: pa.Table) -> bool | list[str]:
    """``use_dictionary`` for a file whose first row group is ``table``.

    All columns (True) except numeric/temporal ones whose values are nearly all
    distinct (see the module docstring). Uses numpy's sort-based unique, not
    pyarrow.compute (whose import costs the host ~30 ms and ~8 MB).
    """
    if table.num_rows < DICTIONARY_SAMPLE_ROWS:
        return True
    if any(pa.types.is_nested(f.type) for f in table.schema):
        return True  # a list of names would not cover nested leaf paths
    try:
        import numpy as np
    except ImportError:
        return True
    unique: set[str] = set()
    for field, column in zip(table.schema, table.columns, strict=True):
        t = field.type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_temporal(t)):
            continue
        if field.name in LINEAGE:
            continue  # one value per job: a dictionary, and no sort on the job's first group
        try:
            # A strided sample sees repetition anywhere in the group; 64 Ki values keep
            # the sort at a few ms per column. Strided per chunk: no copy of the column.
            step = max(1, len(column) // DICTIONARY_SAMPLE_MAX)
            sample = np.concatenate([_numpy_view(chunk, np)[::step] for chunk in column.chunks])
            distinct = _distinct_count(sample, np)
        except (pa.ArrowException, TypeError, ValueError):
            continue
        if distinct >= UNIQUE_RATIO * len(sample):
            unique.add(field.name)
    if not unique:
        return True
    return [name for name in table.column_names if name not in unique]


def dictionary_heavy(table: pa.Table) -> bool:
    """Whether ``table``'s text dictionaries are a notable share of it (see DICTIONARY_HEAVY_SHARE).

    Text and binary columns only: numeric dictionaries measured cheap to repeat
    (an 18-column taxi-like file: 0.6% bigger in 32 MiB groups). Imports
    pyarrow.compute (~30 ms), once per big file.
    """
    import pyarrow.compute as pc

    distinct = 0
    for field, column in zip(table.schema, table.columns, strict=True):
        kind = field.type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if not (
            pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)
        ):
            continue
        try:
            values = pc.unique(column)
        except pa.ArrowException:
            continue
        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        distinct += min(values.nbytes, DICTIONARY_PAGE_BYTES)
    return bool(distinct >= DICTIONARY_HEAVY_SHARE * table.nbytes)


def _distinct_count(values: Any, np: Any) -> int:
    """How many distinct values a 1-d numpy array holds, all NaNs counted as one.

    As ``len(np.unique(values))``, by a sort and a compare of neighbours:
    numpy 2's ``unique`` took 7 ms for 74k int64 values here, the sort 0.4 ms.
    """
    if not len(values):
        return 0
    # Strictly monotonic (ids, times): all distinct, no sort (a NaN fails both tests).
    if bool(np.all(values[1:] > values[:-1])) or bool(np.all(values[1:] < values[:-1])):
        return len(values)
    ordered = np.sort(values)  # NaNs sort last
    nans = int(np.count_nonzero(np.isnan(ordered))) if ordered.dtype.kind == "f" else 0
    if nans:
        ordered = ordered[: len(ordered) - nans]
    distinct = int(np.count_nonzero(ordered[1:] != ordered[:-1])) + (1 if len(ordered) else 0)
    return distinct + (1 if nans else 0)


def _numpy_view(chunk: pa.Array, np: Any) -> Any:
    """A fixed-width column's values as numpy, straight from its data buffer.

    Not Array.to_numpy(): pyarrow imports pandas there when it is installed
    (~200 ms and ~40 MB of worker memory). Values under nulls are arbitrary,
    which a uniqueness estimate can live with.
    """
    t = chunk.type
    width = t.bit_width // 8
    kind = "f" if pa.types.is_floating(t) else ("u" if pa.types.is_unsigned_integer(t) else "i")
    return np.frombuffer(
        chunk.buffers()[1], dtype=f"{kind}{width}", count=len(chunk), offset=chunk.offset * width
    )


@contextlib.contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock on a sink directory, across threads and processes.

    flock on the directory itself: no lock file for dataset readers to trip on.
    Runs in the writer thread, so blocking here never stalls the event loop.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
