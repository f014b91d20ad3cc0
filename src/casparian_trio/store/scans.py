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

from casparian_trio import filenames, scout
from casparian_trio.store import catalog, queue
from casparian_trio.store._sql import q
from casparian_trio.store.rows import JOB_RETRACT, PluginRelease


@attrs.frozen(kw_only=True)
class ScannedFile:
    """One hashed file and the (plugin, priority) pairs its path routes to."""

    rel_path: str
    size: int
    mtime: float | None
    content_hash: str
    known: bool  # the catalog had this path before
    routes: tuple[tuple[str, int], ...] = ()
    revived: bool = False  # the catalog had it as deleted: it is back


@attrs.frozen(kw_only=True)
class BatchCounts:
    """What one recorded batch changed."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    queued: int = 0
    deleted: int = 0
    retractions: int = 0


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
        if not is_new and not item.revived:  # touched, same content: no new version, no job
            unchanged += 1
            continue
        changed += item.known and not item.revived
        new += not item.known or item.revived
        if item.revived:
            location = conn.execute(q("version_location"), {"id": version_id}).fetchone()[0]
            conn.execute(q("cancel_queued_retractions"), {"location_id": location, "now": now})
        for plugin, priority in item.routes:
            job_id, created = queue.enqueue(conn, version_id, plugin, now=now, priority=priority)
            if not created and item.revived:  # the same content is back: parse it again
                created = queue.rerun(conn, job_id, now=now, priority=priority)
            queued += created
    return BatchCounts(new=new, changed=changed, unchanged=unchanged, queued=queued)


def record_deletions(
    conn: sqlite3.Connection, *, location_ids: Sequence[int], now: float
) -> BatchCounts:
    """Mark each location deleted and queue one retraction job per plugin that parsed it.

    A retraction job (kind 'retract', on the location's current version) makes a
    worker remove the file's output from every topic of the plugin. A plugin's
    earlier retraction job of the same version is queued again (deleted, back,
    deleted again).
    """
    deleted = retractions = 0
    for location_id in location_ids:
        marked = conn.execute(q("mark_location_deleted"), {"location_id": location_id, "now": now})
        deleted += marked.rowcount
        row = conn.execute(q("location_current"), {"location_id": location_id}).fetchone()
        version_id = None if row is None else row["current_version_id"]
        if version_id is None:
            continue
        for (plugin,) in conn.execute(q("plugins_of_location"), {"location_id": location_id}):
            retractions += _queue_retraction(conn, location_id, int(version_id), plugin, now)
    return BatchCounts(deleted=deleted, retractions=retractions)


def _queue_retraction(
    conn: sqlite3.Connection, location_id: int, version_id: int, plugin: str, now: float
) -> int:
    jobs = conn.execute(
        q("jobs_of_location"), {"location_id": location_id, "plugin_name": plugin}
    ).fetchall()
    priority = max((int(r["priority"] or 0) for r in jobs), default=0)
    job_id, created = queue.enqueue(
        conn, version_id, plugin, now=now, priority=priority, kind=JOB_RETRACT
    )
    if not created:
        created = queue.rerun(conn, job_id, now=now, priority=priority)
    return int(created)


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


def record_release(
    conn: sqlite3.Connection, release: PluginRelease, *, now: float
) -> tuple[int, bool, int]:
    """Record a release and, when it is new, reprocess its files: (manifest id, created, requeued).

    One transaction (``catalog.record_deploy`` then ``record_reprocess``), so a
    new version is never ACTIVE without its files queued again, unless the
    release opts out (``publish --no-reprocess``).
    """
    manifest_id, created = catalog.record_deploy(conn, release, now=now)
    requeued = 0
    if created and release.reprocess:
        requeued = record_reprocess(conn, plugin=release.plugin_name, now=now)
    return manifest_id, created, requeued


def record_reprocess(
    conn: sqlite3.Connection,
    *,
    plugin: str,
    now: float,
    glob: str | None = None,
    priority: int | None = None,
) -> int:
    """Queue the current version of the plugin's files again; return how many jobs.

    The plugin's files: those its enabled routing rules match and those it parsed
    before (``submit``), not deleted; ``glob`` (git's pattern rules, like routing
    patterns) narrows them. A job already QUEUED or RUNNING stays as it is; one
    that ended is queued again (its output is replaced when it commits: output
    identity is (topic, source file)). Priority: ``priority``, else the highest
    of the plugin's rules that match the file, else the plugin's highest rule's, else 0.
    """
    rules = [r for r in scout.Rule.enabled(catalog.routing_rules(conn)) if r.plugin_name == plugin]
    parsed = {int(r[0]) for r in conn.execute(q("parsed_locations"), {"plugin_name": plugin})}
    fallback = max((r.priority for r in rules), default=0)
    queued = 0
    for row in conn.execute(q("current_files")).fetchall():
        rel_path, version_id = filenames.from_db(row["rel_path"]), row["file_version_id"]
        if version_id is None or (glob is not None and not scout.pattern_matches(glob, rel_path)):
            continue
        matched = scout.matches(rules, rel_path)
        if not matched and int(row["location_id"]) not in parsed:
            continue
        level = priority if priority is not None else (matched[0].priority if matched else fallback)
        job_id, created = queue.enqueue(conn, int(version_id), plugin, now=now, priority=level)
        if not created:
            created = queue.rerun(conn, job_id, now=now, priority=level)
        queued += created
    return queued
