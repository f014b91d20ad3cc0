"""Job lifecycle under a MockClock: each test simulates a minute or more in milliseconds."""

from __future__ import annotations

import itertools

import pytest
import trio
from services_harness import Cluster, wall
from trio.testing import MockClock

from casparian_trio.store import EnvSpec


async def test_jobs_complete_on_one_worker(cluster: Cluster, autojump_clock: MockClock) -> None:
    await cluster.start_sentinel()
    await cluster.start_worker("w1")
    ids = await cluster.add_jobs("ok.csv", "sleep-3.csv")
    for job_id in ids:
        row = await cluster.wait_status(job_id, "COMPLETED")
        assert row.attempt == 1
        assert row.result_summary is not None
        assert row.result_summary["rows"] == 3
    await cluster.quiet()


async def test_silent_worker_is_dropped_and_its_job_requeued(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    await cluster.start_sentinel(heartbeat_interval_s=2.0)
    w1 = await cluster.start_worker("w1", heartbeat_interval_s=2.0)
    [job_id] = await cluster.add_jobs("sleep-100.csv")
    await cluster.wait_status(job_id, "RUNNING")
    await trio.sleep(10)
    w1.kill()  # no receipt, no more heartbeats
    killed_at = trio.current_time()
    await cluster.wait_status(job_id, "QUEUED")
    requeued_after = trio.current_time() - killed_at
    # liveness is 3 x 2 s from the last heartbeat, which came at most one interval before the kill
    assert 6.0 - 2.0 <= requeued_after <= 6.0 + 0.6
    row = await cluster.job(job_id)
    assert row.retry_count == 1  # "worker lost" counts as an attempt
    await cluster.start_worker("w2")
    row = await cluster.wait_status(job_id, "COMPLETED", within=200)
    assert row.attempt == 2
    outcomes = [a["outcome"] for a in await cluster.store.attempts(job_id)]
    assert outcomes == ["WORKER_LOST", "COMPLETED"]
    await cluster.quiet()


async def test_job_timeout_enforced_by_sentinel_when_worker_ignores_it(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    # The worker's own timeout cannot stop a guest that ignores cancellation
    # ("deaf"); the Sentinel aborts at timeout + grace and gives up one grace later.
    await cluster.start_sentinel(abort_grace_s=10.0)
    await cluster.start_worker("w1", grace_s=1.0)
    [job_id] = await cluster.add_jobs("deaf-1000.csv", timeout_s=20, max_attempts=1)
    row = await cluster.wait_status(job_id, "FAILED", within=200)
    assert trio.current_time() == pytest.approx(20 + 10 + 10, abs=0.6)
    assert "did not confirm the abort" in (row.error_message or "")
    workers = {w["worker_id"]: w for w in await cluster.store.list_workers()}
    assert workers["w1"]["status"] == "UNHEALTHY"
    await cluster.quiet()


@pytest.mark.parametrize(
    ("name", "status"), [("gone.csv", "SKIPPED"), ("changed.csv", "SUPERSEDED")]
)
async def test_an_input_no_longer_queued_ends_uncounted_at_attempt_one(
    cluster: Cluster, autojump_clock: MockClock, name: str, status: str
) -> None:
    await cluster.start_sentinel()
    await cluster.start_worker("w1")
    [job_id] = await cluster.add_jobs(name)
    row = await cluster.wait_status(job_id, status)
    assert (row.attempt, row.retry_count) == (1, 0)
    assert row.error_message is not None
    assert row.error_message.startswith("file ")
    assert [a["outcome"] for a in await cluster.store.attempts(job_id)] == [status]
    await trio.sleep(60)  # never retried
    assert len([c for c in cluster.executor.calls if c[1] == job_id]) == 1
    assert (await cluster.job(job_id)).status == status
    await cluster.quiet()


async def test_retry_backoff_schedule_is_exact(cluster: Cluster, autojump_clock: MockClock) -> None:
    await cluster.start_sentinel()
    await cluster.start_worker("w1")
    [job_id] = await cluster.add_jobs("fail.csv", max_attempts=4)
    row = await cluster.wait_status(job_id, "FAILED", within=120)
    starts = [t for t, jid, _ in cluster.executor.calls if jid == job_id]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps == pytest.approx([2.0, 4.0, 8.0], abs=1e-6)
    assert row.retry_count == 4
    assert row.attempt == 4
    await cluster.quiet()


async def test_abort_of_running_job_ends_cancelled(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    await cluster.start_sentinel()
    await cluster.start_worker("w1")
    [job_id] = await cluster.add_jobs("sleep-100.csv")
    await cluster.wait_status(job_id, "RUNNING")
    await trio.sleep(5)
    asked_at = trio.current_time()
    await cluster.store.request_cancel(job_id, now=wall())
    row = await cluster.wait_status(job_id, "CANCELLED")
    assert trio.current_time() - asked_at <= 1.0
    assert row.attempt == 1
    await trio.sleep(60)  # never retried
    assert (await cluster.job(job_id)).status == "CANCELLED"
    assert len(cluster.executor.calls) == 1
    await cluster.quiet()


async def test_cancel_of_queued_job(cluster: Cluster, autojump_clock: MockClock) -> None:
    await cluster.start_sentinel()
    [job_id] = await cluster.add_jobs("ok.csv")
    assert await cluster.store.request_cancel(job_id, now=wall()) == "CANCELLED"
    await cluster.start_worker("w1")
    await trio.sleep(10)
    assert cluster.executor.calls == []
    await cluster.quiet()


async def test_short_jobs_do_not_wait_behind_a_long_one(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    await cluster.start_sentinel()
    await cluster.start_worker("w1")
    [long] = await cluster.add_jobs("sleep-1000.csv")
    await cluster.wait_status(long, "RUNNING")
    await cluster.start_worker("w2")
    shorts = await cluster.add_jobs("sleep-1.csv", "sleep-1.csv", "sleep-1.csv")
    for job_id in shorts:
        await cluster.wait_status(job_id, "COMPLETED", within=30)
    assert (await cluster.job(long)).status == "RUNNING"
    await cluster.quiet()


async def test_env_is_prepared_before_dispatch(cluster: Cluster, autojump_clock: MockClock) -> None:
    await cluster.store.record_environment(
        EnvSpec(env_hash="e" * 64, lockfile="lock", pyproject="[project]", python_version="3.11"),
        now=wall(),
    )
    await cluster.start_sentinel()
    await cluster.start_worker("w1")
    ids = await cluster.add_jobs("ok.csv", "ok.csv", env_hash="e" * 64)
    for job_id in ids:
        await cluster.wait_status(job_id, "COMPLETED")
    assert cluster.envs.builds == 1
    await cluster.quiet()


async def test_sentinel_restart_readopts_running_job(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    s1 = await cluster.start_sentinel()
    await cluster.start_worker("w1")
    [job_id] = await cluster.add_jobs("sleep-30.csv")
    await cluster.wait_status(job_id, "RUNNING")
    await trio.sleep(5)
    s1.kill()
    await trio.sleep(5)
    await cluster.start_sentinel()
    row = await cluster.wait_status(job_id, "COMPLETED", within=100)
    assert row.attempt == 1  # adopted, not rerun
    assert len(cluster.executor.calls) == 1
    assert [a["outcome"] for a in await cluster.store.attempts(job_id)] == ["COMPLETED"]
    await cluster.quiet()


async def test_sentinel_restart_requeues_job_nobody_names(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    s1 = await cluster.start_sentinel()
    w1 = await cluster.start_worker("w1")
    [job_id] = await cluster.add_jobs("sleep-30.csv")
    await cluster.wait_status(job_id, "RUNNING")
    s1.kill()
    w1.kill()  # the worker died too while the Sentinel was down
    await trio.sleep(3)
    await cluster.start_sentinel()
    restarted = trio.current_time()
    await cluster.wait_status(job_id, "QUEUED")
    assert trio.current_time() - restarted == pytest.approx(6.0, abs=0.6)
    await cluster.start_worker("w2")
    row = await cluster.wait_status(job_id, "COMPLETED", within=100)
    assert row.attempt == 2
    await cluster.quiet()


async def test_an_evicted_env_is_prepared_again(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    env = EnvSpec(env_hash="c" * 64, lockfile="lock", pyproject="[project]", python_version="3.11")
    await cluster.store.record_environment(env, now=wall())
    await cluster.start_sentinel()
    await cluster.start_worker("w1")
    [first] = await cluster.add_jobs("ok.csv", env_hash=env.env_hash)
    await cluster.wait_status(first, "COMPLETED")
    cluster.envs.ready.clear()  # evicted (e.g. --envs-max-bytes); heartbeats report it
    await trio.sleep(5)
    [second] = await cluster.add_jobs("ok.csv", env_hash=env.env_hash)
    row = await cluster.wait_status(second, "COMPLETED")
    assert row.retry_count == 0
    assert cluster.envs.builds == 2
    await cluster.quiet()


async def test_deploy_records_the_plugin_and_tells_workers_to_reload_once(
    cluster: Cluster, autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from casparian_trio.protocol import Conclude, Deploy, decode, encode

    caplog.set_level(logging.INFO)
    await cluster.start_sentinel()
    await cluster.start_worker("w1")
    await trio.sleep(1)  # w1 has identified
    client = cluster.network.connect_dealer("mem://sentinel", identity=b"publisher")
    # the Sentinel reads the MANIFEST from the source itself, never from the client
    source = 'MANIFEST = {"pattern": "*.txt"}\n\n\nclass Handler:\n    pass\n'
    deploy = Deploy(plugin_name="fresh", version="1.0", source_code=source)
    answers = []
    for _ in range(2):
        await client.send(encode(deploy))
        answers.append(decode(await client.receive()).payload)
    assert all(isinstance(a, Conclude) and a.status == "SUCCESS" for a in answers)
    assert [a.metrics["created"] for a in answers] == [True, False]  # type: ignore[union-attr]
    assert [r["plugin_name"] for r in await cluster.store.routing_rules()] == ["fresh"]
    await trio.sleep(1)
    assert sum("RELOAD" in r.getMessage() for r in caplog.records) == 1
    client.close()
