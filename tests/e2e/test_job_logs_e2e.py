"""A job's traceback and its plugin's log, seen from the command line (issue 9).

A real Sentinel and Worker over tcp on 127.0.0.1 and one plugin: on ``bad.csv``
it prints a line per row and raises in a helper at row 3; on ``good.csv`` it
prints what it reads and succeeds. ``job ID`` of the failed job shows the
traceback's last frame and the guest's output tail; ``logs ID`` of the
successful one prints its plugin's log. Each command is a subprocess, as a user
runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from e2e_procs import HANG_S, Cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

PLUGIN = "noisy"
SOURCE = """
import sys
import pyarrow.csv as pacsv


def check(row):
    if row == 3:
        raise ValueError(f"bad row {row}")


class Handler:
    def execute(self, file_path):
        table = pacsv.read_csv(file_path)
        print(f"read {table.num_rows} rows from {file_path.rsplit('/', 1)[-1]}")
        if file_path.endswith("bad.csv"):
            for row in range(table.num_rows):
                print(f"checking row {row}", file=sys.stderr)
                check(row)
        print("all rows fine", file=sys.stderr)
        yield table
"""
CSV = "id,val\n" + "".join(f"{i},{i * 10}\n" for i in range(5))


def cli(cluster: Cluster, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "casparian_trio", *argv, "--db", str(cluster.db_path)],
        capture_output=True,
        text=True,
        timeout=HANG_S,
        check=False,
    )


def test_a_failed_jobs_last_frame_and_a_successful_jobs_log(cluster: Cluster) -> None:
    bad, good = cluster.seed_jobs(PLUGIN, SOURCE, {"bad.csv": CSV, "good.csv": CSV}, max_attempts=1)
    cluster.start_sentinel()
    cluster.start_worker("w1")
    assert cluster.wait_for_status(bad, "COMPLETED", "FAILED").status == "FAILED"
    assert cluster.wait_for_status(good, "COMPLETED", "FAILED").status == "COMPLETED"

    # the store keeps the error's one line and its traceback apart
    row = cluster.job(bad)
    assert row.error_message == "plugin 'noisy' raised ValueError: bad row 3"
    assert row.error_traceback is not None
    assert row.error_traceback.startswith("Traceback (most recent call last):")

    shown = cli(cluster, "job", str(bad))
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "  error      plugin 'noisy' raised ValueError: bad row 3\n" in out
    frame = out.split("  at         ", 1)[1].splitlines()[:3]
    assert frame[0].startswith('File "')
    assert frame[0].endswith('plugin.py", line 8, in check')
    assert [line.strip() for line in frame[1:]] == [
        'raise ValueError(f"bad row {row}")',
        "ValueError: bad row 3",
    ]
    tail = out.split("stderr tail (stdout and stderr, last 5 lines):\n", 1)[1].splitlines()[:5]
    assert [line.strip() for line in tail] == [
        "read 5 rows from bad.csv",
        *(f"checking row {i}" for i in range(4)),
    ]

    doc = json.loads(cli(cluster, "job", str(bad), "--json").stdout)
    assert doc["error"] == "plugin 'noisy' raised ValueError: bad row 3"
    assert doc["traceback_last_frame"][-1] == "ValueError: bad row 3"
    assert doc["stderr_tail"].splitlines()[-1] == "checking row 3"

    full = cli(cluster, "job", str(bad), "--full").stdout
    assert "in execute" in full  # the outer frames too
    assert "    Traceback (most recent call last):" in full

    logs = cli(cluster, "logs", str(good))
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == "read 5 rows from good.csv\nall rows fine\n"
    assert "log        2 lines: `logs" in cli(cluster, "job", str(good)).stdout

    missing = cli(cluster, "logs", "999")
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert missing.stderr.strip().count("\n") == 0
    assert missing.stderr.startswith("error: no job 999")
