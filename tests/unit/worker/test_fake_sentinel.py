"""Whoever sends the DISPATCH, the worker's own limits hold (MockClock, memory transport).

A raw ROUTER plays a Sentinel that is not to be trusted: it dispatches
``/etc/passwd``, and a plugin without a lockfile to a keyed worker. The worker
answers each with a FAILED, deterministic receipt and never runs the plugin.
"""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing
from services_harness import ADDRESS, Cluster

from casparian_trio.config import WorkerConfig
from casparian_trio.protocol import Conclude, Dispatch, SinkConfig, decode, encode
from casparian_trio.worker import Worker


def dispatch(path: str, env_hash: str = "e" * 64) -> Dispatch:
    return Dispatch(
        plugin_name="p",
        file_path=path,
        sinks=(SinkConfig(topic="output", uri="parquet://out"),),
        file_version_id=1,
        env_hash=env_hash,
        source_code="print('owned')",
        artifact_hash="a",
        attempt=1,
    )


async def receipt_for(router: object, job_id: int) -> Conclude:
    with trio.fail_after(30):
        while True:
            _identity, *frames = await router.receive()  # type: ignore[attr-defined]
            message = decode(frames)
            if message.job_id == job_id and isinstance(message.payload, Conclude):
                return message.payload


async def test_a_fake_sentinel_gets_refusals_not_code_execution(
    cluster: Cluster, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    router = cluster.network.bind_router(ADDRESS)
    config = WorkerConfig(
        connect=ADDRESS, keys=tmp_path, key="w1", source_roots=(str(tmp_path / "data"),)
    )
    channel = cluster.network.connect_dealer(ADDRESS, identity=config.identity)
    worker = Worker(config=config, channel=channel, executor=cluster.executor, envs=cluster.envs)
    cluster.nursery.start_soon(worker.run)
    await trio.sleep(1)
    await router.send([b"w1", *encode(dispatch("/etc/passwd"), 7)])
    outside = await receipt_for(router, 7)
    await router.send([b"w1", *encode(dispatch(str(tmp_path / "data" / "x"), "system"), 8)])
    system = await receipt_for(router, 8)
    for receipt in (outside, system):
        assert receipt.status == "FAILED"
        assert receipt.deterministic
    assert "not under this worker's source roots" in (outside.error_message or "")
    assert "--allow-system-env" in (system.error_message or "")
    assert cluster.executor.calls == []  # nothing reached the executor
    worker.request_shutdown()
    channel.close()
    router.close()
