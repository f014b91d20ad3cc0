"""A keyed Sentinel believes the key, not the peer: MockClock over the memory transport.

The memory network plays the ZAP User-Id of each dealer (``connect_dealer(...,
user_id=)``); these tests check the Sentinel's side of the rules in
``sentinel/authz.py``: identity from the key, DEPLOY for admins only, reports
on a job only from the key holding it, no worker row for what is refused.
"""

from __future__ import annotations

from pathlib import Path

import trio
from services_harness import ADDRESS, Cluster
from trio.testing import MockClock

from casparian_trio.protocol import (
    Conclude,
    Deploy,
    Dispatch,
    Err,
    Heartbeat,
    Identify,
    JobRef,
    Payload,
    decode,
    encode,
)
from casparian_trio.transport import MemoryChannel

KEYS = Path("/nonexistent/keys")  # the Sentinel only needs to know it is keyed
SOURCE = 'MANIFEST = {"pattern": "*.txt"}\n\n\nclass Handler:\n    pass\n'


async def send(channel: MemoryChannel, payload: Payload, job_id: int = 0) -> None:
    await channel.send(encode(payload, job_id))


async def collect(channel: MemoryChannel, seconds: float = 5.0) -> list[tuple[int, Payload]]:
    got = []
    with trio.move_on_after(seconds):
        while True:
            message = decode(await channel.receive())
            got.append((message.job_id, message.payload))
    return got


def dealer(cluster: Cluster, identity: bytes, user_id: str | None) -> MemoryChannel:
    return cluster.network.connect_dealer(ADDRESS, identity=identity, user_id=user_id)


async def rows(cluster: Cluster) -> dict[str, str]:
    return {w["worker_id"]: w["status"] for w in await cluster.store.list_workers()}


async def take_job(channel: MemoryChannel, worker_id: str) -> tuple[int, int]:
    await send(channel, Identify(worker_id=worker_id, answer_heartbeats=True))
    await send(channel, Heartbeat(status="IDLE", worker_id=worker_id, free_slots=1))
    with trio.fail_after(5):
        while True:
            message = decode(await channel.receive())
            if isinstance(message.payload, Dispatch):
                assert message.payload.attempt is not None
                return message.job_id, message.payload.attempt


async def test_the_worker_is_named_after_its_key_and_unkeyed_peers_leave_no_row(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    await cluster.start_sentinel(keys=KEYS)
    nobody = dealer(cluster, b"ghost", None)
    admin = dealer(cluster, b"ops", "admin:ops")
    forged = dealer(cluster, b"ghost2", "root:ghost2")  # a User-Id we never issue
    for channel, name in ((nobody, "ghost"), (admin, "ops"), (forged, "ghost2")):
        await send(channel, Identify(worker_id=name, slots=50, answer_heartbeats=True))
        assert await collect(channel) == []
    liar = dealer(cluster, b"w1", "worker:w1")
    await send(liar, Identify(worker_id="somebody-else", answer_heartbeats=True))
    [(_, answer)] = await collect(liar)
    assert isinstance(answer, Heartbeat)
    assert answer.worker_id == "w1"
    assert await rows(cluster) == {"w1": "IDLE"}


async def test_a_worker_key_cannot_report_on_another_workers_job(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    await cluster.start_sentinel(keys=KEYS)
    [job_id] = await cluster.add_jobs("ok.csv")
    w1 = dealer(cluster, b"w1", "worker:w1")
    taken, attempt = await take_job(w1, "w1")
    assert taken == job_id
    held = (JobRef(job_id, attempt),)
    receipt = Conclude(status="SUCCESS", metrics={"rows": 1}, attempt=attempt)
    w2 = dealer(cluster, b"w2", "worker:w2")
    await send(w2, Identify(worker_id="w1", answer_heartbeats=True, jobs=held))
    await send(w2, receipt, job_id)  # under its own route: it holds nothing
    hijack = dealer(cluster, b"w1", "worker:w2")  # w1's routing id, w2's key
    await send(hijack, Heartbeat(status="BUSY", worker_id="w1", free_slots=0, jobs=held))
    await send(hijack, receipt, job_id)
    await send(hijack, Err(message="forged"), job_id)
    await trio.sleep(1)
    await send(w1, Heartbeat(status="BUSY", worker_id="w1", free_slots=0, jobs=held))
    row = await cluster.job(job_id)
    assert row.status == "RUNNING"
    assert row.worker_id == "w1"
    await send(w1, receipt, job_id)  # the holder's own receipt counts
    assert (await cluster.wait_status(job_id, "COMPLETED")).worker_id == "w1"


async def test_only_an_admin_key_may_deploy(cluster: Cluster, autojump_clock: MockClock) -> None:
    await cluster.start_sentinel(keys=KEYS)
    deploy = Deploy(plugin_name="fresh", version="1.0", source_code=SOURCE)
    worker = dealer(cluster, b"w1", "worker:w1")
    await send(worker, deploy)
    [(_, refused)] = await collect(worker)
    assert isinstance(refused, Err)
    assert "only admin keys may deploy" in refused.message
    assert await cluster.store.routing_rules() == []
    admin = dealer(cluster, b"publish-1", "admin:ops")
    await send(admin, deploy)
    [(_, done)] = await collect(admin)
    assert isinstance(done, Conclude)
    assert done.status == "SUCCESS"
    assert [r["plugin_name"] for r in await cluster.store.routing_rules()] == ["fresh"]


async def test_without_keys_everything_is_accepted_as_before(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    await cluster.start_sentinel()
    peer = dealer(cluster, b"raw", None)
    await send(peer, Identify(worker_id="raw", answer_heartbeats=True))
    [(_, answer)] = await collect(peer)
    assert isinstance(answer, Heartbeat)
    assert await rows(cluster) == {"raw": "IDLE"}


async def test_workers_lost_longer_than_the_retention_are_pruned(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    await cluster.start_sentinel(worker_retention_s=30.0)
    w1 = await cluster.start_worker("w1")
    w2 = await cluster.start_worker("w2")
    await trio.sleep(1)
    assert await rows(cluster) == {"w1": "IDLE", "w2": "IDLE"}
    w1.kill()  # silent: LOST after the liveness timeout, pruned 30 s later
    await trio.sleep(20)
    assert (await rows(cluster))["w1"] == "LOST"
    await trio.sleep(60)  # past the retention and a prune interval
    assert await rows(cluster) == {"w2": "IDLE"}
    w2.kill()
