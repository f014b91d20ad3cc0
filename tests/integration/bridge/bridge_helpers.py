"""Helpers for bridge integration tests: a real executor, real guests, cleanup checks.

``job_env`` gives each test a BridgeExecutor whose work root is short (so the
socket lives in the job dir) and records every guest pid through spawn_hook,
plus ``assert_nothing_left()``: no live process in any guest's process group,
no job dir / socket file, no staged (or, after a failure, any) output file.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import pytest

from casparian_trio.bridge import BridgeExecutor
from casparian_trio.envs import SYSTEM_ENV
from casparian_trio.protocol.messages import Dispatch, SinkConfig

PLUGINS = Path(__file__).parents[2] / "fixtures" / "plugins"
# Every deadline in these tests only stops a hung test (the host may be loaded
# many times over); none measures speed.
HANG_GUARD_S = 180.0


def plugin_source(name: str) -> str:
    return (PLUGINS / name).read_text()


def make_dispatch(source: str, file_path: str | Path = "/dev/null", **kw: object) -> Dispatch:
    sinks = kw.pop("sinks", (SinkConfig("output", "parquet://out"),))
    return Dispatch(
        plugin_name=str(kw.pop("plugin_name", "test_plugin")),
        file_path=str(file_path),
        sinks=tuple(sinks),  # type: ignore[arg-type]
        file_version_id=int(kw.pop("file_version_id", 7)),  # type: ignore[call-overload]
        env_hash=str(kw.pop("env_hash", SYSTEM_ENV)),
        source_code=source,
        artifact_hash=str(kw.pop("artifact_hash", "test")),
        **kw,  # type: ignore[arg-type]
    )


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@attrs.define
class JobEnv:
    executor: BridgeExecutor
    output: Path
    work: Path
    pids: list[int]

    def assert_nothing_left(self, *, failed: bool = True) -> None:
        assert self.pids, "no guest was spawned"
        for pgid in self.pids:
            with pytest.raises(ProcessLookupError):
                os.killpg(pgid, 0)
        assert list(self.work.iterdir()) == [], "job dir (and its socket) left behind"
        staged = [p for p in self.output.rglob("*") if p.name.endswith(".staging")]
        assert staged == [], "staged output left behind"
        if failed:
            assert [p for p in self.output.rglob("*") if p.is_file()] == []
