"""Sinks under concurrent promotion, and edge cases a review found."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from casparian_trio.errors import SinkError
from casparian_trio.protocol.messages import SinkConfig
from casparian_trio.sinks import open_sinks
from casparian_trio.sinks._schema import parse_schema_def


def sink(tmp_path: Path, uri: str, job_id: int, mode: str):  # type: ignore[no-untyped-def]
    return open_sinks(
        [SinkConfig("t", uri, mode)], output_root=tmp_path, job_id=job_id, file_version_id=1
    )["t"]


def batch(job_id: int) -> pa.RecordBatch:
    return pa.record_batch({"a": pa.array([job_id] * 3, pa.int64())})


def promote_together(sinks: list, outcomes: list) -> None:  # type: ignore[type-arg]
    """Commit all sinks at once from threads (as two workers would)."""
    barrier = threading.Barrier(len(sinks))

    def commit(s) -> None:  # type: ignore[no-untyped-def]
        barrier.wait()
        try:
            outcomes.append(s.commit())
        except SinkError as exc:
            s.abort()
            outcomes.append(exc)

    threads = [threading.Thread(target=commit, args=(s,)) for s in sinks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.mark.parametrize("round_", range(25))
def test_concurrent_replace_leaves_exactly_one_file(tmp_path: Path, round_: int) -> None:
    sinks = [sink(tmp_path, "parquet://ds", job_id, "replace") for job_id in (1, 2)]
    for job_id, s in zip((1, 2), sinks, strict=True):
        s.write(batch(job_id))
    outcomes: list[object] = []
    promote_together(sinks, outcomes)
    files = sorted(p.name for p in (tmp_path / "ds").glob("*.parquet"))
    assert len(files) == 1, files  # one of them won; never both deleted, never both kept


@pytest.mark.parametrize("round_", range(25))
def test_concurrent_error_mode_lets_exactly_one_job_through(tmp_path: Path, round_: int) -> None:
    sinks = [sink(tmp_path, "parquet://ds", job_id, "error") for job_id in (1, 2)]
    for job_id, s in zip((1, 2), sinks, strict=True):
        s.write(batch(job_id))
    outcomes: list[object] = []
    promote_together(sinks, outcomes)
    assert sum(isinstance(o, SinkError) for o in outcomes) == 1
    assert len(list((tmp_path / "ds").glob("*.parquet"))) == 1


def test_sqlite_first_job_without_rows_does_not_freeze_the_table(tmp_path: Path) -> None:
    empty = sink(tmp_path, "sqlite://out.db/t", 1, "append")
    assert empty.commit() is None
    full = sink(tmp_path, "sqlite://out.db/t", 2, "append")
    full.write(batch(2))
    full.commit()
    conn = sqlite3.connect(tmp_path / "out.db")
    assert conn.execute("SELECT count(*), min(a) FROM t").fetchone() == (3, 2)
    conn.close()


def test_schema_def_naming_lineage_columns_is_accepted() -> None:
    schema = parse_schema_def(
        '{"a": "int64", "_cf_job_id": "int64", "_cf_file_version_id": "int64"}', "t"
    )
    assert schema is not None
    assert schema.names == ["a"]  # the host adds lineage itself


def test_sqlite_value_out_of_range_is_a_clear_sink_error(tmp_path: Path) -> None:
    s = sink(tmp_path, "sqlite://out.db/t", 1, "append")
    with pytest.raises(SinkError, match=r"out\.db"):
        s.write(pa.record_batch({"a": pa.array([2**64 - 1], pa.uint64())}))
    s.abort()
