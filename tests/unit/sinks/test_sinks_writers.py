"""Parquet and SQLite sinks: staging, promotion, modes, row groups (blocking API, no Trio)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from casparian_trio.errors import SinkError
from casparian_trio.protocol.messages import SinkConfig
from casparian_trio.sinks import _parallel_parquet, open_sinks, parquet


def sink_for(tmp_path: Path, uri: str, job_id: int = 1, mode: str = "append"):  # type: ignore[no-untyped-def]
    cfg = SinkConfig("t", uri, mode)
    return open_sinks([cfg], output_root=tmp_path, job_id=job_id, file_version_id=3)["t"]


def batches(n: int, size: int) -> list[pa.RecordBatch]:
    return [
        pa.record_batch({"i": pa.array(range(k * size, (k + 1) * size), pa.int64())})
        for k in range(n)
    ]


def test_parquet_staging_then_promote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 1000)
    sink = sink_for(tmp_path, "parquet://ds")
    for b in batches(25, 100):
        sink.write(b)
    staged = list((tmp_path / "ds").iterdir())
    assert [p.name.endswith(".staging") and p.name.startswith(".") for p in staged] == [True]
    artifact = sink.commit()
    assert artifact is not None
    assert artifact.rows == 2500
    meta = pq.ParquetFile(artifact.uri).metadata
    assert meta.num_row_groups == 3  # coalesced: 1000 + 1000 + 500, not 25 groups
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == [
        "_t.contract.json",  # the topic's schema contract (pyarrow.dataset skips "_" files)
        "t.job-1.parquet",
    ]


def test_parquet_groups_after_a_bytes_cut_first_take_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes cut the first group (here at its first batch); later groups take its
    row count whatever the batches' sizes, so their lineage is encoded once."""
    monkeypatch.setattr(parquet, "ROW_GROUP_BYTES", 1)
    monkeypatch.setattr(parquet, "WIDER_GROUP_BYTES", 1 << 30)
    monkeypatch.setattr(_parallel_parquet, "REPEAT_MIN_ROWS", 100)
    sink = sink_for(tmp_path, "parquet://ds")
    sizes = [250] + [100] * 21
    start = 0
    for size in sizes:
        sink.write(pa.record_batch({"i": pa.array(range(start, start + size), pa.int64())}))
        start += size
    artifact = sink.commit()
    assert artifact is not None
    meta = pq.ParquetFile(artifact.uri).metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [250] * 9 + [100]
    back = pq.read_table(artifact.uri)
    assert back.column("i").to_pylist() == list(range(start))
    assert set(back.column("_cf_job_id").to_pylist()) == {1}
    assert set(back.column("_cf_file_version_id").to_pylist()) == {3}


def test_a_first_group_of_a_few_wide_rows_does_not_fix_tiny_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A few huge rows first (bytes cut the group at 10 rows): the narrow rows
    after them are grouped by bytes as before, not 10 rows at a time."""
    monkeypatch.setattr(parquet, "ROW_GROUP_BYTES", 10_000)
    sink = sink_for(tmp_path, "parquet://ds")
    sink.write(pa.record_batch({"s": pa.array(["w" * 2_000] * 10)}))  # 20 kB: cut at 10 rows
    for _ in range(5):
        sink.write(pa.record_batch({"s": pa.array(["x"] * 1_000)}))
    artifact = sink.commit()
    assert artifact is not None
    meta = pq.ParquetFile(artifact.uri).metadata
    sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    assert sum(sizes) == 5_010
    assert sizes[0] == 10
    assert len(sizes) < 60  # ~30 bytes a narrow row: ~300 rows a group, not 500 groups of 10


def test_parquet_abort_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 10)
    sink = sink_for(tmp_path, "parquet://ds")
    for b in batches(3, 10):
        sink.write(b)
    sink.abort()
    sink.abort()  # idempotent
    assert list((tmp_path / "ds").iterdir()) == []


def test_parquet_full_groups_encode_beside_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Full row groups go to the encoding threads; every row lands once, in order."""
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 100)
    monkeypatch.setattr(_parallel_parquet, "INLINE_BYTES", 0)
    sink = sink_for(tmp_path, "parquet://ds")
    for b in batches(37, 30):  # 1,110 rows: 11 full groups in the background, 1 at commit
        sink.write(b)
    artifact = sink.commit()
    assert artifact is not None
    assert artifact.rows == 1110
    table = pq.read_table(artifact.uri)
    assert table.column("i").to_pylist() == list(range(1110))
    assert pq.ParquetFile(artifact.uri).metadata.num_row_groups == 12


def test_parquet_encoder_failure_fails_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row group the encoder cannot write is a SinkError naming the topic; nothing is promoted."""
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 10)
    monkeypatch.setattr(_parallel_parquet, "INLINE_BYTES", 0)  # groups go to the encoding threads
    sink = sink_for(tmp_path, "parquet://ds")
    sink.write(batches(1, 10)[0])  # opens the writer, hands the group to the encoder
    assert sink._writer is not None
    sink._wait_encoded()
    real = _parallel_parquet.encode_part

    def broken(table: pa.Table, *args: Any, **kw: Any) -> object:
        if table.num_rows:
            raise OSError(28, "No space left on device")
        return real(table, *args, **kw)

    monkeypatch.setattr(_parallel_parquet, "encode_part", broken)
    sink.write(batches(1, 10)[0])  # fails on an encoding thread: raised at commit
    with pytest.raises(SinkError, match=r"topic 't'.*writing failed.*No space left"):
        sink.commit()
    sink.abort()
    assert not list((tmp_path / "ds").glob("*.parquet"))
    assert not list((tmp_path / "ds").glob(".*.staging"))


def test_parquet_abort_while_a_group_encodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 50)
    monkeypatch.setattr(_parallel_parquet, "INLINE_BYTES", 0)
    sink = sink_for(tmp_path, "parquet://ds")
    for b in batches(4, 50):
        sink.write(b)
    sink.abort()  # waits for the group in flight, then removes the staged file
    assert sink._writer is None
    assert list((tmp_path / "ds").iterdir()) == []


def test_parquet_error_mode(tmp_path: Path) -> None:
    first = sink_for(tmp_path, "parquet://ds", job_id=1)
    first.write(batches(1, 5)[0])
    first.commit()
    with pytest.raises(SinkError, match="mode 'error'"):
        sink_for(tmp_path, "parquet://ds", job_id=2, mode="error").check()
    sink_for(tmp_path, "parquet://ds", job_id=1, mode="error").check()  # its own re-run is fine


def test_sqlite_modes(tmp_path: Path) -> None:
    def run(job_id: int, mode: str, rows: int) -> None:
        sink = sink_for(tmp_path, "sqlite://db.sqlite/t_rows", job_id=job_id, mode=mode)
        sink.check()
        sink.write(batches(1, rows)[0])
        sink.commit()

    def counts() -> dict[int, int]:
        conn = sqlite3.connect(tmp_path / "db.sqlite")
        try:
            return dict(
                conn.execute("SELECT _cf_job_id, count(*) FROM t_rows GROUP BY 1").fetchall()
            )
        finally:
            conn.close()

    run(1, "append", 5)
    run(2, "append", 3)
    run(2, "append", 4)  # re-run replaces its own rows
    assert counts() == {1: 5, 2: 4}
    run(3, "replace", 2)
    assert counts() == {3: 2}
    with pytest.raises(SinkError, match="mode 'error'"):
        run(4, "error", 1)


def test_sqlite_abort_drops_stage(tmp_path: Path) -> None:
    sink = sink_for(tmp_path, "sqlite://db.sqlite/t_rows")
    sink.write(batches(1, 5)[0])
    sink.abort()
    conn = sqlite3.connect(tmp_path / "db.sqlite")
    try:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
    finally:
        conn.close()


@pytest.mark.parametrize("seed", range(20))
def test_distinct_count_is_numpys_unique_count(seed: int) -> None:
    """The sort-based count decides dictionaries as ``len(np.unique(...))`` did, NaNs as one."""
    import numpy as np

    rng = np.random.default_rng(seed)
    pools = [
        rng.integers(-3, 3, 200),
        rng.integers(0, 1 << 62, 200),
        rng.choice([0.0, -0.0, 1.5, np.nan, np.inf, -np.inf], 200),
        rng.normal(size=200),
        rng.integers(0, 5, 200).astype(np.uint8),
        np.array([np.nan] * 7),
        np.array([], dtype=np.int64),
        np.sort(rng.integers(0, 50, 200)),  # sorted with repeats: not monotonic strictly
        np.arange(200) * 3,  # strictly increasing
        np.arange(200.0)[::-1],  # strictly decreasing
        np.append(np.arange(199.0), np.nan),  # increasing, then a NaN
        np.array([1, 2, 3, 3], dtype=np.int64),
    ]
    for values in pools:
        for n in (0, 1, 2, 17, len(values)):
            sample = values[:n]
            assert parquet._distinct_count(sample, np) == len(np.unique(sample))


def test_dictionary_off_only_for_unique_numeric_columns(tmp_path: Path) -> None:
    n = 50_000
    table = pa.table(
        {
            "id": pa.array(range(n), pa.int64()),  # unique: no dictionary
            "cyc": pa.array([i % 5000 for i in range(n)], pa.int64()),  # repeats: keep
            "name": pa.array([f"n{i}" for i in range(n)]),  # strings: pyarrow's default
            "_cf_job_id": pa.array([1] * n, pa.int64()),
        }
    )
    assert parquet.dictionary_columns(table) == ["cyc", "name", "_cf_job_id"]
    assert parquet.dictionary_columns(table.slice(0, 100)) is True  # too small to judge
    sink = sink_for(tmp_path, "parquet://ds")
    for b in table.drop_columns(["_cf_job_id"]).to_batches(max_chunksize=10_000):
        sink.write(b)
    artifact = sink.commit()
    assert artifact is not None
    meta = pq.ParquetFile(artifact.uri).metadata.row_group(0)
    dict_pages = {
        meta.column(i).path_in_schema: meta.column(i).has_dictionary_page for i in range(4)
    }
    assert dict_pages == {"id": False, "cyc": True, "name": True, "_cf_job_id": True}
    assert pq.read_table(artifact.uri).column("id").to_pylist() == list(range(n))


def test_parquet_narrow_rows_never_pile_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of more rows than a group: whole groups go, only the remainder stays."""
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 10)
    sink = sink_for(tmp_path, "parquet://ds")
    for b in batches(10, 43):
        sink.write(b)
        assert sink._buffer_rows < parquet.ROW_GROUP_ROWS
    artifact = sink.commit()
    assert artifact is not None
    assert pq.read_table(artifact.uri).column("i").to_pylist() == list(range(430))
    meta = pq.ParquetFile(artifact.uri).metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [10] * 43


NO_PANDAS = """
import array, sys
from pathlib import Path
import pyarrow as pa
from casparian_trio.protocol.messages import SinkConfig
from casparian_trio.sinks import open_sinks

def ints(values):  # from a buffer: pa.array itself would import pandas
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(array.array("q", values))])

root = Path(sys.argv[1])
configs = [SinkConfig("rows", "parquet://rows"), SinkConfig("none", "parquet://none")]
sinks = open_sinks(configs, output_root=root, job_id=1, file_version_id=1)
sinks["rows"].write(pa.RecordBatch.from_arrays([ints(list(range(5000)))], names=["i"]))
sinks["none"].write(pa.RecordBatch.from_arrays([ints([])], names=["i"]))  # a header-only file
for sink in sinks.values():
    sink.commit()

# Invalid values: conformed, split out, quarantined (a declared int64 column gets text).
from casparian_trio.sinks._schema import Conformer

def texts(values):
    data = "".join(values).encode()
    ends = [0]
    for v in values:
        ends.append(ends[-1] + len(v.encode()))
    buffers = [None, pa.py_buffer(array.array("i", ends)), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.string(), len(values), buffers)

conformer = Conformer("t", 1, 1, declared=pa.schema([("val", pa.int64())]))
for values in (["1", "x", " 3 ", ""], ["4", "5.5", "y"]):
    out = conformer.conform(pa.RecordBatch.from_arrays([texts(values)], names=["val"]))
    assert out.quarantine is not None and out.quarantine.num_rows >= 1, out
print("pandas" in sys.modules)
"""


def test_a_parquet_job_never_imports_pandas(tmp_path: Path) -> None:
    """pandas is not the host's: importing it costs every worker ~0.3 s and ~40 MB
    (pyarrow's ``Schema.empty_table``, ``pa.array`` and ``pa.scalar`` import it when
    installed). Clean rows, a header-only topic, and invalid values quarantined."""
    pytest.importorskip("pandas", reason="only meaningful where pandas is installed")
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", NO_PANDAS, str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    assert pq.read_table(tmp_path / "none").num_rows == 0
