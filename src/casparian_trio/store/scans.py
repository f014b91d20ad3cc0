"""Record what a scan or a submit found: file versions and the jobs they route to, together.

Each function runs as one write transaction, so a file version is never
recorded without the jobs its routing rules ask for (a crash between the two
would leave the file "unchanged" to the next scan and its jobs never queued).
Which plugins a file routes to is decided before the transaction
(``casparian_trio.scan``); this module only writes it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import attrs

from casparian_trio.store import catalog, queue


@attrs.frozen(kw_only=True)
class ScannedFile:
    """One hashed file and the (plugin, priority) pairs its path routes to."""

    rel_path: str
    size: int
    mtime: float | None
    content_hash: str
    known: bool  # the catalog had this path before
    routes: tuple[tuple[str, int], ...] = ()


@attrs.frozen(kw_only=True)
class BatchCounts:
    """What one recorded batch changed."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    queued: int = 0


def _record(
    conn: sqlite3.Connection, root_id: int, item: ScannedFile, now: float
) -> tuple[int, bool]:
    return catalog.record_file(
        conn,
        source_root_id=root_id,
        rel_path=item.rel_path,
        size=item.size,
        mtime=item.mtime,
        content_hash=item.content_hash,
        now=now,
    )


def record_scan_batch(
    conn: sqlite3.Connection, *, root_id: int, batch: Sequence[ScannedFile], now: float
) -> BatchCounts:
    """Record each file; a new version (new or changed content) queues its routed jobs."""
    new = changed = unchanged = queued = 0
    for item in batch:
        version_id, is_new = _record(conn, root_id, item, now)
        if not is_new:  # touched, same content: no new version, no job
            unchanged += 1
            continue
        changed += item.known
        new += not item.known
        for plugin, priority in item.routes:
            _, created = queue.enqueue(conn, version_id, plugin, now=now, priority=priority)
            queued += created
    return BatchCounts(new=new, changed=changed, unchanged=unchanged, queued=queued)


def record_submission(
    conn: sqlite3.Connection,
    *,
    root_id: int,
    item: ScannedFile,
    plugin: str,
    priority: int,
    now: float,
) -> tuple[int, bool, str]:
    """Record one file and queue it for ``plugin``: (job id, created, its status)."""
    version_id, _ = _record(conn, root_id, item, now)
    job_id, created = queue.enqueue(conn, version_id, plugin, now=now, priority=priority)
    job = queue.get_job(conn, job_id)
    return job_id, created, job.status if job else "?"
