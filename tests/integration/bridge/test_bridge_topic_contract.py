"""Topics are tables: real guests, real Parquet and SQLite, read back with pyarrow, DuckDB, polars."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.dataset as ds
import pytest
import trio
from bridge_helpers import HANG_GUARD_S, JobEnv, make_dispatch

from casparian_trio.protocol.messages import Conclude, SinkConfig

pytestmark = pytest.mark.slow

CSV_PLUGIN = textwrap.dedent(
    """
    import pyarrow.csv as pacsv
    class Handler:
        def execute(self, file_path):
            yield pacsv.read_csv(file_path)
    """
)


async def _run(env: JobEnv, job_id: int, path: Path, **kw: object) -> Conclude:
    with trio.fail_after(HANG_GUARD_S):
        return await env.executor.run(job_id, make_dispatch(CSV_PLUGIN, path, **kw))


def _read_everywhere(folder: Path) -> tuple[int, int, int]:
    """Rows read by one glob in pyarrow.dataset, DuckDB and polars (each must accept it)."""
    glob = str(folder / "*.parquet")
    arrow = ds.dataset(str(folder), format="parquet").to_table().num_rows
    ((duck,),) = duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall()
    polars = pl.scan_parquet(glob).select(pl.len()).collect().item()
    return arrow, duck, polars


async def test_int_file_then_text_file_share_one_schema_and_abc_is_quarantined(
    job_env: JobEnv, tmp_path: Path
) -> None:
    ints, text = tmp_path / "a.csv", tmp_path / "b.csv"
    ints.write_text("id,val\n1,10\n2,20\n")
    text.write_text("id,val\n" + "".join(f"{i},{i}\n" for i in range(3, 23)) + "23,12\n24,abc\n")
    assert (await _run(job_env, 1, ints)).status == "SUCCESS"
    second = await _run(job_env, 2, text)
    assert second.status == "SUCCESS", second.error_message
    assert second.metrics["rows_quarantined"] == 1
    folder = job_env.output / "out"
    assert _read_everywhere(folder) == (23, 23, 23)  # 24 rows, 1 quarantined
    table = ds.dataset(str(folder), format="parquet").to_table()
    assert str(table.schema.field("val").type) == "int64"
    assert 12 in table.column("val").to_pylist()
    quarantine = duckdb.sql(
        f'SELECT "row", "column", raw_value, _cf_job_id '
        f"FROM read_parquet('{job_env.output / 'out_quarantine'}/*.parquet')"
    ).fetchall()
    assert quarantine == [(22, "val", "abc", 2)]


async def test_two_first_jobs_at_once_still_share_one_schema(
    job_env: JobEnv, tmp_path: Path
) -> None:
    ints, text = tmp_path / "a.csv", tmp_path / "b.csv"
    ints.write_text("id,val\n" + "".join(f"{i},{i}\n" for i in range(50)))
    text.write_text("id,val\n" + "".join(f"{i},{i}\n" for i in range(50, 99)) + "99,abc\n")
    receipts: list[Conclude] = []

    async def run(job_id: int, path: Path) -> None:
        receipts.append(await _run(job_env, job_id, path))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, 1, ints)
        nursery.start_soon(run, 2, text)
    assert [r.status for r in receipts] == ["SUCCESS", "SUCCESS"], receipts
    assert _read_everywhere(job_env.output / "out")[0] in (99, 100)  # "abc" quarantined or text
    assert (
        len({str(ds.dataset(str(f)).schema) for f in (job_env.output / "out").glob("*.parquet")})
        == 1
    )


async def test_all_null_first_then_strings_completes_typed_string(job_env: JobEnv) -> None:
    source = """
    import pyarrow as pa
    class Handler:
        def execute(self, file_path):
            yield pa.table({"id": [1, 2], "note": pa.nulls(2)})
            yield pa.table({"id": [3], "note": ["late text"]})
    """
    with trio.fail_after(HANG_GUARD_S):
        receipt = await job_env.executor.run(3, make_dispatch(textwrap.dedent(source)))
    assert receipt.status == "SUCCESS", receipt.error_message
    table = ds.dataset(str(job_env.output / "out"), format="parquet").to_table()
    assert str(table.schema.field("note").type) == "string"
    assert table.column("note").to_pylist() == [None, None, "late text"]


async def test_naive_then_aware_timestamps_fail_naming_the_column(job_env: JobEnv) -> None:
    source = """
    import datetime as dt
    import pyarrow as pa
    class Handler:
        def execute(self, file_path):
            yield pa.table({"at": pa.array([dt.datetime(2026, 1, 1, 12)], pa.timestamp("us"))})
            aware = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
            yield pa.table({"at": pa.array([aware], pa.timestamp("us", tz="+02:00"))})
    """
    with trio.fail_after(HANG_GUARD_S):
        receipt = await job_env.executor.run(4, make_dispatch(textwrap.dedent(source)))
    assert receipt.status == "FAILED"
    assert "column 'at': time-zone-aware" in (receipt.error_message or "")
    job_env.assert_nothing_left()


async def test_three_bad_values_in_ten_thousand_are_quarantined(
    job_env: JobEnv, tmp_path: Path
) -> None:
    values = [str(i) for i in range(10_000)]
    for i in (7, 4_000, 9_998):
        values[i] = "n/a" if i != 4_000 else "12x"
    path = tmp_path / "big.csv"
    path.write_text("val\n" + "\n".join(values) + "\n")
    sink = SinkConfig("output", "parquet://readings", schema_def='{"val": "int64"}')
    receipt = await _run(job_env, 5, path, sinks=(sink,))
    assert receipt.status == "SUCCESS", receipt.error_message
    assert _read_everywhere(job_env.output / "readings") == (9_997, 9_997, 9_997)
    bad = duckdb.sql(
        f"SELECT \"column\", raw_value FROM read_parquet('{job_env.output}/readings_quarantine/*.parquet') "
        'ORDER BY "row"'
    ).fetchall()
    assert bad == [("val", "n/a"), ("val", "12x"), ("val", "n/a")]


async def test_sqlite_identifiers_are_quoted_and_case_collisions_named(job_env: JobEnv) -> None:
    quoted = """
    import pyarrow as pa
    class Handler:
        def execute(self, file_path):
            yield pa.table({'Height "in"': [1.5, 2.5], "name": ["a", "b"]})
    """
    sink = (SinkConfig("output", "sqlite://db.sqlite/people"),)
    with trio.fail_after(HANG_GUARD_S):
        ok = await job_env.executor.run(6, make_dispatch(textwrap.dedent(quoted), sinks=sink))
    assert ok.status == "SUCCESS", ok.error_message
    with sqlite3.connect(job_env.output / "db.sqlite") as conn:
        assert conn.execute('SELECT "Height ""in""" FROM people ORDER BY 1').fetchall() == [
            (1.5,),
            (2.5,),
        ]
    clash = """
    import pyarrow as pa
    class Handler:
        def execute(self, file_path):
            yield pa.table({"Value": [1], "VALUE": [2]})
    """
    sink = (SinkConfig("output", "sqlite://db.sqlite/clash"),)
    with trio.fail_after(HANG_GUARD_S):
        bad = await job_env.executor.run(7, make_dispatch(textwrap.dedent(clash), sinks=sink))
    assert bad.status == "FAILED"
    assert "columns 'Value' and 'VALUE' differ only in case" in (bad.error_message or "")


async def test_repeated_and_empty_csv_headers_are_renamed_not_lost(
    job_env: JobEnv, tmp_path: Path
) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("a,a,,x\n1,2,3,4\n")
    receipt = await _run(job_env, 8, path)
    assert receipt.status == "SUCCESS", receipt.error_message
    table = ds.dataset(str(job_env.output / "out"), format="parquet").to_table()
    assert table.column_names[:4] == ["a", "a_1", "column2", "x"]
    assert table.to_pylist()[0]["a_1"] == 2


async def test_a_zero_row_job_records_its_schema(job_env: JobEnv, tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("id,name\n")
    receipt = await _run(job_env, 9, path)
    assert receipt.status == "SUCCESS", receipt.error_message
    [written] = (job_env.output / "out").glob("*.parquet")
    assert ds.dataset(str(written)).schema.names[:2] == ["id", "name"]
    assert (job_env.output / "out" / "_output.contract.json").exists()


async def test_a_null_contract_column_is_widened_by_a_later_job(job_env: JobEnv) -> None:
    first = """
    import pyarrow as pa
    class Handler:
        def execute(self, file_path):
            yield pa.table({"id": [1, 2], "note": pa.nulls(2)})
    """
    later = """
    import pyarrow as pa
    class Handler:
        def execute(self, file_path):
            yield pa.table({"id": [3], "note": ["text at last"]})
    """
    with trio.fail_after(HANG_GUARD_S):
        for job_id, source in ((11, first), (12, later)):
            receipt = await job_env.executor.run(job_id, make_dispatch(textwrap.dedent(source)))
            assert receipt.status == "SUCCESS", receipt.error_message
    folder = job_env.output / "out"
    assert _read_everywhere(folder) == (3, 3, 3)
    schemas = {str(ds.dataset(str(f)).schema.field("note").type) for f in folder.glob("*.parquet")}
    assert schemas == {"string"}  # the first job's file was rewritten to contract version 2
    assert '"version": 2' in (folder / "_output.contract.json").read_text()
