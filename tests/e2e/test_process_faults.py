"""Real process faults: SIGKILLed workers and Sentinels, SIGTERM drains, long jobs.

Each test runs ``sentinel`` and ``worker`` as separate processes over tcp on
127.0.0.1 with a SQLite file in ``tmp_path``, heartbeats every 0.5 s and a
1.5 s liveness timeout, and checks what an operator would: the job row, its
attempt history, the Parquet read back, exit codes and leftover processes.

A job that must still be running while the test acts holds (``hold=1``) until
the test releases it, rather than sleeping for a time the test hopes is long
enough. Every wait is bounded by ``e2e_procs.HANG_S``, a hang guard only.
"""

from __future__ import annotations

import signal
import sys

import pytest
from e2e_procs import SLOW_PLUGIN, Cluster, Proc, alive, descendants, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

PLUGIN = "slow"
INPUT = "in.txt"


def wait_mid_job(cluster: Cluster, worker: Proc, job_id: int, worker_id: str) -> int:
    """Wait until ``job_id`` runs on ``worker`` and its guest is in the plugin; return the guest pid."""
    row = cluster.wait_for_status(job_id, "RUNNING")
    assert row.worker_id == worker_id, row
    worker.wait_for_log(rf"job {job_id} \({PLUGIN}\) started")
    (guest_pid,) = wait_until(
        "the guest to start the plugin", lambda: cluster.started_markers(INPUT)
    )
    assert guest_pid in {p.pid for p in descendants(worker.pid)}
    return guest_pid


def wait_gone(pid: int, what: str) -> None:
    wait_until(f"{what} (pid {pid}) to exit", lambda: not alive(pid))


def outcomes(cluster: Cluster, job_id: int) -> list[tuple[int, str | None, str | None]]:
    return [(a["attempt"], a["worker_id"], a["outcome"]) for a in cluster.attempts(job_id)]


def assert_output_once(cluster: Cluster, job_id: int, rows: int) -> None:
    files = cluster.parquet_files(PLUGIN)
    # one file per (topic, source file, plugin): the job's file version's location
    location = cluster.db.run_sync(
        lambda conn: conn.execute(
            "SELECT v.location_id FROM cf_processing_queue q"
            " JOIN cf_file_version v ON v.id = q.file_version_id WHERE q.id = ?",
            (job_id,),
        ).fetchone()[0],
        readonly=True,
    )
    assert [f.name for f in files] == [f"output.src-{location}.{PLUGIN}.parquet"]
    table = cluster.read_output(PLUGIN)
    assert table.column("id").to_pylist() == list(range(rows))
    assert table.column("value").to_pylist() == [i * 1.5 for i in range(rows)]
    assert set(table.column("_cf_job_id").to_pylist()) == {job_id}


def assert_only_warm_guests(cluster: Cluster, worker: Proc) -> None:
    """Guests left while a worker lives are its warm ones (at most 2), idle, waiting for a job."""
    guests = cluster.guests()
    assert len(guests) <= 2, guests
    assert all(g.ppid == worker.pid for g in guests), guests


def stop_cleanly(*procs: Proc) -> None:
    """SIGINT each process (workers first), expect exit 0; nothing of the test may remain."""
    for proc in procs:
        proc.send(signal.SIGINT)
        assert proc.wait() == 0, f"{proc.name} exited {proc.popen.returncode}"


def test_worker_sigkilled_mid_job_job_completes_on_a_second_worker(cluster: Cluster) -> None:
    (job_id,) = cluster.seed_jobs(PLUGIN, SLOW_PLUGIN, {INPUT: "hold=1\nrows=5\n"})
    sentinel = cluster.start_sentinel()
    worker_a = cluster.start_worker("w-a")
    guest_a = wait_mid_job(cluster, worker_a, job_id, "w-a")

    worker_a.send(signal.SIGKILL)
    assert worker_a.wait() == -signal.SIGKILL
    # PR_SET_PDEATHSIG: the guest dies with its worker.
    wait_gone(guest_a, "the killed worker's guest")
    # its warm (prespawned) guests die with it too
    wait_until("no guest of the killed worker", lambda: cluster.guests() == [])

    cluster.release(INPUT)  # the second attempt runs straight through
    worker_b = cluster.start_worker("w-b")
    sentinel.wait_for_log(r"worker w-a lost")
    done = cluster.wait_for_status(job_id, "COMPLETED", "FAILED")
    assert done.status == "COMPLETED", done
    assert done.attempt == 2
    assert done.retry_count == 1  # a lost worker is a counted failure
    assert done.worker_id == "w-b"
    assert outcomes(cluster, job_id) == [(1, "w-a", "WORKER_LOST"), (2, "w-b", "COMPLETED")]
    assert len(cluster.started_markers(INPUT)) == 2
    assert_output_once(cluster, job_id, rows=5)

    stop_cleanly(worker_b, sentinel)
    assert cluster.leftovers() == []


def test_sentinel_sigkilled_and_restarted_job_is_readopted_not_rerun(cluster: Cluster) -> None:
    (job_id,) = cluster.seed_jobs(PLUGIN, SLOW_PLUGIN, {INPUT: "hold=1\nrows=4\n"})
    sentinel_1 = cluster.start_sentinel()
    worker = cluster.start_worker("w-a")
    guest = wait_mid_job(cluster, worker, job_id, "w-a")

    sentinel_1.send(signal.SIGKILL)
    assert sentinel_1.wait() == -signal.SIGKILL
    sentinel_2 = cluster.start_sentinel()  # same database, same port
    sentinel_2.wait_for_log(r"1 job\(s\) left RUNNING by a previous Sentinel await re-adoption")
    sentinel_2.wait_for_log(rf"job {job_id} re-adopted from w-a")
    assert alive(guest), "the guest must keep running across a Sentinel restart"

    cluster.release(INPUT)
    done = cluster.wait_for_status(job_id, "COMPLETED", "FAILED", "QUEUED")
    assert done.status == "COMPLETED", done
    assert done.attempt == 1
    assert done.retry_count == 0
    assert done.worker_id == "w-a"
    assert outcomes(cluster, job_id) == [(1, "w-a", "COMPLETED")]
    assert cluster.started_markers(INPUT) == [guest]  # the plugin ran once
    assert_output_once(cluster, job_id, rows=4)
    assert worker.popen.poll() is None  # the same worker process throughout
    assert "identifying again" in worker.log()

    stop_cleanly(worker, sentinel_2)
    assert cluster.leftovers() == []


def test_worker_sigterm_with_grace_hands_the_job_back_uncounted(cluster: Cluster) -> None:
    (job_id,) = cluster.seed_jobs(PLUGIN, SLOW_PLUGIN, {INPUT: "hold=1\nrows=2\n"})
    sentinel = cluster.start_sentinel()
    worker_a = cluster.start_worker("w-a", "--grace", "1")
    guest_a = wait_mid_job(cluster, worker_a, job_id, "w-a")

    # The job holds until released, so only the 1 s grace can end it (ABORTED below).
    worker_a.send(signal.SIGTERM)
    assert worker_a.wait() == 0
    assert not alive(guest_a)
    log = worker_a.log()
    assert "SIGTERM: draining the worker" in log
    assert "draining: 1 job(s) get 1 s to finish" in log
    assert f"job {job_id} ABORTED" in log
    assert descendants(worker_a.pid) == []

    queued = cluster.wait_for_status(job_id, "QUEUED", "FAILED", "COMPLETED")
    assert queued.status == "QUEUED", queued
    assert queued.retry_count == 0  # handed back: not counted against max_attempts
    assert outcomes(cluster, job_id) == [(1, "w-a", "HANDED_BACK")]
    assert cluster.parquet_files(PLUGIN) == []  # staged output of the stopped job was dropped

    cluster.release(INPUT)
    worker_b = cluster.start_worker("w-b")
    done = cluster.wait_for_status(job_id, "COMPLETED", "FAILED")
    assert done.status == "COMPLETED", done
    assert done.attempt == 2
    assert done.retry_count == 0
    assert outcomes(cluster, job_id) == [(1, "w-a", "HANDED_BACK"), (2, "w-b", "COMPLETED")]
    assert_output_once(cluster, job_id, rows=2)

    stop_cleanly(worker_b, sentinel)
    assert cluster.leftovers() == []


def test_plugin_that_exits_the_guest_fails_the_job_and_the_worker_survives(
    cluster: Cluster,
) -> None:
    crash = (
        "import os\n\n\nclass Handler:\n    def execute(self, file_path):\n        os._exit(3)\n"
    )
    (crash_id,) = cluster.seed_jobs("crash", crash, {"c.txt": "x\n"}, max_attempts=1)
    sentinel = cluster.start_sentinel()
    worker = cluster.start_worker("w-a")

    failed = cluster.wait_for_status(crash_id, "FAILED", "COMPLETED")
    assert failed.status == "FAILED", failed
    assert "3" in (failed.error_message or ""), failed.error_message
    assert outcomes(cluster, crash_id) == [(1, "w-a", "FAILED")]
    assert_only_warm_guests(cluster, worker)

    # The same worker process goes on to run the next job.
    (job_id,) = cluster.seed_jobs(PLUGIN, SLOW_PLUGIN, {INPUT: "sleep=0\nrows=3\n"})
    done = cluster.wait_for_status(job_id, "COMPLETED", "FAILED")
    assert done.status == "COMPLETED", done
    assert done.worker_id == "w-a"
    assert_output_once(cluster, job_id, rows=3)

    stop_cleanly(worker, sentinel)
    assert cluster.leftovers() == []


def test_a_job_longer_than_the_thread_cache_idle_timeout_completes(cluster: Cluster) -> None:
    # trio's to_thread threads exit after 10 s idle; the guest must not die with one.
    # (The job must last at least 12 s: a lower bound, which load only lengthens.)
    (job_id,) = cluster.seed_jobs(PLUGIN, SLOW_PLUGIN, {INPUT: "sleep=12\nrows=2\n"})
    sentinel = cluster.start_sentinel()
    worker = cluster.start_worker("w-a")
    wait_mid_job(cluster, worker, job_id, "w-a")

    done = cluster.wait_for_status(job_id, "COMPLETED", "FAILED", "QUEUED")
    assert done.status == "COMPLETED", (done, done.error_message)
    assert done.attempt == 1
    assert_output_once(cluster, job_id, rows=2)

    stop_cleanly(worker, sentinel)
    assert cluster.leftovers() == []


def test_a_worker_killed_with_a_job_held_ready_loses_nothing(cluster: Cluster) -> None:
    """Prefetch with real processes: SIGKILL while one job runs and the next waits held ready.

    The running job's attempt counts (WORKER_LOST); the held one never ran, so
    it goes back uncounted (HANDED_BACK) and runs once elsewhere. Every job's
    rows are in its file exactly once.
    """
    files = {"a.txt": "rows=2\n", "b.txt": "hold=1\nrows=3\n", "c.txt": "rows=4\n"}
    short, held_up, behind = cluster.seed_jobs(PLUGIN, SLOW_PLUGIN, files)
    sentinel = cluster.start_sentinel()
    worker_a = cluster.start_worker("w-a")
    assert cluster.wait_for_status(short, "COMPLETED").worker_id == "w-a"
    wait_until("b to run on w-a", lambda: cluster.started_markers("b.txt"))
    # c went out with b (w-a's last job was short): dispatched to w-a, not started
    row = cluster.wait_for_status(behind, "RUNNING")
    assert row.worker_id == "w-a", row
    assert cluster.started_markers("c.txt") == []

    worker_a.send(signal.SIGKILL)
    assert worker_a.wait() == -signal.SIGKILL
    sentinel.wait_for_log(r"worker w-a lost")
    cluster.release("b.txt")
    worker_b = cluster.start_worker("w-b")
    for job_id in (held_up, behind):
        done = cluster.wait_for_status(job_id, "COMPLETED", "FAILED")
        assert done.status == "COMPLETED", done
        assert done.worker_id == "w-b"
    assert outcomes(cluster, held_up) == [(1, "w-a", "WORKER_LOST"), (2, "w-b", "COMPLETED")]
    assert [(w, o) for _, w, o in outcomes(cluster, behind)] == [
        ("w-a", "HANDED_BACK"),
        ("w-b", "COMPLETED"),
    ]
    assert cluster.job(behind).retry_count == 0  # it never ran on w-a
    assert len(cluster.started_markers("c.txt")) == 1
    table = cluster.read_output(PLUGIN)
    rows: dict[int, list[int]] = {}
    for job_id, row_id in zip(
        table.column("_cf_job_id").to_pylist(), table.column("id").to_pylist(), strict=True
    ):
        rows.setdefault(job_id, []).append(row_id)
    assert {job: sorted(ids) for job, ids in rows.items()} == {
        short: [0, 1],
        held_up: [0, 1, 2],
        behind: [0, 1, 2, 3],
    }
    assert len(cluster.parquet_files(PLUGIN)) == 3  # one file per source file

    stop_cleanly(worker_b, sentinel)
    assert cluster.leftovers() == []
