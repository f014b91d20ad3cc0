"""One current version per source file (issue 11's "Must show"), through the command line.

A real Sentinel and Worker over tcp on 127.0.0.1, a plugin published with
`publish`, files found by `scan`. Each step changes the source folder the way a
user does (edit, rewrite between scan and run, delete, a name that is not
UTF-8, a new plugin version) and then reads the topic's folder back with
DuckDB, pyarrow and polars, and through `query`: every file's current rows,
exactly once, from the current plugin version.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow.dataset as ds
import pytest
from e2e_procs import HANG_S, Cluster, wait_until

pytestmark = [pytest.mark.slow]

PLUGIN = """
import pyarrow as pa
import pyarrow.csv as pacsv

MANIFEST = {{
    "name": "sales",
    "version": "{version}",
    "pattern": "*.csv",
    "topics": {{"sales": {{"uri": "parquet://sales"}}}},
}}


class Handler:
    def configure(self, ctx, config):
        self.ctx = ctx

    def consume(self, event):
        table = pacsv.read_csv(
            event.path,
            convert_options=pacsv.ConvertOptions(
                column_types={{"key": pa.string(), "val": pa.int64()}}
            ),
        )
        parser = pa.array(["{version}"] * table.num_rows, pa.string())
        self.ctx.publish("sales", table.append_column("parser", parser))
"""
UNDECODABLE = b"caf\xe9.csv"


def csv_text(key: str, *vals: int) -> str:
    return "key,val\n" + "".join(f"{key},{v}\n" for v in vals)


def cli(cluster: Cluster, *argv: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "casparian_trio", *argv, "--db", str(cluster.db_path)],
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert done.returncode == 0, (argv, done.stdout, done.stderr)
    return done


def cli_json(cluster: Cluster, *argv: str) -> Any:
    return json.loads(cli(cluster, *argv, "--json").stdout)


def publish(cluster: Cluster, version: str) -> subprocess.CompletedProcess[str]:
    path = cluster.root / f"sales_{version}.py"
    path.write_text(PLUGIN.format(version=version))
    return cli(cluster, "publish", str(path))


def settle(cluster: Cluster) -> list[dict[str, Any]]:
    """Wait until no job is QUEUED or RUNNING; return every job."""

    def probe() -> bool:
        sql = "SELECT count(*) FROM cf_processing_queue WHERE status IN ('QUEUED', 'RUNNING')"
        return cluster.db.run_sync(lambda conn: conn.execute(sql).fetchone()[0] == 0, readonly=True)

    wait_until("every job to end", probe, HANG_S)
    jobs: list[dict[str, Any]] = cli_json(cluster, "jobs", "--limit", "1000")
    return jobs


def topic_rows(cluster: Cluster) -> list[tuple[str, int, str]]:
    """(key, val, parser) of the topic's Parquet files, sorted; pyarrow and polars agree."""
    pattern = str(cluster.output / "sales" / "*.parquet")
    rows = duckdb.sql(f"SELECT key, val, parser FROM read_parquet('{pattern}')").fetchall()
    table = ds.dataset(str(cluster.output / "sales"), format="parquet").to_table()
    assert table.num_rows == len(rows)
    assert pl.read_parquet(pattern).height == len(rows)
    return sorted((str(k), int(v), str(p)) for k, v, p in rows)


def status_of(jobs: list[dict[str, Any]], name: str, kind: str = "parse") -> list[str]:
    return [
        j["status"]
        for j in sorted(jobs, key=lambda j: j["id"])
        if j["file_rel_path"] == name and j["kind"] == kind
    ]


def test_each_file_current_rows_once(cluster: Cluster) -> None:
    cluster.init_db()
    inputs = cluster.inputs
    inputs.mkdir(parents=True)
    publish(cluster, "1")
    cli(cluster, "source", "add", str(inputs))
    for name, text in {
        "a.csv": csv_text("a", 1, 2),
        "b.csv": csv_text("b", 3),
        "c.csv": csv_text("c", 4),
        "d.csv": csv_text("d", 5),
        "plain.csv": csv_text("plain", 6),
    }.items():
        (inputs / name).write_text(text)
    with open(os.path.join(os.fsencode(inputs), UNDECODABLE), "w") as f:
        f.write(csv_text("cafe", 7))
    assert cli_json(cluster, "scan")["queued"] == 6

    # Between scan and run: c.csv is rewritten, d.csv deleted.
    (inputs / "c.csv").write_text(csv_text("c", 40, 41))
    (inputs / "d.csv").unlink()
    cluster.start_sentinel()
    cluster.start_worker("w1")
    jobs = settle(cluster)
    assert status_of(jobs, "c.csv") == ["SUPERSEDED"]
    (d_job,) = [j for j in jobs if j["file_rel_path"] == "d.csv"]
    assert (d_job["status"], d_job["attempt"]) == ("SKIPPED", 1)
    assert status_of(jobs, "caf\\xe9.csv") == ["COMPLETED"]  # shown escaped
    assert status_of(jobs, "plain.csv") == ["COMPLETED"]
    assert all(j["retry_count"] == 0 for j in jobs)  # nothing counted as a failure

    # The next scan queues c.csv's new version; the topic has its new content once.
    scanned = cli_json(cluster, "scan")
    assert (scanned["changed"], scanned["deleted"]) == (1, 1)
    jobs = settle(cluster)
    assert status_of(jobs, "c.csv") == ["SUPERSEDED", "COMPLETED"]
    (c_done,) = [j for j in jobs if j["file_rel_path"] == "c.csv" and j["status"] == "COMPLETED"]
    new_hash = hashlib.sha256((inputs / "c.csv").read_bytes()).hexdigest()
    assert cli_json(cluster, "job", str(c_done["id"]))["file_content_hash"] == new_hash
    expected = {
        ("a", 1, "1"),
        ("a", 2, "1"),
        ("b", 3, "1"),
        ("c", 40, "1"),
        ("c", 41, "1"),
        ("plain", 6, "1"),
        ("cafe", 7, "1"),
    }
    assert topic_rows(cluster) == sorted(expected)

    # Edit a.csv: after scan and run, exactly the new content, once.
    (inputs / "a.csv").write_text(csv_text("a", 10, 20, 30))
    assert cli_json(cluster, "scan")["queued"] == 1
    settle(cluster)
    expected = (expected - {("a", 1, "1"), ("a", 2, "1")}) | {
        ("a", 10, "1"),
        ("a", 20, "1"),
        ("a", 30, "1"),
    }
    assert topic_rows(cluster) == sorted(expected)

    # Delete b.csv: a retraction job removes its rows.
    (inputs / "b.csv").unlink()
    scanned = cli_json(cluster, "scan")
    assert (scanned["deleted"], scanned["retractions"]) == (1, 1)
    jobs = settle(cluster)
    assert status_of(jobs, "b.csv", kind="retract") == ["COMPLETED"]
    expected -= {("b", 3, "1")}
    assert topic_rows(cluster) == sorted(expected)

    # A second plugin version reprocesses every current file: all rows from version 2, once.
    published = publish(cluster, "2")
    assert "reprocessing: queued 4 jobs" in published.stdout, published.stdout
    settle(cluster)
    expected = {(k, v, "2") for k, v, _ in expected}
    assert topic_rows(cluster) == sorted(expected)

    # The topic's totals and the DuckDB catalog agree with the files.
    (sales,) = [t for t in cli_json(cluster, "topics") if t["topic"] == "sales"]
    assert (sales["rows"], sales["files"]) == (len(expected), 4)
    counted = cli(cluster, "query", "SELECT count(*) AS n FROM sales", "--csv").stdout
    assert counted == f"n\n{len(expected)}\n"
    table = cli(cluster, "query", "SELECT count(*) AS n FROM sales").stdout
    assert table.splitlines()[1].strip() == str(len(expected))
    cli(cluster, "catalog")
    catalog = duckdb.connect(str(cluster.db_path.with_suffix(".duckdb")), read_only=True)
    assert catalog.execute("SELECT count(*) FROM sales").fetchall() == [(len(expected),)]
    catalog.close()

    # retry --force re-runs a COMPLETED job; its output is replaced, not duplicated.
    (plain,) = [j for j in settle(cluster) if j["file_rel_path"] == "plain.csv"]
    cli(cluster, "retry", "--force", str(plain["id"]))
    settle(cluster)
    assert topic_rows(cluster) == sorted(expected)


def test_undecodable_name_is_recorded_without_loss(tmp_path: Path, cluster: Cluster) -> None:
    cluster.init_db()
    cluster.inputs.mkdir(parents=True)
    publish(cluster, "1")
    cli(cluster, "source", "add", str(cluster.inputs))
    with open(os.path.join(os.fsencode(cluster.inputs), UNDECODABLE), "w") as f:
        f.write(csv_text("cafe", 1))
    scan = cli(cluster, "scan")
    assert "queued 1 job" in scan.stdout
    listed = cli(cluster, "jobs").stdout
    assert "caf\\xe9.csv" in listed  # escaped for people
    # Scanning again finds the same location: nothing new, nothing deleted.
    again = cli_json(cluster, "scan")
    assert (again["new"], again["deleted"], again["unchanged"]) == (0, 0, 1)
