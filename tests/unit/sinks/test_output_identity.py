"""Output identity is (topic, source file): replace, never duplicate; stale jobs lose (issue 11)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from casparian_trio.errors import OutputSuperseded
from casparian_trio.protocol.messages import SinkConfig
from casparian_trio.sinks import Sink, open_sinks
from casparian_trio.sinks.parquet import promoted_version

LOCATION = 7  # the source file's location id


def sinks(
    tmp_path: Path,
    uri: str,
    *,
    job_id: int,
    version: int,
    replaces: tuple[int, ...] = (),
    schema: str | None = None,
) -> Sink:
    cfg = SinkConfig("t", uri, "append", schema)
    return open_sinks(
        [cfg],
        output_root=tmp_path,
        job_id=job_id,
        file_version_id=version,
        source_file_id=LOCATION,
        plugin="p",
        replaces_jobs=replaces,
    )["t"]


def run(sink: Sink, *vals: object) -> None:
    sink.prepare()
    if vals:
        text = any(isinstance(v, str) for v in vals)  # a bad value: the column arrives as text
        sink.write(pa.record_batch({"v": pa.array([str(v) if text else v for v in vals])}))
    sink.commit()


def values(folder: Path) -> list[object]:
    if not list(folder.glob("*.parquet")):
        return []
    return sorted(ds.dataset(folder, format="parquet").to_table().column("v").to_pylist())


def test_a_newer_version_replaces_the_file_output_in_one_file(tmp_path: Path) -> None:
    run(sinks(tmp_path, "parquet://ds", job_id=1, version=1), 1, 2)
    run(sinks(tmp_path, "parquet://ds", job_id=2, version=2, replaces=(1,)), 3)
    assert values(tmp_path / "ds") == [3]
    (only,) = (tmp_path / "ds").glob("*.parquet")
    assert only.name == f"t.src-{LOCATION}.p.parquet"
    assert promoted_version(only) == 2


def test_a_stale_job_cannot_overwrite_a_newer_version(tmp_path: Path) -> None:
    run(sinks(tmp_path, "parquet://ds", job_id=2, version=2, replaces=(1,)), 3)
    stale = sinks(tmp_path, "parquet://ds", job_id=1, version=1, replaces=(2,))
    with pytest.raises(OutputSuperseded, match="newer version"):
        run(stale, 1)
    assert values(tmp_path / "ds") == [3]
    assert not list((tmp_path / "ds").glob(".*staging"))  # nothing left behind


def test_a_version_without_rows_removes_the_earlier_rows_and_quarantine(tmp_path: Path) -> None:
    schema = '{"v": "int64"}'
    run(sinks(tmp_path, "parquet://ds", job_id=1, version=1, schema=schema), *range(20), "x")
    assert list((tmp_path / "ds_quarantine").glob("*.parquet"))
    run(sinks(tmp_path, "parquet://ds", job_id=2, version=2, replaces=(1,), schema=schema))
    assert values(tmp_path / "ds") == []
    assert list((tmp_path / "ds_quarantine").glob("*.parquet")) == []


def test_retract_removes_the_file_and_its_quarantine(tmp_path: Path) -> None:
    schema = '{"v": "int64"}'
    run(sinks(tmp_path, "parquet://ds", job_id=1, version=1, schema=schema), *range(20), "x")
    other = open_sinks(
        [SinkConfig("t", "parquet://ds")],
        output_root=tmp_path,
        job_id=9,
        file_version_id=5,
        source_file_id=LOCATION + 1,
        plugin="p",
    )["t"]
    run(other, 100)
    removed = sinks(tmp_path, "parquet://ds", job_id=3, version=1, replaces=(1,)).retract()
    assert removed == 2  # the file and its quarantine file
    assert values(tmp_path / "ds") == [100]  # another source file's rows stay
    assert list((tmp_path / "ds_quarantine").glob("*.parquet")) == []


def test_a_retraction_that_lost_the_race_to_a_newer_version_changes_nothing(
    tmp_path: Path,
) -> None:
    run(sinks(tmp_path, "parquet://ds", job_id=2, version=4), 1)
    assert sinks(tmp_path, "parquet://ds", job_id=3, version=3, replaces=(2,)).retract() == 0
    assert values(tmp_path / "ds") == [1]


def test_job_named_files_of_replaced_jobs_go_at_promotion(tmp_path: Path) -> None:
    legacy = open_sinks(
        [SinkConfig("t", "parquet://ds")], output_root=tmp_path, job_id=1, file_version_id=1
    )["t"]
    run(legacy, 1)
    assert [p.name for p in (tmp_path / "ds").glob("*.parquet")] == ["t.job-1.parquet"]
    run(sinks(tmp_path, "parquet://ds", job_id=2, version=2, replaces=(1,)), 2)
    assert values(tmp_path / "ds") == [2]


def test_sqlite_replaces_the_file_rows_in_one_transaction(tmp_path: Path) -> None:
    uri = "sqlite://db.sqlite/t_rows"
    run(sinks(tmp_path, uri, job_id=1, version=1), 1, 2)
    run(sinks(tmp_path, uri, job_id=2, version=2, replaces=(1,)), 3)
    conn = sqlite3.connect(tmp_path / "db.sqlite")
    assert conn.execute("SELECT v FROM t_rows").fetchall() == [(3,)]
    with pytest.raises(OutputSuperseded):
        run(sinks(tmp_path, uri, job_id=1, version=1, replaces=(2,)), 9)
    assert sinks(tmp_path, uri, job_id=3, version=2, replaces=(1, 2)).retract() == 1
    assert conn.execute("SELECT count(*) FROM t_rows").fetchone() == (0,)


def test_sqlite_a_job_that_turns_stale_during_its_run_adds_no_quarantine_rows(
    tmp_path: Path,
) -> None:
    uri, schema = "sqlite://db.sqlite/t_rows", '{"v": "int64"}'
    stale = sinks(tmp_path, uri, job_id=1, version=1, replaces=(2,), schema=schema)
    stale.prepare()  # the table is empty: not stale yet
    run(sinks(tmp_path, uri, job_id=2, version=2, replaces=(1,), schema=schema), 3)
    stale.write(pa.record_batch({"v": pa.array([str(v) for v in range(20)] + ["x"])}))
    with pytest.raises(OutputSuperseded):
        stale.commit()
    conn = sqlite3.connect(tmp_path / "db.sqlite")
    assert conn.execute("SELECT v FROM t_rows").fetchall() == [(3,)]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "t_rows_quarantine" in tables:
        assert conn.execute("SELECT count(*) FROM t_rows_quarantine").fetchone() == (0,)
