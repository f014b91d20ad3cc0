"""``job ID`` of a failed job (error, last frame, stderr tail, ``--full``) and ``logs ID``."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from cli_harness import Cli

from casparian_trio import failure_text
from casparian_trio.store import Database, JobRow, queue

HEAD = "plugin 'sales' raised ValueError: bad row 3"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/work/guest.py", line 280, in _emit\n'
    "    for item in result:\n"
    '  File "/tmp/g/plugin.py", line 9, in execute\n'
    "    check(row)\n"
    '  File "/tmp/g/plugin.py", line 4, in check\n'
    '    raise ValueError(f"bad row {row}")\n'
    "ValueError: bad row 3"
)
OUTPUT = [f"row {i} ok?" for i in range(30)]
BODY = f"{TRACEBACK}\n{failure_text.OUTPUT_MARKER}\n" + "\n".join(OUTPUT)


@pytest.fixture
def queued(cli: Cli, write_plugin: Callable[..., Path], data_dir: Path) -> None:
    """Job 1 for 2024/b.csv and job 2 for a.csv, both QUEUED."""
    cli("publish", str(write_plugin()))
    cli("source", "add", str(data_dir))
    assert "queued 2 jobs" in cli("scan").out


def claim(db: Database) -> JobRow:
    job = db.run_sync(
        partial(queue.claim, capabilities=["*"], worker_id="w1", now=time.time() - 100)
    )
    assert job is not None
    return job


def fail(db: Database, traceback: str | None = BODY) -> JobRow:
    job = claim(db)
    db.run_sync(
        partial(
            queue.fail,
            job_id=job.id,
            attempt=job.attempt,
            error=HEAD,
            traceback=traceback,
            now=time.time(),
            final=True,
        )
    )
    return job


def complete(db: Database, log_tail: str | None) -> JobRow:
    job = claim(db)
    summary = {"worker_id": "w1", "rows": 2, "metrics": {"rows": 2}, "artifacts": []}
    if log_tail is not None:
        summary["log_tail"] = log_tail
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


# --- job ID ------------------------------------------------------------------------------


def test_a_failed_job_shows_its_error_last_frame_and_stderr_tail(
    cli: Cli, queued: None, ops_db: Database
) -> None:
    fail(ops_db)
    out = cli("job", "1").out
    assert f"  error      {HEAD}\n" in out
    assert (
        '  at         File "/tmp/g/plugin.py", line 4, in check\n'
        '             raise ValueError(f"bad row {row}")\n'
        "             ValueError: bad row 3\n"
    ) in out
    assert "line 9, in execute" not in out  # the last frame only
    assert "  stderr tail (stdout and stderr, last 20 lines):\n" in out
    shown = out.split("stderr tail")[1].splitlines()[1:21]
    assert [line.strip() for line in shown] == OUTPUT[-20:]  # bounded: the last 20
    assert "row 9 ok?" not in out
    assert "`job 1 --full` prints it" in out


def test_job_full_prints_the_whole_traceback(cli: Cli, queued: None, ops_db: Database) -> None:
    fail(ops_db)
    out = cli("job", "1", "--full").out
    assert "  traceback:\n" in out
    shown = out.split("  traceback:\n")[1].splitlines()[: len(BODY.splitlines())]
    assert [line[4:] for line in shown] == BODY.splitlines()
    assert "--full` prints it" not in out


def test_job_json_has_the_failure_as_fields(cli: Cli, queued: None, ops_db: Database) -> None:
    fail(ops_db)
    doc = cli("job", "1", "--json").json()
    assert doc["error"] == HEAD
    assert doc["error_message"] == HEAD
    assert doc["error_traceback"] == BODY
    assert doc["traceback_last_frame"] == [
        'File "/tmp/g/plugin.py", line 4, in check',
        'raise ValueError(f"bad row {row}")',
        "ValueError: bad row 3",
    ]
    assert doc["stderr_tail"] == "\n".join(OUTPUT[-20:])
    assert doc["log_tail"] == "\n".join(OUTPUT)


def test_a_failure_without_output_shows_no_stderr_tail(
    cli: Cli, queued: None, ops_db: Database
) -> None:
    fail(ops_db, traceback=TRACEBACK)
    out = cli("job", "1").out
    assert "ValueError: bad row 3" in out
    assert "stderr tail" not in out
    doc = cli("job", "1", "--json").json()
    assert (doc["stderr_tail"], doc["log_tail"]) == (None, None)


@pytest.mark.parametrize("status", ["SUPERSEDED", "SKIPPED"])
def test_a_job_whose_input_changed_or_went_shows_in_job_jobs_and_status(
    cli: Cli, queued: None, ops_db: Database, status: str
) -> None:
    job = claim(ops_db)
    reason = "file gone: /d/2024/b.csv (deleted since scan)"
    ops_db.run_sync(
        partial(
            queue.end_unretried,
            job_id=job.id,
            attempt=job.attempt,
            status=status,
            reason=reason,
            now=time.time(),
        )
    )
    out = cli("job", str(job.id)).out
    assert status in out
    assert f"  error      {reason}\n" in out
    doc = cli("job", str(job.id), "--json").json()
    assert (doc["status"], doc["retry_count"]) == (status, 0)
    listed = cli("jobs", "--status", status, "--json").json()
    assert [j["id"] for j in listed] == [job.id]
    assert f"1 {status.lower()}" in cli("status").out
    assert cli("status", "--json").json()["jobs"][status] == 1


def test_a_completed_job_points_at_its_log(cli: Cli, queued: None, ops_db: Database) -> None:
    complete(ops_db, "reading\ndone")
    assert "  log        2 lines: `logs 1` prints it\n" in cli("job", "1").out
    doc = cli("job", "1", "--json").json()
    assert (doc["error"], doc["traceback_last_frame"], doc["stderr_tail"]) == (None, None, None)
    assert doc["log_tail"] == "reading\ndone"


# --- logs ID -----------------------------------------------------------------------------


def test_logs_prints_a_completed_jobs_plugin_log(cli: Cli, queued: None, ops_db: Database) -> None:
    complete(ops_db, "reading chunk 0\nreading chunk 1\ndone")
    result = cli("logs", "1")
    assert (result.rc, result.out, result.err) == (
        0,
        "reading chunk 0\nreading chunk 1\ndone\n",
        "",
    )


def test_logs_of_a_failed_job_is_its_output_tail(cli: Cli, queued: None, ops_db: Database) -> None:
    fail(ops_db)
    assert cli("logs", "1").out == "\n".join(OUTPUT) + "\n"  # all of it, not 20 lines


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ("queued", "job 1 has no log: it has not run yet"),
        ("running", "job 1 has no log yet: it is running (its log is kept when it ends)"),
        ("silent", "job 1 has no log: its plugin printed nothing (COMPLETED)"),
        ("failed without output", "job 1 has no log: its plugin printed nothing (FAILED)"),
    ],
)
def test_logs_without_a_log_exits_non_zero_with_one_line(
    cli: Cli, queued: None, ops_db: Database, state: str, reason: str
) -> None:
    if state == "running":
        claim(ops_db)
    elif state == "silent":
        complete(ops_db, None)
    elif state == "failed without output":
        fail(ops_db, traceback=TRACEBACK)
    result = cli("logs", "1")
    assert (result.rc, result.out, result.err) == (1, "", f"error: {reason}\n")


def test_logs_of_a_missing_job(cli: Cli, ops_db: Database) -> None:
    result = cli("logs", "42")
    assert result.rc == 1
    assert result.out == ""
    assert result.err == "error: no job 42; list jobs with `casparian-trio jobs`\n"
