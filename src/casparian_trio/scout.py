"""Scout: find the files of a source root, decide which to hash, route them to plugins.

No database here: ``walk`` lists candidates, ``is_unchanged`` compares them with
what the catalog recorded, ``hash_file`` digests one file, and ``matches`` picks
the routing rules a path satisfies. ``casparian_trio.scan`` does the DB I/O.

Invariants:
- Paths handed out are relative to the root, '/'-separated, and never name an
  ignored file or anything inside an ignored directory.
- Only regular files are candidates; symlinks are not followed (a link to a
  directory could loop or leave the root).
- A file whose (mtime, size) equal the recorded ones is never read.

Pattern rules (both ignore files and routing patterns) are git's, as
implemented by pathspec's ``GitIgnoreSpec`` (https://git-scm.com/docs/gitignore):
``*`` matches within one path segment, ``**`` any number of segments including
none (``sales/**/*.csv`` matches ``sales/a.csv`` and ``sales/q1/b.csv``), a
pattern without a ``/`` matches a name at any depth (``*.csv``), a pattern
with one is anchored at the root, a trailing ``/`` matches directories only,
and in ``.casparianignore`` a later ``!pattern`` re-includes what an earlier
one excluded. One difference from git: an excluded directory is still searched
when a ``!`` rule names a path inside it (``raw/**`` then ``!raw/keep.csv``
keeps ``raw/keep.csv``, and so does ``logs/`` then ``!logs/keep.csv``, which
git would not re-include); other excluded directories are never entered.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import attrs
from pathspec import GitIgnoreSpec

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
    """gitignore rules (see the module docstring) matched against root-relative paths.

    Dotfiles and dot-dirs are ignored by name before the rules apply.
    """

    patterns: tuple[str, ...] = DEFAULT_IGNORES
    _spec: GitIgnoreSpec = attrs.field(init=False, eq=False, repr=False)
    # Anchors of the '!' rules: a directory holding one is searched even if excluded.
    _reincluded: tuple[str, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_spec", GitIgnoreSpec.from_lines(self.patterns))
        negations = [p[1:].lstrip("/") for p in self.patterns if p.startswith("!")]
        object.__setattr__(self, "_reincluded", tuple(negations))

    @classmethod
    def for_root(cls, root: Path) -> IgnoreRules:
        """The defaults plus the rules of ``root/.casparianignore`` (if present)."""
        try:
            text = (root / IGNORE_FILE).read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        return cls(DEFAULT_IGNORES + tuple(parse_ignore_file(text)))

    def ignores(self, rel_path: str, *, is_dir: bool = False) -> bool:
        name = rel_path.rsplit("/", 1)[-1]
        if name.startswith("."):
            return True
        if not is_dir:
            return self._spec.match_file(rel_path)
        if any(_may_hold(rel_path, negation) for negation in self._reincluded):
            return False
        return self._spec.match_file(f"{rel_path}/")


def _may_hold(directory: str, negation: str) -> bool:
    """Whether the '!' rule ``negation`` could name something inside ``directory``."""
    if "/" not in negation.rstrip("/"):
        return True  # matches a name at any depth
    head = negation.split("/", 1)[0]
    first = directory.split("/", 1)[0]
    return any(ch in head for ch in "*?[") or head == first


def parse_ignore_file(text: str) -> list[str]:
    """The rule lines of a .casparianignore: blank lines and ``#`` comments dropped."""
    return [
        line.rstrip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]


def walk(
    root: Path, ignore: IgnoreRules | None = None, *, unlisted: list[str] | None = None
) -> Iterator[Candidate]:
    """Yield every regular, not-ignored file under ``root``, in sorted path order.

    ``unlisted`` collects the relative prefixes ("" for the root itself, else
    "dir/") of directories that could not be listed: what is under them is
    unknown, not deleted.
    """
    rules = ignore or IgnoreRules.for_root(root)
    yield from _walk_dir(root, "", rules, [] if unlisted is None else unlisted)


def _walk_dir(
    directory: Path, prefix: str, rules: IgnoreRules, unlisted: list[str]
) -> Iterator[Candidate]:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:  # unreadable or vanished: skip it, keep scanning the rest
        logger.warning("cannot list %s: %s", directory, exc.strerror, extra={"event": "scan.skip"})
        unlisted.append(prefix)
        return
    for entry in entries:
        rel = f"{prefix}{entry.name}"
        try:
            if entry.is_dir(follow_symlinks=False):
                if not rules.ignores(rel, is_dir=True):
                    yield from _walk_dir(Path(entry.path), f"{rel}/", rules, unlisted)
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


@functools.lru_cache(maxsize=1024)
def _pattern(pattern: str) -> GitIgnoreSpec:
    return GitIgnoreSpec.from_lines([pattern])


def pattern_matches(pattern: str, rel_path: str) -> bool:
    """Whether a routing ``pattern`` (git's rules, see the module docstring) matches ``rel_path``."""
    return _pattern(pattern).match_file(rel_path)


def matches(rules: Iterable[Rule], rel_path: str) -> list[Rule]:
    """The rules whose pattern matches the relative path, one per plugin.

    When several rules name the same plugin, the highest priority wins; the result
    is ordered by priority (highest first), then plugin name.
    """
    best: dict[str, Rule] = {}
    for rule in rules:
        if pattern_matches(rule.pattern, rel_path):
            current = best.get(rule.plugin_name)
            if current is None or rule.priority > current.priority:
                best[rule.plugin_name] = rule
    return sorted(best.values(), key=lambda r: (-r.priority, r.plugin_name))
