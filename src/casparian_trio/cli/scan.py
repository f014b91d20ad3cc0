"""``source add|list``, ``scan`` and ``submit``: files into the catalog, jobs into the queue.

The walking, hashing and recording are ``casparian_trio.scan``'s (with
``scout``'s ignore rules and routing patterns); this module parses, calls it,
and renders the progress line and the counts.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from casparian_trio import scout
from casparian_trio.cli import _render
from casparian_trio.cli._common import command, json_flag
from casparian_trio.cli._db import session
from casparian_trio.errors import ConfigError, PluginError
from casparian_trio.filenames import shown
from casparian_trio.scan import ScanCounts, scan_root, submit_file
from casparian_trio.store import Database, catalog, reports
from casparian_trio.store.scans import record_reprocess

# The current file's name is cut to this width on the progress line.
PROGRESS_NAME_WIDTH = 40


def add_commands(sub: Any) -> None:
    """``source add|list``, ``scan``, ``submit``."""
    source = sub.add_parser("source", help="manage source folders", description="manage sources")
    actions = source.add_subparsers(
        dest="source_command", metavar="ACTION", required=True, help="add or list"
    )
    p = command(actions, "add", cmd_source_add, "register a folder whose files become jobs")
    p.add_argument("dir", metavar="DIR", help="the folder (its files are scanned recursively)")
    p = command(actions, "list", cmd_source_list, "list source folders")
    json_flag(p)

    p = command(sub, "scan", cmd_scan, "find new and changed files and queue their jobs")
    p.add_argument(
        "source", nargs="?", metavar="SOURCE", help="one source id or path (default: every source)"
    )
    json_flag(p)

    p = command(
        sub, "reprocess", cmd_reprocess, "queue a plugin's files again (their rows are replaced)"
    )
    p.add_argument("--plugin", required=True, metavar="NAME", help="a published plugin (required)")
    p.add_argument(
        "--glob",
        metavar="PATTERN",
        help=(
            "only files whose path matches (git's pattern rules, like MANIFEST['pattern']; "
            "default: all the plugin's files)"
        ),
    )
    p.add_argument("--priority", type=int, help="default: the plugin's routing priority")
    json_flag(p)

    p = command(sub, "submit", cmd_submit, "queue one file for one plugin")
    p.add_argument("file", metavar="FILE", help="the input file")
    p.add_argument("--plugin", required=True, metavar="NAME", help="a published plugin (required)")
    p.add_argument("--priority", type=int, default=0, help="higher runs first (default 0)")
    json_flag(p)


def files_text(counts: ScanCounts) -> str:
    return (
        f"{_render.plural(counts.files, 'file')} ({counts.new} new, {counts.changed} changed, "
        f"{counts.unchanged} unchanged)"
    )


def summary(counts: ScanCounts, elapsed: float | None = None) -> str:
    """'scanned 7 files (...) in 0.1 s; queued 6 jobs' (no time when ``elapsed`` is None)."""
    took = "" if elapsed is None else f" in {elapsed:.1f} s"
    text = f"scanned {files_text(counts)}{took}; queued {_render.plural(counts.queued, 'job')}"
    if counts.deleted:
        text += (
            f"; {counts.deleted} deleted ({_render.plural(counts.retractions, 'retraction job')} "
            "to remove their rows)"
        )
    if counts.unreadable:
        text += f"; {counts.unreadable} unreadable (see warnings)"
    return text


def scan_with_progress(
    db: Database, root_id: int, root: Path, rules: list[scout.Rule]
) -> ScanCounts:
    """``scan_root`` with a progress line on a terminal."""
    bar = _render.Progress(f"scanning {root}")

    def progress(done: int, total: int, rel_path: str) -> None:
        bar.total = total
        bar.update(done, _render.truncate_middle(shown(rel_path), PROGRESS_NAME_WIDTH))

    try:
        return scan_root(db, root_id, root, rules, progress=progress)
    finally:
        bar.close()


# --- source add / list ------------------------------------------------------------


def cmd_source_add(args: argparse.Namespace) -> int:
    path = Path(args.dir).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(
            f"{args.dir} is not a directory; `source add` takes a folder of input files"
        )
    with session(args) as db:
        source_id, created = db.run_sync(partial(catalog.add_source_root, path=str(path)))
    state = "added" if created else "already added"
    print(f"source {source_id}: {path} ({state}); run `casparian-trio scan` to find its files")
    return 0


def cmd_source_list(args: argparse.Namespace) -> int:
    with session(args) as db:
        roots = db.run_sync(catalog.source_roots, readonly=True)
        counts = db.run_sync(reports.files_per_source, readonly=True)
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


# --- scan ---------------------------------------------------------------------------


def cmd_scan(args: argparse.Namespace) -> int:
    started = time.monotonic()
    with session(args) as db:
        roots = _roots_to_scan(db.run_sync(catalog.source_roots, readonly=True), args.source)
        rules = scout.Rule.enabled(db.run_sync(catalog.routing_rules, readonly=True))
        total = ScanCounts()
        for root in roots:
            counts = scan_with_progress(db, root["id"], Path(root["path"]), rules)
            if len(roots) > 1 and not args.json:
                print(f"source {root['id']} {root['path']}: {files_text(counts)}")
            total.add(counts)
    if args.json:
        print(_render.dumps(total.to_json()))
    else:
        print(summary(total, time.monotonic() - started))
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


# --- submit ---------------------------------------------------------------------------


def _require_published(db: Database, plugin: str) -> None:
    manifest = db.run_sync(partial(reports.active_manifest, plugin_name=plugin), readonly=True)
    if manifest is None:
        raise PluginError(
            f"plugin {plugin!r} is not published; run `casparian-trio publish PLUGIN.py` first"
        )


def cmd_reprocess(args: argparse.Namespace) -> int:
    with session(args) as db:
        _require_published(db, args.plugin)
        queued = db.run_sync(
            partial(
                record_reprocess,
                plugin=args.plugin,
                glob=args.glob,
                priority=args.priority,
                now=time.time(),
            )
        )
    if args.json:
        print(_render.dumps({"plugin": args.plugin, "glob": args.glob, "queued": queued}))
        return 0
    which = f" matching {args.glob!r}" if args.glob else ""
    print(
        f"queued {_render.plural(queued, 'job')} to reprocess {args.plugin}'s files{which}; "
        "each replaces that file's rows when it completes"
    )
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    path = Path(args.file).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"{args.file} is not a file")
    with session(args) as db:
        _require_published(db, args.plugin)
        job_id, created, status = submit_file(db, path, args.plugin, priority=args.priority)
    if args.json:
        print(_render.dumps({"job_id": job_id, "created": created, "status": status}))
    elif created:
        print(f"job {job_id} queued: {args.plugin} on {path}")
    else:
        print(f"job {job_id} already exists for this content of {path} ({status})")
    return 0
