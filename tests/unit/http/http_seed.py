"""A small, fully known queue for the dashboard's tests: built with the store's own sync cores.

``seed(conn, now=NOW)`` leaves, for plugin ``sales``: job 1 COMPLETED (10 rows to
``sales``, 2 of them quarantined, run 0.3 s, dispatch to receipt 1 s), job 2
COMPLETED (5 rows, run 2.0 s, 4 s), job 3 FAILED (a plugin error, 2 s); for
plugin ``logs``: job 4 QUEUED since NOW - 30.
"""

from __future__ import annotations

import sqlite3

import attrs

from casparian_trio.store import catalog, queue, topics
from casparian_trio.store.topics import TopicOutput

NOW = 1_800_000_000.0
SALES_ROOT = "/data/in"


@attrs.frozen
class Seeded:
    completed: tuple[int, int]
    failed: int
    queued: int


def _publish(conn: sqlite3.Connection, plugin: str) -> None:
    catalog.publish_manifest(
        conn,
        plugin_name=plugin,
        version="1.2.0",
        source_code="class Handler: pass",
        source_hash=f"hash-{plugin}",
        env_hash="system",
        artifact_hash=f"hash-{plugin}",
        manifest={"name": plugin, "version": "1.2.0"},
        now=NOW - 100,
    )


def _job(conn: sqlite3.Connection, root_id: int, name: str, plugin: str, created: float) -> int:
    version_id, _ = catalog.record_file(
        conn,
        source_root_id=root_id,
        rel_path=name,
        size=100,
        mtime=NOW - 200,
        content_hash=f"sha-{name}",
        now=created,
    )
    job_id, _ = queue.enqueue(conn, version_id, plugin, now=created)
    return job_id


def _complete(conn: sqlite3.Connection, *, took: float, run: float, rows: int, bad: int) -> int:
    job = queue.claim(conn, capabilities=("sales",), worker_id="w1", now=NOW - 50)
    assert job is not None
    outputs = [
        TopicOutput(
            topic="sales",
            uri=f"/out/sales/sales.job-{job.id}.parquet",
            sink_uri="/out/sales",
            rows=rows,
            rows_quarantined=bad,
            contract_version=1,
            columns=({"name": "id", "type": "int64"},),
        )
    ]
    if bad:
        outputs.append(
            TopicOutput(
                topic="sales_quarantine",
                uri=f"/out/sales_quarantine/q.job-{job.id}.parquet",
                sink_uri="/out/sales_quarantine",
                rows=bad,
            )
        )
    summary = {"metrics": {"rows": rows, "duration_s": run}, "rows": rows, "artifacts": []}
    done = topics.complete_with_outputs(
        conn, job.id, job.attempt, result_summary=summary, now=NOW - 50 + took, outputs=outputs
    )
    assert done
    return job.id


def seed(conn: sqlite3.Connection) -> Seeded:
    for plugin in ("sales", "logs"):
        _publish(conn, plugin)
    root_id, _ = catalog.add_source_root(conn, SALES_ROOT)
    for i in range(1, 4):
        _job(conn, root_id, f"2026-0{i}/sales.csv", "sales", NOW - 90 + i)
    queued = _job(conn, root_id, "app.log", "logs", NOW - 30)
    first = _complete(conn, took=1.0, run=0.3, rows=10, bad=2)
    second = _complete(conn, took=4.0, run=2.0, rows=5, bad=0)
    job = queue.claim(conn, capabilities=("sales",), worker_id="w1", now=NOW - 20)
    assert job is not None
    status = queue.fail(
        conn,
        job.id,
        job.attempt,
        error="ValueError: bad row 7",
        traceback='Traceback (most recent call last):\n  File "p.py", line 3\nValueError: bad row 7',
        now=NOW - 18,
        final=True,
    )
    assert status == "FAILED"
    return Seeded(completed=(first, second), failed=job.id, queued=queued)
