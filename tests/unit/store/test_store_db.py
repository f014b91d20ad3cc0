"""Database: one transaction per call, rollback on error, inline mode, SQL loading."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from casparian_trio.errors import StoreError
from casparian_trio.store import Database, Store, open_database
from casparian_trio.store._sql import parse_queries, queries, split_statements

NOW = 1_700_000_000.0


def count_roots(db: Database) -> int:
    return db.run_sync(lambda c: c.execute("SELECT count(*) FROM cf_source_root").fetchone()[0])


def test_exception_rolls_back_the_whole_transaction(db: Database) -> None:
    def half_then_boom(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO cf_source_root (path) VALUES ('a')")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        db.run_sync(half_then_boom)
    assert count_roots(db) == 0
    assert not db._conn.in_transaction


def test_sqlite_errors_become_store_errors(db: Database) -> None:
    with pytest.raises(StoreError, match="no such table") as info:
        db.run_sync(lambda c: c.execute("SELECT * FROM nope"))
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)


def test_closed_database_refuses_work(db: Database) -> None:
    db.close()
    db.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        db.run_sync(lambda c: None)


def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open database"):
        open_database(tmp_path / "missing-dir" / "x.db")


def test_file_database_is_wal_with_foreign_keys(tmp_path: Path) -> None:
    db = open_database(tmp_path / "x.db")
    pragmas = db.run_sync(
        lambda c: [
            c.execute(f"PRAGMA {p}").fetchone()[0]
            for p in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
        ]
    )
    assert pragmas == ["wal", 1, 5000, 1]


@pytest.fixture
def no_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inline mode must never start a thread (virtual time would jump meanwhile)."""

    async def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("to_thread.run_sync called in inline mode")

    monkeypatch.setattr(trio.to_thread, "run_sync", forbidden)


@pytest.mark.usefixtures("no_threads")
async def test_inline_store_under_mock_clock(
    autojump_clock: trio.testing.MockClock, store: Store
) -> None:
    root, _ = await store.add_source_root("/d")
    fv, _ = await store.record_file(
        source_root_id=root, rel_path="a", size=1, mtime=1.0, content_hash="h", now=NOW
    )
    job_id, _ = await store.enqueue(fv, "p", now=NOW)
    job = await store.claim(capabilities=["p"], worker_id="w", now=NOW)
    assert job is not None
    assert await store.fail(job_id, 1, error="x", now=NOW) == "QUEUED"
    wakeup = await store.next_wakeup(now=NOW)
    assert wakeup == NOW + 2
    await trio.sleep(3600)  # virtual
    assert (await store.claim(capabilities=["p"], worker_id="w", now=wakeup)).attempt == 2  # type: ignore[union-attr]
    assert (await store.stats())["RUNNING"] == 1


async def test_inline_run_cancelled_before_it_starts_changes_nothing(db: Database) -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await db.run(lambda c: c.execute("INSERT INTO cf_source_root (path) VALUES ('a')"))
    assert scope.cancelled_caught
    assert count_roots(db) == 0


async def test_workers_table(store: Store) -> None:
    await store.upsert_worker(
        worker_id="w1", host="h", pid=1, capabilities=["*"], slots=2, status="IDLE", now=NOW
    )
    await store.upsert_worker(
        worker_id="w1", host="h", pid=2, capabilities=["a"], slots=1, status="IDLE", now=NOW + 5
    )
    await store.set_worker_status("w1", "LOST", now=NOW + 9)
    await store.set_worker_status("ghost", "LOST", now=NOW)
    [w] = await store.list_workers()
    assert (w["pid"], w["capabilities"], w["slots"], w["status"]) == (2, ["a"], 1, "LOST")
    assert (w["first_seen"], w["last_seen"], w["status_since"]) == (NOW, NOW + 5, NOW + 9)


def test_split_statements_handles_triggers_and_comments() -> None:
    script = """
-- a comment; with a semicolon
CREATE TABLE t (a);  -- trailing
CREATE TRIGGER tr AFTER INSERT ON t BEGIN
    UPDATE t SET a = 1; -- inside
END;
-- the end
"""
    statements = list(split_statements(script))
    assert len(statements) == 2
    assert statements[1].startswith("CREATE TRIGGER")
    with pytest.raises(ValueError, match="incomplete"):
        list(split_statements("SELECT 1"))


def test_named_queries_parse() -> None:
    assert parse_queries("-- name: a\nSELECT 1;\n-- name: b\nSELECT 2;\n") == {
        "a": "SELECT 1;",
        "b": "SELECT 2;",
    }
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")
    assert {"claim_next_any", "mark_claimed", "active_manifest"} <= set(queries())


def test_every_named_query_compiles(db: Database) -> None:
    def prepare_all(conn: sqlite3.Connection) -> None:
        for name, sql in queries().items():
            try:
                conn.execute(f"EXPLAIN {sql}", {}).fetchall()
            except sqlite3.ProgrammingError:
                pass  # compiled fine, only the parameters are missing
            except sqlite3.Error as exc:
                raise AssertionError(f"query {name}: {exc}") from exc

    db.run_sync(prepare_all)


# --- quick transactions (the Sentinel's per-job ones) ------------------------------------


def _thread_of(conn: sqlite3.Connection) -> str:
    import threading

    return threading.current_thread().name


async def test_quick_transaction_runs_on_the_trio_thread(tmp_path: Path) -> None:
    import threading

    db = open_database(tmp_path / "x.db", quick=True)
    try:
        assert await db.run(_thread_of, quick=True) == threading.current_thread().name
        assert await db.run(_thread_of) != threading.current_thread().name  # not quick: a thread
    finally:
        db.close()


async def test_quick_flag_is_ignored_unless_the_database_allows_it(tmp_path: Path) -> None:
    import threading

    db = open_database(tmp_path / "x.db")
    try:
        assert await db.run(_thread_of, quick=True) != threading.current_thread().name
    finally:
        db.close()


async def test_quick_transaction_never_waits_on_another_process_lock(tmp_path: Path) -> None:
    """Another connection holds the write lock: the quick call goes to a thread and waits there."""
    import threading

    db = open_database(tmp_path / "x.db", quick=True)
    other = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        result: list[str] = []

        def insert(conn: sqlite3.Connection) -> str:
            conn.execute("INSERT INTO cf_source_root (path) VALUES ('q')")
            return threading.current_thread().name

        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def quick() -> None:
                result.append(await db.run(insert, quick=True))
                done.set()

            nursery.start_soon(quick)
            # The event loop keeps running while the lock is held elsewhere.
            for _ in range(5):
                await trio.sleep(0.01)
            assert not done.is_set()
            other.execute("COMMIT")
        assert result
        assert result[0] != threading.current_thread().name  # it ran in the thread
        assert count_roots(db) == 1
        # and the next quick call is back on the Trio thread, with no busy wait
        assert await db.run(_thread_of, quick=True) == threading.current_thread().name
        assert db.run_sync(lambda c: c.execute("PRAGMA busy_timeout").fetchone()[0]) == 5000
    finally:
        other.close()
        db.close()
