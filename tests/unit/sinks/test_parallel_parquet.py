"""Row groups encoded apart and joined into one file (``_stitch``, ``_parallel_parquet``).

The joined file must be the file ``pq.ParquetWriter`` writes for the same row
groups, byte for byte, and read back the same in pyarrow, DuckDB and polars.
"""

from __future__ import annotations

import array
import datetime as dt
import decimal
import io
import math
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from casparian_trio.sinks import _parallel_parquet, _stitch
from casparian_trio.sinks import _thrift_compact as tc
from casparian_trio.sinks._parallel_parquet import ParallelParquetWriter, encode_part, no_rows


def varied(n: int) -> pa.Table:
    """Every kind of column a footer describes differently: nested, logical types, nulls."""
    ids = list(range(n))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "small": pa.array([i % 7 for i in ids], pa.int8()),
            "u": pa.array([i * 3 for i in ids], pa.uint32()),
            "f": pa.array([i / 3 if i % 5 else None for i in ids], pa.float64()),
            "s": pa.array([f"v{i % 13}" if i % 4 else None for i in ids], pa.string()),
            "big": pa.array([f"x{i}" for i in ids], pa.large_string()),
            "b": pa.array([i % 2 == 0 for i in ids]),
            "ts": pa.array(
                [dt.datetime(2026, 1, 1) + dt.timedelta(seconds=i) for i in ids],
                pa.timestamp("ms", tz="Europe/Paris"),
            ),
            "d": pa.array([dt.date(2026, 1, 1) + dt.timedelta(days=i % 400) for i in ids]),
            "dec": pa.array([decimal.Decimal(i) / 100 for i in ids], pa.decimal128(12, 2)),
            "cat": pa.array([("a", "b", "c")[i % 3] for i in ids]).dictionary_encode(),
            "lst": pa.array([[i, i + 1] if i % 3 else [] for i in ids], pa.list_(pa.int32())),
            "st": pa.array(
                [{"k": i, "t": str(i)} for i in ids],
                pa.struct([("k", pa.int64()), ("t", pa.string())]),
            ),
            "m": pa.array([[("a", i)] for i in ids], pa.map_(pa.string(), pa.int64())),
            "nothing": pa.nulls(n),
        }
    ).replace_schema_metadata({b"casparian.file_version_id": b"42"})


def sequential(groups: list[pa.Table], schema: pa.Schema, **kw: object) -> bytes:
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, schema, **kw) as writer:  # type: ignore[arg-type]
        for group in groups:
            writer.write_table(group, row_group_size=1 << 20)
    return bytes(sink.getvalue().to_pybytes())


def joined(groups: list[pa.Table], schema: pa.Schema) -> bytes:
    parts = [encode_part(g, schema) for g in groups]
    return (
        _stitch.MAGIC
        + b"".join(bytes(x) for p in parts for x in p.pieces)
        + _stitch.join_footer(parts)
    )


def footer_of(data: bytes) -> bytes:
    length = int.from_bytes(data[-8:-4], "little")
    return data[len(data) - 8 - length : -8]


@pytest.mark.parametrize("cuts", [[0, 100], [0, 1, 2, 50], [0, 33, 66, 99]])
def test_joined_parts_are_the_writers_file_byte_for_byte(cuts: list[int]) -> None:
    table = varied(100)
    groups = [table.slice(a, b - a) for a, b in zip(cuts, [*cuts[1:], 100], strict=True)]
    groups = [g for g in groups if g.num_rows]
    assert joined(groups, table.schema) == sequential(groups, table.schema)


def test_the_compact_codec_re_encodes_a_footer_exactly() -> None:
    data = sequential([varied(40)], varied(1).schema)
    footer = footer_of(data)
    fields, used = tc.decode_with_length(footer)
    assert used == len(footer)
    assert tc.encode(fields) == footer


def test_a_joined_file_reads_back_the_same_everywhere(tmp_path: Path) -> None:
    table = varied(300).drop_columns(["m", "nothing", "dec"])  # types polars maps differently
    path = tmp_path / "t.parquet"
    path.write_bytes(joined([table.slice(0, 120), table.slice(120)], table.schema))
    back = pq.read_table(path)
    assert back.equals(table)
    assert back.schema.metadata[b"casparian.file_version_id"] == b"42"
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == 300
    assert meta.num_row_groups == 2
    assert [meta.row_group(i).num_rows for i in range(2)] == [120, 180]
    duckdb = pytest.importorskip("duckdb")
    got = (
        duckdb.connect()
        .execute(f"SELECT count(*), sum(id), min(s), max(big) FROM '{path}'")
        .fetchone()
    )
    strings = [v for v in table.column("s").to_pylist() if v is not None]
    assert got == (300, sum(range(300)), min(strings), "x99")
    polars = pytest.importorskip("polars")
    frame = polars.read_parquet(path)
    assert frame.height == 300
    assert frame["id"].to_list() == list(range(300))
    assert frame["s"].to_list() == table.column("s").to_pylist()


def test_a_page_index_is_refused_not_mangled() -> None:
    data = sequential([varied(20)], varied(1).schema, write_page_index=True)
    with pytest.raises(_stitch.StitchError, match="page index"):
        _stitch.split(data)


def test_parts_of_different_schemas_are_refused() -> None:
    a = encode_part(pa.table({"x": [1]}), pa.schema([("x", pa.int64())]))
    b = encode_part(pa.table({"x": ["1"]}), pa.schema([("x", pa.string())]))
    with pytest.raises(_stitch.StitchError, match="differ"):
        _stitch.join_footer([a, b])


@pytest.mark.parametrize("garbage", [b"", b"PAR1", b"PAR1" + b"\0" * 8 + b"PAR1", b"x" * 40])
def test_not_a_parquet_file_is_a_stitch_error(garbage: bytes) -> None:
    with pytest.raises(_stitch.StitchError):
        _stitch.split(garbage)


def test_a_truncated_footer_is_a_stitch_error() -> None:
    data = sequential([varied(5)], varied(1).schema)
    footer = footer_of(data)
    broken = (
        b"PAR1"
        + footer[: len(footer) // 2]
        + len(footer[: len(footer) // 2]).to_bytes(4, "little")
        + b"PAR1"
    )
    with pytest.raises(_stitch.StitchError):
        _stitch.split(broken)


def test_background_parts_land_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_parallel_parquet, "INLINE_BYTES", 0)
    table = pa.table({"i": pa.array(range(10_000), pa.int64())})
    path = tmp_path / "o.parquet"
    writer = ParallelParquetWriter(path, table.schema, threads=3)
    for start in range(0, 10_000, 250):
        writer.write_table(table.slice(start, 250), background=True)
    writer.close()
    assert pq.read_table(path).column("i").to_pylist() == list(range(10_000))
    assert pq.ParquetFile(path).metadata.num_row_groups == 40
    assert writer.read_back_schema().equals(table.schema)


def test_big_parts_are_split_into_row_groups(tmp_path: Path) -> None:
    table = pa.table({"i": pa.array(range(1000), pa.int64())})
    path = tmp_path / "o.parquet"
    writer = ParallelParquetWriter(path, table.schema, row_group_rows=300)
    writer.write_table(table, background=True)
    writer.close()
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [300, 300, 300, 100]


def test_no_rows_is_a_file_with_the_schema(tmp_path: Path) -> None:
    schema = pa.schema([("a", pa.int32()), ("b", pa.string())], metadata={b"k": b"v"})
    path = tmp_path / "o.parquet"
    writer = ParallelParquetWriter(path, schema)
    writer.close()
    back = pq.read_table(path)
    assert back.num_rows == 0
    assert back.schema.equals(schema, check_metadata=True)
    assert path.read_bytes() == sequential([], schema)  # no row group, as ParquetWriter


def test_a_failed_encode_fails_the_writer_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an encode failed, no later call writes the parts after it or a footer."""
    monkeypatch.setattr(_parallel_parquet, "INLINE_BYTES", 0)
    schema = pa.schema([("i", pa.int64())])
    good = pa.table({"i": pa.array(range(1000), pa.int64())})
    bad = pa.table({"i": pa.array([0.5] * 1000, pa.float64())})  # not the file's schema
    path = tmp_path / "o.parquet"
    writer = ParallelParquetWriter(path, schema, threads=2)
    writer.write_table(good, background=True)

    def feed() -> None:  # the failure surfaces in one of these calls, depending on timing
        writer.write_table(bad, background=True)
        writer.write_table(good, background=True)
        writer.wait()

    with pytest.raises(ValueError, match="schema"):
        feed()
    for call in (writer.wait, writer.close, lambda: writer.write_table(good)):
        with pytest.raises(ValueError, match="schema"):
            call()
    writer.abort()
    with pytest.raises(pa.ArrowInvalid):
        pq.read_table(path)


def test_an_encoding_error_is_raised_and_abort_leaves_no_footer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_parallel_parquet, "INLINE_BYTES", 0)  # small parts in the background too
    table = pa.table({"i": pa.array(range(100), pa.int64())})
    path = tmp_path / "o.parquet"
    writer = ParallelParquetWriter(path, table.schema, threads=2)
    writer.write_table(table, background=True)

    def full(*_args: object, **_kw: object) -> _stitch.Part:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_parallel_parquet, "encode_part", full)

    def feed() -> None:  # raised by the submitting call or by wait(), depending on timing
        writer.write_table(table, background=True)
        writer.wait()

    with pytest.raises(OSError, match="No space left"):
        feed()
    writer.abort()
    writer.abort()  # idempotent
    with pytest.raises(pa.ArrowInvalid):
        pq.read_table(path)  # no footer: never a file that reads as complete
    with pytest.raises(OSError, match="No space left"):
        writer.write_table(table)  # failed for good, even after the abort


def test_a_joined_file_is_readable_from_a_buffer() -> None:
    table = varied(10)
    data = joined([table.slice(0, 5), table.slice(5)], table.schema)
    assert pq.read_table(io.BytesIO(data)).equals(table)


def test_a_small_file_starts_no_encoding_thread(tmp_path: Path) -> None:
    table = pa.table({"i": pa.array(range(50), pa.int64())})
    writer = ParallelParquetWriter(tmp_path / "o.parquet", table.schema)
    writer.write_table(table, background=True)
    assert writer._pool is None  # encoded in line: a small job's commit spawns nothing
    writer.close()
    assert pq.read_table(tmp_path / "o.parquet").equals(table)


# --- repeated columns: the lineage's chunks encoded once, set beside each group's own ---


def with_constants(table: pa.Table, job: int, label: str | None) -> pa.Table:
    """``table`` and two lineage-like columns holding one value each (a label may be null)."""
    n = table.num_rows
    text = pa.array([label] * n, pa.string()).dictionary_encode()
    return table.append_column("job", pa.array([job] * n, pa.int64())).append_column("label", text)


@pytest.mark.parametrize("last", [1, 2, 5])
def test_columns_set_beside_are_the_writers_file_byte_for_byte(last: int) -> None:
    table = varied(120)
    schema = table.schema
    first = table.num_columns - last
    template = _stitch.without_row_groups(encode_part(schema.empty_table(), schema))
    parts = [
        _stitch.beside(
            encode_part(g.select(range(first)), pa.schema(list(schema)[:first])),
            encode_part(g.select(range(first, g.num_columns)), pa.schema(list(schema)[first:])),
            template,
        )
        for g in (table.slice(0, 50), table.slice(50))
    ]
    data = (
        _stitch.MAGIC
        + b"".join(bytes(x) for p in parts for x in p.pieces)
        + _stitch.join_footer(parts)
    )
    assert data == sequential([table.slice(0, 50), table.slice(50)], schema)


def test_parts_of_different_rows_are_not_set_beside() -> None:
    table = varied(20)
    template = _stitch.without_row_groups(encode_part(table.schema.empty_table(), table.schema))
    left = encode_part(table.select([0]).slice(0, 10), pa.schema([table.schema.field(0)]))
    right = encode_part(table.select([1]).slice(0, 12), pa.schema([table.schema.field(1)]))
    with pytest.raises(_stitch.StitchError, match="same rows"):
        _stitch.beside(left, right, template)
    two = encode_part(table.select([1]), pa.schema([table.schema.field(1)]), row_group_rows=10)
    with pytest.raises(_stitch.StitchError, match="2 row groups"):
        _stitch.beside(left, two, template)


@pytest.mark.parametrize("label", ["sha256:ab", None])
def test_repeated_columns_are_encoded_once_and_the_file_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, label: str | None
) -> None:
    """Alike groups reuse one encoding of the constant columns; a group of other
    values or rows gets its own; the bytes are ParquetWriter's either way."""
    table = with_constants(varied(1000), 7, label)
    other = with_constants(varied(300), 8, label)  # same rows as a group, other values
    schema = table.schema
    groups = [
        table.slice(0, 300),
        table.slice(300, 300),
        other,
        table.slice(600, 300),
        table.slice(900),
    ]
    encoded: list[int] = []
    real = _parallel_parquet.encode_part

    def counting(part: pa.Table, part_schema: pa.Schema, *args: object, **kw: bool) -> _stitch.Part:
        if part_schema.names == ["job", "label"]:
            encoded.append(part.num_rows)
        return real(part, part_schema, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(_parallel_parquet, "encode_part", counting)
    monkeypatch.setattr(_parallel_parquet, "REPEAT_MIN_ROWS", 1)
    path = tmp_path / "o.parquet"
    writer = ParallelParquetWriter(path, schema, threads=2, repeated_columns=2)
    for group in groups:
        writer.write_table(group, background=True)
    writer.close()
    assert path.read_bytes() == sequential(groups, schema)
    # small parts encode in line, in order: job 7's 300 rows, reused once; job 8's
    # (the same rows, other values); job 7's again (the one kept per row count was 8's); 100
    assert encoded == [300, 300, 300, 100]
    back = pq.read_table(path)
    assert back.column("job").to_pylist() == [7] * 600 + [8] * 300 + [7] * 400


def test_repeated_columns_with_a_dictionary_choice_per_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_parallel_parquet, "REPEAT_MIN_ROWS", 1)
    table = with_constants(varied(400), 3, "v1")
    chosen = ["id", "s", "label"]  # some plain columns on each side
    path = tmp_path / "o.parquet"
    writer = ParallelParquetWriter(
        path, table.schema, use_dictionary=chosen, repeated_columns=2, threads=1
    )
    for start in range(0, 400, 100):
        writer.write_table(table.slice(start, 100))
    writer.close()
    expected = sequential(
        [table.slice(s, 100) for s in range(0, 400, 100)], table.schema, use_dictionary=chosen
    )
    assert path.read_bytes() == expected


def test_a_small_part_is_not_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under REPEAT_MIN_ROWS the repeated columns encode with the rest: no template, no split."""
    made: list[int] = []
    real = _parallel_parquet._split_schema

    def counting(*args: Any) -> Any:
        made.append(1)
        return real(*args)

    monkeypatch.setattr(_parallel_parquet, "_split_schema", counting)
    table = with_constants(varied(50), 1, "v")
    writer = ParallelParquetWriter(tmp_path / "o.parquet", table.schema, repeated_columns=2)
    writer.write_table(table)
    writer.close()
    assert made == []
    assert (tmp_path / "o.parquet").read_bytes() == sequential([table], table.schema)
    monkeypatch.setattr(_parallel_parquet, "REPEAT_MIN_ROWS", 10)
    writer = ParallelParquetWriter(tmp_path / "p.parquet", table.schema, repeated_columns=2)
    writer.write_table(table)
    writer.write_table(table)
    writer.close()
    assert made == [1]  # once per writer, for its first big enough part
    assert (tmp_path / "p.parquet").read_bytes() == sequential([table, table], table.schema)


def test_a_file_of_one_part_keeps_pyarrows_footer_undecoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small file's job never decodes its footer in Python (it cost ~2 ms of ~7)."""

    def refuse(_data: object) -> object:
        raise AssertionError("the footer was decoded")

    monkeypatch.setattr(tc, "decode", refuse)
    table = varied(30)
    writer = ParallelParquetWriter(tmp_path / "o.parquet", table.schema)
    writer.write_table(table, background=True)  # small: encoded in line
    writer.close()
    assert (tmp_path / "o.parquet").read_bytes() == sequential([table], table.schema)
    assert writer.read_back_schema().equals(table.schema)


def test_a_part_kept_undecoded_joins_with_later_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_parallel_parquet, "INLINE_BYTES", 2_000)
    table = varied(600)
    groups = [table.slice(0, 10), table.slice(10, 290), table.slice(300)]  # small first: in line
    writer = ParallelParquetWriter(tmp_path / "o.parquet", table.schema, threads=2)
    for group in groups:
        writer.write_table(group, background=True)
    assert writer._pool is not None  # the later parts went to the encoding threads
    writer.close()
    assert (tmp_path / "o.parquet").read_bytes() == sequential(groups, table.schema)


def test_a_repeated_float_column_is_never_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Table.equals takes -0.0 for 0.0: a float column is encoded for each group."""
    monkeypatch.setattr(_parallel_parquet, "REPEAT_MIN_ROWS", 1)
    groups = [
        pa.table({"a": pa.array(range(10), pa.int64()), "f": pa.array([z] * 10, pa.float64())})
        for z in (0.0, -0.0)
    ]
    path = tmp_path / "o.parquet"
    writer = ParallelParquetWriter(path, groups[0].schema, repeated_columns=1)
    for group in groups:
        writer.write_table(group)
    writer.close()
    assert path.read_bytes() == sequential(groups, groups[0].schema)
    signs = [math.copysign(1.0, v) for v in pq.read_table(path).column("f").to_pylist()]
    assert signs == [1.0] * 10 + [-1.0] * 10


def test_a_split_part_keeps_the_writers_row_group_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part of more rows than pyarrow's default group, under the writer's own limit."""
    monkeypatch.setattr(_parallel_parquet, "REPEAT_MIN_ROWS", 1)
    n = (1 << 20) + 10
    constant = pa.py_buffer(array.array("q", [7]) * n)
    table = pa.table(
        {
            "i": pa.array(range(n), pa.int64()),
            "job": pa.Array.from_buffers(pa.int64(), n, [None, constant]),
        }
    )
    path = tmp_path / "o.parquet"
    writer = ParallelParquetWriter(path, table.schema, row_group_rows=n, repeated_columns=1)
    writer.write_table(table)
    writer.close()
    assert pq.ParquetFile(path).metadata.num_row_groups == 1
    assert pq.read_table(path).equals(table)


def test_a_nested_leaf_in_the_dictionary_choice_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_parallel_parquet, "REPEAT_MIN_ROWS", 1)
    table = varied(60).select(["id", "s", "st"])
    chosen = ["s", "st.t"]  # a leaf of the repeated struct column
    path = tmp_path / "o.parquet"
    writer = ParallelParquetWriter(path, table.schema, use_dictionary=chosen, repeated_columns=1)
    writer.write_table(table.slice(0, 30))
    writer.write_table(table.slice(30))
    writer.close()
    groups = [table.slice(0, 30), table.slice(30)]
    assert path.read_bytes() == sequential(groups, table.schema, use_dictionary=chosen)


def test_groups_encoded_at_once_encode_their_repeated_columns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file's first groups start on two threads together: one encodes the
    lineage-like columns, the other waits for that encoding and reuses it."""
    table = with_constants(varied(600), 7, "sha256:ab")
    schema = table.schema
    groups = [table.slice(0, 300), table.slice(300)]
    encoded: list[int] = []
    real = _parallel_parquet.encode_part

    def slow_repeat(
        part: pa.Table, part_schema: pa.Schema, *args: object, **kw: bool
    ) -> _stitch.Part:
        if part_schema.names == ["job", "label"]:
            encoded.append(part.num_rows)
            time.sleep(0.3)  # the other thread is sure to want it meanwhile
        return real(part, part_schema, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(_parallel_parquet, "encode_part", slow_repeat)
    monkeypatch.setattr(_parallel_parquet, "REPEAT_MIN_ROWS", 1)
    monkeypatch.setattr(_parallel_parquet, "INLINE_BYTES", 0)  # both groups on the pool
    path = tmp_path / "o.parquet"
    writer = ParallelParquetWriter(path, schema, threads=2, repeated_columns=2)
    for group in groups:
        writer.write_table(group, background=True)
    writer.close()
    assert encoded == [300]
    assert path.read_bytes() == sequential(groups, schema)


def test_columns_set_beside_are_not_copied() -> None:
    """``beside`` keeps both parts' bytes as they are: the file gets them one after the other."""
    table = varied(40)
    schema = table.schema
    template = _stitch.without_row_groups(encode_part(no_rows(schema), schema))
    left = encode_part(table.select([0]), pa.schema([schema.field(0)]))
    right = encode_part(table.select(range(1, table.num_columns)), pa.schema(list(schema)[1:]))
    both = _stitch.beside(left, right, template)
    assert both.pieces == (*left.pieces, *right.pieces)
    assert all(
        a.obj is b.obj for a, b in zip(both.pieces, (*left.pieces, *right.pieces), strict=True)
    )
    assert both.size == left.size + right.size
