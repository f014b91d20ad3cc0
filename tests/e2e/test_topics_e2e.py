"""A topic is a table, seen from the command line (issue 10's first "Must show").

A real Sentinel and Worker over tcp on 127.0.0.1, one plugin streaming CSV with
pyarrow's inference and no declared schema. The first file's ``val`` infers
int64, so the first job makes the topic's contract (version 1: val int64); the
second holds "12" and "abc": "12" is conformed to 12 and "abc" goes to the
quarantine topic. Both jobs complete; ``topics --json`` shows what the Sentinel
recorded from the receipts, and one glob over the topic folder reads in
pyarrow.dataset, DuckDB and polars.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from e2e_procs import HANG_S, Cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

PLUGIN = "csv_stream"
SOURCE = (Path(__file__).parents[1] / "fixtures" / "plugins" / f"{PLUGIN}.py").read_text()
TOPIC = "output"  # the default topic of a plugin that declares none
FIRST = "id,val\n1,10\n2,20\n3,30\n"
# "12" and "abc" among ten more numbers: 1 bad row in 12 stays under the topic's
# default max_invalid_fraction (0.1), which would fail the job instead.
SECOND = "id,val\n4,12\n5,abc\n" + "".join(f"{6 + i},{13 + i}\n" for i in range(10))
VALS = [10, 20, 30, 12, *range(13, 23)]


def cli_json(cluster: Cluster, *argv: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "casparian_trio", *argv, "--db", str(cluster.db_path), "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    return json.loads(done.stdout)


def test_two_files_one_topic_one_contract_one_quarantined_row(cluster: Cluster) -> None:
    # One job at a time, in id order: the int64 file makes the contract first.
    first, second = cluster.seed_jobs(PLUGIN, SOURCE, {"a.csv": FIRST, "b.csv": SECOND})
    cluster.start_sentinel()
    cluster.start_worker("w1", "--concurrency", "1")
    for job_id in (first, second):
        row = cluster.wait_for_status(job_id, "COMPLETED", "FAILED")
        assert row.status == "COMPLETED", (row, cluster.attempts(job_id))

    listed = {t["topic"]: t for t in cli_json(cluster, "topics")}
    topic = listed[TOPIC]
    assert topic["sink_uri"] == str(cluster.output / PLUGIN)
    assert topic["contract_version"] == 1
    assert (topic["rows"], topic["files"], topic["rows_quarantined"]) == (len(VALS), 2, 1)
    assert listed[f"{TOPIC}_quarantine"]["rows"] == 1

    detail = cli_json(cluster, "topic", TOPIC)
    (sink,) = detail["sinks"]
    columns = {c["name"]: c["type"] for c in sink["contract"]["columns"]}
    assert columns["val"] == "int64"
    assert [v["first_job_id"] for v in sink["history"]] == [first]

    per_topic = {t["topic"]: t for t in cli_json(cluster, "job", str(second))["topics"]}
    assert (per_topic[TOPIC]["rows"], per_topic[TOPIC]["rows_quarantined"]) == (11, 1)
    assert cli_json(cluster, "status")["rows_quarantined"] == 1

    folder = cluster.output / PLUGIN
    glob = str(folder / "*.parquet")
    table = ds.dataset(folder, format="parquet").to_table()
    assert table.schema.field("val").type == pa.int64()
    assert sorted(table.column("val").to_pylist()) == sorted(VALS)
    ((count, total),) = duckdb.sql(
        f"SELECT count(*), sum(val) FROM read_parquet('{glob}')"
    ).fetchall()
    assert (count, total) == (len(VALS), sum(VALS))
    assert pl.scan_parquet(glob).select(pl.col("val").sum()).collect().item() == sum(VALS)
    quarantined = ds.dataset(cluster.output / f"{PLUGIN}_quarantine", format="parquet").to_table()
    assert "abc" in str(quarantined.to_pylist())
