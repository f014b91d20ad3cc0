"""``publish --sentinel``: DEPLOY over real ZeroMQ to a real Sentinel on a SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from casparian_trio.cli.publish import describe_result, request_deploy
from casparian_trio.config import SentinelConfig
from casparian_trio.errors import PluginError
from casparian_trio.protocol import Deploy
from casparian_trio.publish import inspect_plugin
from casparian_trio.runtime import serve_sentinel

TIMEOUT = 120  # a hang guard, not a speed limit

SOURCE = 'MANIFEST = {"version": "1.0.0", "pattern": "*.csv"}\n\nclass Handler:\n    pass\n'


def deploy_of(source: str, name: str = "sales") -> Deploy:
    info = inspect_plugin(source, filename=f"{name}.py")
    return Deploy(
        plugin_name=info.plugin_name,
        version=info.version,
        source_code=source,
        env_hash=info.env_hash,
        artifact_hash=info.artifact_hash,
        manifest=info.manifest,
    )


@pytest.fixture
async def sentinel_address(tmp_path: Path) -> AsyncIterator[str]:
    config = SentinelConfig(bind="tcp://127.0.0.1:*", db=tmp_path / "sentinel.db")
    async with trio.open_nursery() as nursery:
        with trio.fail_after(TIMEOUT):
            sentinel = await nursery.start(serve_sentinel, config)
        yield sentinel.channel.endpoint
        nursery.cancel_scope.cancel()


async def test_deploy_to_a_running_sentinel(sentinel_address: str) -> None:
    with trio.fail_after(TIMEOUT):
        first = await request_deploy(sentinel_address, deploy_of(SOURCE))
        again = await request_deploy(sentinel_address, deploy_of(SOURCE))
    assert first["created"] is True
    assert describe_result(first).startswith("published sales 1.0.0 (artifact ")
    assert again["created"] is False
    assert describe_result(again).endswith(": nothing to do")


async def test_a_refused_deploy_is_a_plugin_error(sentinel_address: str) -> None:
    bad = Deploy(plugin_name="sales", version="1", source_code="def f(): pass\n")
    with (
        trio.fail_after(TIMEOUT),
        pytest.raises(PluginError, match=r"refused sales: .*class Handler"),
    ):
        await request_deploy(sentinel_address, bad)
