"""The README's first command: `python -m casparian_trio demo`, twice, leaving nothing running."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest

# A hang guard per demo run, not a speed limit (a run takes about 5 s on an idle machine).
DEMO_TIMEOUT = 120


def demo(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "casparian_trio", "demo", "--dir", str(folder)],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
    )


@pytest.mark.slow
def test_demo_runs_twice_and_leaves_nothing_running(tmp_path: Path) -> None:
    folder = tmp_path / "casparian-demo"
    for _ in range(2):
        result = demo(folder)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "jobs: 6 completed, 0 failed, 0 cancelled" in result.stdout
        assert "sales: 1,814 rows in 6 Parquet file(s)" in result.stdout
        assert "rejects: 2 rows" in result.stdout
    sales = ds.dataset(folder / "output" / "sales", format="parquet").to_table()
    assert sales.num_rows == 1814
    assert {"_cf_job_id", "_cf_file_version_id"} <= set(sales.column_names)
    assert _processes_mentioning(str(folder)) == []
    _assert_rejects_name_their_lines(folder)
    output = folder / "output"
    empty = [p for p in output.rglob("*") if p.is_dir() and not any(p.iterdir())]
    assert empty == [], "empty topic folders left behind"


def _assert_rejects_name_their_lines(folder: Path) -> None:
    """Each reject's `line` is the 1-based line of the file that holds its text."""
    rejects = ds.dataset(folder / "output" / "rejects", format="parquet").to_table().to_pylist()
    lines = (folder / "incoming" / "legacy-export.csv").read_text(encoding="utf-8").splitlines()
    assert [r["line"] for r in rejects] == [4, 5]  # after a blank line: records != lines
    for reject in rejects:
        assert lines[reject["line"] - 1] == reject["text"]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if text in args:
            found.append(args)
    return found


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    result = demo(tmp_path)
    assert result.returncode == 1
    assert "was not made by the demo" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"
