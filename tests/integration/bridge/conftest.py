"""Fixtures for bridge integration tests (helpers live in bridge_helpers.py)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from bridge_helpers import JobEnv

from casparian_trio.bridge import BridgeExecutor
from casparian_trio.envs import EnvManager


@pytest.fixture
def job_env(tmp_path: Path) -> Iterator[JobEnv]:
    work = Path(tempfile.mkdtemp(prefix="cfw"))  # short: the socket fits in sun_path
    pids: list[int] = []
    output = tmp_path / "output"
    output.mkdir()
    executor = BridgeExecutor(
        output_root=output,
        envs=EnvManager(tmp_path / "envs"),
        work_root=work,
        kill_grace_s=1.0,
        spawn_hook=pids.append,
    )
    yield JobEnv(executor, output, work, pids)
    shutil.rmtree(work, ignore_errors=True)
