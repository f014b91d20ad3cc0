"""``source add|list``, ``scan`` and ``submit``: files into the catalog, jobs into the queue.

The walking, hashing and matching are ``scout``'s; this module is the thin DB
side. Hashing happens outside transactions (a big file must not hold the write
lock the Sentinel needs); results are recorded in batches, one transaction each.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import attrs

from casparian_trio import _render, scout
from casparian_trio._ops_db import active_manifest, session
from casparian_trio.errors import ConfigError, PluginError
from casparian_trio.store import Database, catalog, queue

logger = logging.getLogger(__name__)

# Files recorded per transaction: amortises commits while keeping each write
# short, so a concurrent Sentinel waits milliseconds, not the whole scan.
RECORD_BATCH = 200


@attrs.define
class ScanCounts:
    files: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    unreadable: int = 0
    queued: int = 0

    def add(self, other: ScanCounts) -> None:
        for field in attrs.fields(ScanCounts):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def files_text(self) -> str:
        return (
            f"{_render.plural(self.files, 'file')} ({self.new} new, {self.changed} changed, "
            f"{self.unchanged} unchanged)"
        )

    def summary(self, elapsed: float) -> str:
        text = (
            f"scanned {self.files_text()} in {elapsed:.1f} s; "
            f"queued {_render.plural(self.queued, 'job')}"
        )
        if self.unreadable:
            text += f"; {self.unreadable} unreadable (see warnings)"
        return text


@attrs.frozen
class Hashed:
    candidate: scout.Candidate
    content_hash: str
    known: bool  # the catalog had this path before


# --- source add / list ------------------------------------------------------------


def cmd_source_add(args: argparse.Namespace) -> int:
    path = Path(args.dir).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(
            f"{args.dir} is not a directory; `source add` takes a folder of input files"
        )
    with session(args, create=True) as db:
        source_id, created = db.run_sync(partial(catalog.add_source_root, path=str(path)))
    state = "added" if created else "already added"
    print(f"source {source_id}: {path} ({state}); run `casparian-trio scan` to find its files")
    return 0


def cmd_source_list(args: argparse.Namespace) -> int:
    with session(args) as db:
        roots = db.run_sync(catalog.source_roots, readonly=True)
        counts = db.run_sync(_file_counts, readonly=True)
    if args.json:
        print(_render.dumps([{**r, "files": counts.get(r["id"], 0)} for r in roots]))
        return 0
    if not roots:
        print("no sources; add one with `casparian-trio source add DIR`")
        return 0
    columns = [_render.Column("id", align_right=True), _render.Column("path", shrink="middle")]
    columns += [_render.Column("files", align_right=True), _render.Column("active")]
    rows = [
        [str(r["id"]), r["path"], str(counts.get(r["id"], 0)), "yes" if r["active"] else "no"]
        for r in roots
    ]
    print(_render.table(columns, rows))
    return 0


def _file_counts(conn: sqlite3.Connection) -> dict[int, int]:
    sql = "SELECT source_root_id, count(*) FROM cf_file_location GROUP BY source_root_id"
    return {row[0]: row[1] for row in conn.execute(sql)}


# --- scan ---------------------------------------------------------------------------


def cmd_scan(args: argparse.Namespace) -> int:
    started = time.monotonic()
    with session(args) as db:
        roots = _roots_to_scan(db.run_sync(catalog.source_roots, readonly=True), args.source)
        rules = scout.Rule.enabled(db.run_sync(catalog.routing_rules, readonly=True))
        total = ScanCounts()
        for root in roots:
            counts = scan_root(db, root["id"], Path(root["path"]), rules)
            if len(roots) > 1:
                print(f"source {root['id']} {root['path']}: {counts.files_text()}")
            total.add(counts)
    print(total.summary(time.monotonic() - started))
    if not rules and (total.new or total.changed):
        print(
            "note: no routing rules, so nothing was queued; publish a plugin whose MANIFEST "
            "has a 'pattern', or use `casparian-trio submit FILE --plugin NAME`",
            file=sys.stderr,
        )
    return 0


def _roots_to_scan(roots: list[dict[str, Any]], wanted: str | None) -> list[dict[str, Any]]:
    if not roots:
        raise ConfigError("no sources to scan; add one with `casparian-trio source add DIR`")
    if wanted is None:
        active = [r for r in roots if r["active"]]
        missing = [r for r in active if not Path(r["path"]).is_dir()]
        for root in missing:
            print(f"warning: source {root['id']} {root['path']} is gone; skipped", file=sys.stderr)
        return [r for r in active if r not in missing]
    resolved = str(Path(wanted).expanduser().resolve())
    for root in roots:
        if str(root["id"]) == wanted or root["path"] == resolved:
            if not Path(root["path"]).is_dir():
                raise ConfigError(f"source {root['id']} {root['path']} is not a directory any more")
            return [root]
    raise ConfigError(f"no source {wanted!r}; list them with `casparian-trio source list`")


def scan_root(db: Database, root_id: int, root: Path, rules: Sequence[scout.Rule]) -> ScanCounts:
    """Record new and changed files of one root and queue their jobs."""
    known = db.run_sync(partial(catalog.file_location_state, source_root_id=root_id), readonly=True)
    candidates = list(scout.walk(root))
    counts = ScanCounts(files=len(candidates))
    progress = _render.Progress(f"scanning {root}", total=len(candidates))
    batch: list[Hashed] = []
    try:
        for done, candidate in enumerate(candidates, start=1):
            progress.update(done, _render.truncate_middle(candidate.rel_path, 40))
            if scout.is_unchanged(candidate, known):
                counts.unchanged += 1
                continue
            hashed = _hash(root, candidate, known)
            if hashed is None:
                counts.unreadable += 1
                continue
            batch.append(hashed)
            if len(batch) >= RECORD_BATCH:
                counts.add(_flush(db, root_id, batch, rules))
                batch = []
        counts.add(_flush(db, root_id, batch, rules))
    finally:
        progress.close()
    return counts


def _hash(root: Path, candidate: scout.Candidate, known: dict[str, Any]) -> Hashed | None:
    try:
        digest = scout.hash_file(root / candidate.rel_path)
    except OSError as exc:  # vanished or unreadable: report it, keep scanning
        logger.warning("cannot read %s: %s", root / candidate.rel_path, exc.strerror)
        return None
    return Hashed(candidate, digest, known=candidate.rel_path in known)


def _flush(
    db: Database, root_id: int, batch: list[Hashed], rules: Sequence[scout.Rule]
) -> ScanCounts:
    if not batch:
        return ScanCounts()
    return db.run_sync(partial(_record_batch, root_id=root_id, batch=batch, rules=rules))


def _record_batch(
    conn: sqlite3.Connection, *, root_id: int, batch: list[Hashed], rules: Sequence[scout.Rule]
) -> ScanCounts:
    counts, now = ScanCounts(), time.time()
    for item in batch:
        version_id, is_new = catalog.record_file(
            conn,
            source_root_id=root_id,
            rel_path=item.candidate.rel_path,
            size=item.candidate.size,
            mtime=item.candidate.mtime,
            content_hash=item.content_hash,
            now=now,
        )
        if not is_new:  # touched, same content: no new version, no job
            counts.unchanged += 1
            continue
        if item.known:
            counts.changed += 1
        else:
            counts.new += 1
        for rule in scout.matches(rules, item.candidate.rel_path):
            _, created = queue.enqueue(
                conn, version_id, rule.plugin_name, now=now, priority=rule.priority
            )
            counts.queued += created
    return counts


# --- submit ---------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    path = Path(args.file).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"{args.file} is not a file")
    with session(args, create=True) as db:
        if db.run_sync(partial(active_manifest, plugin_name=args.plugin), readonly=True) is None:
            raise PluginError(
                f"plugin {args.plugin!r} is not published; run `casparian-trio publish PLUGIN.py` first"
            )
        root_id, root = _root_for(db, path)
        stat = path.stat()
        digest = scout.hash_file(path)
        record = partial(
            _submit,
            root_id=root_id,
            candidate=scout.Candidate(
                path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime
            ),
            content_hash=digest,
            plugin=args.plugin,
            priority=args.priority,
        )
        job_id, created, status = db.run_sync(record)
    if args.json:
        print(_render.dumps({"job_id": job_id, "created": created, "status": status}))
    elif created:
        print(f"job {job_id} queued: {args.plugin} on {path}")
    else:
        print(f"job {job_id} already exists for this content of {path} ({status})")
    return 0


def _root_for(db: Database, path: Path) -> tuple[int, Path]:
    """The deepest source root containing ``path``; its folder becomes one if none does."""
    roots = db.run_sync(catalog.source_roots, readonly=True)
    containing = [r for r in roots if path.is_relative_to(r["path"])]
    if containing:
        best = max(containing, key=lambda r: len(r["path"]))
        return int(best["id"]), Path(best["path"])
    root_id, _ = db.run_sync(partial(catalog.add_source_root, path=str(path.parent)))
    return root_id, path.parent


def _submit(
    conn: sqlite3.Connection,
    *,
    root_id: int,
    candidate: scout.Candidate,
    content_hash: str,
    plugin: str,
    priority: int,
) -> tuple[int, bool, str]:
    now = time.time()
    version_id, _ = catalog.record_file(
        conn,
        source_root_id=root_id,
        rel_path=candidate.rel_path,
        size=candidate.size,
        mtime=candidate.mtime,
        content_hash=content_hash,
        now=now,
    )
    job_id, created = queue.enqueue(conn, version_id, plugin, now=now, priority=priority)
    job = queue.get_job(conn, job_id)
    return job_id, created, job.status if job else "?"
