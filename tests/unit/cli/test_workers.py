"""``workers`` and ``status`` never show a worker as alive that no running Sentinel vouches for."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import pytest
from cli_harness import Cli, put_sentinel, sentinel_record

from casparian_trio.cli.workers import (
    UNKNOWN,
    sentinel_doc,
    sentinel_text,
    worker_state,
)
from casparian_trio.store import Database, workers

NOW = 1_800_000_000.0


def add_worker(db: Database, worker_id: str, status: str, *, seen_ago: float = 5.0) -> None:
    db.run_sync(
        partial(
            workers.upsert_worker,
            worker_id=worker_id,
            host="host1",
            pid=4242,
            capabilities=["sales"],
            slots=2,
            status=status,
            now=time.time() - seen_ago,
        )
    )


def row(status: str, last_seen: float) -> dict[str, Any]:
    return {"status": status, "last_seen": last_seen}


# --- the decisions, on plain numbers ---------------------------------------------------------

UP = sentinel_record(started_ago=100, seen_ago=1, now=NOW)
STOPPED_CLEANLY = sentinel_record(started_ago=100, seen_ago=30, stopped=True, now=NOW)
KILLED = sentinel_record(started_ago=100, seen_ago=30, now=NOW)  # no stop, no heartbeat


@pytest.mark.parametrize(
    ("status", "seen_ago", "sentinel", "expected"),
    [
        ("IDLE", 5, UP, "IDLE"),
        ("BUSY", 5, UP, "BUSY"),
        ("UNHEALTHY", 5, UP, "UNHEALTHY"),
        ("IDLE", 200, UP, UNKNOWN),  # not back since this Sentinel started
        ("IDLE", 5, STOPPED_CLEANLY, UNKNOWN),
        ("DRAINING", 5, KILLED, UNKNOWN),
        ("IDLE", 5, None, UNKNOWN),
        ("STOPPED", 5, STOPPED_CLEANLY, "STOPPED"),  # an ended worker stays what it was
        ("LOST", 5, None, "LOST"),
        ("GONE", 200, UP, "GONE"),
    ],
)
def test_worker_state(status: str, seen_ago: float, sentinel: Any, expected: str) -> None:
    assert worker_state(row(status, NOW - seen_ago), sentinel, now=NOW) == expected


@pytest.mark.parametrize(
    ("seen_ago", "stopped", "running"),
    [(0, False, True), (6, False, True), (6.5, False, False), (1, True, False)],
)
def test_sentinel_runs_until_stopped_or_silent_past_its_liveness(
    seen_ago: float, stopped: bool, running: bool
) -> None:
    record = sentinel_record(seen_ago=seen_ago, stopped=stopped, now=NOW)
    assert record.is_running(NOW) is running


def test_sentinel_doc_and_text() -> None:
    up = sentinel_doc(UP, now=NOW)
    assert up["running"] is True
    assert (up["pid"], up["host"], up["uptime_s"]) == (4711, "ctl-host", 100)
    assert sentinel_text(up) == "running on tcp://127.0.0.1:5555 (pid 4711 on ctl-host, up 1m)"
    down = sentinel_doc(STOPPED_CLEANLY, now=NOW)
    assert (down["running"], down["reason"], down["last_seen_age_s"]) == (False, "stopped", 30)
    assert "uptime_s" not in down
    assert sentinel_text(down) == "not running (last seen 30s ago)"
    assert sentinel_doc(KILLED, now=NOW)["reason"] == "no heartbeat"
    never = sentinel_doc(None, now=NOW)
    assert never == {"running": False, "reason": "never started on this database"}
    assert sentinel_text(never) == "not running (never started on this database)"


# --- the commands ------------------------------------------------------------------------------


def test_workers_while_the_sentinel_is_stopped(cli: Cli, ops_db: Database) -> None:
    put_sentinel(ops_db, sentinel_record(started_ago=100, seen_ago=32, stopped=True))
    add_worker(ops_db, "w-idle", "IDLE", seen_ago=35)
    add_worker(ops_db, "w-stopped", "STOPPED", seen_ago=34)
    lines = cli("workers").out.splitlines()
    assert lines[0] == "sentinel not running (last seen 32s ago): states below are the last known"
    assert lines[1].split()[:2] == ["worker", "status"]
    assert lines[2].split()[:4] == ["w-idle", "UNKNOWN", "(was", "IDLE)"]
    assert lines[3].split()[:2] == ["w-stopped", "STOPPED"]

    result = cli("workers", "--json")
    assert result.err == "sentinel not running (last seen 32s ago): worker states are unknown\n"
    doc = {w["worker_id"]: w for w in result.json()}  # still a list of workers
    assert (doc["w-idle"]["status"], doc["w-idle"]["last_known_status"]) == ("UNKNOWN", "IDLE")
    assert doc["w-idle"]["alive"] is False
    assert (doc["w-stopped"]["status"], doc["w-stopped"]["alive"]) == ("STOPPED", False)


def test_status_while_the_sentinel_is_stopped(cli: Cli, ops_db: Database) -> None:
    put_sentinel(ops_db, sentinel_record(started_ago=100, seen_ago=32, stopped=True))
    add_worker(ops_db, "w1", "IDLE", seen_ago=35)
    add_worker(ops_db, "w2", "BUSY", seen_ago=35)
    add_worker(ops_db, "w3", "STOPPED", seen_ago=34)
    out = cli("status").out.splitlines()
    assert out[0] == "sentinel   not running (last seen 32s ago)"
    assert out[3] == "workers    0 alive (0 slots) · 2 unknown (last known alive) · 1 stopped"
    doc = cli("status", "--json").json()
    assert doc["sentinel"]["running"] is False
    assert doc["sentinel"]["reason"] == "stopped"
    assert doc["sentinel"]["last_seen_age_s"] == pytest.approx(32, abs=2)
    assert doc["workers"] == {"alive": 0, "slots": 0, "unknown": 2, "stopped": 1, "gone": 0}


def test_status_after_the_sentinel_was_killed(cli: Cli, ops_db: Database) -> None:
    # No clean stop was recorded: its heartbeat is older than its liveness timeout.
    put_sentinel(ops_db, sentinel_record(started_ago=100, seen_ago=32))
    add_worker(ops_db, "w1", "IDLE", seen_ago=33)
    doc = cli("status", "--json").json()
    assert (doc["sentinel"]["running"], doc["sentinel"]["reason"]) == (False, "no heartbeat")
    assert doc["workers"]["alive"] == 0
    assert cli("status").out.splitlines()[0] == "sentinel   not running (last seen 32s ago)"


def test_status_of_a_database_no_sentinel_ever_used(cli: Cli, ops_db: Database) -> None:
    out = cli("status").out.splitlines()
    assert out[0] == "sentinel   not running (never started on this database)"
    doc = cli("status", "--json").json()
    assert doc["sentinel"] == {"running": False, "reason": "never started on this database"}
    assert "no workers" in cli("workers").out
