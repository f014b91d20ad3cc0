"""Receipts that arrive together share one transaction, and each still counts exactly once (MockClock)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from services_harness import Cluster
from trio.testing import MockClock

from casparian_trio.protocol import Conclude, Heartbeat, encode
from casparian_trio.sentinel import Sentinel
from casparian_trio.store import ReceiptWrite, Recorded, Store


def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many writes each ``Store.record_receipts`` call carried."""
    sizes: list[int] = []
    real = Store.record_receipts

    async def counting(self: Store, writes: Sequence[ReceiptWrite], *, now: float) -> Recorded:
        sizes.append(len(writes))
        return await real(self, writes, now=now)

    monkeypatch.setattr(Store, "record_receipts", counting)
    return sizes


def frames(identity: bytes, job_id: int, payload: Conclude | Heartbeat) -> tuple[list[bytes], None]:
    return [identity, *encode(payload, job_id)], None


async def test_a_batch_records_its_receipts_together_and_refuses_duplicates_and_stale_ones(
    cluster: Cluster, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await cluster.start_sentinel()
    await cluster.start_worker("w1", concurrency=4)
    ids = await cluster.add_jobs(*(f"sleep-{s}.csv" for s in (50, 50, 50, 5)), max_attempts=1)
    for job_id in ids:
        await cluster.wait_status(job_id, "RUNNING")
    sentinel = cluster.sentinel
    assert isinstance(sentinel, Sentinel)
    sizes = batch_sizes(monkeypatch)
    me = b"w1"
    a, b, c, d = ids
    await sentinel.handle_batch(
        [
            frames(me, a, Conclude(status="SUCCESS", attempt=1, metrics={"rows": 7})),
            frames(me, a, Conclude(status="SUCCESS", attempt=1)),  # a duplicate
            frames(me, b, Conclude(status="FAILED", attempt=1, error_message="ValueError: x")),
            frames(me, c, Conclude(status="SUCCESS", attempt=2)),  # not the attempt it holds
            frames(b"stranger", c, Conclude(status="SUCCESS", attempt=1)),  # not its holder
        ]
    )
    assert sizes == [2]  # a and b, in one transaction
    row_a, row_b, row_c = [await cluster.job(j) for j in (a, b, c)]
    assert (row_a.status, row_a.result_summary["rows"]) == ("COMPLETED", 7)  # type: ignore[index]
    assert (row_b.status, row_b.error_message) == ("FAILED", "ValueError: x")
    assert row_c.status == "RUNNING"
    held = sentinel.ctx.registry.get(me)
    assert held is not None
    assert sorted(held.jobs) == sorted([c, d])
    for job_id in ids:  # the worker's own receipts come later: a and b's are refused
        await cluster.wait_status(job_id, "COMPLETED", "FAILED", within=200)
    assert [a_["outcome"] for a_ in await cluster.store.attempts(a)] == ["COMPLETED"]
    assert [a_["outcome"] for a_ in await cluster.store.attempts(b)] == ["FAILED"]
    assert (await cluster.job(c)).status == "COMPLETED"
    await cluster.quiet()


async def test_a_heartbeat_between_receipts_keeps_its_place(
    cluster: Cluster, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await cluster.start_sentinel()
    await cluster.start_worker("w1", concurrency=2)
    a, b = await cluster.add_jobs("sleep-50.csv", "sleep-50.csv", max_attempts=1)
    for job_id in (a, b):
        await cluster.wait_status(job_id, "RUNNING")
    sentinel = cluster.sentinel
    assert isinstance(sentinel, Sentinel)
    sizes = batch_sizes(monkeypatch)
    await sentinel.handle_batch(
        [
            frames(b"w1", a, Conclude(status="SUCCESS", attempt=1)),
            frames(b"w1", 0, Heartbeat(status="DRAINING", worker_id="w1")),
            frames(b"w1", b, Conclude(status="SUCCESS", attempt=1)),
        ]
    )
    assert sizes == [1, 1]  # the heartbeat splits the run: each side as it arrived
    worker = sentinel.ctx.registry.get(b"w1")
    assert worker is not None
    assert worker.status == "DRAINING"
    assert not worker.jobs
    assert [(await cluster.job(j)).status for j in (a, b)] == ["COMPLETED", "COMPLETED"]


async def test_many_quick_jobs_on_two_workers_each_complete_once(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    await cluster.start_sentinel()
    await cluster.start_worker("w1", concurrency=4)
    await cluster.start_worker("w2", concurrency=4)
    ids = await cluster.add_jobs(*(["ok.csv"] * 40 + ["fail.csv"] * 4), max_attempts=1)
    for job_id in ids:
        await cluster.wait_status(job_id, "COMPLETED", "FAILED", within=200)
    rows = [await cluster.job(j) for j in ids]
    assert [r.status for r in rows] == ["COMPLETED"] * 40 + ["FAILED"] * 4
    assert all(r.attempt == 1 for r in rows)
    runs = sorted(job_id for _, job_id, _ in cluster.executor.calls)
    assert runs == sorted(ids)  # each ran exactly once
    for job_id in ids:
        assert len(await cluster.store.attempts(job_id)) == 1
    await cluster.quiet()
