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

from casparian_trio.protocol.limits import PREFETCH_HOLD_S
from casparian_trio.store import EnvSpec
from casparian_trio.worker.service import Worker


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


async def _holding_one(
    cluster: Cluster, ahead: str, *, max_attempts: int | None = None, **worker: object
) -> tuple[Handle, int, int]:
    """A Sentinel and worker w1 that, after a short job, runs ``ahead`` and holds ``ok.csv``.

    Returns (w1, the job ahead, the held job).
    """
    await cluster.start_sentinel()
    w1 = await cluster.start_worker("w1", **worker)
    short, running, behind = await cluster.add_jobs(
        "sleep-0.05.csv", ahead, "ok.csv", max_attempts=max_attempts
    )
    await cluster.wait_status(short, "COMPLETED")
    assert await _wait_holding(w1) == behind
    return w1, running, behind


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
    w1, long, behind = await _holding_one(cluster, "sleep-100.csv")
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
    w1, slow, behind = await _holding_one(cluster, "sleep-1.csv")
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
    w1, slow, behind = await _holding_one(cluster, "sleep-1.csv", grace_s=30.0)
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
    w1, slow, behind = await _holding_one(cluster, "sleep-1.csv", max_attempts=1)
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


async def test_an_idle_workers_slots_fill_before_a_busy_workers_prefetch(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    await cluster.start_sentinel()
    w1 = await cluster.start_worker("w1")
    short, long = await cluster.add_jobs("sleep-0.05.csv", "sleep-100.csv")
    await cluster.wait_status(short, "COMPLETED")
    await cluster.wait_held(w1, 1)  # the long one runs; w1's last job was short
    w2 = await cluster.start_worker("w2", concurrency=2)
    await trio.sleep(0.5)
    x, y = await cluster.add_jobs("sleep-0.5.csv", "sleep-0.5.csv")
    await cluster.wait_held(w2, 2)
    assert not _worker(w1).held
    for job_id in (x, y):
        await cluster.wait_status(job_id, "COMPLETED")
        assert [a["outcome"] for a in await cluster.store.attempts(job_id)] == ["COMPLETED"]
    await cluster.wait_status(long, "COMPLETED", within=200)
    await cluster.quiet()


async def test_the_watchdog_allows_a_held_job_its_wait(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    """Timeout 1 s and abort grace 0.3 s, held 1.9 s behind another job: it still runs."""
    await cluster.start_sentinel(abort_grace_s=0.3)
    await cluster.start_worker("w1")
    first, second = await cluster.add_jobs("sleep-0.05.csv", "sleep-1.9.csv", plugin="p")
    (third,) = await cluster.add_jobs("ok.csv", plugin="q", timeout_s=1, max_attempts=1)
    await cluster.wait_status(first, "COMPLETED")
    row = await cluster.wait_status(third, "COMPLETED", "FAILED", within=60)
    assert row.status == "COMPLETED", row.error_message
    assert len(_starts(cluster, third)) == 1
    assert (await cluster.job(second)).status == "COMPLETED"
    await cluster.quiet()


async def test_a_job_that_started_at_once_counts_when_its_worker_dies(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    """Job A waits for its env on the Sentinel; job B, claimed after it, goes to the free slot.

    B runs at once on the worker, so the Sentinel must not take it for held
    ready: a worker lost while running it costs B its attempt.
    """
    env = EnvSpec(env_hash="e" * 64, lockfile="lock", pyproject=None, python_version="3.11")
    await cluster.store.record_environment(env, now=wall())
    await cluster.start_sentinel()
    w1 = await cluster.start_worker("w1")
    (first,) = await cluster.add_jobs("sleep-0.05.csv")
    await cluster.wait_status(first, "COMPLETED")
    (a,) = await cluster.add_jobs("sleep-0.05.csv", plugin="q", env_hash="e" * 64)
    (b,) = await cluster.add_jobs("sleep-100.csv", plugin="p", max_attempts=1)
    with trio.fail_after(30):
        while not _starts(cluster, b):
            await trio.sleep(0.01)
    assert cluster.sentinel is not None
    [state] = cluster.sentinel.ctx.registry.workers.values()
    assert not state.jobs[b].queued
    w1.kill()
    row = await cluster.wait_status(b, "FAILED", "QUEUED", within=300)
    assert row.status == "FAILED"  # max_attempts 1: the lost run was its attempt
    assert [x["outcome"] for x in await cluster.store.attempts(b)] == ["WORKER_LOST"]
    assert _starts(cluster, a) == []


async def test_a_job_never_sent_costs_no_attempt_when_its_worker_is_lost(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    """Claimed for w1, waiting for w1 to build its env: w1 dies, the job was never sent."""
    env = EnvSpec(env_hash="e" * 64, lockfile="lock", pyproject=None, python_version="3.11")
    await cluster.store.record_environment(env, now=wall())
    cluster.envs.build_seconds = 30.0
    await cluster.start_sentinel()
    w1 = await cluster.start_worker("w1")
    (job_id,) = await cluster.add_jobs("ok.csv", plugin="q", env_hash="e" * 64, max_attempts=1)
    assert cluster.sentinel is not None
    registry = cluster.sentinel.ctx.registry
    with trio.fail_after(60):
        while not any(
            (held := w.jobs.get(job_id)) is not None and held.pending is not None
            for w in registry.workers.values()
        ):
            await trio.sleep(0.01)
    w1.kill()
    row = await cluster.wait_status(job_id, "QUEUED", "FAILED", within=300)
    assert row.status == "QUEUED"
    assert row.retry_count == 0
    cluster.envs.build_seconds = 1.0
    await cluster.start_worker("w2")
    await cluster.wait_status(job_id, "COMPLETED", within=300)
    assert [a["outcome"] for a in await cluster.store.attempts(job_id)] == [
        "HANDED_BACK",
        "COMPLETED",
    ]
    assert len(_starts(cluster, job_id)) == 1
