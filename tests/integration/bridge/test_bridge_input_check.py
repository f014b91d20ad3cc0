"""The worker checks the input before any guest starts (bridge/_input_check.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from bridge_helpers import HANG_GUARD_S, JobEnv, make_dispatch, plugin_source

from casparian_trio.protocol.messages import Conclude

pytestmark = pytest.mark.slow  # real guest processes (the passing case)


def scanned(root: Path, name: str = "a.csv", text: str = "id\n1\n") -> Path:
    path = root / name
    path.write_text(text)
    return path


async def run_on(job_env: JobEnv, path: Path, root: Path, **kw: object) -> Conclude:
    st = _stat_or_none(path)
    fields: dict[str, object] = {
        "source_root": str(root),
        "file_size": None if st is None else st.st_size,
        "file_mtime": None if st is None else st.st_mtime,
    }
    fields.update(kw)
    dispatch = make_dispatch(plugin_source("seed_plugin.py"), path, **fields)
    with trio.fail_after(HANG_GUARD_S):
        return await job_env.executor.run(1, dispatch)


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def assert_refused_before_any_guest(job_env: JobEnv) -> None:
    assert job_env.pids == [], "a guest was started for a refused input"
    assert [p for p in job_env.output.rglob("*") if p.is_file()] == []
    assert list(job_env.work.iterdir()) == []


async def test_the_queued_version_runs(job_env: JobEnv, tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    receipt = await run_on(job_env, scanned(root), root)
    assert receipt.status == "SUCCESS", receipt.error_message
    assert receipt.skip_reason is None


async def test_a_file_gone_since_the_scan_is_skipped(job_env: JobEnv, tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    path = scanned(root)
    st = path.stat()
    path.unlink()
    receipt = await run_on(job_env, path, root, file_size=st.st_size, file_mtime=st.st_mtime)
    assert (receipt.status, receipt.skip_reason, receipt.deterministic) == (
        "FAILED",
        "gone",
        False,
    )
    assert receipt.error_message == f"file gone: {path} (deleted since scan)"
    assert_refused_before_any_guest(job_env)


@pytest.mark.parametrize("change", ["content", "mtime"])
async def test_a_file_changed_since_the_scan_is_superseded(
    job_env: JobEnv, tmp_path: Path, change: str
) -> None:
    root = tmp_path / "src"
    root.mkdir()
    path = scanned(root)
    st = path.stat()
    if change == "content":
        path.write_text("id\n1\n2\n")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime, other size
    else:
        os.utime(path, (st.st_atime, st.st_mtime + 5))
    receipt = await run_on(job_env, path, root, file_size=st.st_size, file_mtime=st.st_mtime)
    assert (receipt.status, receipt.skip_reason, receipt.deterministic) == (
        "FAILED",
        "superseded",
        False,
    )
    assert receipt.error_message == (
        f"file changed since scan: {path}; the next scan queues the new version"
    )
    assert_refused_before_any_guest(job_env)


async def test_a_symlink_swapped_in_is_refused(job_env: JobEnv, tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    secret = scanned(tmp_path, "secret.csv")
    path = root / "a.csv"
    path.symlink_to(secret)
    receipt = await run_on(job_env, path, root)
    assert (receipt.status, receipt.skip_reason, receipt.deterministic) == ("FAILED", None, True)
    assert receipt.error_message is not None
    assert str(path) in receipt.error_message
    assert "symlink" in receipt.error_message
    assert_refused_before_any_guest(job_env)


async def test_a_path_outside_its_root_is_refused(job_env: JobEnv, tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    scanned(elsewhere)
    os.rmdir(root / "sub")
    (root / "sub").symlink_to(elsewhere)  # a parent directory swapped for a link
    path = root / "sub" / "a.csv"
    receipt = await run_on(job_env, path, root)
    assert (receipt.status, receipt.skip_reason, receipt.deterministic) == ("FAILED", None, True)
    assert receipt.error_message is not None
    assert str(path) in receipt.error_message
    assert "outside its source root" in receipt.error_message
    assert_refused_before_any_guest(job_env)


async def test_an_old_sentinel_sends_nothing_to_check(job_env: JobEnv) -> None:
    dispatch = make_dispatch(plugin_source("seed_plugin.py"), "/nonexistent/a.csv")
    with trio.fail_after(HANG_GUARD_S):
        receipt = await job_env.executor.run(1, dispatch)
    assert receipt.status == "SUCCESS", receipt.error_message
