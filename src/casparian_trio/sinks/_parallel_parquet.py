"""A Parquet file whose row groups are encoded on several threads at once.

Role: the Parquet sink's writer. pyarrow encodes one file's row groups in
sequence on one thread; a big job's host then had one core encoding and the
other idle once the guest had parsed. Here each ``write_table(background=True)``
encodes its rows as a standalone in-memory Parquet file (a "part") on a pool of
``threads`` threads (pyarrow releases the GIL while it encodes), and the parts
are appended to the file in the order they were given, their column chunks as
encoded; ``close()`` writes one footer for all of them (``_stitch``). The file
is byte for byte what ``pq.ParquetWriter`` writes for the same row groups.

Invariants:
- Parts reach the file in submission order; only the calling thread writes the
  file (the pool only encodes), so the writer needs no lock of its own. Calls
  come from one thread at a time (the sink's).
- At most ``threads`` parts are being encoded; ``write_table`` waits for the
  oldest before submitting another, so memory stays at ``threads`` row groups
  plus the caller's buffer. A part's encoded bytes are dropped once written.
- An encode that failed raises from the next ``write_table``/``wait``/``close``
  (as the pyarrow error), and again from every later one: the writer is
  failed for good, and nothing after it is written (no footer, so the file
  never reads as complete with a part missing). ``abort()`` waits for
  the encodes in flight (they cannot be interrupted), then closes the file
  without a footer; the caller deletes it.
- Writer options are fixed to what ``_stitch`` can join: no page index, no
  bloom filters, no encryption (pyarrow's defaults).
- ``repeated_columns``: the schema's last columns (the sink's lineage) hold the
  same values in row group after row group. Their column chunks for a group of
  n rows are encoded once and reused for every later group of n rows whose
  values are equal (compared, never assumed), beside the group's other
  columns (``_stitch.beside``): the file is still byte for byte
  ``ParquetWriter``'s. A job's lineage cost a tenth of its encoding before.
  Parts under REPEAT_MIN_ROWS rows are encoded whole (a small file's job
  would only pay for the split).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import os
import threading
from pathlib import Path
from typing import BinaryIO

import attrs
import pyarrow as pa
import pyarrow.parquet as pq

from casparian_trio.sinks import _stitch

# pq.write_table's default maximum row-group length: a part of more rows holds
# several row groups, as write_table would split them.
ROW_GROUP_ROWS = 1024 * 1024
# Encoding threads per file: one per core, up to 4 (a job's host has more to do
# than encode; beyond 4 the groups in flight are mostly memory).
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
THREADS = max(1, min(4, _CPUS or 1))
# A part smaller than this is encoded on the caller's thread even when asked for
# the background: a small file's job must not start a thread pool for it.
INLINE_BYTES = 1024 * 1024
# Parts of fewer rows encode their repeated columns with the rest: a small
# file's one group would only pay for the split (a template footer, ~1 ms).
REPEAT_MIN_ROWS = 100_000
# Encoded repeated columns kept per writer (one per row count seen; a file's
# groups share one row count but its tail pieces).
REPEATS_KEPT = 4


def encode_part(
    table: pa.Table,
    schema: pa.Schema,
    use_dictionary: bool | list[str] = True,
    row_group_rows: int = ROW_GROUP_ROWS,
    *,
    lazy: bool = False,
) -> _stitch.Part:
    """``table`` as a standalone Parquet file in memory, split for joining (blocking).

    Row groups of at most ``row_group_rows`` rows (as ``write_table`` splits).
    ``lazy``: its footer decoded only if a join needs it (``_stitch.split``).
    """
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, schema, use_dictionary=use_dictionary) as writer:
        writer.write_table(table, row_group_size=row_group_rows)
    return _stitch.split(memoryview(sink.getvalue()), lazy=lazy)


@attrs.frozen
class _SplitSchema:
    """A schema cut before its last repeated columns, each side with its writer options."""

    first_schema: pa.Schema
    last_schema: pa.Schema
    first_dictionary: bool | list[str]
    last_dictionary: bool | list[str]
    template: _stitch.Part  # the whole schema's file, no row group: its footer

    @property
    def first(self) -> int:
        return len(self.first_schema)


def _split_schema(
    schema: pa.Schema, repeated: int, use_dictionary: bool | list[str]
) -> _SplitSchema:
    first = len(schema) - repeated
    fields = list(schema)

    def option(names: list[str]) -> bool | list[str]:
        if isinstance(use_dictionary, bool):
            return use_dictionary
        return [n for n in use_dictionary if n.split(".")[0] in names]  # "st.k": a leaf of st

    template = _stitch.without_row_groups(encode_part(no_rows(schema), schema, use_dictionary))
    return _SplitSchema(
        pa.schema(fields[:first]),
        pa.schema(fields[first:]),
        option(schema.names[:first]),
        option(schema.names[first:]),
        template,
    )


def _has_float(kind: pa.DataType) -> bool:
    """``kind`` holds floating-point values, at any depth (dictionary values too)."""
    if pa.types.is_floating(kind):
        return True
    if pa.types.is_dictionary(kind):
        return _has_float(kind.value_type)
    return any(_has_float(kind.field(i).type) for i in range(kind.num_fields))


def no_rows(schema: pa.Schema) -> pa.Table:
    """A table of ``schema`` without rows.

    Not ``schema.empty_table()``: that imports pandas when it is installed
    (~280 ms and ~40 MB in every worker, measured with pyarrow 26).
    """
    return pa.Table.from_batches([], schema=schema)


class ParallelParquetWriter:
    """Writes ``schema``-shaped tables to ``path`` as row groups encoded in parallel.

    Args:
        path: the file to create (truncated if it exists).
        schema: every table's schema, with the file's key-value metadata.
        use_dictionary: as for ``pq.ParquetWriter``.
        threads: parts encoded at once (1: in the background, one at a time).
        row_group_rows: the most rows in one row group (a bigger table is split).
        repeated_columns: how many of the schema's last columns repeat their
            values from group to group (see the module docstring); 0: none.

    Raises (from any method): ``pa.ArrowException``/``OSError`` as pyarrow and
    the file raise them; ``_stitch.StitchError`` for a part it cannot join.
    """

    def __init__(
        self,
        path: Path,
        schema: pa.Schema,
        *,
        use_dictionary: bool | list[str] = True,
        threads: int = THREADS,
        row_group_rows: int = ROW_GROUP_ROWS,
        repeated_columns: int = 0,
    ) -> None:
        self.path = path
        self.schema = schema
        self.use_dictionary = use_dictionary
        self.threads = max(1, threads)
        self.row_group_rows = row_group_rows
        self._file: BinaryIO | None = open(path, "wb")  # noqa: SIM115 (closed by close/abort)
        self._file.write(_stitch.MAGIC)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._in_flight: collections.deque[concurrent.futures.Future[_stitch.Part]] = (
            collections.deque()
        )
        self._parts: list[_stitch.Part] = []
        self._footer: bytes | None = None
        self._failed: BaseException | None = None
        fields = list(schema)
        repeated = (
            fields[len(fields) - repeated_columns :] if 0 < repeated_columns < len(fields) else []
        )
        # Floats are never reused: Table.equals takes -0.0 for 0.0 (the bytes differ).
        self._repeated = 0 if any(_has_float(f.type) for f in repeated) else len(repeated)
        self._split: _SplitSchema | None = None  # made for the first part big enough
        # row count -> (the repeated columns' values, their encoded part)
        self._repeats: dict[int, tuple[pa.Table, _stitch.Part]] = {}
        # Held while a repeat is looked up or encoded: two threads encoding the
        # same lineage at once (the file's first two groups) cost ~20 ms of CPU
        # per 500k rows that the guest's parse and the other group wanted.
        self._repeats_lock = threading.Lock()

    def write_table(self, table: pa.Table, *, background: bool = False) -> None:
        """Add ``table``'s rows as the next row group(s).

        ``background``: encode on the pool and return (waiting first when
        ``threads`` parts are in flight); else, and for a first part under
        ``INLINE_BYTES``, encode here, after the parts in flight are written.
        """
        self._require_open()
        if not background or (self._pool is None and table.nbytes < INLINE_BYTES):
            self.wait()
            self._append(self._encode(table, lazy=True))
            return
        while len(self._in_flight) >= self.threads:
            self._append(self._result())
        try:
            pool = self._start_pool()
            self._in_flight.append(pool.submit(self._encode, table))
        except RuntimeError:  # no thread to be had (memory): encode it here
            self.wait()
            self._append(self._encode(table, lazy=True))
        self._append_finished()

    def wait(self) -> None:
        """Until every part given so far is encoded and in the file."""
        if self._failed is not None:
            raise self._failed
        while self._in_flight:
            self._append(self._result())

    def close(self) -> None:
        """Write the footer and close the file (an empty table's when no rows came)."""
        self._require_open()
        try:
            self.wait()
            if not self._parts:  # a header-only file still records its columns (no row group)
                self._append(_stitch.without_row_groups(self._encode(no_rows(self.schema))))
            footer = _stitch.join_footer(self._parts)
            assert self._file is not None
            self._file.write(footer)
            self._footer = footer
        finally:
            self._release()

    def abort(self) -> None:
        """Drop what is in flight and close the file without a footer (never raises)."""
        for future in self._in_flight:
            future.cancel()
        for future in self._in_flight:
            if not future.cancelled():
                concurrent.futures.wait([future])
        self._in_flight.clear()
        with contextlib.suppress(OSError):
            self._release()

    def read_back_schema(self) -> pa.Schema:
        """The closed file's Arrow schema as ``pq.read_schema`` gives it (from the footer)."""
        if self._footer is None:
            raise ValueError("the file is not closed yet")
        return pq.read_schema(pa.BufferReader(_stitch.MAGIC + self._footer))

    @property
    def num_rows(self) -> int:
        """Rows in the file so far (parts written)."""
        return sum(part.num_rows for part in self._parts)

    def _encode(self, table: pa.Table, *, lazy: bool = False) -> _stitch.Part:
        """``table`` as a part (``lazy``: on the caller's thread, footer decoded if joined)."""
        if not self._repeated or not REPEAT_MIN_ROWS <= table.num_rows <= self.row_group_rows:
            return encode_part(
                table, self.schema, self.use_dictionary, self.row_group_rows, lazy=lazy
            )
        split = self._split
        if split is None:  # two threads may both make it: the same value, assigned atomically
            split = self._split = _split_schema(self.schema, self._repeated, self.use_dictionary)
        first = table.select(range(split.first))
        last = table.select(range(split.first, table.num_columns))
        with self._repeats_lock:  # the first groups start together: one encodes, one waits
            known = self._repeats.get(table.num_rows)
            if known is not None and known[0].equals(last):
                repeated = known[1]
            else:
                repeated = encode_part(
                    last, split.last_schema, split.last_dictionary, self.row_group_rows
                )
                if len(self._repeats) >= REPEATS_KEPT:
                    self._repeats.clear()
                self._repeats[table.num_rows] = (last, repeated)
        own = encode_part(first, split.first_schema, split.first_dictionary, self.row_group_rows)
        return _stitch.beside(own, repeated, split.template)

    def _result(self) -> _stitch.Part:
        """The oldest part in flight, encoded (its error makes the writer failed)."""
        try:
            return self._in_flight.popleft().result()
        except BaseException as exc:
            self._failed = exc
            raise

    def _append(self, part: _stitch.Part) -> None:
        assert self._file is not None
        for piece in part.pieces:
            self._file.write(piece)
        self._parts.append(part.written())

    def _append_finished(self) -> None:
        while self._in_flight and self._in_flight[0].done():
            self._append(self._result())

    def _start_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.threads, thread_name_prefix="parquet-encode"
            )
        return self._pool

    def _require_open(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._file is None:
            raise ValueError(f"{self.path}: the Parquet writer is closed")

    def _release(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        file, self._file = self._file, None
        if file is not None:
            file.close()
