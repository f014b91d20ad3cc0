"""``jobs``, ``job``, ``cancel``, ``retry``, ``workers``, ``status``: output, --json, errors.

``workers`` and ``status`` while the Sentinel is down: test_workers.py.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from cli_harness import Cli, put_sentinel, sentinel_record

from casparian_trio.cli import _render
from casparian_trio.store import Database, JobRow, queue, workers

# The one time convention of the command line (cli/_render.iso_time).
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z")

TRACEBACK = (
    "Traceback (most recent call last):\n"
    + "".join(f'  File "plugin.py", line {i}, in f{i}\n' for i in range(30))
    + "ValueError: bad row 3"
)


@pytest.fixture
def two_jobs(cli: Cli, write_plugin: Callable[..., Path], data_dir: Path) -> None:
    """Job 1 for 2024/b.csv and job 2 for a.csv, both QUEUED."""
    cli("publish", str(write_plugin()))
    cli("source", "add", str(data_dir))
    assert "queued 2 jobs" in cli("scan").out


def claim(db: Database, *, now: float | None = None) -> JobRow:
    job = db.run_sync(
        partial(
            queue.claim,
            capabilities=["*"],
            worker_id="w1",
            worker_host="host1",
            worker_pid=42,
            now=time.time() if now is None else now,
        )
    )
    assert job is not None
    return job


def fail_for_good(db: Database) -> JobRow:
    """Claim and fail the next job until it is FAILED (3 attempts)."""
    now = time.time() - 3000  # three attempts, 1000 s apart, all in the past
    for _ in range(3):
        job = claim(db, now=now)
        db.run_sync(
            partial(
                queue.fail,
                job_id=job.id,
                attempt=job.attempt,
                error="ValueError: bad row 3\nsecond line",
                traceback=TRACEBACK,
                now=now,
            )
        )
        now += 1000  # past any backoff
    return job


def complete(db: Database) -> JobRow:
    job = claim(db)
    summary = {
        "worker_id": "w1",
        "rows": 120,
        "metrics": {"rows": 120, "bytes": 2048, "duration_s": 0.25},
        "artifacts": [{"topic": "output", "uri": "parquet://sales", "rows": 120}],
    }
    db.run_sync(
        partial(
            queue.complete,
            job_id=job.id,
            attempt=job.attempt,
            result_summary=summary,
            now=time.time(),
        )
    )
    return job


# --- missing database ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["jobs"],
        ["job", "1"],
        ["cancel", "1"],
        ["retry", "1"],
        ["workers"],
        ["status"],
        ["scan"],
        ["source", "list"],
        ["source", "add", "."],
        ["publish", "PLUGIN"],
        ["submit", "FILE", "--plugin", "sales"],
        ["sentinel"],
    ],
)
def test_only_init_db_creates_a_database(
    cli: Cli, tmp_path: Path, write_plugin: Callable[..., Path], argv: list[str]
) -> None:
    (tmp_path / "f.csv").write_text("id\n1\n")
    argv = [
        {"PLUGIN": str(write_plugin()), "FILE": str(tmp_path / "f.csv")}.get(a, a) for a in argv
    ]
    missing = tmp_path / "missing" / "typo.db"
    result = cli(*argv, db=missing)
    assert result.rc == 1
    assert result.err == (
        f"error: no database at {missing}; run `casparian-trio init-db --db {missing}` or pass --db\n"
    )
    assert not missing.parent.exists()  # nothing created, not even the folder


def test_db_comes_from_the_environment(
    cli: Cli, db_path: Path, ops_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CASPARIAN_DB", str(db_path))
    assert cli("jobs", db=None).out == "no jobs\n"
    monkeypatch.setenv("CASPARIAN_DB", str(db_path.parent / "other.db"))
    assert "no database at" in cli("status", db=None).err


# --- jobs -----------------------------------------------------------------------------------


def test_jobs_table(cli: Cli, two_jobs: None, ops_db: Database) -> None:
    fail_for_good(ops_db)
    lines = cli("jobs").out.splitlines()
    assert lines[0].split() == ["id", "status", "plugin", "attempt", "file", "updated", "error"]
    assert lines[1].split()[:5] == ["2", "QUEUED", "sales", "0", "a.csv"]
    assert lines[2].split()[:5] == ["1", "FAILED", "sales", "3", "2024/b.csv"]
    assert lines[2].endswith("ValueError: bad row 3")  # first line of the error only
    assert ISO_UTC.search(lines[2]), lines[2]  # the update time, in the one convention


def test_jobs_table_fits_100_columns(
    cli: Cli, write_plugin: Callable[..., Path], tmp_path: Path, ops_db: Database
) -> None:
    deep = tmp_path / "src" / ("very-long-folder-name/" * 6)
    deep.mkdir(parents=True)
    (deep / "the-file-name-we-see.csv").write_text("x\n")
    cli("publish", str(write_plugin()))
    cli("source", "add", str(tmp_path / "src"))
    cli("scan")
    job = claim(ops_db)
    ops_db.run_sync(partial(queue.fail, job_id=job.id, attempt=1, error="E" * 300, now=time.time()))
    lines = cli("jobs").out.splitlines()
    assert max(len(line) for line in lines) <= 100
    cell = lines[1].split()[4]
    assert cell.startswith("very-l")
    assert cell.endswith("…/the-file-name-we-see.csv")  # the folders give way, not the name


def test_jobs_filters_and_json(cli: Cli, two_jobs: None, ops_db: Database) -> None:
    fail_for_good(ops_db)
    failed = cli("jobs", "--status", "failed", "--json").json()
    assert [(j["id"], j["status"], j["file_rel_path"]) for j in failed] == [
        (1, "FAILED", "2024/b.csv")
    ]
    assert failed[0]["file_path"].endswith("data/2024/b.csv")
    assert cli("jobs", "--plugin", "other").out == "no jobs matching those filters\n"
    assert [j["id"] for j in cli("jobs", "--limit", "1", "--json").json()] == [2]
    assert cli("jobs", "--limit", "0").err.startswith("error: --limit must be at least 1")


def test_jobs_rejects_an_unknown_status(cli: Cli, ops_db: Database) -> None:
    with pytest.raises(SystemExit) as exc:
        cli("jobs", "--status", "DONE")
    assert exc.value.code == 2


# --- job ------------------------------------------------------------------------------------


def test_job_of_a_failed_job_shows_error_traceback_and_history(
    cli: Cli, two_jobs: None, ops_db: Database, data_dir: Path
) -> None:
    fail_for_good(ops_db)
    out = cli("job", "1").out
    assert out.startswith("job 1  FAILED\n")
    assert f"file       {data_dir / '2024' / 'b.csv'} (version 1, sha256 " in out
    assert "plugin     sales 1.0.0 (artifact " in out
    assert "attempts   3 run(s); 3 of 3 allowed failures used" in out
    assert "worker     w1 (host1, pid 42)" in out
    assert "error      ValueError: bad row 3\n" in out
    assert 'at         File "plugin.py", line 29, in f29\n' in out  # the last frame
    assert "           ValueError: bad row 3\n" in out
    assert "line 0, in f0" not in out  # only the last frame (--full: all: test_detail.py)
    history = out.split("history:")[1].splitlines()
    assert history[1].split()[0] == "#"
    assert [line.split()[0] for line in history[2:]] == ["1", "2", "3"]
    assert all("FAILED" in line for line in history[2:])


def test_job_of_a_completed_job_shows_its_result(
    cli: Cli, two_jobs: None, ops_db: Database
) -> None:
    complete(ops_db)
    out = cli("job", "1").out
    assert out.startswith("job 1  COMPLETED\n")
    assert "result     120 rows, 2.0 KiB, in 0.25 s" in out
    assert "output → parquet://sales (120 rows)" in out


def test_job_json(cli: Cli, two_jobs: None, ops_db: Database) -> None:
    complete(ops_db)
    doc = cli("job", "1", "--json").json()
    assert doc["status"] == "COMPLETED"
    assert doc["result_summary"]["rows"] == 120
    assert doc["active_manifest"]["version"] == "1.0.0"
    assert [a["outcome"] for a in doc["attempt_history"]] == ["COMPLETED"]


def _json_times(document: object, key: str = "") -> list[tuple[str, object]]:
    """Every (key, value) of a JSON document whose key names a time."""
    if isinstance(document, dict):
        return [kv for k, v in document.items() for kv in _json_times(v, k)]
    if isinstance(document, list):
        return [kv for item in document for kv in _json_times(item, key)]
    time_key = key.endswith("_at") or key in _render.TIME_KEYS
    return [(key, document)] if time_key and document is not None else []


def test_every_json_time_is_iso_8601_utc(cli: Cli, two_jobs: None, ops_db: Database) -> None:
    complete(ops_db)
    put_sentinel(ops_db, sentinel_record(stopped=True))
    add_worker(ops_db, "w1", "IDLE")
    documents = {
        args: cli(*args, "--json").json()
        for args in (("jobs",), ("job", "1"), ("workers",), ("status",))
    }
    found = {args: _json_times(doc) for args, doc in documents.items()}
    for args, times in found.items():
        for key, value in times:
            assert isinstance(value, str), (args, key, value)
            assert ISO_UTC.fullmatch(value), (args, key, value)
    keys = {args: {k for k, _ in times} for args, times in found.items()}
    assert {"created_at", "updated_at", "end_time", "claim_time"} <= keys[("job", "1")]
    assert {"last_seen", "first_seen"} <= keys[("workers",)]
    assert {"started_at", "last_seen_at", "stopped_at"} <= keys[("status",)]
    # Durations stay numbers of seconds.
    assert isinstance(documents[("status",)]["sentinel"]["last_seen_age_s"], float | int)


def test_job_text_shows_iso_times(cli: Cli, two_jobs: None, ops_db: Database) -> None:
    complete(ops_db)
    lines = cli("job", "1").out.splitlines()
    created = next(line for line in lines if line.strip().startswith("created"))
    assert ISO_UTC.search(created), created
    assert created.endswith(" ago)"), created
    ended = next(line for line in lines if line.strip().startswith("ended"))
    assert ISO_UTC.fullmatch(ended.split()[-1]), ended


def test_job_unknown_id(cli: Cli, ops_db: Database) -> None:
    assert cli("job", "99").err == "error: no job 99; list jobs with `casparian-trio jobs`\n"


# --- cancel / retry ----------------------------------------------------------------------------


def test_cancel_queued_running_and_finished(cli: Cli, two_jobs: None, ops_db: Database) -> None:
    running = claim(ops_db)  # job 1
    assert cli("cancel", "2").out == "job 2 cancelled\n"
    assert cli("cancel", str(running.id)).out == (
        "job 1: cancel requested; the sentinel aborts it on its worker within a second\n"
    )
    assert "CANCELLING" in cli("jobs").out
    assert cli("cancel", "2").out == "job 2 is already CANCELLED\n"
    assert cli("cancel", "42").rc == 1


def test_cancel_completed(cli: Cli, two_jobs: None, ops_db: Database) -> None:
    complete(ops_db)
    assert cli("cancel", "1").out == "job 1 is already COMPLETED\n"


def test_retry(cli: Cli, two_jobs: None, ops_db: Database) -> None:
    fail_for_good(ops_db)
    result = cli("retry", "1")
    assert result.out == "job 1 queued again (FAILED before; its failure budget is reset)\n"
    assert cli("jobs", "--status", "QUEUED", "--json").json()[-1]["retry_count"] == 0
    assert cli("retry", "1").out == "job 1 is already QUEUED: nothing to do\n"


def test_retry_completed_is_an_error(cli: Cli, two_jobs: None, ops_db: Database) -> None:
    complete(ops_db)
    result = cli("retry", "1")
    assert result.rc == 1
    assert result.err == (
        "error: job 1 is COMPLETED; only FAILED or CANCELLED jobs can be retried "
        "(`retry --force` re-runs it anyway)\n"
    )


def test_retry_force_reruns_a_completed_job(cli: Cli, two_jobs: None, ops_db: Database) -> None:
    complete(ops_db)
    result = cli("retry", "--force", "1")
    assert result.rc == 0, result.err
    assert result.out == "job 1 queued again (COMPLETED before; its failure budget is reset)\n"
    assert cli("jobs", "--status", "QUEUED", "--json").json()[-1]["id"] == 1


# --- workers / status -----------------------------------------------------------------------------


def add_worker(db: Database, worker_id: str, status: str, *, slots: int = 2) -> None:
    db.run_sync(
        partial(
            workers.upsert_worker,
            worker_id=worker_id,
            host="host1",
            pid=4242,
            capabilities=["sales"],
            slots=slots,
            status="IDLE",
            now=time.time() - 5,
        )
    )
    if status != "IDLE":
        db.run_sync(
            partial(workers.set_worker_status, worker_id=worker_id, status=status, now=time.time())
        )


def test_workers(cli: Cli, ops_db: Database) -> None:
    assert "no workers" in cli("workers").out
    put_sentinel(ops_db, sentinel_record())
    add_worker(ops_db, "w-alive", "IDLE")
    add_worker(ops_db, "w-lost", "LOST")
    add_worker(ops_db, "w-stopped", "STOPPED")
    lines = cli("workers").out.splitlines()
    assert lines[0].split() == ["worker", "status", "slots", "host/pid", "plugins", "last", "seen"]
    assert lines[1].split()[:5] == ["w-alive", "IDLE", "2", "host1/4242", "sales"]
    assert ISO_UTC.fullmatch(lines[1].split()[5])
    assert lines[2].split()[:2] == ["w-lost", "LOST"]
    assert lines[3].split()[:2] == ["w-stopped", "STOPPED"]
    result = cli("workers", "--json")
    assert result.err == ""
    doc = result.json()
    assert [(w["worker_id"], w["capabilities"], w["status"], w["alive"]) for w in doc] == [
        ("w-alive", ["sales"], "IDLE", True),
        ("w-lost", ["sales"], "LOST", False),
        ("w-stopped", ["sales"], "STOPPED", False),
    ]


def test_status(cli: Cli, two_jobs: None, ops_db: Database) -> None:
    complete(ops_db)
    put_sentinel(ops_db, sentinel_record(started_ago=300))
    add_worker(ops_db, "w1", "BUSY", slots=3)
    add_worker(ops_db, "w2", "GONE")
    add_worker(ops_db, "w3", "STOPPED")
    out = cli("status").out.splitlines()
    assert out[0] == "sentinel   running on tcp://127.0.0.1:5555 (pid 4711 on ctl-host, up 5m)"
    assert out[1] == (
        "jobs       1 queued · 0 running · 1 completed · 0 failed · 0 cancelled"
        " · 0 superseded · 0 skipped"
    )
    assert out[2] == "last 60 s  1 completed (120 rows) · 0 failed"
    assert out[3] == "workers    1 alive (3 slots) · 1 stopped · 1 gone or lost"
    assert out[4].startswith("queue      oldest queued job waiting ")
    doc = cli("status", "--json").json()
    assert doc["jobs"]["COMPLETED"] == 1
    assert doc["last_minute"] == {"completed": 1, "rows": 120, "failed": 0}
    assert doc["workers"] == {"alive": 1, "slots": 3, "unknown": 0, "stopped": 1, "gone": 1}
    assert doc["oldest_queued_age_s"] >= 0
    assert doc["sentinel"]["running"] is True
    assert doc["sentinel"]["pid"] == 4711
    assert doc["sentinel"]["uptime_s"] == pytest.approx(300, abs=5)


def test_status_throughput_ignores_old_and_legacy_rows(
    cli: Cli, two_jobs: None, ops_db: Database, db_path: Path
) -> None:
    complete(ops_db)
    conn = sqlite3.connect(db_path)
    try:
        with conn:
            conn.execute(
                "UPDATE cf_processing_queue SET updated_at = updated_at - 120 WHERE id = 1"
            )
            conn.execute(
                "UPDATE cf_processing_queue SET status = 'COMPLETED', result_summary = 'legacy text',"
                " updated_at = ? WHERE id = 2",
                (time.time(),),
            )
    finally:
        conn.close()
    assert cli("status", "--json").json()["last_minute"] == {"completed": 1, "rows": 0, "failed": 0}
