"""The queue's sync core: claim order, attempts, receipts, retries, cancellation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio

from casparian_trio.errors import CatalogError, StoreError
from casparian_trio.store import Database, JobStatus, Store, backoff_delay, queue

NOW = 1_700_000_000.0
Run = Callable[..., Any]


@pytest.fixture
def run(db: Database) -> Run:
    """``run(queue.fn, *args, **kwargs)``: one transaction calling a sync core function."""
    return lambda fn, *args, **kwargs: db.run_sync(lambda conn: fn(conn, *args, **kwargs))


@pytest.fixture
def fv(db: Database, file_versions: Callable[..., list[int]]) -> list[int]:
    return file_versions(db, 10)


def claim(run: Run, caps: tuple[str, ...] = ("*",), now: float = NOW, worker: str = "w1") -> Any:
    return run(queue.claim, capabilities=caps, worker_id=worker, now=now)


def test_backoff_delay_doubles_and_caps() -> None:
    assert [backoff_delay(n) for n in range(0, 11)] == [0, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert backoff_delay(5000) == 300
    assert backoff_delay(3, base_s=1.0, cap_s=3.0) == 3.0


def test_enqueue_is_idempotent(run: Run, fv: list[int]) -> None:
    first = run(queue.enqueue, fv[0], "p", now=NOW)
    again = run(queue.enqueue, fv[0], "p", now=NOW, priority=9)
    other = run(queue.enqueue, fv[0], "q", now=NOW)
    assert first[1]
    assert not again[1]
    assert other[1]
    assert first[0] == again[0] != other[0]
    assert run(queue.get_job, first[0]).priority == 0


def test_enqueue_unknown_file_version_is_a_catalog_error(run: Run) -> None:
    with pytest.raises(CatalogError, match="file version 999"):
        run(queue.enqueue, 999, "p", now=NOW)


def test_claim_order_is_priority_desc_then_id(run: Run, fv: list[int]) -> None:
    ids = [
        run(queue.enqueue, fv[i], "p", now=NOW, priority=p)[0] for i, p in enumerate([0, 5, 5, 1])
    ]
    order = [claim(run).id for _ in ids]
    assert order == [ids[1], ids[2], ids[3], ids[0]]
    assert claim(run) is None


def test_claim_respects_not_before(run: Run, fv: list[int]) -> None:
    job_id, _ = run(queue.enqueue, fv[0], "p", now=NOW)
    run(lambda c: c.execute("UPDATE cf_processing_queue SET not_before = ?", (NOW + 10,)))
    assert claim(run, now=NOW + 9.9) is None
    assert run(queue.next_wakeup, now=NOW) == NOW + 10
    assert claim(run, now=NOW + 10).id == job_id
    assert run(queue.next_wakeup, now=NOW) is None


def test_claim_filters_by_capability(run: Run, fv: list[int]) -> None:
    a, _ = run(queue.enqueue, fv[0], "a", now=NOW, priority=1)
    b, _ = run(queue.enqueue, fv[1], "b", now=NOW)
    assert claim(run, caps=()) is None
    assert claim(run, caps=("c",)) is None
    assert claim(run, caps=("b", "c")).id == b
    assert claim(run, caps=("a",)).id == a


def test_claim_sets_running_attempt_and_history(run: Run, fv: list[int]) -> None:
    job_id, _ = run(queue.enqueue, fv[0], "p", now=NOW)
    job = run(
        queue.claim, capabilities=["p"], worker_id="w1", now=NOW, worker_host="h", worker_pid=7
    )
    assert (job.status, job.attempt, job.worker_id, job.worker_host, job.worker_pid) == (
        "RUNNING",
        1,
        "w1",
        "h",
        7,
    )
    assert job.started_at == NOW
    assert job.claim_time is not None
    [attempt] = run(queue.attempts, job_id)
    assert (attempt["attempt"], attempt["worker_id"], attempt["ended_at"]) == (1, "w1", None)


def test_complete_refuses_stale_receipts(run: Run, fv: list[int]) -> None:
    job_id, _ = run(queue.enqueue, fv[0], "p", now=NOW)
    claim(run)
    assert not run(queue.complete, job_id, 2, result_summary={}, now=NOW)
    assert run(queue.complete, job_id, 1, result_summary={"rows": 3}, now=NOW + 1)
    assert not run(queue.complete, job_id, 1, result_summary={}, now=NOW + 2)
    job = run(queue.get_job, job_id)
    assert (job.status, job.result_summary, job.end_time is not None) == (
        "COMPLETED",
        {"rows": 3},
        True,
    )
    assert run(queue.attempts, job_id)[0]["outcome"] == "COMPLETED"
    assert run(queue.fail, job_id, 1, error="late", now=NOW) is None


def test_fail_backs_off_exactly_then_fails(run: Run, fv: list[int]) -> None:
    job_id, _ = run(queue.enqueue, fv[0], "p", now=NOW, max_attempts=10)
    now, delays = NOW, []
    for attempt in range(1, 11):
        job = claim(run, now=now)
        assert (job.id, job.attempt) == (job_id, attempt)
        status = run(queue.fail, job_id, attempt, error=f"boom {attempt}", now=now, traceback="tb")
        job = run(queue.get_job, job_id)
        if attempt < 10:
            assert status == "QUEUED"
            delays.append(job.not_before - now)
            assert claim(run, now=job.not_before - 0.001) is None
            now = job.not_before
        else:
            assert status == "FAILED"
    assert delays == [2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert (job.status, job.retry_count, job.error_message, job.error_traceback) == (
        "FAILED",
        10,
        "boom 10",
        "tb",
    )
    history = run(queue.attempts, job_id)
    assert [h["attempt"] for h in history] == list(range(1, 11))
    assert {h["outcome"] for h in history} == {"FAILED"}
    assert history[-1]["error_message"] == "boom 10"


def test_default_max_attempts_is_three_failures(run: Run, fv: list[int]) -> None:
    job_id, _ = run(queue.enqueue, fv[0], "p", now=NOW)
    statuses = []
    for attempt in (1, 2, 3):
        claim(run, now=NOW + 1000 * attempt)
        statuses.append(run(queue.fail, job_id, attempt, error="x", now=NOW + 1000 * attempt))
    assert statuses == ["QUEUED", "QUEUED", "FAILED"]


def test_a_final_failure_fails_at_attempt_one_without_backoff(run: Run, fv: list[int]) -> None:
    job_id, _ = run(queue.enqueue, fv[0], "p", now=NOW)
    claim(run)
    status = run(queue.fail, job_id, 1, error="plugin 'p' raised ValueError", now=NOW, final=True)
    job = run(queue.get_job, job_id)
    assert (status, job.status, job.retry_count, job.not_before) == ("FAILED", "FAILED", 1, None)
    assert [a["attempt"] for a in run(queue.attempts, job_id)] == [1]


@pytest.mark.parametrize("status", ["SUPERSEDED", "SKIPPED"])
def test_end_unretried_keeps_retry_count_and_ends_the_job(
    run: Run, fv: list[int], status: str
) -> None:
    job_id, _ = run(queue.enqueue, fv[0], "p", now=NOW)
    claim(run)
    run(queue.fail, job_id, 1, error="boom", now=NOW)  # one counted failure first
    claim(run, now=NOW + 1000)
    reason = "file changed since scan: /r/a.csv; the next scan queues the new version"
    assert run(queue.end_unretried, job_id, 2, status=status, reason=reason, now=NOW + 1000) == (
        status
    )
    job = run(queue.get_job, job_id)
    assert (job.status, job.retry_count, job.error_message, job.not_before) == (
        status,
        1,
        reason,
        None,
    )
    assert job.end_time is not None
    assert [(a["attempt"], a["outcome"]) for a in run(queue.attempts, job_id)] == [
        (1, "FAILED"),
        (2, status),
    ]
    assert claim(run, now=NOW + 5000) is None  # never retried
    assert run(queue.stats)[status] == 1
    # stale: a second receipt for the same attempt changes nothing
    assert run(queue.end_unretried, job_id, 2, status=status, reason="x", now=NOW) is None


def test_end_unretried_refuses_other_statuses(run: Run, fv: list[int]) -> None:
    with pytest.raises(ValueError, match="not SUPERSEDED or SKIPPED"):
        run(queue.end_unretried, 1, 1, status="FAILED", reason="x", now=NOW)


def test_requeue_counted_and_not_counted(run: Run, fv: list[int]) -> None:
    job_id, _ = run(queue.enqueue, fv[0], "p", now=NOW, max_attempts=1)
    claim(run)
    assert (
        run(queue.requeue, job_id, 1, reason="bye", now=NOW, counted=False, outcome="HANDED_BACK")
        == "QUEUED"
    )
    job = run(queue.get_job, job_id)
    assert (job.retry_count, job.not_before, job.worker_id) == (0, None, None)
    claim(run)
    assert (
        run(queue.requeue, job_id, 2, reason="gone", now=NOW, counted=True, outcome="WORKER_LOST")
        == "FAILED"
    )
    assert [h["outcome"] for h in run(queue.attempts, job_id)] == ["HANDED_BACK", "WORKER_LOST"]
    assert (
        run(queue.requeue, job_id, 2, reason="x", now=NOW, counted=False, outcome="HANDED_BACK")
        is None
    )


def test_unknown_outcome_is_refused(run: Run, fv: list[int]) -> None:
    job_id, _ = run(queue.enqueue, fv[0], "p", now=NOW)
    claim(run)
    with pytest.raises(ValueError, match="NOPE"):
        run(queue.fail, job_id, 1, error="x", now=NOW, outcome="NOPE")
    assert run(queue.get_job, job_id).status == "RUNNING"  # rolled back as a whole


def test_cancel_queued_job_at_once(run: Run, fv: list[int]) -> None:
    job_id, _ = run(queue.enqueue, fv[0], "p", now=NOW)
    assert run(queue.request_cancel, job_id, now=NOW) == "CANCELLED"
    assert claim(run) is None
    assert run(queue.request_cancel, job_id, now=NOW) == "CANCELLED"
    with pytest.raises(StoreError, match="no job with id 999"):
        run(queue.request_cancel, 999, now=NOW)


@pytest.mark.parametrize(
    "receipt",
    [
        lambda run, j: run(queue.complete, j, 1, result_summary={"rows": 1}, now=NOW),
        lambda run, j: run(queue.fail, j, 1, error="x", now=NOW, outcome="ABORTED"),
        lambda run, j: run(
            queue.requeue, j, 1, reason="x", now=NOW, counted=True, outcome="WORKER_LOST"
        ),
        lambda run, j: run(
            queue.requeue, j, 1, reason="x", now=NOW, counted=False, outcome="HANDED_BACK"
        ),
    ],
    ids=["complete", "fail", "lost", "handback"],
)
def test_cancel_requested_running_job_ends_cancelled(run: Run, fv: list[int], receipt: Any) -> None:
    job_id, _ = run(queue.enqueue, fv[0], "p", now=NOW)
    claim(run)
    assert run(queue.request_cancel, job_id, now=NOW) == "RUNNING"
    assert [j.id for j in run(queue.cancel_requested_jobs)] == [job_id]
    receipt(run, job_id)
    job = run(queue.get_job, job_id)
    assert (job.status, job.end_time is not None) == ("CANCELLED", True)
    assert run(queue.attempts, job_id)[0]["ended_at"] == NOW
    assert run(queue.cancel_requested_jobs) == []


def test_mark_cancelled(run: Run, fv: list[int]) -> None:
    job_id, _ = run(queue.enqueue, fv[0], "p", now=NOW)
    assert not run(queue.mark_cancelled, job_id, 1, now=NOW)  # not RUNNING yet
    claim(run)
    assert not run(queue.mark_cancelled, job_id, 2, now=NOW)  # wrong attempt
    assert run(queue.mark_cancelled, job_id, 1, now=NOW)
    assert not run(queue.mark_cancelled, job_id, None, now=NOW)  # already terminal
    assert run(queue.attempts, job_id)[0]["outcome"] == "CANCELLED"
    other, _ = run(queue.enqueue, fv[1], "p", now=NOW)
    assert run(queue.mark_cancelled, other, None, now=NOW)


def test_cancel_queued_requests(run: Run, fv: list[int]) -> None:
    job_id, _ = run(queue.enqueue, fv[0], "p", now=NOW)
    run(lambda c: c.execute("UPDATE cf_processing_queue SET cancel_requested = 1"))
    assert claim(run) is None
    assert run(queue.cancel_queued_requests, now=NOW) == 1
    assert run(queue.get_job, job_id).status == "CANCELLED"


def test_operator_retry(run: Run, fv: list[int]) -> None:
    job_id, _ = run(queue.enqueue, fv[0], "p", now=NOW, max_attempts=1)
    assert run(queue.retry, job_id, now=NOW) == "QUEUED"  # not failed: unchanged
    claim(run)
    assert run(queue.retry, job_id, now=NOW) == "RUNNING"
    assert run(queue.fail, job_id, 1, error="x", now=NOW) == "FAILED"
    assert run(queue.retry, job_id, now=NOW) == "QUEUED"
    job = run(queue.get_job, job_id)
    assert (job.retry_count, job.cancel_requested, job.error_message) == (0, False, None)
    assert claim(run).attempt == 2  # the dispatch generation keeps growing


def test_stats_has_all_statuses(run: Run, fv: list[int]) -> None:
    assert run(queue.stats) == {s.value: 0 for s in JobStatus}
    for i in range(3):
        run(queue.enqueue, fv[i], "p", now=NOW)
    claim(run)
    assert run(queue.stats) == {
        "QUEUED": 2,
        "RUNNING": 1,
        "COMPLETED": 0,
        "FAILED": 0,
        "CANCELLED": 0,
        "SUPERSEDED": 0,
        "SKIPPED": 0,
    }


def test_list_jobs_and_running_jobs(run: Run, fv: list[int]) -> None:
    ids = [run(queue.enqueue, fv[i], p, now=NOW)[0] for i, p in enumerate("aab")]
    claim(run, caps=("b",))
    assert [j.id for j in run(queue.list_jobs)] == ids[::-1]
    assert [j.id for j in run(queue.list_jobs, status="queued", plugin="a", limit=1)] == [ids[1]]
    assert [j.id for j in run(queue.running_jobs)] == [ids[2]]


def test_data_version_changes_on_other_connections_commits(tmp_path: Any) -> None:
    from casparian_trio.store import open_database

    path = tmp_path / "dv.db"
    mine, theirs = open_database(path), open_database(path)
    before = mine.run_sync(queue.data_version, readonly=True)
    mine.run_sync(lambda c: c.execute("INSERT INTO cf_source_root (path) VALUES ('a')"))
    assert mine.run_sync(queue.data_version, readonly=True) == before
    theirs.run_sync(lambda c: c.execute("INSERT INTO cf_source_root (path) VALUES ('b')"))
    assert mine.run_sync(queue.data_version, readonly=True) != before


@pytest.mark.parametrize("caps", [("*",), ("a", "b")])
def test_claim_query_uses_the_claim_index_without_sorting(
    db: Database, fv: list[int], caps: tuple[str, ...]
) -> None:
    for i, f in enumerate(fv):
        db.run_sync(lambda c, i=i, f=f: queue.enqueue(c, f, "ab"[i % 2], now=NOW, priority=i % 3))
    db.run_sync(lambda c: c.execute("ANALYZE"))
    sql, params = queue.claim_query(caps)
    plan = db.run_sync(
        lambda c: [r[3] for r in c.execute(f"EXPLAIN QUERY PLAN {sql}", {**params, "now": NOW})]
    )
    assert any("USING INDEX ix_queue_claim" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan


def test_new_file_version_supersedes_queued_jobs_of_older_ones(db: Database, run: Run) -> None:
    async def versions() -> tuple[int, int, int]:
        store = Store(db)
        root, _ = await store.add_source_root("/data")
        first, _ = await store.record_file(
            source_root_id=root, rel_path="a.csv", size=1, mtime=1.0, content_hash="h1", now=NOW
        )
        second, _ = await store.record_file(
            source_root_id=root, rel_path="a.csv", size=2, mtime=2.0, content_hash="h2", now=NOW
        )
        other, _ = await store.record_file(
            source_root_id=root, rel_path="b.csv", size=1, mtime=1.0, content_hash="h3", now=NOW
        )
        return first, second, other

    first, second, other = trio.run(versions)
    old_job, _ = run(queue.enqueue, first, "p", now=NOW)
    other_plugin, _ = run(queue.enqueue, first, "q", now=NOW)
    unrelated, _ = run(queue.enqueue, other, "p", now=NOW)
    new_job, created = run(queue.enqueue, second, "p", now=NOW)
    assert created
    old = run(queue.get_job, old_job)
    assert old.status == "CANCELLED"
    assert old.error_message == f"superseded by file version {second}"
    assert run(queue.get_job, other_plugin).status == "QUEUED"  # another plugin's job is its own
    assert run(queue.get_job, unrelated).status == "QUEUED"
    assert run(queue.get_job, new_job).status == "QUEUED"
