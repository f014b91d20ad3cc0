"""Jobs that succeed: plugin shapes, sinks, lineage, re-runs, the 2M-row CSV."""

from __future__ import annotations

import os
import sqlite3
import tempfile
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import trio
from bridge_helpers import HANG_GUARD_S, JobEnv, make_dispatch, plugin_source

from casparian_trio.bridge import BridgeExecutor
from casparian_trio.envs import EnvManager
from casparian_trio.protocol.messages import SinkConfig
from casparian_trio.sinks._schema import LINEAGE

pytestmark = pytest.mark.slow  # real guest processes


def write_csv(path: Path, rows: int) -> Path:
    ids = pa.array(range(rows), pa.int64())
    table = pa.table(
        {
            "id": ids,
            "name": pc.binary_join_element_wise(
                "item_", pc.cast(pc.bit_wise_and(ids, 1023), pa.string()), ""
            ),
            "value": pc.divide(pc.cast(pc.multiply(ids, 7919), pa.float64()), 13.0),
            "qty": pc.bit_wise_and(pc.multiply(ids, 31), 4095),
            "category": pc.choose(
                pc.cast(pc.bit_wise_and(ids, 3), pa.int8()),
                *[pa.scalar(c) for c in ("alpha", "beta", "gamma", "delta")],
            ),
        }
    )
    pacsv.write_csv(table, path)
    return path


async def test_seed_plugin_and_uri(job_env: JobEnv) -> None:
    sink = SinkConfig("output", "parquet://test_output.parquet", "append")
    with trio.fail_after(HANG_GUARD_S):
        receipt = await job_env.executor.run(
            1, make_dispatch(plugin_source("seed_plugin.py"), sinks=(sink,))
        )
    assert receipt.status == "SUCCESS", receipt.error_message
    (artifact,) = receipt.artifacts
    path = job_env.output / "test_output.parquet" / "output.job-1.parquet"
    assert artifact.uri == str(path)
    assert artifact.rows == 3
    table = pq.read_table(path)
    assert table.column_names == ["id", "value", *LINEAGE]
    assert table.column("_cf_job_id").to_pylist() == [1, 1, 1]
    assert table.column("_cf_file_version_id").to_pylist() == [7, 7, 7]
    assert receipt.metrics["rows"] == 3
    assert receipt.metrics["bytes"] == path.stat().st_size
    job_env.assert_nothing_left(failed=False)


async def test_rerun_replaces_and_lineage_is_host_owned(job_env: JobEnv) -> None:
    source = """
    import pyarrow as pa
    class Handler:
        def execute(self, file_path):
            yield pa.table({"a": [1, 2]})
    """
    dispatch = make_dispatch(textwrap.dedent(source))
    with trio.fail_after(HANG_GUARD_S):
        for _ in range(2):
            receipt = await job_env.executor.run(4, dispatch)
            assert receipt.status == "SUCCESS", receipt.error_message
    files = sorted(p.name for p in (job_env.output / "out").glob("*.parquet"))
    assert files == ["output.job-4.parquet"]
    table = pq.read_table(job_env.output / "out" / files[0])
    assert table.column("_cf_job_id").to_pylist() == [4, 4]


async def test_a_forged_lineage_column_fails_naming_it(job_env: JobEnv) -> None:
    source = """
    import pyarrow as pa
    class Handler:
        def execute(self, file_path):
            yield pa.table({"a": [1, 2], "_cf_job_id": [666, 666]})
    """
    with trio.fail_after(HANG_GUARD_S):
        receipt = await job_env.executor.run(5, make_dispatch(textwrap.dedent(source)))
    assert receipt.status == "FAILED"
    assert (receipt.error_message or "").startswith(
        "topic 'output': column '_cf_job_id' uses the reserved prefix '_cf_'"
    )
    job_env.assert_nothing_left()


async def test_modes_append_replace_error(job_env: JobEnv) -> None:
    source = textwrap.dedent(plugin_source("seed_plugin.py"))
    ex, out = job_env.executor, job_env.output / "out"
    with trio.fail_after(HANG_GUARD_S):
        for job_id in (1, 2):
            assert (await ex.run(job_id, make_dispatch(source))).status == "SUCCESS"
        assert len(list(out.glob("*.parquet"))) == 2
        replace = SinkConfig("output", "parquet://out", "replace")
        assert (await ex.run(3, make_dispatch(source, sinks=(replace,)))).status == "SUCCESS"
        assert [p.name for p in out.glob("*.parquet")] == ["output.job-3.parquet"]
        error = SinkConfig("output", "parquet://out", "error")
        receipt = await ex.run(4, make_dispatch(source, sinks=(error,)))
        assert receipt.status == "FAILED"
        assert "mode 'error'" in (receipt.error_message or "")
        assert (
            await ex.run(3, make_dispatch(source, sinks=(error,)))
        ).status == "SUCCESS"  # own re-run


async def test_configure_consume_multi_topic_and_sqlite(job_env: JobEnv, tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "in.csv", 10_000)
    sinks = (
        SinkConfig("big", "parquet://split"),
        SinkConfig(
            "small",
            "sqlite://db/out.sqlite/small_rows",
            schema_def='[{"name": "qty", "type": "int32"}]',
        ),
        SinkConfig("summary", "parquet://split"),
    )
    dispatch = make_dispatch(
        plugin_source("multi_topic.py"), csv, sinks=sinks, config={"threshold": 3000}
    )
    with trio.fail_after(HANG_GUARD_S):
        receipt = await job_env.executor.run(9, dispatch)
    assert receipt.status == "SUCCESS", receipt.error_message
    rows = {a.topic: a.rows for a in receipt.artifacts}
    expected_big = pc.sum(pc.greater(pacsv.read_csv(csv).column("value"), 3000)).as_py()
    assert rows == {"big": expected_big, "small": 10_000 - expected_big, "summary": 1}
    with sqlite3.connect(job_env.output / "db" / "out.sqlite") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        count, job = conn.execute("SELECT count(*), min(_cf_job_id) FROM small_rows").fetchone()
        first = conn.execute("SELECT qty, id FROM small_rows ORDER BY id LIMIT 1").fetchone()
    conn.close()
    assert tables == {"small_rows"}  # the staging table is gone
    assert (count, job) == (rows["small"], 9)
    assert first == (0, 0)  # qty first: declared columns lead
    summary = pq.read_table(job_env.output / "split" / "summary.job-9.parquet")
    assert summary.column("job").to_pylist() == [9]


def socket_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("cf-*"))


def file_size(path: str | Path) -> int:
    return Path(path).stat().st_size


async def test_long_work_root_moves_socket(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 4)
    ex = BridgeExecutor(output_root=tmp_path / "o", envs=EnvManager(tmp_path / "e"), work_root=deep)
    before = socket_dirs()
    with trio.fail_after(HANG_GUARD_S):
        receipt = await ex.run(1, make_dispatch(plugin_source("seed_plugin.py")))
    assert receipt.status == "SUCCESS", receipt.error_message
    assert socket_dirs() == before
    assert list(deep.iterdir()) == []


async def test_relative_work_and_output_roots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative roots (a TMPDIR or an API caller's) reach the guest as absolute paths."""
    monkeypatch.chdir(tmp_path)
    ex = BridgeExecutor(
        output_root=Path("out"), envs=EnvManager(tmp_path / "e"), work_root=Path("work")
    )
    with trio.fail_after(HANG_GUARD_S):
        receipt = await ex.run(1, make_dispatch(plugin_source("seed_plugin.py")))
    assert receipt.status == "SUCCESS", receipt.error_message
    assert list((tmp_path / "work").iterdir()) == []
    assert sorted((tmp_path / "out").rglob("*.parquet"))
    assert receipt.artifacts
    for artifact in receipt.artifacts:  # recorded by a Sentinel that runs elsewhere
        assert Path(artifact.uri).is_absolute(), artifact.uri
        assert Path(artifact.uri).is_relative_to(tmp_path / "out")


async def test_pandas_dataframe(job_env: JobEnv) -> None:
    pytest.importorskip("pandas", reason="pandas is not installed here")
    source = """
    import pandas as pd
    class Handler:
        def execute(self, file_path):
            yield pd.DataFrame({"a": [1, 2, 3]})
    """
    with trio.fail_after(HANG_GUARD_S):
        receipt = await job_env.executor.run(2, make_dispatch(textwrap.dedent(source)))
    assert receipt.status == "SUCCESS", receipt.error_message
    assert receipt.artifacts[0].rows == 3


async def test_two_million_row_csv(job_env: JobEnv, tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "big.csv", 2_000_000)
    with trio.fail_after(HANG_GUARD_S):
        receipt = await job_env.executor.run(21, make_dispatch(plugin_source("csv_stream.py"), csv))
    assert receipt.status == "SUCCESS", receipt.error_message
    (artifact,) = receipt.artifacts
    got = pq.read_table(artifact.uri)
    expected = pacsv.read_csv(csv)
    assert got.num_rows == expected.num_rows == receipt.metrics["rows"] == 2_000_000
    data = got.drop_columns(list(LINEAGE))
    assert data.schema == expected.schema
    assert data.sort_by("id").equals(expected.sort_by("id"))
    # Row groups are coalesced: the file is within 5% of a one-shot pq.write_table.
    reference = tmp_path / "reference.parquet"
    pq.write_table(got, reference)
    assert file_size(artifact.uri) <= 1.05 * file_size(reference)
    job_env.assert_nothing_left(failed=False)


MANY_FRAMES = textwrap.dedent(
    """
    import pyarrow as pa

    class Handler:
        def execute(self, file_path):
            for k in range(40):  # ~32 MB in ~8 frames: most are sent by the guest's sender thread
                yield pa.record_batch({"id": pa.array(range(k * 100_000, (k + 1) * 100_000))})
            if "fail" in file_path:
                raise ValueError("broke after 40 batches")
    """
)


async def test_frames_sent_ahead_arrive_in_order(job_env: JobEnv, tmp_path: Path) -> None:
    """Frames the guest's sender thread sends while the plugin runs keep their order;
    the same guest then runs a small job (its sender thread is gone)."""
    ex = job_env.executor
    with trio.fail_after(HANG_GUARD_S):
        async with ex:  # keeps the guest between the two jobs
            receipt = await ex.run(31, make_dispatch(MANY_FRAMES, tmp_path / "ok"))
            assert receipt.status == "SUCCESS", receipt.error_message
            (artifact,) = receipt.artifacts
            ids = pq.read_table(artifact.uri).column("id").to_pylist()
            assert ids == list(range(4_000_000))
            assert receipt.metrics["rows"] == 4_000_000
            again = await ex.run(32, make_dispatch(MANY_FRAMES, tmp_path / "ok2"))
    assert again.status == "SUCCESS", again.error_message
    assert again.metrics["guest_job"] == receipt.metrics["guest_job"] + 1  # the same guest
    job_env.assert_nothing_left(failed=False)


async def test_a_failure_after_frames_sent_ahead(job_env: JobEnv, tmp_path: Path) -> None:
    with trio.fail_after(HANG_GUARD_S):
        receipt = await job_env.executor.run(33, make_dispatch(MANY_FRAMES, tmp_path / "fail"))
    assert receipt.status == "FAILED"
    assert "broke after 40 batches" in (receipt.error_message or "")
    job_env.assert_nothing_left()


WIDE_TABLE = """
import pyarrow as pa


class Handler:
    def execute(self, file_path):
        n = 200_000
        return pa.table({"i": pa.array(range(n), pa.int64()), "s": [str(i % 977) for i in range(n)]})
"""


@pytest.mark.parametrize("shared", [True, False])
async def test_big_frames_through_shared_memory_or_the_socket(
    job_env: JobEnv, shared: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Shared memory (sealed memfds) or the socket: the same rows, and nothing left behind."""
    import logging

    job_env.executor.shared_memory = shared
    caplog.set_level(logging.DEBUG, logger="casparian_trio.bridge.host")
    before = set(os.listdir("/proc/self/fd"))
    with trio.fail_after(HANG_GUARD_S):
        receipt = await job_env.executor.run(1, make_dispatch(WIDE_TABLE))
    assert receipt.status == "SUCCESS", receipt.error_message
    table = pq.read_table(receipt.artifacts[0].uri)
    assert table.column("i").to_pylist() == list(range(200_000))
    assert table.column("s").to_pylist()[:3] == ["0", "1", "2"]
    finished = [r.getMessage() for r in caplog.records if "guest finished" in r.getMessage()]
    assert finished
    if shared:
        assert "'shared_frames': 0" not in finished[0]
    else:
        assert "'shared_frames': 0" in finished[0]
    assert set(os.listdir("/proc/self/fd")) <= before  # no memfd or dup kept open
    job_env.assert_nothing_left(failed=False)
