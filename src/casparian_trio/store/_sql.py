"""Load SQL text from ``schema/``: named query blocks and statement splitting.

``schema/queries.sql`` holds blocks introduced by ``-- name: <name>`` lines
(procrastinate style); each block is one statement with named parameters.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import sqlite3
from collections.abc import Iterator

QUERIES_FILE = "queries.sql"
_NAME_LINE = re.compile(r"^--\s*name:\s*(\w+)\s*$")


def parse_queries(text: str) -> dict[str, str]:
    """Map each ``-- name: x`` block of ``text`` to its SQL (comments kept, trimmed)."""
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        match = _NAME_LINE.match(line.strip())
        if match:
            if name is not None:
                queries[name] = "\n".join(lines).strip()
            name, lines = match.group(1), []
            if name in queries:
                raise ValueError(f"query {name!r} defined twice")
        elif name is not None:
            lines.append(line)
    if name is not None:
        queries[name] = "\n".join(lines).strip()
    return queries


@functools.cache
def queries() -> dict[str, str]:
    text = importlib.resources.files("casparian_trio.schema").joinpath(QUERIES_FILE)
    return parse_queries(text.read_text(encoding="utf-8"))


def q(name: str) -> str:
    """The SQL of the named query (KeyError names a typo at first use)."""
    return queries()[name]


def split_statements(script: str) -> Iterator[str]:
    """Yield complete statements of ``script`` (triggers included), skipping pure comments.

    ``executescript`` cannot be used inside our own transaction: it COMMITs first.
    """
    buffer: list[str] = []
    for line in script.splitlines(keepends=True):
        buffer.append(line)
        text = "".join(buffer)
        if sqlite3.complete_statement(text):
            if _has_code(text):
                yield text.strip()
            buffer = []
    if _has_code("".join(buffer)):
        raise ValueError(f"incomplete SQL statement at end of script: {''.join(buffer)[:200]!r}")


def _has_code(text: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in text.splitlines())
