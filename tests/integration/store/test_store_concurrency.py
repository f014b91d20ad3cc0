"""Two OS processes claim from one WAL file at (nearly) full speed: no job twice, none lost."""

from __future__ import annotations

import select
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from casparian_trio.store import open_database, queue

JOBS = 2000
TIMEOUT = 120  # a hang guard for each wait on the children, not a speed limit

CLAIMER = textwrap.dedent(
    """
    import sys, time
    from casparian_trio.store import open_database, queue

    db = open_database(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    claimed = []
    while True:
        job = db.run_sync(lambda c: queue.claim(
            c, capabilities=["*"], worker_id=sys.argv[2], now=time.time()))
        if job is None:
            break
        claimed.append(job.id)
        # SQLite's busy handler sleeps and retries, so a loop that re-takes the
        # lock at once can starve the other process; 0.1 ms between claims (far
        # less than sending a DISPATCH) keeps both of them claiming.
        time.sleep(0.0001)
    print(" ".join(map(str, claimed)), flush=True)
    """
)


def fill(path: Path) -> None:
    db = open_database(path)

    def fn(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO cf_source_root (path) VALUES ('/d')")
        c.execute("INSERT INTO cf_file_hash_registry (content_hash, size_bytes) VALUES ('h', 1)")
        # one file per job: a newer version of the same file would supersede the older's job
        c.executemany(
            "INSERT INTO cf_file_location (source_root_id, rel_path, filename) VALUES (1, ?, ?)",
            [(f"f{i}", f"f{i}") for i in range(1, JOBS + 1)],
        )
        c.executemany(
            "INSERT INTO cf_file_version (location_id, content_hash, size_bytes, modified_time)"
            " VALUES (?, 'h', 1, 'x')",
            [(i,) for i in range(1, JOBS + 1)],
        )
        for fv in range(1, JOBS + 1):
            queue.enqueue(c, fv, "p", now=0.0, priority=fv % 7)

    db.run_sync(fn)
    db.close()


def test_two_processes_claim_each_job_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    fill(path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(path), f"w{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        for p in procs:  # a child that dies prints nothing: readline() gives '' and this fails
            assert p.stdout is not None
            assert select.select([p.stdout], [], [], TIMEOUT)[0], "a claimer never started"
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    claimed = [[int(x) for x in out.split()] for out in outputs]
    everything = claimed[0] + claimed[1]
    assert len(everything) == JOBS
    assert set(everything) == set(range(1, JOBS + 1))
    assert all(claimed), "both processes should have claimed some jobs"
    db = open_database(path)
    counts = db.run_sync(
        lambda c: c.execute(
            "SELECT count(*), sum(attempt), (SELECT count(*) FROM cf_job_attempt)"
            " FROM cf_processing_queue WHERE status = 'RUNNING'"
        ).fetchone()
    )
    assert tuple(counts) == (JOBS, JOBS, JOBS)
