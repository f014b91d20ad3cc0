"""Conform guest batches to one schema per topic, split out invalid values, add lineage.

Role: the single place where untrusted guest data is checked against what the
topic promises. Runs in writer threads; pure functions of pyarrow objects.

Rules (per topic; the drift table is ``_drift``'s):
- Column names are made unique first, as DuckDB's CSV reader does (an empty
  name becomes ``column<i>`` by position, a repeated one ``a_1``, ``a_2``...);
  ``Conformer.renamed`` records it. Columns are then looked up by position in
  that unique list, never by a name that may repeat.
- A name starting with ``_cf_`` is reserved for lineage and fails the job.
- A ``schema_def`` (JSON ``{"col": "type", ...}`` or ``[{"name":..,"type":..}, ...]``,
  types as pyarrow aliases: int64, float64, string, bool, date32, timestamp[ms], ...)
  is the contract for the columns it names: they come first, in declared order,
  with the declared types, whatever the job sends. A declared column missing
  from a batch is nulls.
- Every other column is the job's own: its type is the first batch's, widened
  losslessly by later batches (null → string, int32 → int64); one appearing in
  a later batch is added (earlier rows null). The sink rewrites what it staged
  when that happens (``Conformed.retargeted``).
- A value that cannot be converted (PARSE drift) does not fail the file: its
  row goes to ``<topic>_quarantine`` (lineage, ``row``, ``column``,
  ``raw_value``, ``reason``) and the row's other values are dropped with it;
  ``on_invalid: fail`` fails the job instead, and more than
  ``max_invalid_fraction`` of a job's rows invalid fails it at commit (once the
  job has ``MIN_ROWS_FOR_FRACTION`` rows: a share of fewer says nothing).
- Lineage columns are always set by the host, after the data columns:
  ``_cf_job_id`` and ``_cf_file_version_id`` (int64), ``_cf_source_hash`` (the
  file version's content hash) and ``_cf_parser_version`` ("plugin version"),
  the last two dictionary-encoded. The ``_cf_`` prefix is reserved.
"""

from __future__ import annotations

import array
import json
from collections.abc import Sequence

import attrs
import pyarrow as pa

from casparian_trio.errors import SinkError
from casparian_trio.sinks._conform import Invalid, conform_column
from casparian_trio.sinks._drift import widens

LINEAGE = ("_cf_job_id", "_cf_file_version_id", "_cf_source_hash", "_cf_parser_version")
# The two text lineage columns are dictionary-encoded: one value per job, so a
# file pays a few bytes for them, not a copy per row.
LINEAGE_TEXT = pa.dictionary(pa.int32(), pa.string())
RESERVED_PREFIX = "_cf_"
QUARANTINE_SUFFIX = "_quarantine"
# The quarantine table's own columns (lineage columns follow them).
QUARANTINE_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("column", pa.string()),
        ("raw_value", pa.string()),
        ("reason", pa.string()),
    ]
)
ON_INVALID = ("quarantine", "fail")
DEFAULT_MAX_INVALID_FRACTION = 0.1
# A share of a handful of rows says nothing about a file (1 bad value in 2 rows
# is 50 %): below this many rows, invalid values are quarantined whatever their share.
MIN_ROWS_FOR_FRACTION = 20


def parse_schema_def(schema_def: str | None, topic: str) -> pa.Schema | None:
    """Parse a topic's schema_def JSON into a pyarrow schema (None: no contract)."""
    if not schema_def:
        return None
    try:
        raw = json.loads(schema_def)
        pairs = raw.items() if isinstance(raw, dict) else [(c["name"], c["type"]) for c in raw]
        # Lineage columns are the host's to add; a schema copied from our own
        # output names them, so they are dropped here rather than failing jobs.
        return pa.schema(
            [(str(n), pa.lib.type_for_alias(str(t))) for n, t in pairs if n not in LINEAGE]
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise SinkError(f"topic {topic!r}: invalid schema_def {schema_def!r}: {exc}") from exc


def unique_names(names: Sequence[str]) -> list[str]:
    """Names made unique as DuckDB's CSV reader does: ``column<i>`` for empty, ``a_1`` for repeats."""
    taken: set[str] = set()
    out: list[str] = []
    for i, name in enumerate(names):
        base = name if name.strip() else f"column{i}"
        candidate, n = base, 0
        while candidate in taken:
            n += 1
            candidate = f"{base}_{n}"
        taken.add(candidate)
        out.append(candidate)
    return out


@attrs.frozen
class Conformed:
    """One batch after conformance: the rows for the topic, the quarantined ones."""

    batch: pa.RecordBatch
    quarantine: pa.RecordBatch | None
    # The topic's schema changed with this batch: what was staged must be rewritten.
    retargeted: bool


@attrs.define(eq=False)
class Conformer:
    """Conforms batches to the topic's schema and appends lineage columns (see module docstring)."""

    topic: str
    job_id: int
    file_version_id: int
    declared: pa.Schema | None = None
    on_invalid: str = "quarantine"
    max_invalid_fraction: float = DEFAULT_MAX_INVALID_FRACTION
    source_hash: str | None = None
    parser_version: str | None = None
    # The topic's contract when one exists (lineage stripped): see ``adopt``.
    contract: pa.Schema | None = None
    target: pa.Schema | None = None
    rows_in: int = 0
    rows_invalid: int = 0
    renamed: dict[str, str] = attrs.field(factory=dict)
    _lineage: tuple[pa.Array, ...] | None = None

    def conform(self, batch: pa.RecordBatch) -> Conformed:
        """Raises SinkError: reserved names, forbidden drift, a lossy CHECKED value, on_invalid=fail."""
        batch = self._unique(batch)
        retargeted = self._fit_target(batch.schema)
        assert self.target is not None
        columns: list[pa.Array] = []
        invalid: list[Invalid] = []
        first_row = self.rows_in + 1
        for field in self.target:
            idx = batch.schema.get_field_index(field.name)
            if idx < 0:
                columns.append(pa.nulls(batch.num_rows, field.type))
                continue
            done = conform_column(
                batch.column(idx),
                field.type,
                topic=self.topic,
                name=field.name,
                first_row=first_row,
            )
            columns.append(done.array)
            if done.invalid is not None:
                invalid.append(done.invalid)
        self.rows_in += batch.num_rows
        if invalid and self.on_invalid == "fail":
            bad = min(invalid, key=lambda v: v.indices[0].as_py())
            raise SinkError(
                f"topic {self.topic!r}: column {bad.column!r}: {bad.raw[0].as_py()!r} at row "
                f"{first_row + bad.indices[0].as_py()} is {bad.reason} (on_invalid: fail)"
            )
        lineage = self._lineage_arrays(batch.num_rows)
        out = pa.RecordBatch.from_arrays([*columns, *lineage], schema=self.output_schema())
        if not invalid:
            return Conformed(out, None, retargeted)
        return self._split(out, invalid, first_row, retargeted)

    def adopt(self, contract: pa.Schema) -> None:
        """Start from a topic contract: its columns and types, which a batch may only widen.

        Declared (``schema_def``) types stay fixed; a contract column this job
        sends with a lossless wider type (null → string, int32 → int64) takes it,
        and the promotion then makes that the contract's next version.
        """
        self.contract = strip_lineage(contract)

    def for_contract(self, contract: pa.Schema) -> Conformer:
        """A fresh conformer for this job's rows against ``contract`` (a restage)."""
        return Conformer(
            self.topic,
            self.job_id,
            self.file_version_id,
            declared=strip_lineage(contract),
            on_invalid=self.on_invalid,
            max_invalid_fraction=self.max_invalid_fraction,
            source_hash=self.source_hash,
            parser_version=self.parser_version,
        )

    def output_schema(self) -> pa.Schema:
        base = self.target if self.target is not None else (self.declared or pa.schema([]))
        return _with_lineage(base)

    def quarantine_schema(self) -> pa.Schema:
        return _with_lineage(QUARANTINE_SCHEMA)

    def check_invalid_fraction(self) -> None:
        """Raises SinkError when more than ``max_invalid_fraction`` of the job's rows were invalid."""
        if self.rows_in < MIN_ROWS_FOR_FRACTION or not self.rows_invalid:
            return
        if self.rows_invalid / self.rows_in > self.max_invalid_fraction:
            raise SinkError(
                f"topic {self.topic!r}: {self.rows_invalid:,} of {self.rows_in:,} rows "
                f"({self.rows_invalid / self.rows_in:.1%}) hold values that do not convert, "
                f"above max_invalid_fraction {self.max_invalid_fraction:g} "
                f"(see {self.topic}{QUARANTINE_SUFFIX})"
            )

    # --- steps ----------------------------------------------------------------------

    def _unique(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        names = batch.schema.names
        for name in names:
            if name.startswith(RESERVED_PREFIX):
                raise SinkError(
                    f"topic {self.topic!r}: column {name!r} uses the reserved prefix "
                    f"{RESERVED_PREFIX!r} (lineage columns are the host's); rename it in the plugin"
                )
        fixed = unique_names(names)
        if fixed == names:
            return batch
        for old, new in zip(names, fixed, strict=True):
            if old != new:
                self.renamed[new] = old
        return pa.RecordBatch.from_arrays(batch.columns, names=fixed)

    def _fit_target(self, incoming: pa.Schema) -> bool:
        """Grow the job's columns to hold ``incoming``; True when a staged target changed.

        Only ``schema_def`` columns are fixed; contract and job columns widen losslessly.
        """
        declared = self.declared or pa.schema([])
        first = self.target is None
        if self.target is None:
            known = [*declared, *(f for f in self.contract or [] if f.name not in declared.names)]
            names = {f.name for f in known}
            self.target = pa.schema([*known, *(f for f in incoming if f.name not in names)])
        fields = list(self.target)
        changed = False
        for i, field in enumerate(fields):
            if field.name in declared.names:
                continue
            idx = incoming.get_field_index(field.name)
            if idx >= 0 and widens(field.type, incoming.field(idx).type):
                fields[i] = field.with_type(incoming.field(idx).type)
                changed = True
        for field in incoming:
            if field.name not in self.target.names:
                fields.append(field.with_nullable(True))
                changed = True
        if changed:
            self.target = pa.schema(fields)
        return changed and not first

    def _split(
        self, out: pa.RecordBatch, invalid: list[Invalid], first_row: int, retargeted: bool
    ) -> Conformed:
        import pyarrow.compute as pc  # only when values were invalid (see _conform)

        bad = invalid[0].mask
        for more in invalid[1:]:
            bad = pc.or_(bad, more.mask)
        self.rows_invalid += pc.sum(bad).as_py() or 0
        good = out.filter(pc.invert(bad))
        # first_row as an Arrow scalar: a Python int would go through pa.scalar (pandas)
        start = _constant_int64(first_row, 1)[0]
        rows = pa.concat_arrays([pc.add(v.indices.cast(pa.int64()), start) for v in invalid])
        n = len(rows)
        lineage = self._lineage_arrays(n)
        quarantine = pa.RecordBatch.from_arrays(
            [
                rows,
                pa.concat_arrays([_repeated_text(v.column, len(v)) for v in invalid]),
                pa.concat_arrays([v.raw.cast(pa.string()) for v in invalid]),
                pa.concat_arrays([_repeated_text(v.reason, len(v)) for v in invalid]),
                *lineage,
            ],
            schema=self.quarantine_schema(),
        )
        return Conformed(good, quarantine, retargeted)

    def _lineage_arrays(self, n: int) -> tuple[pa.Array, ...]:
        # One constant array per job and column, sliced (zero-copy) for every batch:
        # built for the first batch's rows (a small file's only batch: no more),
        # then at least doubled when a bigger batch comes.
        if self._lineage is None or len(self._lineage[0]) < n:
            size = n if self._lineage is None else max(n, 2 * len(self._lineage[0]))
            self._lineage = (
                _constant_int64(self.job_id, size),
                _constant_int64(self.file_version_id, size),
                _constant_text(self.source_hash, size),
                _constant_text(self.parser_version, size),
            )
        return tuple(a.slice(0, n) for a in self._lineage)


def strip_lineage(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f for f in schema if f.name not in LINEAGE])


def _with_lineage(base: pa.Schema) -> pa.Schema:
    types = (pa.int64(), pa.int64(), LINEAGE_TEXT, LINEAGE_TEXT)
    for name, kind in zip(LINEAGE, types, strict=True):
        base = base.append(pa.field(name, kind))
    return base


def _constant_text(value: str | None, n: int) -> pa.Array:
    """``n`` copies of ``value`` (null when None) as a one-entry dictionary, from buffers.

    Built like ``_constant_int64`` (no pa.array: it would import pandas).
    """
    data = (value or "").encode("utf-8")
    offsets = pa.py_buffer(array.array("i", [0, len(data)] if value is not None else [0]))
    dictionary = pa.Array.from_buffers(
        pa.string(), 1 if value is not None else 0, [None, offsets, pa.py_buffer(data)]
    )
    indices = pa.py_buffer(array.array("i", [0]) * n)
    validity = None if value is not None else pa.py_buffer(bytes((n + 7) // 8))
    index_array = pa.Array.from_buffers(pa.int32(), n, [validity, indices])
    return pa.DictionaryArray.from_arrays(index_array, dictionary)


def _repeated_text(value: str, n: int) -> pa.Array:
    """``n`` copies of ``value`` as a plain string array (not pa.array: it imports pandas)."""
    return _constant_text(value, n).dictionary_decode()


def _constant_int64(value: int, n: int) -> pa.Array:
    """``n`` copies of ``value``, built straight from a buffer.

    Not pa.array/pa.scalar/pa.repeat: those probe for pandas and import it when
    it is installed (~200 ms and ~40 MB in every worker), and not take(): that
    needs pyarrow.compute (~30 ms, ~15 MB). int64 is little-endian in Arrow, as
    on every platform we run on.
    """
    data = pa.py_buffer(array.array("q", [value]) * n)
    return pa.Array.from_buffers(pa.int64(), n, [None, data])
