"""A cancelled caller never tears a transaction (real file database, thread mode).

A TEMP trigger calling a sleeping SQL function makes a real claim or complete
slow in its middle (after the queue UPDATE, before the attempt row is written);
the caller is cancelled meanwhile. The row must then be fully changed or fully
unchanged, no transaction may be left open, and the Database must keep working.

"Meanwhile" is an observed moment, not a guessed delay: the SQL function runs
a test's hook on the Trio thread while its transaction is open (``Midway``),
so a slow machine cannot move the cancel to before or after the transaction.
``fail_after(TIMEOUT)`` only stops a hung test.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from casparian_trio.store import Database, Store, open_database

NOW = 1_700_000_000.0
SLOW_S = 0.1  # how long each slowed UPDATE takes
TIMEOUT = 120  # a hang guard, not a speed limit


class Midway:
    """The slowed UPDATE's SQL function: sleeps ``seconds`` in the middle of a transaction.

    Before that, a ``hook`` set by the test runs once, on the Trio thread (in the
    task waiting for this transaction), while the transaction is open and holds
    the connection; the transaction goes on when the hook returns.
    """

    def __init__(self) -> None:
        self.hook: Callable[[], Awaitable[object]] | None = None

    def __call__(self, seconds: float) -> None:
        hook, self.hook = self.hook, None
        if hook is not None:
            trio.from_thread.run(hook)
        time.sleep(seconds)


def slow_down(db: Database, midway: Midway) -> None:
    """Make every UPDATE of the queue call ``midway(SLOW_S)`` inside its transaction."""

    def install(conn: sqlite3.Connection) -> None:
        conn.create_function("sleep_s", 1, midway)
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
def midway() -> Midway:
    return Midway()


@pytest.fixture
async def store(tmp_path: Path, midway: Midway) -> Store:
    db = open_database(tmp_path / "q.db")
    seed_jobs(db, 3)
    slow_down(db, midway)
    return Store(db)


def cancel_midway(midway: Midway, scope: trio.CancelScope) -> None:
    """Cancel ``scope`` while the next slowed transaction is in its middle."""

    async def cancel() -> None:
        scope.cancel()

    midway.hook = cancel


async def test_cancelled_claim_completes_whole(
    store: Store, midway: Midway, tmp_path: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        job = None
        with trio.CancelScope() as scope:
            cancel_midway(midway, scope)
            job = await store.claim(capabilities=["*"], worker_id="w", now=NOW)
            await trio.lowlevel.checkpoint()  # where the cancel lands: after COMMIT
        assert scope.cancelled_caught
        assert job is not None  # the thread was not abandoned: the claim returned its job
        assert (job.status, job.attempt) == ("RUNNING", 1)
        assert_consistent_and_unlocked(tmp_path / "q.db")
        assert (await store.get_job(job.id)).status == "RUNNING"  # type: ignore[union-attr]
        assert await store.complete(job.id, 1, result_summary={}, now=NOW)  # still usable


async def test_cancelled_complete_completes_whole(
    store: Store, midway: Midway, tmp_path: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        job = await store.claim(capabilities=["*"], worker_id="w", now=NOW)
        assert job is not None
        completed = None
        with trio.CancelScope() as scope:
            cancel_midway(midway, scope)
            completed = await store.complete(
                job.id, job.attempt, result_summary={"rows": 1}, now=NOW
            )
            await trio.lowlevel.checkpoint()
        assert scope.cancelled_caught
        assert completed
        assert_consistent_and_unlocked(tmp_path / "q.db")
        assert (await store.get_job(job.id)).status == "COMPLETED"  # type: ignore[union-attr]


async def test_cancel_while_waiting_for_the_connection_changes_nothing(
    store: Store, midway: Midway, tmp_path: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        first = await store.claim(capabilities=["*"], worker_id="w", now=NOW)
        assert first is not None
        second = trio.CancelScope()

        async def claim_second() -> None:
            with second:
                await store.claim(capabilities=["*"], worker_id="w2", now=NOW)

        async with trio.open_nursery() as nursery:

            async def while_the_complete_holds_the_connection() -> None:
                nursery.start_soon(claim_second)
                await trio.testing.wait_all_tasks_blocked()  # it waits for the connection
                second.cancel()

            midway.hook = while_the_complete_holds_the_connection
            await store.complete(first.id, 1, result_summary={}, now=NOW)
        assert second.cancelled_caught
        assert (await store.stats())["RUNNING"] == 0  # the second claim never ran
        assert_consistent_and_unlocked(tmp_path / "q.db")


async def test_cancel_at_many_points_never_tears(store: Store, tmp_path: Path) -> None:
    # Cancels at assorted moments, wherever they land: every outcome must be consistent.
    with trio.fail_after(TIMEOUT):
        for delay in (0.0, 0.02, 0.12, 0.15, 0.25):
            with trio.move_on_after(delay):
                job = await store.claim(capabilities=["*"], worker_id="w", now=NOW)
                if job is not None:
                    await store.fail(job.id, job.attempt, error="x", now=NOW - 1000)
            assert_consistent_and_unlocked(tmp_path / "q.db")
        assert sum((await store.stats()).values()) == 3
