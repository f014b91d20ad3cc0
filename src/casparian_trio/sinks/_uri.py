"""Parse sink URIs and confine them to the output root (pure path logic, no writes).

Accepted forms (relative to the worker's output root):

- ``parquet://DIR`` -- a dataset directory. Each (job, topic) writes one file
  ``DIR/<topic>.job-<job_id>.parquet``. A DIR ending in ``.parquet`` (the
  seed's ``parquet://test_output.parquet``) is still a directory, Spark style;
  read it with e.g. duckdb ``read_parquet('DIR/*.parquet')``.
- ``sqlite://PATH/TABLE`` -- table TABLE in the SQLite file PATH.

Invariant: a URI never resolves outside the output root: absolute paths, ``..``
components and symlinks leading out are refused with SinkError.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import attrs

from casparian_trio._realpath import real_path
from casparian_trio.errors import SinkError

_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Topic names become part of file names; anything else is replaced by "_".
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@attrs.frozen
class SinkTarget:
    """A validated sink location."""

    scheme: str  # "parquet" | "sqlite"
    path: Path  # dataset dir (parquet) or database file (sqlite), absolute
    table: str | None = None


def safe_name(topic: str) -> str:
    """A file-name-safe form of a topic name."""
    return _UNSAFE.sub("_", topic).lstrip(".") or "_"


def parse_sink_uri(uri: str, output_root: Path, topic: str) -> SinkTarget:
    """Validate ``uri`` for ``topic`` and resolve it under ``output_root``.

    Raises:
        SinkError: unknown scheme, empty/absolute/escaping path, bad table name.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in ("parquet", "sqlite"):
        raise _bad(uri, topic, "expected parquet://DIR or sqlite://PATH/TABLE")
    if scheme == "parquet":
        return SinkTarget("parquet", _confine(uri, topic, rest, output_root))
    path, _, table = rest.rpartition("/")
    if not path or not _TABLE.match(table):
        raise _bad(uri, topic, "expected sqlite://PATH/TABLE with TABLE a plain identifier")
    return SinkTarget("sqlite", _confine(uri, topic, path, output_root), table)


def _confine(uri: str, topic: str, rel: str, output_root: Path) -> Path:
    pure = PurePosixPath(rel)
    if not rel or rel.startswith("/") or pure.is_absolute():
        raise _bad(
            uri,
            topic,
            "absolute or empty paths are not allowed; use a path relative to the output root",
        )
    if ".." in pure.parts:
        raise _bad(uri, topic, "'..' would escape the output root")
    root = Path(real_path(str(output_root)))
    resolved = Path(real_path(str(root / pure)))
    if resolved != root and root not in resolved.parents:
        raise _bad(uri, topic, "resolves outside the output root (symlink?)")
    return resolved


def _bad(uri: str, topic: str, why: str) -> SinkError:
    return SinkError(f"bad sink URI {uri!r} for topic {topic!r}: {why}")
