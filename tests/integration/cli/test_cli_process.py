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

    created = run("init-db", cwd=tmp_path)  # CASPARIAN_DB names it
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "ops.db").is_file()

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


def test_sentinel_refuses_a_mistyped_database_and_creates_nothing(tmp_path: Path) -> None:
    result = run("sentinel", "--db", "missing/typo.db", "--bind", "tcp://127.0.0.1:0", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1  # one line, no traceback
    assert result.stderr.startswith(
        "error: no database at missing/typo.db; run `casparian-trio init-db"
    )
    assert list(tmp_path.iterdir()) == []


def test_casparian_db_names_the_database_init_db_creates(tmp_path: Path) -> None:
    env = {**os.environ, "CASPARIAN_DB": "x.db"}
    result = subprocess.run(
        [sys.executable, "-m", "casparian_trio", "init-db"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x.db").is_file()


ROUTED_PLUGIN = """
MANIFEST = {"name": "sales", "version": "1.0.0", "pattern": "sales/**/*.csv"}


class Handler:
    def execute(self, file_path):
        yield from ()
"""


def test_gitignore_rules_and_routing_globs_through_a_real_scan(tmp_path: Path) -> None:
    data = tmp_path / "in"
    for rel in ("sales/a.csv", "sales/q1/b.csv", "other/c.csv", "x.tmp", "keep.tmp"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_text("id\n1\n")
    (data / ".casparianignore").write_text("*.tmp\n!keep.tmp\n")
    (tmp_path / "sales.py").write_text(ROUTED_PLUGIN)
    (tmp_path / "tmps.py").write_text(
        ROUTED_PLUGIN.replace('"sales"', '"tmps"').replace("sales/**/*.csv", "*.tmp")
    )
    for argv in (("init-db",), ("publish", "sales.py"), ("publish", "tmps.py")):
        assert run(*argv, cwd=tmp_path).returncode == 0
    assert run("source", "add", "in", cwd=tmp_path).returncode == 0

    scanned = run("scan", "--json", cwd=tmp_path)
    assert scanned.returncode == 0, scanned.stderr
    assert json.loads(scanned.stdout)["queued"] == 3

    jobs = json.loads(run("jobs", "--json", cwd=tmp_path).stdout)
    routed = sorted((j["plugin_name"], j["file_rel_path"]) for j in jobs)
    assert routed == [("sales", "sales/a.csv"), ("sales", "sales/q1/b.csv"), ("tmps", "keep.tmp")]
