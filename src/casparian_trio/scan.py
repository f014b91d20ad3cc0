"""Scanning: walk a source root, hash what changed, record it and queue its jobs.

Domain code beside ``scout`` (walking, ignore rules, routing patterns): no
terminal output. Callers watch through a ``progress(done, total, rel_path)``
callback. Hashing happens outside transactions (a big file must not hold the
write lock the Sentinel needs); results are recorded in batches, one
transaction each (``store.scans``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import attrs

from casparian_trio import scout
from casparian_trio.store import Database, catalog
from casparian_trio.store.scans import (
    BatchCounts,
    ScannedFile,
    record_deletions,
    record_scan_batch,
    record_submission,
)

logger = logging.getLogger(__name__)

# Files recorded per transaction: amortises commits while keeping each write
# short, so a concurrent Sentinel waits milliseconds, not the whole scan.
RECORD_BATCH = 200

Progress = Callable[[int, int, str], None]  # (files done, files in all, the current one)


@attrs.define
class ScanCounts:
    """What a scan found and queued (``scan --json`` prints these fields)."""

    files: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    unreadable: int = 0
    queued: int = 0
    deleted: int = 0
    retractions: int = 0

    def add(self, other: ScanCounts | BatchCounts) -> None:
        for field in attrs.fields(type(other)):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def to_json(self) -> dict[str, int]:
        return attrs.asdict(self)


def _no_progress(done: int, total: int, rel_path: str) -> None:
    pass


def scan_root(
    db: Database,
    root_id: int,
    root: Path,
    rules: Sequence[scout.Rule],
    *,
    progress: Progress = _no_progress,
) -> ScanCounts:
    """Record new, changed and deleted files of one root and queue their jobs.

    A file the catalog knows that the walk no longer finds is deleted (unless it
    sits under a directory that could not be listed, or the root is empty:
    ``looks_unmounted``): its location is marked
    and each plugin that parsed it gets a retraction job (``store.scans``).
    """
    states = db.run_sync(partial(catalog.location_states, source_root_id=root_id), readonly=True)
    known = {path: (s.mtime, s.size) for path, s in states.items() if not s.deleted}
    unlisted: list[str] = []
    candidates = list(scout.walk(root, unlisted=unlisted))
    if not candidates and known and looks_unmounted(root):
        unlisted.append("")
    counts = ScanCounts(files=len(candidates))
    batch: list[ScannedFile] = []
    for done, candidate in enumerate(candidates, start=1):
        progress(done, len(candidates), candidate.rel_path)
        if scout.is_unchanged(candidate, known):
            counts.unchanged += 1
            continue
        scanned = _hash(root, candidate, states, rules)
        if scanned is None:
            counts.unreadable += 1
            continue
        batch.append(scanned)
        if len(batch) >= RECORD_BATCH:
            counts.add(_flush(db, root_id, batch))
            batch = []
    counts.add(_flush(db, root_id, batch))
    gone = deleted_locations(states, {c.rel_path for c in candidates}, unlisted)
    for start in range(0, len(gone), RECORD_BATCH):
        record = partial(
            record_deletions, location_ids=gone[start : start + RECORD_BATCH], now=time.time()
        )
        counts.add(db.run_sync(record))
    return counts


def looks_unmounted(root: Path) -> bool:
    """True (and a warning) when ``root`` holds no entry at all.

    An unmounted mount point is an empty folder: its files are unknown, not
    deleted. A root that still holds anything (even ignored files) is listed as it is.
    """
    try:
        with os.scandir(root) as entries:
            if any(True for _ in entries):
                return False
    except OSError:
        return False  # the walk already recorded it as unlisted
    logger.warning(
        "source %s is empty; if it is an unmounted drive, mount it "
        "(its files are not marked deleted while it is empty)",
        root,
        extra={"event": "scan.empty_root"},
    )
    return True


def deleted_locations(
    states: dict[str, catalog.LocationState], found: set[str], unlisted: Sequence[str]
) -> list[int]:
    """Location ids of known, not yet deleted files the walk did not find.

    A path under an ``unlisted`` prefix (a directory that could not be listed;
    "" is the root itself) is unknown, not deleted.
    """
    return [
        state.location_id
        for path, state in states.items()
        if not state.deleted
        and path not in found
        and not any(path.startswith(prefix) for prefix in unlisted)
    ]


def _scanned(
    candidate: scout.Candidate,
    digest: str,
    *,
    known: bool,
    rules: Sequence[scout.Rule],
    revived: bool = False,
) -> ScannedFile:
    routes = tuple((r.plugin_name, r.priority) for r in scout.matches(rules, candidate.rel_path))
    return ScannedFile(
        rel_path=candidate.rel_path,
        size=candidate.size,
        mtime=candidate.mtime,
        content_hash=digest,
        known=known,
        routes=routes,
        revived=revived,
    )


def _hash(
    root: Path,
    candidate: scout.Candidate,
    states: dict[str, catalog.LocationState],
    rules: Sequence[scout.Rule],
) -> ScannedFile | None:
    try:
        digest = scout.hash_file(root / candidate.rel_path)
    except OSError as exc:  # vanished or unreadable: report it, keep scanning
        logger.warning("cannot read %s: %s", root / candidate.rel_path, exc.strerror)
        return None
    state = states.get(candidate.rel_path)
    return _scanned(
        candidate,
        digest,
        known=state is not None,
        rules=rules,
        revived=state is not None and state.deleted,
    )


def _flush(db: Database, root_id: int, batch: list[ScannedFile]) -> BatchCounts:
    if not batch:
        return BatchCounts()
    return db.run_sync(partial(record_scan_batch, root_id=root_id, batch=batch, now=time.time()))


def root_for(db: Database, path: Path) -> tuple[int, Path]:
    """The deepest source root containing ``path``; its folder becomes one if none does."""
    roots = db.run_sync(catalog.source_roots, readonly=True)
    containing = [r for r in roots if path.is_relative_to(r["path"])]
    if containing:
        best = max(containing, key=lambda r: len(r["path"]))
        return int(best["id"]), Path(best["path"])
    root_id, _ = db.run_sync(partial(catalog.add_source_root, path=str(path.parent)))
    return root_id, path.parent


def submit_file(db: Database, path: Path, plugin: str, *, priority: int) -> tuple[int, bool, str]:
    """Queue ``path`` (an absolute file) for ``plugin``: (job id, created, its status)."""
    root_id, root = root_for(db, path)
    stat = path.stat()
    candidate = scout.Candidate(path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime)
    item = _scanned(candidate, scout.hash_file(path), known=False, rules=())
    record = partial(
        record_submission,
        root_id=root_id,
        item=item,
        plugin=plugin,
        priority=priority,
        now=time.time(),
    )
    return db.run_sync(record)
