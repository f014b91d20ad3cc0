"""The data path under a lagging host, with real processes (issue 8's "Must show").

A real Sentinel and Worker over tcp on 127.0.0.1. The plugin yields one
1,000,000-row table and, at the moment its guest exits, has the worker process
paused with SIGSTOP for 1.5 s and resumed: the host used to give the stream a
fixed 1.0 s after the guest's exit and failed such jobs every time.
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.dataset as ds
import pytest
from e2e_procs import Cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

PLUGIN = "pause_host_at_exit"
SOURCE = (Path(__file__).parents[1] / "fixtures" / "plugins" / f"{PLUGIN}.py").read_text()
ROWS = 1_000_000
# Stops a hung test only (three 1 M-row jobs take seconds on an idle machine).
HANG_GUARD_S = 600


def test_worker_paused_at_each_guest_exit_completes_every_job(cluster: Cluster) -> None:
    job_ids = cluster.seed_jobs(
        PLUGIN, SOURCE, {f"part{i}.rows": str(ROWS) for i in range(3)}, max_attempts=3
    )
    # A liveness timeout well above the pause: a worker paused past it is lost
    # by design (and its job retried); that is the liveness bound, not this test.
    cluster.start_sentinel("--heartbeat-interval", "0.5", "--liveness-timeout", "10", fast=False)
    cluster.start_worker("w1")
    for job_id in job_ids:
        row = cluster.wait_for_status(job_id, "COMPLETED", "FAILED", timeout=HANG_GUARD_S)
        assert row.status == "COMPLETED", (row, cluster.attempts(job_id))
        assert [a["attempt"] for a in cluster.attempts(job_id)] == [1]
    files = cluster.parquet_files(PLUGIN)
    assert len(files) == 3
    glob = str(cluster.output / PLUGIN / "*.parquet")
    assert ds.dataset(files, format="parquet").count_rows() == 3 * ROWS
    ((count, distinct_jobs),) = duckdb.sql(
        f"SELECT count(*), count(DISTINCT _cf_job_id) FROM read_parquet('{glob}')"
    ).fetchall()
    assert (count, distinct_jobs) == (3 * ROWS, 3)
    per_job = pl.scan_parquet(glob).group_by("_cf_job_id").len().collect()
    assert sorted(per_job["len"].to_list()) == [ROWS] * 3


RAISES = """
import datetime as dt
import pyarrow as pa

class Handler:
    def execute(self, file_path):
        kind = open(file_path).read().strip()
        if kind == "raise":
            raise ValueError("row 3 is not a sale")
        yield pa.table({"at": pa.array([dt.datetime(2026, 1, 1, 12)], pa.timestamp("us"))})
        aware = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
        yield pa.table({"at": pa.array([aware], pa.timestamp("us", tz="+02:00"))})
"""


def test_deterministic_failures_fail_at_attempt_1(cluster: Cluster) -> None:
    raised, mixed = cluster.seed_jobs(
        "strict", RAISES, {"a.txt": "raise", "b.txt": "timestamps"}, max_attempts=3
    )
    cluster.start_sentinel()
    cluster.start_worker("w1")
    for job_id, named in ((raised, "raised ValueError: row 3"), (mixed, "column 'at'")):
        row = cluster.wait_for_status(job_id, "FAILED", timeout=HANG_GUARD_S)
        assert named in (row.error_message or ""), row
        assert [a["attempt"] for a in cluster.attempts(job_id)] == [1], cluster.attempts(job_id)
