"""Job lifecycle on the Worker side under a MockClock: its own timeouts and its drain."""

from __future__ import annotations

import pytest
import trio
from services_harness import Cluster
from trio.testing import MockClock


async def test_job_timeout_enforced_by_worker_then_retried(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    await cluster.start_sentinel()
    await cluster.start_worker("w1")
    [job_id] = await cluster.add_jobs("hang.csv", timeout_s=5, max_attempts=2)
    row = await cluster.wait_status(job_id, "FAILED", within=120)
    assert "timed out after 5 s" in (row.error_message or "")
    attempts = await cluster.store.attempts(job_id)
    assert [a["outcome"] for a in attempts] == ["TIMED_OUT", "TIMED_OUT"]
    # two 5 s attempts with a 2 s backoff in between
    starts = [t for t, jid, _ in cluster.executor.calls if jid == job_id]
    assert starts[1] - starts[0] == pytest.approx(5 + 2, abs=0.01)
    await cluster.quiet()


async def test_drain_lets_short_jobs_finish_and_hands_back_long_ones(
    cluster: Cluster, autojump_clock: MockClock
) -> None:
    await cluster.start_sentinel()
    w1 = await cluster.start_worker("w1", concurrency=2, grace_s=30.0)
    short, long = await cluster.add_jobs("sleep-10.csv", "sleep-1000.csv")
    await cluster.wait_held(w1, 2)
    w1.service.request_shutdown()  # type: ignore[union-attr]
    began = trio.current_time()
    await cluster.wait_status(short, "COMPLETED")
    row = await cluster.wait_status(long, "QUEUED")
    assert trio.current_time() - began == pytest.approx(30.0, abs=0.2)
    assert row.retry_count == 0  # a handed-back job is not a failed attempt
    await w1.stopped.wait()
    await cluster.start_worker("w2")
    row = await cluster.wait_status(long, "COMPLETED", within=2000)
    assert [a["outcome"] for a in await cluster.store.attempts(long)] == [
        "HANDED_BACK",
        "COMPLETED",
    ]
    await cluster.quiet()
