"""Row groups encoded apart and joined into one file (``_stitch``, ``_parallel_parquet``).

The joined file must be the file ``pq.ParquetWriter`` writes for the same row
groups, byte for byte, and read back the same in pyarrow, DuckDB and polars.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from casparian_trio.sinks import _parallel_parquet, _stitch
from casparian_trio.sinks import _thrift_compact as tc
from casparian_trio.sinks._parallel_parquet import ParallelParquetWriter, encode_part


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
    return _stitch.MAGIC + b"".join(bytes(p.data) for p in parts) + _stitch.join_footer(parts)


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

    def full(*_args: object) -> _stitch.Part:
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
