"""Benchmark the SQLite job queue: claims/s and completions/s on a WAL file.

Builds a throwaway database with N queued jobs (default 100,000), then times
claim and complete transactions through ``Database.run_sync`` (the per-call
transaction path), a sample through the async ``Store`` in thread mode, and a
sample of claims with the seed's ``ix_queue_pop`` index instead of
``ix_queue_claim`` (which has to sort). A printer only: no assertions.

Usage: python tools/bench_queue.py [--jobs 100000] [--seed-sample 300]
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import tempfile
import time
from pathlib import Path

import trio

from casparian_trio.store import Database, JobRow, Store, open_database, queue

logger = logging.getLogger(__name__)

PRIORITY_LEVELS = 10  # spread of priorities among the queued jobs
ASYNC_SAMPLE = 5000  # claims/completions timed through Store + trio thread


def build(path: Path, jobs: int) -> Database:
    db = open_database(path)

    def fill(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO cf_source_root (path) VALUES ('/bench')")
        conn.execute(
            "INSERT INTO cf_file_location (source_root_id, rel_path, filename) VALUES (1, 'f', 'f')"
        )
        conn.execute("INSERT INTO cf_file_hash_registry (content_hash, size_bytes) VALUES ('h', 1)")
        conn.executemany(
            "INSERT INTO cf_file_version (location_id, content_hash, size_bytes, modified_time)"
            " VALUES (1, 'h', 1, 'x')",
            [()] * jobs,
        )
        conn.executemany(
            "INSERT INTO cf_processing_queue (file_version_id, plugin_name, status, priority,"
            " created_at) VALUES (?, ?, 'QUEUED', ?, 0)",
            ((i, f"plugin{i % 4}", i % PRIORITY_LEVELS) for i in range(1, jobs + 1)),
        )

    db.run_sync(fill)
    db.run_sync(lambda c: c.execute("ANALYZE"))
    return db


def plan(db: Database) -> str:
    query = queue.claim_query(["*"])
    assert query is not None
    sql, params = query
    rows = db.run_sync(lambda c: c.execute(f"EXPLAIN QUERY PLAN {sql}", {**params, "now": 0}))
    return "; ".join(r[3] for r in rows)


def time_claims(
    db: Database, count: int, caps: tuple[str, ...] = ("*",)
) -> tuple[float, list[JobRow]]:
    claimed: list[JobRow] = []
    start = time.perf_counter()
    for _ in range(count):
        job = db.run_sync(
            lambda c: queue.claim(c, capabilities=caps, worker_id="bench", now=time.time())
        )
        if job is None:
            break
        claimed.append(job)
    return time.perf_counter() - start, claimed


def time_completes(db: Database, jobs: list[JobRow]) -> float:
    start = time.perf_counter()
    for job in jobs:

        def done(conn: sqlite3.Connection, job: JobRow = job) -> bool:
            return queue.complete(conn, job.id, job.attempt, result_summary={}, now=time.time())

        db.run_sync(done)
    return time.perf_counter() - start


async def time_async(db: Database, count: int) -> tuple[float, float]:
    store = Store(db)
    jobs = []
    start = trio.current_time()
    for _ in range(count):
        job = await store.claim(capabilities=["*"], worker_id="bench", now=time.time())
        if job is None:
            break
        jobs.append(job)
    claims = trio.current_time() - start
    start = trio.current_time()
    for job in jobs:
        await store.complete(job.id, job.attempt, result_summary={}, now=time.time())
    return len(jobs) / claims, len(jobs) / (trio.current_time() - start)


def seed_index_rate(path: Path, jobs: int, sample: int) -> tuple[float, str]:
    db = build(path, jobs)
    db.run_sync(lambda c: c.execute("DROP INDEX ix_queue_claim"))
    db.run_sync(
        lambda c: c.execute(
            "CREATE INDEX ix_queue_pop ON cf_processing_queue(status, priority, id)"
        )
    )
    elapsed, claimed = time_claims(db, sample)
    text = plan(db)
    db.close()
    return len(claimed) / elapsed, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument(
        "--seed-sample", type=int, default=300, help="claims with ix_queue_pop (0: skip)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        db = build(Path(tmp) / "bench.db", args.jobs)
        print(f"built {args.jobs:,} queued jobs in {time.perf_counter() - start:.1f} s (WAL file)")
        print(f"claim plan: {plan(db)}")
        async_claims, async_completes = trio.run(time_async, db, ASYNC_SAMPLE)
        elapsed, jobs = time_claims(db, args.jobs)
        print(f"claims:      {len(jobs) / elapsed:9,.0f} /s  ({len(jobs):,} claims, run_sync)")
        elapsed = time_completes(db, jobs)
        print(f"completions: {len(jobs) / elapsed:9,.0f} /s  ({len(jobs):,} completes, run_sync)")
        print(
            f"Store async (trio thread, {ASYNC_SAMPLE:,} each): claims {async_claims:,.0f} /s, "
            f"completions {async_completes:,.0f} /s"
        )
        db.close()
        if args.seed_sample:
            rate, text = seed_index_rate(Path(tmp) / "seed_index.db", args.jobs, args.seed_sample)
            print(
                f"seed ix_queue_pop claims: {rate:9,.0f} /s  ({args.seed_sample} claims; plan: {text})"
            )


if __name__ == "__main__":
    main()
