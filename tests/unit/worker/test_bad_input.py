"""Whatever arrives on the wire, the Worker logs, drops, and keeps serving."""

from __future__ import annotations

import struct

import trio
import trio.testing
from services_harness import Cluster


async def test_worker_drops_bad_messages_and_keeps_serving(
    cluster: Cluster, autojump_clock: trio.testing.MockClock
) -> None:
    sentinel = (await cluster.start_sentinel()).service
    await cluster.start_worker("w1")
    await trio.sleep(1)  # w1 has identified
    for frames in ([b"junk"], [b"\x04\x02", b"{}"], [struct.pack("!BBHQI", 4, 2, 0, 7, 2), b"{}"],
                   [struct.pack("!BBHQI", 4, 99, 0, 7, 2), b"{}"]):  # fmt: skip
        await sentinel.channel.send([b"w1", *frames])  # type: ignore[union-attr]
    [job_id] = await cluster.add_jobs("ok.csv")
    row = await cluster.wait_status(job_id, "COMPLETED")
    assert row.attempt == 1
