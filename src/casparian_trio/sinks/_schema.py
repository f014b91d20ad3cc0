"""Conform guest batches to one schema per topic and add lineage columns.

Role: the single place where untrusted guest data is checked against what the
topic promises. Runs in writer threads; pure functions of pyarrow objects.

Rules (per topic, fixed by the first batch):
- A ``schema_def`` (JSON ``{"col": "type", ...}`` or ``[{"name":..,"type":..}, ...]``,
  types as pyarrow aliases: int64, float64, string, bool, date32, timestamp[ms], ...)
  lists required columns. They come first, in declared order, with the declared
  types; castable columns are cast (safe casts only), otherwise the job fails
  naming the column. Columns the schema_def does not name pass through.
- Without a schema_def the first batch's schema is the topic's schema; later
  batches must match it, or be safely castable to it.
- ``_cf_job_id`` and ``_cf_file_version_id`` (int64) are always set by the host,
  replacing any columns of that name the guest sent.
"""

from __future__ import annotations

import array
import json

import attrs
import pyarrow as pa

from casparian_trio.errors import SinkError

LINEAGE = ("_cf_job_id", "_cf_file_version_id")


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


@attrs.define(eq=False)
class Conformer:
    """Casts batches to the topic schema and appends lineage columns."""

    topic: str
    job_id: int
    file_version_id: int
    declared: pa.Schema | None = None
    target: pa.Schema | None = None
    _lineage: tuple[pa.Array, pa.Array] | None = None

    def conform(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        batch = _drop(batch, LINEAGE)
        if self.target is None:
            self.target = self._target_for(batch.schema)
        columns = [self._column(batch, field) for field in self.target]
        extra = set(batch.schema.names) - set(self.target.names)
        if extra:
            raise SinkError(
                f"topic {self.topic!r}: column {sorted(extra)[0]!r} appeared mid-stream "
                f"(schema: {', '.join(self.target.names)})"
            )
        job, fv = self._lineage_arrays(batch.num_rows)
        return pa.RecordBatch.from_arrays([*columns, job, fv], schema=self.output_schema())

    def output_schema(self) -> pa.Schema:
        base = self.target if self.target is not None else (self.declared or pa.schema([]))
        return base.append(pa.field(LINEAGE[0], pa.int64())).append(
            pa.field(LINEAGE[1], pa.int64())
        )

    def _target_for(self, first: pa.Schema) -> pa.Schema:
        if self.declared is None:
            return first
        rest = [f for f in first if f.name not in self.declared.names]
        return pa.schema([*self.declared, *rest])

    def _column(self, batch: pa.RecordBatch, field: pa.Field) -> pa.Array:
        idx = batch.schema.get_field_index(field.name)
        if idx < 0:
            raise SinkError(
                f"topic {self.topic!r}: column {field.name!r} is missing from the plugin's output"
            )
        col = batch.column(idx)
        if col.type == field.type:
            return col
        try:
            return col.cast(field.type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise SinkError(
                f"topic {self.topic!r}: column {field.name!r} cannot be cast from "
                f"{col.type} to {field.type}: {str(exc).splitlines()[0]}"
            ) from exc

    def _lineage_arrays(self, n: int) -> tuple[pa.Array, pa.Array]:
        # One constant array per job, sliced (zero-copy) for every batch.
        if self._lineage is None or len(self._lineage[0]) < n:
            size = max(n, 65536)
            self._lineage = (
                _constant_int64(self.job_id, size),
                _constant_int64(self.file_version_id, size),
            )
        return self._lineage[0].slice(0, n), self._lineage[1].slice(0, n)


def _drop(batch: pa.RecordBatch, names: tuple[str, ...]) -> pa.RecordBatch:
    present = [n for n in names if n in batch.schema.names]
    if not present:
        return batch
    keep = [i for i, n in enumerate(batch.schema.names) if n not in names]
    return batch.select(keep)


def _constant_int64(value: int, n: int) -> pa.Array:
    """``n`` copies of ``value``, built straight from a buffer.

    Not pa.array/pa.scalar/pa.repeat: those probe for pandas and import it when
    it is installed (~200 ms and ~40 MB in every worker), and not take(): that
    needs pyarrow.compute (~30 ms, ~15 MB). int64 is little-endian in Arrow, as
    on every platform we run on.
    """
    data = pa.py_buffer(array.array("q", [value]) * n)
    return pa.Array.from_buffers(pa.int64(), n, [None, data])
