"""The DuckDB catalog: one view per topic over its Parquet files (``catalog``, ``query``).

Role: what the store recorded of each topic (``store.topics.list_topics``: its
name and folder) becomes ``CREATE VIEW <topic> AS SELECT * FROM
read_parquet([...])`` in a DuckDB database. The views read the files at query
time, so a view is as current as the folder: with output identity (one file
per source file, replaced by one rename, see ``sinks/parquet.py``) it shows
each file's current rows exactly once.

Rules:
- A topic name used by one Parquet folder is the view's name. When folders
  share a name (two plugins' default ``output`` topic), each view is named
  ``<folder name>__<topic>``. DuckDB compares names case-insensitively, so
  ``Sales`` and ``sales`` share a name too; a name still taken (folders of one
  name) gets ``_2``, ``_3``...
- A view reads ``<topic>.src-*.parquet`` and ``<topic>.job-*.parquet`` (the
  two naming schemes) with ``union_by_name``: files written under older
  contract versions line up by column name.
- Topics in SQLite tables, and Parquet folders with no file yet, get no view;
  ``CatalogPlan.skipped`` says why, one line each.

DuckDB is the engine (a dependency of ours for this); nothing here parses Parquet.
"""

from __future__ import annotations

import glob
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from casparian_trio.store.topics import SQLITE_SCHEME

# Characters DuckDB's globbing gives a meaning to.
GLOB_CHARACTERS = "*?[]{}"
# The two file-name schemes of a Parquet topic (sinks/parquet.py).
FILE_PATTERNS = ("{topic}.src-*.parquet", "{topic}.job-*.parquet")


@attrs.frozen
class TopicView:
    """One view: its name, the topic, and the Parquet globs it reads (absolute)."""

    name: str
    topic: str
    folder: str
    globs: tuple[str, ...]


@attrs.frozen
class CatalogPlan:
    views: tuple[TopicView, ...]
    skipped: tuple[str, ...]


def plan_views(topics: Sequence[dict[str, Any]]) -> CatalogPlan:
    """The views for ``list_topics`` rows (looks at the folders for files, nothing else)."""
    from casparian_trio.sinks._uri import safe_name  # not at import: sinks load pyarrow

    parquet = [t for t in topics if not str(t["sink_uri"]).startswith(SQLITE_SCHEME)]
    skipped = [
        f"{t['topic_name']}: a SQLite table ({t['sink_uri']}); query it with sqlite3 or DuckDB's "
        "sqlite extension"
        for t in topics
        if str(t["sink_uri"]).startswith(SQLITE_SCHEME)
    ]
    names: dict[str, int] = {}
    for t in parquet:
        key = str(t["topic_name"]).casefold()
        names[key] = names.get(key, 0) + 1
    taken: set[str] = set()
    views = []
    for t in parquet:
        topic, folder = str(t["topic_name"]), str(t["sink_uri"])
        # safe_name leaves no glob character in the topic part. A folder with one
        # ([, *, ? or {) cannot be globbed by DuckDB: the view then lists the files
        # as they are now (write the catalog again after new files arrive).
        names_in = [p.format(topic=safe_name(topic)) for p in FILE_PATTERNS]
        escaped = glob.escape(folder)
        if any(ch in folder for ch in GLOB_CHARACTERS):
            present = tuple(
                sorted(f for n in names_in for f in glob.glob(os.path.join(escaped, n)))
            )
        else:
            present = tuple(
                os.path.join(folder, n) for n in names_in if glob.glob(os.path.join(escaped, n))
            )
        if not present:
            skipped.append(f"{topic}: no Parquet file in {folder} yet")
            continue
        name = topic if names[topic.casefold()] == 1 else f"{Path(folder).name}__{topic}"
        name = _unique(name, taken)
        views.append(TopicView(name=name, topic=topic, folder=folder, globs=present))
    return CatalogPlan(views=tuple(views), skipped=tuple(skipped))


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``...: the first not in ``taken`` (case-insensitively,
    as DuckDB compares identifiers); it is added to ``taken``."""
    candidate, n = name, 1
    while candidate.casefold() in taken:
        n += 1
        candidate = f"{name}_{n}"
    taken.add(candidate.casefold())
    return candidate


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def view_sql(view: TopicView) -> str:
    """``CREATE OR REPLACE VIEW`` for one topic."""
    files = ", ".join(quote_literal(g) for g in view.globs)
    return (
        f"CREATE OR REPLACE VIEW {quote_identifier(view.name)} AS "
        f"SELECT * FROM read_parquet([{files}], union_by_name = true)"
    )


def create_views(conn: Any, plan: CatalogPlan) -> None:
    """Run ``view_sql`` for every view on a DuckDB connection."""
    for view in plan.views:
        conn.execute(view_sql(view))


def write_catalog(path: Path, plan: CatalogPlan) -> None:
    """Write a fresh DuckDB file at ``path`` with the plan's views (atomically replaced).

    Raises:
        duckdb.Error: DuckDB refused a view (e.g. a file that is not Parquet).
        OSError: the folder of ``path`` is not writable.
    """
    import duckdb

    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        conn = duckdb.connect(str(staged))
        try:
            create_views(conn, plan)
            conn.execute("CHECKPOINT")
        finally:
            conn.close()
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)
        Path(f"{staged}.wal").unlink(missing_ok=True)
