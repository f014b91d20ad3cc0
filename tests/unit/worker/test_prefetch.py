"""Prefetch under a MockClock: a worker holds one DISPATCH beyond its slot while jobs are short.

What must hold: the next short job is already on the worker when the slot frees
(no round trip between jobs); every job runs once; a job held behind one that
turned out long goes back to the Sentinel uncounted and runs elsewhere; a held
job's timeout counts from its start; an ABORT or a drain ends a held job
without running it; ``--prefetch 0`` holds nothing.
"""

from __future__ import annotations

import itertools

import pytest
import trio
from services_harness import Cluster, Handle, wall
from trio.testing import MockClock

from casparian_trio.worker.service import PREFETCH_HOLD_S, Worker


def _worker(handle: Handle) -> Worker:
    assert isinstance(handle.service, Worker)
    return handle.service


async def _wait_holding(handle: Handle, within: float = 60.0) -> int:
    """Until the worker holds a job it has not started; its id."""
    worker = _worker(handle)
    with trio.fail_after(within):
        while not worker.held:
            await trio.sleep(0.001)
    return next(iter(worker.held))


def _starts(cluster: Cluster, job_id: int) -> list[float]:
    return [t for t, jid, _ in cluster.executor.calls if jid == job_id]


async def test_short_jobs_are_held_ready_and_each_runs_once(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    await cluster.start_sentinel()
    w1 = await cluster.start_worker("w1")
    ids = await cluster.add_jobs(*["sleep-0.05.csv"] * 6)
    held = await _wait_holding(w1)
    assert held in ids[1:]  # the first job ran alone: nothing was known about its length
    assert len(_worker(w1).jobs) == 1  # one slot: held, not run beside it
    for job_id in ids:
        await cluster.wait_status(job_id, "COMPLETED")
    for job_id in ids:
        assert [a["outcome"] for a in await cluster.store.attempts(job_id)] == ["COMPLETED"]
        assert len(_starts(cluster, job_id)) == 1
    # Back to back: a held job starts the moment the slot frees (the hold adds no delay).
    starts = sorted(t for t, _, _ in cluster.executor.calls)
    gaps = [b - a for a, b in itertools.pairwise(starts[2:])]
    assert gaps == pytest.approx([0.05] * len(gaps), abs=1e-6)
    await cluster.quiet()


async def test_no_prefetch_means_a_round_trip_between_jobs(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    await cluster.start_sentinel()
    w1 = await cluster.start_worker("w1", prefetch=0)
    ids = await cluster.add_jobs(*["sleep-0.05.csv"] * 4)
    for job_id in ids:
        await cluster.wait_status(job_id, "COMPLETED")
    assert not _worker(w1).held
    await cluster.quiet()


async def test_a_job_held_behind_a_long_one_goes_back_uncounted_and_runs_elsewhere(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    await cluster.start_sentinel()
    w1 = await cluster.start_worker("w1")
    short, long, behind = await cluster.add_jobs("sleep-0.05.csv", "sleep-100.csv", "ok.csv")
    await cluster.wait_status(short, "COMPLETED")
    assert await _wait_holding(w1) == behind  # w1 runs the long one, holds the next
    held_at = trio.current_time()
    row = await cluster.wait_status(behind, "QUEUED")  # handed back after the hold
    assert trio.current_time() - held_at == pytest.approx(PREFETCH_HOLD_S, abs=0.1)
    assert row.retry_count == 0
    w2 = await cluster.start_worker("w2")
    await cluster.wait_status(behind, "COMPLETED")
    assert [a["outcome"] for a in await cluster.store.attempts(behind)] == [
        "HANDED_BACK",
        "COMPLETED",
    ]
    assert _starts(cluster, behind)[0] < 100  # on w2, not after the long job
    # w1 got no prefetch after handing one back: nothing more is held there.
    assert not _worker(w1).held
    await cluster.wait_status(long, "COMPLETED", within=200)
    assert not _worker(w2).held
    await cluster.quiet()


async def test_a_held_jobs_timeout_counts_from_its_start(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    """Held 1.9 s, then 4.5 s of work under a 5 s timeout: it completes, the watchdog is quiet."""
    await cluster.start_sentinel(abort_grace_s=0.5)
    w1 = await cluster.start_worker("w1")
    first, second, third = await cluster.add_jobs(
        "sleep-0.05.csv", "sleep-1.9.csv", "sleep-4.5.csv", timeout_s=5
    )
    await cluster.wait_status(first, "COMPLETED")
    assert await _wait_holding(w1) == third
    row = await cluster.wait_status(third, "COMPLETED", "FAILED", within=30)
    assert row.status == "COMPLETED", row.error_message
    assert [a["outcome"] for a in await cluster.store.attempts(third)] == ["COMPLETED"]
    assert (await cluster.job(second)).status == "COMPLETED"
    await cluster.quiet()


async def test_cancelling_a_held_job_ends_it_without_running_it(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    await cluster.start_sentinel()
    w1 = await cluster.start_worker("w1")
    short, slow, behind = await cluster.add_jobs("sleep-0.05.csv", "sleep-1.csv", "ok.csv")
    await cluster.wait_status(short, "COMPLETED")
    assert await _wait_holding(w1) == behind
    await cluster.store.request_cancel(behind, now=wall())
    row = await cluster.wait_status(behind, "CANCELLED")
    assert row.status == "CANCELLED"
    assert _starts(cluster, behind) == []
    assert not _worker(w1).held
    await cluster.wait_status(slow, "COMPLETED")
    await cluster.quiet()


async def test_a_draining_worker_hands_its_held_job_back_at_once(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    await cluster.start_sentinel()
    w1 = await cluster.start_worker("w1", grace_s=30.0)
    short, slow, behind = await cluster.add_jobs("sleep-0.05.csv", "sleep-1.csv", "ok.csv")
    await cluster.wait_status(short, "COMPLETED")
    assert await _wait_holding(w1) == behind
    began = trio.current_time()
    _worker(w1).request_shutdown()
    row = await cluster.wait_status(behind, "QUEUED")
    assert trio.current_time() - began < PREFETCH_HOLD_S  # not after its hold: at the drain
    assert row.retry_count == 0
    await cluster.wait_status(slow, "COMPLETED")  # the running one finishes within the grace
    await w1.stopped.wait()
    assert _starts(cluster, behind) == []
    await cluster.start_worker("w2")
    await cluster.wait_status(behind, "COMPLETED")
    await cluster.quiet()


async def test_a_lost_worker_costs_its_held_job_no_attempt(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    await cluster.start_sentinel()
    w1 = await cluster.start_worker("w1")
    short, slow, behind = await cluster.add_jobs(
        "sleep-0.05.csv", "sleep-1.csv", "ok.csv", max_attempts=1
    )
    await cluster.wait_status(short, "COMPLETED")
    assert await _wait_holding(w1) == behind
    w1.kill()  # SIGKILL: no goodbye, no receipts
    row = await cluster.wait_status(behind, "QUEUED", within=300)
    assert row.retry_count == 0
    assert (await cluster.job(slow)).status in ("FAILED", "QUEUED")  # it was running: counted
    await cluster.start_worker("w2")
    await cluster.wait_status(behind, "COMPLETED", within=300)
    assert [a["outcome"] for a in await cluster.store.attempts(behind)] == [
        "HANDED_BACK",
        "COMPLETED",
    ]
    await cluster.quiet()
