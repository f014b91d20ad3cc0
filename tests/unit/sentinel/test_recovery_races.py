"""Races a review found between partitions, restarts, hand-backs and cancels (MockClock)."""

from __future__ import annotations

import pytest
import trio
from services_harness import Cluster, wall
from trio.testing import MockClock

from casparian_trio.store import EnvSpec, queue


async def test_worker_back_from_a_partition_gets_its_job_again_once_it_stopped_the_old_attempt(
    cluster: Cluster, autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    await cluster.start_sentinel()
    await cluster.start_worker("w1")
    [job_id] = await cluster.add_jobs("deaf-20.csv")  # its attempt takes 20 s to stop
    await cluster.wait_status(job_id, "RUNNING")
    await trio.sleep(2)
    cluster.network.disconnect(b"w1")
    await trio.sleep(10)  # dropped after 6 s of silence; the job is requeued
    assert (await cluster.job(job_id)).status == "QUEUED"
    cluster.network.reconnect(b"w1")
    row = await cluster.wait_status(job_id, "COMPLETED", within=100)
    assert row.attempt == 2
    assert [a["outcome"] for a in await cluster.store.attempts(job_id)] == [
        "WORKER_LOST",
        "COMPLETED",
    ]
    stale = [r for r in caplog.records if "does not hold" in r.getMessage()]
    assert len(stale) == 1  # logged once, not on every heartbeat
    await cluster.quiet()


async def test_receipt_that_arrives_while_the_sentinel_is_down_is_kept(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    s1 = await cluster.start_sentinel()
    await cluster.start_worker("w1")
    [job_id] = await cluster.add_jobs("sleep-10.csv", max_attempts=1)
    await cluster.wait_status(job_id, "RUNNING")
    s1.kill()
    await trio.sleep(15)  # the job completes; its CONCLUDE waits in the worker's socket
    await cluster.start_sentinel()
    row = await cluster.wait_status(job_id, "COMPLETED", "FAILED")
    assert row.status == "COMPLETED"
    assert [a["outcome"] for a in await cluster.store.attempts(job_id)] == ["COMPLETED"]
    assert len(cluster.executor.calls) == 1
    await cluster.quiet()


async def test_draining_worker_that_reidentifies_is_not_fed_work(
    cluster: Cluster, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    s1 = await cluster.start_sentinel()
    w1 = await cluster.start_worker("w1", concurrency=2, grace_s=100)
    await cluster.add_jobs("sleep-50.csv")
    await cluster.wait_held(w1, 1)
    w1.service.request_shutdown()  # type: ignore[union-attr]
    await trio.sleep(1)
    s1.kill()
    [waiting] = await cluster.add_jobs("ok.csv")
    requeues = 0
    real_requeue = queue.requeue

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal requeues
        requeues += 1
        return real_requeue(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(queue, "requeue", counting)
    await cluster.start_sentinel()
    await trio.sleep(5)
    assert requeues <= 1  # at most one hand-back, never a loop
    assert (await cluster.job(waiting)).status == "QUEUED"


async def test_cancel_while_waiting_for_the_env_never_runs_the_job(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    cluster.envs.build_seconds = 5
    await cluster.start_sentinel()
    await cluster.start_worker("w1")
    env = EnvSpec(env_hash="a" * 64, lockfile="x", pyproject=None, python_version="3.11")
    await cluster.store.record_environment(env, now=wall())
    [job_id] = await cluster.add_jobs("sleep-20.csv", env_hash=env.env_hash)
    await cluster.wait_status(job_id, "RUNNING")
    await trio.sleep(1)
    asked = trio.current_time()
    await cluster.store.request_cancel(job_id, now=wall())
    await cluster.wait_status(job_id, "CANCELLED")
    assert trio.current_time() - asked <= 1.0
    await trio.sleep(30)
    assert cluster.executor.calls == []
    workers = {w["worker_id"]: w for w in await cluster.store.list_workers()}
    assert workers["w1"]["status"] != "UNHEALTHY"


async def test_dispatch_to_a_dead_worker_counts_the_job_it_was_running(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    await cluster.start_sentinel()
    w1 = await cluster.start_worker("w1", concurrency=2)
    [running] = await cluster.add_jobs("sleep-100.csv")
    await cluster.wait_held(w1, 1)
    w1.kill()  # e.g. the plugin crashed it
    [fresh] = await cluster.add_jobs("ok.csv")  # dispatched to the dead peer: unroutable
    await trio.sleep(1)
    row = await cluster.job(running)
    assert row.retry_count == 1
    assert [a["outcome"] for a in await cluster.store.attempts(running)] == ["WORKER_LOST"]
    assert (await cluster.job(fresh)).retry_count == 0  # never reached it: not counted


async def test_sentinel_restart_while_env_builds_does_not_count_an_attempt(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    cluster.envs.build_seconds = 20
    s1 = await cluster.start_sentinel()
    await cluster.start_worker("w1")
    env = EnvSpec(env_hash="b" * 64, lockfile="x", pyproject=None, python_version="3.11")
    await cluster.store.record_environment(env, now=wall())
    [job_id] = await cluster.add_jobs("ok.csv", env_hash=env.env_hash)
    await cluster.wait_status(job_id, "RUNNING")
    await trio.sleep(2)
    s1.kill()
    await trio.sleep(1)
    await cluster.start_sentinel()
    row = await cluster.wait_status(job_id, "COMPLETED", within=200)
    assert row.retry_count == 0
    await cluster.quiet()
