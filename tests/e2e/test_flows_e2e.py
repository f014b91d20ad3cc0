"""End to end as users run it: separate processes, real ZeroMQ, SQLite, uv and Parquet."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Hang guards, not speed limits: one CLI command, one process's exit after SIGINT,
# and all jobs of the uv flow (a cold uv cache downloads pyarrow first).
COMMAND_TIMEOUT = 120
EXIT_TIMEOUT = 60
JOBS_TIMEOUT = 240
ENV_PROJECT = ROOT / "tests" / "fixtures" / "plugins" / "env_pyarrow"

PLUGIN = """\
import sys
import pyarrow as pa
import pyarrow.csv as pacsv

MANIFEST = {"name": "readings", "version": "2.0.0", "pattern": "*.csv", "topic": "readings", "timeout": 120}


class Handler:
    def execute(self, file_path):
        table = pacsv.read_csv(file_path)
        yield table.append_column("interpreter", pa.array([sys.executable] * table.num_rows))
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "casparian_trio", *args],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )


def start(tmp_path: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    with (tmp_path / f"{name}.log").open("wb") as log:  # the child keeps its own copy of the fd
        return subprocess.Popen(
            [sys.executable, "-m", "casparian_trio", *args], stdout=log, stderr=log
        )


def logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(tmp_path.glob("*.log")))


@pytest.mark.slow
def test_phase4_flow_of_the_seed() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "e2e.py")],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[e2e] job 1 COMPLETED (attempt 1)" in result.stdout
    assert "[e2e] PASS" in result.stdout


@pytest.mark.slow
def test_publish_scan_and_process_in_a_real_uv_env(tmp_path: Path) -> None:
    db, port = tmp_path / "cf.db", _free_port()
    address = f"tcp://127.0.0.1:{port}"
    project = tmp_path / "plugin"
    shutil.copytree(ENV_PROJECT, project)
    (project / "readings.py").write_text(PLUGIN)
    data = tmp_path / "data"
    for day in range(1, 5):
        (data / f"day{day}").mkdir(parents=True)
        rows = "\n".join(f"{day * 100 + i},{i * 1.5}" for i in range(10 * day))
        (data / f"day{day}" / "readings.csv").write_text("id,value\n" + rows + "\n")

    assert cli("init-db", "--db", str(db)).returncode == 0  # only init-db creates one
    published = cli(
        "publish", str(project / "readings.py"), "--lockfile", str(project), "--db", str(db)
    )
    assert published.returncode == 0, published.stderr
    assert cli("source", "add", str(data), "--db", str(db)).returncode == 0
    scanned = cli("scan", "--db", str(db))
    assert "queued 4 jobs" in scanned.stdout, scanned.stdout + scanned.stderr
    assert "queued 0 jobs" in cli("scan", "--db", str(db)).stdout  # idempotent

    envs, output = tmp_path / "envs", tmp_path / "output"
    procs = [start(tmp_path, "sentinel", "sentinel", "--db", str(db), "--bind", address)]
    for n in (1, 2):
        procs.append(
            start(
                tmp_path,
                f"worker{n}",
                "worker",
                "--connect",
                address,
                "--output",
                str(output),
                "--worker-id",
                f"w{n}",
                "--envs-root",
                str(envs),
            )
        )
    try:
        statuses = _wait_terminal(db, expected=4, procs=procs)
        assert statuses == {"COMPLETED": 4}, logs(tmp_path)
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGINT)
        codes = [_wait_or_kill(proc) for proc in procs]
    assert codes == [0, 0, 0], logs(tmp_path)

    import duckdb
    import pyarrow.dataset as ds

    table = ds.dataset(output / "readings", format="parquet").to_table()
    assert table.num_rows == 10 + 20 + 30 + 40
    assert {"_cf_job_id", "_cf_file_version_id"} <= set(table.column_names)
    assert set(table.column("_cf_job_id").to_pylist()) == {1, 2, 3, 4}
    interpreters = set(table.column("interpreter").to_pylist())
    assert len(interpreters) == 1
    assert Path(next(iter(interpreters))).is_relative_to(envs)  # ran in the uv env, not ours
    glob = str(output / "readings" / "*.parquet")
    rows = duckdb.sql(f"SELECT count(*), count(DISTINCT _cf_job_id) FROM '{glob}'").fetchall()
    assert rows == [(100, 4)]


def _wait_or_kill(proc: subprocess.Popen[bytes]) -> int | None:
    """The exit code, or None (and SIGKILL) if the process hangs instead of exiting."""
    try:
        return proc.wait(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_terminal(
    db: Path, *, expected: int, procs: list[subprocess.Popen[bytes]]
) -> dict[str, int]:
    deadline = time.monotonic() + JOBS_TIMEOUT
    while time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), "a process exited early"
        with sqlite3.connect(db) as conn:
            rows = dict(
                conn.execute(
                    "SELECT status, count(*) FROM cf_processing_queue GROUP BY status"
                ).fetchall()
            )
        conn.close()
        if sum(rows.get(s, 0) for s in ("COMPLETED", "FAILED", "CANCELLED")) == expected:
            return rows
        time.sleep(0.2)
    raise AssertionError(f"jobs not finished: {rows}")
