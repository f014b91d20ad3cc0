"""A dispatch round's claims and a batch of receipts: one transaction, each as its own call."""

from __future__ import annotations

import sqlite3

import pytest

from casparian_trio.errors import StoreError
from casparian_trio.store import ClaimRequest, ReceiptWrite, Store, Write, queue

NOW = 1_700_000_000.0
SOURCE = "class Handler:\n    pass\n"


async def publish(store: Store, plugin: str) -> None:
    await store.publish_manifest(
        plugin_name=plugin,
        version="1.0",
        source_code=SOURCE,
        source_hash=f"src-{plugin}",
        env_hash=None,
        artifact_hash=f"a-{plugin}",
        manifest={},
        now=NOW,
    )


async def queue_jobs(store: Store, plugin: str, count: int, *, priority: int = 0) -> list[int]:
    root_id, _ = await store.add_source_root("/data")
    ids = []
    for _ in range(count):
        n = len(await store.list_jobs(limit=10_000))
        fv, _ = await store.record_file(
            source_root_id=root_id,
            rel_path=f"{plugin}/{n}.csv",
            size=3,
            mtime=NOW,
            content_hash=f"h{n}",
            now=NOW,
        )
        job_id, _ = await store.enqueue(fv, plugin, now=NOW, priority=priority, max_attempts=2)
        ids.append(job_id)
    return ids


def commits(store: Store) -> list[int]:
    """Counts the transactions the store's connection commits (one element per COMMIT)."""
    seen: list[int] = []
    store.db._conn.set_trace_callback(lambda sql: seen.append(1) if sql == "COMMIT" else None)
    return seen


async def test_a_round_fills_each_slot_in_order_with_what_one_claim_each_would_get(
    store: Store,
) -> None:
    await publish(store, "a")
    await publish(store, "b")
    low = await queue_jobs(store, "a", 2)
    high = await queue_jobs(store, "a", 1, priority=5)
    only_b = await queue_jobs(store, "b", 1)
    requests = [
        ClaimRequest("w1", ("a",), host="h1", pid=1),
        ClaimRequest("w2", ("*",)),
        ClaimRequest("w1", ("a",), host="h1", pid=1),
        ClaimRequest("w3", ("b",)),
        ClaimRequest("w3", ("b",)),  # b is exhausted by now
        ClaimRequest("w1", ("a",), host="h1", pid=1),  # so is a
    ]
    seen = commits(store)
    results = await store.claim_round(requests, now=NOW)
    assert len(seen) == 1
    got = [None if r is None else r.job.id for r in results]
    # priority first, then id order across every plugin the request can run
    assert got == [high[0], low[0], low[1], only_b[0], None, None]
    for request, result in zip(requests, results, strict=True):
        if result is not None:
            assert result.job.status == "RUNNING"
            assert result.job.attempt == 1
            assert result.job.worker_id == request.worker_id
            assert result.plan is not None
            assert result.plan.dispatch.attempt == 1
            assert result.plan.dispatch.plugin_name == result.job.plugin_name
    for job_id in [*low, *high, *only_b]:
        assert [a["outcome"] for a in await store.attempts(job_id)] == [None]  # open attempt


async def test_a_job_that_cannot_be_resolved_is_claimed_with_its_error(store: Store) -> None:
    await publish(store, "a")
    [good] = await queue_jobs(store, "a", 1)
    [orphan] = await queue_jobs(store, "nobody-published", 1, priority=9)
    results = await store.claim_round(
        [ClaimRequest("w", ("*",)), ClaimRequest("w", ("*",))], now=NOW
    )
    first, second = results
    assert first is not None
    assert first.job.id == orphan
    assert first.plan is None
    assert first.error is not None
    assert "no ACTIVE manifest" in str(first.error)
    assert second is not None
    assert second.job.id == good
    assert second.plan is not None
    assert (await store.get_job(orphan)).status == "RUNNING"  # type: ignore[union-attr]


async def test_an_empty_round_touches_nothing(store: Store) -> None:
    seen = commits(store)
    assert await store.claim_round([], now=NOW) == []
    assert await store.claim_round([ClaimRequest("w", ("*",))], now=NOW) == [None]
    assert len(seen) == 1  # only the non-empty request asked the database


async def claim_all(store: Store, count: int) -> list[tuple[int, int]]:
    results = await store.claim_round([ClaimRequest("w", ("*",))] * count, now=NOW)
    return [(r.job.id, r.job.attempt) for r in results if r is not None]


async def test_receipts_in_one_transaction_end_each_job_as_its_own_call_would(
    store: Store,
) -> None:
    await publish(store, "a")
    await queue_jobs(store, "a", 5)
    (j1, a1), (j2, a2), (j3, a3), (j4, a4), (j5, a5) = await claim_all(store, 5)
    writes = [
        ReceiptWrite(Write.COMPLETE, j1, a1, result_summary={"rows": 3}),
        ReceiptWrite(Write.FAIL, j2, a2, error="boom", outcome="FAILED", traceback="tb"),
        ReceiptWrite(Write.FAIL, j3, a3, error="bad", outcome="FAILED", final=True),
        ReceiptWrite(Write.END, j4, a4, error="changed", outcome="SUPERSEDED"),
        ReceiptWrite(Write.REQUEUE, j5, a5, error="handed back", outcome="HANDED_BACK"),
        ReceiptWrite(Write.COMPLETE, j1, a1, result_summary={}),  # a duplicate: stale
        ReceiptWrite(Write.FAIL, j2, a2 + 1, error="x", outcome="FAILED"),  # another attempt
    ]
    seen = commits(store)
    recorded = await store.record_receipts(writes, now=NOW + 1)
    assert len(seen) == 1
    assert recorded.error is None
    assert recorded.results == (True, "QUEUED", "FAILED", "SUPERSEDED", "QUEUED", False, None)
    rows = {j: await store.get_job(j) for j in (j1, j2, j3, j4, j5)}
    assert rows[j1].status == "COMPLETED"  # type: ignore[union-attr]
    assert rows[j1].result_summary == {"rows": 3}  # type: ignore[union-attr]
    assert rows[j2].retry_count == 1
    assert rows[j2].not_before is not None
    assert rows[j5].retry_count == 0
    assert rows[j5].not_before is None
    outcomes = [(await store.attempts(j))[0]["outcome"] for j in (j1, j2, j3, j4, j5)]
    assert outcomes == ["COMPLETED", "FAILED", "FAILED", "SUPERSEDED", "HANDED_BACK"]


async def test_a_receipt_that_raises_keeps_the_ones_before_it_and_stops_the_batch(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await publish(store, "a")
    await queue_jobs(store, "a", 3)
    (j1, a1), (j2, a2), (j3, a3) = await claim_all(store, 3)
    real_complete = queue.complete

    def half_then_raise(conn: sqlite3.Connection, job_id: int, *args: object, **kw: object) -> bool:
        done = real_complete(conn, job_id, *args, **kw)  # type: ignore[arg-type]
        if job_id == j2:
            raise ValueError("broken after its write")
        return done

    monkeypatch.setattr(queue, "complete", half_then_raise)
    recorded = await store.record_receipts(
        [ReceiptWrite(Write.COMPLETE, j, a, result_summary={}) for j, a in [(j1, a1), (j2, a2), (j3, a3)]],
        now=NOW,
    )  # fmt: skip
    assert recorded.results == (True,)
    assert isinstance(recorded.error, ValueError)
    statuses = [(await store.get_job(j)).status for j in (j1, j2, j3)]  # type: ignore[union-attr]
    assert statuses == ["COMPLETED", "RUNNING", "RUNNING"]  # j2's own write rolled back


async def test_an_error_of_sqlite_itself_rolls_the_whole_batch_back(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await publish(store, "a")
    await queue_jobs(store, "a", 2)
    (j1, a1), (j2, a2) = await claim_all(store, 2)

    def disk_full(conn: sqlite3.Connection, *args: object, **kw: object) -> str:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(queue, "fail", disk_full)
    with pytest.raises(StoreError, match="disk is full"):
        await store.record_receipts(
            [
                ReceiptWrite(Write.COMPLETE, j1, a1, result_summary={}),
                ReceiptWrite(Write.FAIL, j2, a2, error="x", outcome="FAILED"),
            ],
            now=NOW,
        )
    assert [(await store.get_job(j)).status for j in (j1, j2)] == ["RUNNING", "RUNNING"]  # type: ignore[union-attr]


async def test_a_receipt_alone_that_raises_rolls_back_and_raises_as_its_own_call(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await publish(store, "a")
    await queue_jobs(store, "a", 1)
    [(j1, a1)] = await claim_all(store, 1)
    real_complete = queue.complete

    def write_then_raise(conn: sqlite3.Connection, *args: object, **kw: object) -> bool:
        real_complete(conn, *args, **kw)  # type: ignore[arg-type]
        raise ValueError("broken after its write")

    monkeypatch.setattr(queue, "complete", write_then_raise)
    with pytest.raises(ValueError, match="broken"):
        await store.record_receipts(
            [ReceiptWrite(Write.COMPLETE, j1, a1, result_summary={})], now=NOW
        )
    assert (await store.get_job(j1)).status == "RUNNING"  # type: ignore[union-attr]
