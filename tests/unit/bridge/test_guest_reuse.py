"""The guest's side of reuse: one compile per plugin version, a fresh Handler per job."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_bridge_framing import load_guest

from casparian_trio.bridge._guestdir import PluginKey
from casparian_trio.bridge._pool import retire_reason

SOURCE = """
COMPILED = []
COMPILED.append(1)

class Handler:
    def execute(self, file_path):
        return None
"""


def test_one_compile_per_guest_and_a_fresh_instance_per_job(tmp_path: Path) -> None:
    guest = load_guest()
    plugin = tmp_path / "plugin.py"
    plugin.write_text(SOURCE)
    loaded = guest.Loaded()
    job = {"plugin": str(plugin), "plugin_key": "a1/s1"}
    first, second = loaded.handler_for(job), loaded.handler_for(job)
    assert first is not second
    assert type(first) is type(second)
    assert type(first).execute.__globals__["COMPILED"] == [1]  # compiled once


def test_a_guest_refuses_another_plugin_version(tmp_path: Path) -> None:
    guest = load_guest()
    plugin = tmp_path / "plugin.py"
    plugin.write_text(SOURCE)
    loaded = guest.Loaded()
    loaded.handler_for({"plugin": str(plugin), "plugin_key": "a1/s1"})
    with pytest.raises(guest.PluginLoadError, match="never runs another plugin version"):
        loaded.handler_for({"plugin": str(plugin), "plugin_key": "a2/s2"})


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, None),
        ({"succeeded": False}, "did not succeed"),
        ({"reusable": False}, "does not reuse"),
        ({"alive": False}, "exited"),
        ({"jobs": 10}, "ran 10 jobs"),
        ({"rss_mb": 2000.0}, "RSS is 2000 MB"),
        ({"rss_mb": None}, None),
    ],
)
def test_retire_reason(changes: dict[str, object], reason: str | None) -> None:
    args: dict[str, object] = {
        "succeeded": True,
        "reusable": True,
        "alive": True,
        "jobs": 3,
        "rss_mb": 100.0,
        "max_jobs": 10,
        "max_rss_mb": 1024,
    }
    args.update(changes)
    got = retire_reason(**args)  # type: ignore[arg-type]
    if reason is None:
        assert got is None
    else:
        assert got is not None
        assert reason in got


def test_plugin_keys_differ_by_every_part() -> None:
    base = PluginKey("e", Path("/py"), "a", "s", None)
    assert base == PluginKey("e", Path("/py"), "a", "s", None)
    others = [
        PluginKey("e2", Path("/py"), "a", "s", None),
        PluginKey("e", Path("/py2"), "a", "s", None),
        PluginKey("e", Path("/py"), "a2", "s", None),
        PluginKey("e", Path("/py"), "a", "s2", None),
        PluginKey("e", Path("/py"), "a", "s", 64),
    ]
    assert all(k != base for k in others)
