"""Real uv environments: build from the fixture lockfile, run a job in it, reuse it."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import trio

from casparian_trio.bridge import BridgeExecutor
from casparian_trio.envs import EnvManager, compute_env_hash
from casparian_trio.errors import EnvError
from casparian_trio.protocol.messages import Dispatch, PrepareEnv, SinkConfig

# A hang guard, not a speed limit: a cold uv cache downloads pyarrow first.
TIMEOUT = 240

FIXTURE = Path(__file__).parents[2] / "fixtures" / "plugins" / "env_pyarrow"

WHERE_AM_I = """
import sys
import pyarrow as pa
class Handler:
    def execute(self, file_path):
        yield pa.table({"executable": [sys.executable], "prefix": [sys.prefix]})
"""


def fixture_spec() -> PrepareEnv:
    lock = (FIXTURE / "uv.lock").read_text()
    pyproject = (FIXTURE / "pyproject.toml").read_text()
    return PrepareEnv(
        env_hash=compute_env_hash(lock, pyproject, None), lockfile=lock, pyproject=pyproject
    )


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not installed")
async def test_build_run_reuse(tmp_path: Path) -> None:
    spec = fixture_spec()
    # Two managers on one root behave like two worker processes (separate flock fds).
    first, second = EnvManager(tmp_path / "envs"), EnvManager(tmp_path / "envs")
    readies = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for manager in (first, first, second):
                nursery.start_soon(lambda m=manager: _prepare(m, spec, readies))
    assert first.builds + second.builds == 1
    assert sorted(r.cached for r in readies) == [False, True, True]
    env_dir = tmp_path / "envs" / spec.env_hash
    assert {r.interpreter_path for r in readies} == {str(env_dir / "bin" / "python")}
    inode = env_dir.stat().st_ino
    assert [p.name for p in (tmp_path / "envs").iterdir() if p.name.startswith(".build")] == []

    executor = BridgeExecutor(output_root=tmp_path / "out", envs=first, work_root=tmp_path / "w")
    dispatch = Dispatch(
        plugin_name="where",
        file_path="/dev/null",
        sinks=(SinkConfig("output", "parquet://where"),),
        file_version_id=1,
        env_hash=spec.env_hash,
        source_code=textwrap.dedent(WHERE_AM_I),
        artifact_hash="x",
    )
    with trio.fail_after(TIMEOUT):
        receipt = await executor.run(1, dispatch)
        again = await first.prepare(spec)
    assert receipt.status == "SUCCESS", receipt.error_message
    row = pq.read_table(receipt.artifacts[0].uri).to_pylist()[0]
    assert row["executable"] == str(env_dir / "bin" / "python")
    assert row["prefix"] == str(env_dir)
    assert again.cached
    assert first.builds + second.builds == 1
    assert env_dir.stat().st_ino == inode
    assert first.ready_envs() == [spec.env_hash]


async def _prepare(manager: EnvManager, spec: PrepareEnv, out: list) -> None:
    out.append(await manager.prepare(spec))


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not installed")
async def test_build_failure_reports_uv_error(tmp_path: Path) -> None:
    lock = "this is not a lockfile ["
    pyproject = (FIXTURE / "pyproject.toml").read_text()
    spec = PrepareEnv(
        env_hash=compute_env_hash(lock, pyproject, None), lockfile=lock, pyproject=pyproject
    )
    manager = EnvManager(tmp_path / "envs")
    with trio.fail_after(TIMEOUT), pytest.raises(EnvError) as info:
        await manager.prepare(spec)
    assert info.value.env_hash == spec.env_hash
    assert "failed at `uv sync`" in str(info.value)
    assert "uv.lock" in str(info.value)
    assert manager.ready_envs() == []
    assert [p.name for p in (tmp_path / "envs").iterdir() if not p.name.endswith(".lock")] == []


async def test_unknown_python_version(tmp_path: Path) -> None:
    lock = (FIXTURE / "uv.lock").read_text()
    pyproject = (FIXTURE / "pyproject.toml").read_text()
    spec = PrepareEnv(
        env_hash=compute_env_hash(lock, pyproject, "3.4"),
        lockfile=lock,
        pyproject=pyproject,
        python_version="3.4",
    )
    with trio.fail_after(TIMEOUT), pytest.raises(EnvError, match="failed at `uv venv`"):
        await EnvManager(tmp_path / "envs").prepare(spec)
