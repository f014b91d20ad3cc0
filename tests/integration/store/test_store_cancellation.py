"""A cancelled caller never tears a transaction (real file database, thread mode).

A TEMP trigger calling a sleeping SQL function makes a real claim or complete
slow in its middle (after the queue UPDATE, before the attempt row is written);
the caller is cancelled meanwhile. The row must then be fully changed or fully
unchanged, no transaction may be left open, and the Database must keep working.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
import trio

from casparian_trio.store import Database, Store, open_database

NOW = 1_700_000_000.0
SLOW_S = 0.1  # how long each slowed UPDATE takes


def slow_down(db: Database) -> None:
    """Make every UPDATE of the queue sleep SLOW_S inside its transaction."""

    def install(conn: sqlite3.Connection) -> None:
        conn.create_function("sleep_s", 1, time.sleep)
        conn.execute(
            "CREATE TEMP TRIGGER slow_queue AFTER UPDATE ON main.cf_processing_queue"
            f" BEGIN SELECT sleep_s({SLOW_S}); END"
        )

    db.run_sync(install)


def seed_jobs(db: Database, count: int) -> None:
    def fn(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO cf_source_root (path) VALUES ('/d')")
        conn.execute(
            "INSERT INTO cf_file_location (source_root_id, rel_path, filename) VALUES (1, 'a', 'a')"
        )
        conn.execute("INSERT INTO cf_file_hash_registry (content_hash, size_bytes) VALUES ('h', 1)")
        for i in range(count):
            conn.execute(
                "INSERT INTO cf_file_version (location_id, content_hash, size_bytes, modified_time)"
                " VALUES (1, 'h', 1, 'x')"
            )
            conn.execute(
                "INSERT INTO cf_processing_queue (file_version_id, plugin_name, status)"
                " VALUES (?, 'p', 'QUEUED')",
                (i + 1,),
            )

    db.run_sync(fn)


def assert_consistent_and_unlocked(path: Path) -> None:
    """RUNNING ⇔ an open attempt row for the current attempt; the write lock is free."""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # raises 'database is locked' if a transaction leaked
    rows = other.execute(
        "SELECT q.id, q.status, q.attempt,"
        " (SELECT count(*) FROM cf_job_attempt a WHERE a.job_id = q.id),"
        " (SELECT count(*) FROM cf_job_attempt a WHERE a.job_id = q.id AND a.ended_at IS NULL)"
        " FROM cf_processing_queue q"
    ).fetchall()
    other.execute("ROLLBACK")
    other.close()
    for job_id, status, attempt, attempts, open_attempts in rows:
        assert attempts == attempt, (job_id, status, attempt, attempts)
        assert open_attempts == (1 if status == "RUNNING" else 0), (job_id, status, open_attempts)


@pytest.fixture
async def store(tmp_path: Path) -> Store:
    db = open_database(tmp_path / "q.db")
    seed_jobs(db, 3)
    slow_down(db)
    return Store(db)


async def test_cancelled_claim_completes_whole(store: Store, tmp_path: Path) -> None:
    with trio.fail_after(10):
        started = trio.current_time()
        with trio.move_on_after(0.03) as scope:
            job = await store.claim(capabilities=["*"], worker_id="w", now=NOW)
            await trio.lowlevel.checkpoint()  # where the cancel lands: after COMMIT
        assert scope.cancelled_caught
        assert trio.current_time() - started >= SLOW_S  # the thread was not abandoned
        assert job is not None
        assert (job.status, job.attempt) == ("RUNNING", 1)
        assert_consistent_and_unlocked(tmp_path / "q.db")
        assert (await store.get_job(job.id)).status == "RUNNING"  # type: ignore[union-attr]
        assert await store.complete(job.id, 1, result_summary={}, now=NOW)  # still usable


async def test_cancelled_complete_completes_whole(store: Store, tmp_path: Path) -> None:
    with trio.fail_after(10):
        job = await store.claim(capabilities=["*"], worker_id="w", now=NOW)
        assert job is not None
        with trio.move_on_after(0.03) as scope:
            await store.complete(job.id, job.attempt, result_summary={"rows": 1}, now=NOW)
            await trio.lowlevel.checkpoint()
        assert scope.cancelled_caught
        assert_consistent_and_unlocked(tmp_path / "q.db")
        assert (await store.get_job(job.id)).status == "COMPLETED"  # type: ignore[union-attr]


async def complete_slowly(store: Store, job_id: int) -> None:
    await store.complete(job_id, 1, result_summary={}, now=NOW)


async def test_cancel_while_waiting_for_the_connection_changes_nothing(
    store: Store, tmp_path: Path
) -> None:
    with trio.fail_after(10):
        first = await store.claim(capabilities=["*"], worker_id="w", now=NOW)
        assert first is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(complete_slowly, store, first.id)  # holds the connection
            await trio.sleep(0.03)
            with trio.move_on_after(0.03) as scope:
                await store.claim(capabilities=["*"], worker_id="w2", now=NOW)
            assert scope.cancelled_caught
        assert (await store.stats())["RUNNING"] == 0  # the second claim never ran
        assert_consistent_and_unlocked(tmp_path / "q.db")


async def test_cancel_at_many_points_never_tears(store: Store, tmp_path: Path) -> None:
    with trio.fail_after(30):
        for delay in (0.0, 0.02, 0.12, 0.15, 0.25):
            with trio.move_on_after(delay):
                job = await store.claim(capabilities=["*"], worker_id="w", now=NOW)
                if job is not None:
                    await store.fail(job.id, job.attempt, error="x", now=NOW - 1000)
            assert_consistent_and_unlocked(tmp_path / "q.db")
        assert sum((await store.stats()).values()) == 3
