"""The operator commands as a user runs them: ``python -m casparian_trio`` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PLUGIN = """
MANIFEST = {"name": "sales", "version": "1.0.0", "pattern": "*.csv"}


class Handler:
    def execute(self, file_path):
        yield from ()
"""


TIMEOUT = 120  # a hang guard per command, not a speed limit


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CASPARIAN_DB": str(cwd / "ops.db")}
    return subprocess.run(
        [sys.executable, "-m", "casparian_trio", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_publish_scan_and_list_in_real_processes(tmp_path: Path) -> None:
    missing = run("jobs", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"error: no database at {tmp_path / 'ops.db'}; "
        f"run `casparian-trio init-db --db {tmp_path / 'ops.db'}` or pass --db"
    )

    (tmp_path / "sales.py").write_text(PLUGIN)
    (tmp_path / "in").mkdir()
    for name in ("a.csv", "b.csv", "c.txt"):
        (tmp_path / "in" / name).write_text("id\n1\n")

    published = run("publish", "sales.py", cwd=tmp_path)
    assert published.returncode == 0, published.stderr
    assert published.stdout.startswith("published sales 1.0.0 (artifact ")
    assert "INFO" not in published.stderr  # results are printed, not logged

    assert run("source", "add", "in", cwd=tmp_path).returncode == 0
    scanned = run("scan", cwd=tmp_path)
    assert scanned.returncode == 0, scanned.stderr
    assert "scanned 3 files (3 new, 0 changed, 0 unchanged)" in scanned.stdout
    assert "queued 2 jobs" in scanned.stdout
    assert "\r" not in scanned.stderr  # no progress bar when stderr is not a TTY

    jobs = json.loads(run("jobs", "--json", cwd=tmp_path).stdout)
    assert sorted(j["file_rel_path"] for j in jobs) == ["a.csv", "b.csv"]
    status = json.loads(run("status", "--json", cwd=tmp_path).stdout)
    assert status["jobs"]["QUEUED"] == 2

    bad = run("publish", "in/c.txt", cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("error: c.txt")
