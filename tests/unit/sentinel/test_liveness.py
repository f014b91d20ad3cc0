"""Who is alive, told truthfully: goodbyes, the Sentinel's answers and its own heartbeat.

MockClock over the memory transport: each test simulates up to a minute in
milliseconds. Raw DEALERs stand in for workers where a test needs to say
exactly what a worker sends (an old one, one whose goodbye crosses a DISPATCH).
"""

from __future__ import annotations

import logging

import pytest
import trio
from services_harness import ADDRESS, Cluster, wall
from trio.testing import MockClock

from casparian_trio.protocol import Dispatch, Heartbeat, Identify, Payload, decode, encode
from casparian_trio.sentinel import Sentinel
from casparian_trio.transport import MemoryChannel


def messages(caplog: pytest.LogCaptureFixture, *, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return messages(caplog, level=logging.WARNING)


async def send(channel: MemoryChannel, payload: Payload, job_id: int = 0) -> None:
    await channel.send(encode(payload, job_id))


async def receive(channel: MemoryChannel, within: float = 10.0) -> tuple[int, Payload]:
    with trio.fail_after(within):
        message = decode(await channel.receive())
    return message.job_id, message.payload


async def worker_rows(cluster: Cluster) -> dict[str, str]:
    return {w["worker_id"]: w["status"] for w in await cluster.store.list_workers()}


@pytest.fixture(autouse=True)
def debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="casparian_trio")


# --- goodbyes -----------------------------------------------------------------------------------


async def test_a_worker_that_stops_on_purpose_is_stopped_not_lost(
    cluster: Cluster, autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    await cluster.start_sentinel(heartbeat_interval_s=2.0)
    w1 = await cluster.start_worker("w1", heartbeat_interval_s=2.0)
    [job_id] = await cluster.add_jobs("sleep-3.csv")
    await cluster.wait_status(job_id, "COMPLETED")
    asked = trio.current_time()
    w1.service.request_shutdown()  # type: ignore[union-attr]
    await w1.stopped.wait()
    # one hand-back linger, then the goodbye is acknowledged at once
    assert trio.current_time() - asked == pytest.approx(0.2, abs=0.01)
    sentinel = cluster.sentinel
    assert isinstance(sentinel, Sentinel)
    assert sentinel.ctx.registry.workers == {}
    assert (await worker_rows(cluster))["w1"] == "STOPPED"
    await cluster.quiet(30)  # long past the liveness timeout: still STOPPED, never LOST
    assert (await worker_rows(cluster))["w1"] == "STOPPED"
    assert warnings(caplog) == []
    assert "worker w1 stopped (it said goodbye)" in messages(caplog)
    assert not any("did not acknowledge" in m for m in messages(caplog, level=logging.DEBUG))


async def test_a_job_handed_back_at_stop_is_requeued_uncounted_and_the_worker_stopped(
    cluster: Cluster, autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    await cluster.start_sentinel()
    w1 = await cluster.start_worker("w1", grace_s=1.0)
    [job_id] = await cluster.add_jobs("sleep-100.csv")
    await cluster.wait_held(w1, 1)
    w1.service.request_shutdown()  # type: ignore[union-attr]
    await w1.stopped.wait()
    row = await cluster.wait_status(job_id, "QUEUED")
    assert row.retry_count == 0
    assert [a["outcome"] for a in await cluster.store.attempts(job_id)] == ["HANDED_BACK"]
    assert (await worker_rows(cluster))["w1"] == "STOPPED"
    await trio.sleep(30)
    assert not any("lost" in m for m in warnings(caplog))


async def test_a_dispatch_that_crosses_the_goodbye_goes_back_uncounted(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    await cluster.start_sentinel()
    raw = cluster.network.connect_dealer(ADDRESS, identity=b"raw")
    await send(raw, Identify(worker_id="raw", answer_heartbeats=True))
    assert await receive(raw) == (0, Heartbeat.answer("raw"))
    [job_id] = await cluster.add_jobs("ok.csv")
    got, dispatch = await receive(raw)
    assert (got, type(dispatch)) == (job_id, Dispatch)
    # It says goodbye without running the job (the DISPATCH arrived after it stopped).
    await send(raw, Heartbeat(status="DRAINING", worker_id="raw", stopping=True))
    assert await receive(raw) == (0, Heartbeat.answer("raw", stopping=True))
    row = await cluster.wait_status(job_id, "QUEUED")
    assert row.retry_count == 0
    assert [a["outcome"] for a in await cluster.store.attempts(job_id)] == ["HANDED_BACK"]
    assert (await worker_rows(cluster))["raw"] == "STOPPED"


# --- the Sentinel answers ------------------------------------------------------------------------


async def test_the_sentinel_answers_only_workers_that_ask(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    await cluster.start_sentinel()
    new = cluster.network.connect_dealer(ADDRESS, identity=b"new")
    old = cluster.network.connect_dealer(ADDRESS, identity=b"old")
    await send(new, Identify(worker_id="new", answer_heartbeats=True))
    await send(old, Identify(worker_id="old"))
    for _ in range(3):
        await trio.sleep(2)
        await send(new, Heartbeat(status="IDLE", worker_id="new"))
        await send(old, Heartbeat(status="IDLE"))
    for _ in range(4):  # the IDENTIFY's answer and one per HEARTBEAT
        assert await receive(new) == (0, Heartbeat.answer("new"))
    with trio.move_on_after(30) as waited:
        await old.receive()  # an old worker is never sent a message it would refuse
    assert waited.cancelled_caught


# --- the Sentinel's own heartbeat -------------------------------------------------------------------


async def test_the_sentinel_records_its_heartbeat_and_its_clean_stop(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    sentinel = await cluster.start_sentinel(heartbeat_interval_s=2.0)
    record = await cluster.store.sentinel()
    assert record is not None
    assert (record.bind, record.liveness_s, record.stopped_at) == (ADDRESS, 6.0, None)
    assert record.started_at == pytest.approx(wall())
    assert record.is_running(wall())
    await trio.sleep(11)
    record = await cluster.store.sentinel()
    assert record is not None
    assert wall() - record.last_seen_at <= 2.0  # refreshed every interval
    assert record.is_running(wall())
    sentinel.kill()  # cancelled: its shielded cleanup still runs
    await sentinel.stopped.wait()
    record = await cluster.store.sentinel()
    assert record is not None
    assert record.stopped_at == pytest.approx(wall())
    assert not record.is_running(wall())
