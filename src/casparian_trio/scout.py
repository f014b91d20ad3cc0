"""Scout: find the files of a source root, decide which to hash, route them to plugins.

No database here: ``walk`` lists candidates, ``is_unchanged`` compares them with
what the catalog recorded, ``hash_file`` digests one file, and ``matches`` picks
the routing rules a path satisfies. ``casparian_trio._ops_scan`` does the DB I/O.

Invariants:
- Paths handed out are relative to the root, '/'-separated, and never name an
  ignored file or anything inside an ignored directory.
- Only regular files are candidates; symlinks are not followed (a link to a
  directory could loop or leave the root).
- A file whose (mtime, size) equal the recorded ones is never read.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import attrs

logger = logging.getLogger(__name__)

# Large enough that hashing is disk-bound, small enough to keep memory flat.
HASH_CHUNK = 1024 * 1024
IGNORE_FILE = ".casparianignore"
# Editor backups, partial downloads and temp files are never input: they are
# either incomplete or about to change. Dotfiles and dot-dirs (.git, .cache)
# are skipped by name before these globs apply.
DEFAULT_IGNORES = ("__pycache__", "*.tmp", "*.part", "*~")


@attrs.frozen
class Candidate:
    """A regular file found under a root."""

    rel_path: str
    size: int
    mtime: float


@attrs.frozen
class IgnoreRules:
    """Glob patterns matched against a relative path and against its base name.

    A pattern ending in '/' applies to directories only.
    """

    patterns: tuple[str, ...] = DEFAULT_IGNORES

    @classmethod
    def for_root(cls, root: Path) -> IgnoreRules:
        """The defaults plus the globs of ``root/.casparianignore`` (if present)."""
        try:
            text = (root / IGNORE_FILE).read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        return cls(DEFAULT_IGNORES + tuple(parse_ignore_file(text)))

    def ignores(self, rel_path: str, *, is_dir: bool = False) -> bool:
        name = rel_path.rsplit("/", 1)[-1]
        if name.startswith("."):
            return True
        for pattern in self.patterns:
            if pattern.endswith("/"):
                if not is_dir:
                    continue
                pattern = pattern.rstrip("/")
            if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(rel_path, pattern):
                return True
        return False


def parse_ignore_file(text: str) -> list[str]:
    """Glob lines of a .casparianignore: blank lines and '#' comments skipped."""
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append(line.lstrip("/"))
    return patterns


def walk(root: Path, ignore: IgnoreRules | None = None) -> Iterator[Candidate]:
    """Yield every regular, not-ignored file under ``root``, in sorted path order."""
    rules = ignore or IgnoreRules.for_root(root)
    yield from _walk_dir(root, "", rules)


def _walk_dir(directory: Path, prefix: str, rules: IgnoreRules) -> Iterator[Candidate]:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:  # unreadable or vanished: skip it, keep scanning the rest
        logger.warning("cannot list %s: %s", directory, exc.strerror, extra={"event": "scan.skip"})
        return
    for entry in entries:
        rel = f"{prefix}{entry.name}"
        try:
            if entry.is_dir(follow_symlinks=False):
                if not rules.ignores(rel, is_dir=True):
                    yield from _walk_dir(Path(entry.path), f"{rel}/", rules)
            elif entry.is_file(follow_symlinks=False) and not rules.ignores(rel):
                stat = entry.stat(follow_symlinks=False)
                yield Candidate(rel_path=rel, size=stat.st_size, mtime=stat.st_mtime)
        except OSError as exc:  # vanished between listing and stat
            logger.debug("skipping %s: %s", rel, exc, extra={"event": "scan.skip"})


def is_unchanged(
    candidate: Candidate, known: Mapping[str, tuple[float | None, int | None]]
) -> bool:
    """True when the catalog already saw this path with the same mtime and size."""
    recorded = known.get(candidate.rel_path)
    return recorded is not None and recorded == (candidate.mtime, candidate.size)


def hash_file(path: Path) -> str:
    """SHA-256 of a file's content, read in HASH_CHUNK pieces (memory stays flat)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@attrs.frozen
class Rule:
    """An enabled routing rule: files matching ``pattern`` get a ``plugin_name`` job."""

    pattern: str
    plugin_name: str
    priority: int = 0

    @classmethod
    def enabled(cls, rows: Iterable[Mapping[str, object]]) -> list[Rule]:
        """Rules from cf_routing_rule rows, keeping only the enabled ones."""
        return [
            cls(str(r["pattern"]), str(r["plugin_name"]), int(r["priority"] or 0))  # type: ignore[call-overload]
            for r in rows
            if r["enabled"]
        ]


def matches(rules: Iterable[Rule], rel_path: str) -> list[Rule]:
    """The rules whose glob matches the relative path or its base name, one per plugin.

    When several rules name the same plugin, the highest priority wins; the result
    is ordered by priority (highest first), then plugin name.
    """
    name = rel_path.rsplit("/", 1)[-1]
    best: dict[str, Rule] = {}
    for rule in rules:
        if fnmatch.fnmatchcase(rel_path, rule.pattern) or fnmatch.fnmatchcase(name, rule.pattern):
            current = best.get(rule.plugin_name)
            if current is None or rule.priority > current.priority:
                best[rule.plugin_name] = rule
    return sorted(best.values(), key=lambda r: (-r.priority, r.plugin_name))
