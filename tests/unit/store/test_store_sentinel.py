"""cf_sentinel: the Sentinel's own row, and the migration that adds it to old databases."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs
import pytest

from casparian_trio.errors import StoreError
from casparian_trio.store import SentinelRecord, Store, migrate
from casparian_trio.store._conn import connect

NOW = 1_700_000_000.0


def record(**changes: object) -> SentinelRecord:
    base = SentinelRecord(
        pid=100,
        host="ctl",
        bind="tcp://127.0.0.1:5555",
        started_at=NOW,
        last_seen_at=NOW,
        heartbeat_interval_s=2.0,
        liveness_s=6.0,
    )
    return attrs.evolve(base, **changes)  # type: ignore[arg-type]


async def test_start_beat_stop(store: Store) -> None:
    assert await store.sentinel() is None
    mine = record()
    await store.record_sentinel_start(mine)
    assert await store.sentinel() == mine
    assert await store.record_sentinel_beat(mine, now=NOW + 2)
    seen = await store.sentinel()
    assert seen is not None
    assert (seen.last_seen_at, seen.stopped_at) == (NOW + 2, None)
    assert seen.is_running(NOW + 8)
    assert not seen.is_running(NOW + 8.5)  # silent past its liveness: a killed Sentinel
    assert await store.record_sentinel_stop(mine, now=NOW + 3)
    stopped = await store.sentinel()
    assert stopped is not None
    assert (stopped.last_seen_at, stopped.stopped_at) == (NOW + 3, NOW + 3)
    assert not stopped.is_running(NOW + 3)
    assert not await store.record_sentinel_beat(mine, now=NOW + 4)  # stopped stays stopped


async def test_a_restart_replaces_the_row(store: Store) -> None:
    await store.record_sentinel_start(record())
    await store.record_sentinel_stop(record(), now=NOW + 1)
    again = record(pid=101, started_at=NOW + 10, last_seen_at=NOW + 10)
    await store.record_sentinel_start(again)
    assert await store.sentinel() == again


async def test_a_displaced_sentinel_changes_nothing(store: Store) -> None:
    old, new = record(), record(pid=200, started_at=NOW + 5, last_seen_at=NOW + 5)
    await store.record_sentinel_start(old)
    await store.record_sentinel_start(new)  # a second Sentinel on the same database
    assert not await store.record_sentinel_beat(old, now=NOW + 6)
    assert not await store.record_sentinel_stop(old, now=NOW + 7)
    assert await store.sentinel() == new


def test_the_seed_database_upgrades_with_an_empty_sentinel_table(
    seed_db: tuple[Path, Path],
) -> None:
    conn = connect(seed_db[0])
    migrate(conn)
    assert conn.execute("SELECT count(*) FROM cf_sentinel").fetchone()[0] == 0
    conn.close()


def test_only_one_sentinel_row(store: Store) -> None:
    def second_row(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO cf_sentinel (id, pid, bind, started_at, last_seen_at,"
            " heartbeat_interval_s, liveness_s) VALUES (2, 1, 'x', 0, 0, 1, 3)"
        )

    with pytest.raises(StoreError, match="CHECK"):
        store.db.run_sync(second_row)
