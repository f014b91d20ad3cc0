"""``catalog`` and ``query``: the topics as DuckDB views, and SQL over them.

``catalog [--out PATH]`` writes a DuckDB database (default: beside the SQLite
file, ``<db>.duckdb``) with one view per topic (``duck_catalog``); any DuckDB
client opens it. ``query "SQL"`` runs one statement over the same views, built
fresh from the store in memory (so it never contends for the catalog file),
or over an existing catalog with ``--catalog PATH``, and prints an aligned
table, ``--json`` (a list of objects) or ``--csv``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from casparian_trio import duck_catalog
from casparian_trio.cli import _render
from casparian_trio.cli._common import command, json_flag
from casparian_trio.cli._db import db_path, session
from casparian_trio.errors import ConfigError
from casparian_trio.store import topics

# Rows a table prints before it says how many more there are.
TABLE_ROWS = 1000


def add_commands(sub: Any) -> None:
    """``catalog``, ``query``."""
    p = command(sub, "catalog", cmd_catalog, "write a DuckDB database with one view per topic")
    p.add_argument(
        "--out", metavar="PATH", help="the DuckDB file (default: beside the database, .duckdb)"
    )
    json_flag(p)
    p = command(sub, "query", cmd_query, "run SQL over the topics (DuckDB) and print the result")
    p.add_argument("sql", metavar="SQL", help='one statement, e.g. "SELECT count(*) FROM output"')
    p.add_argument(
        "--catalog",
        metavar="PATH",
        help="query this DuckDB catalog file (default: views built fresh from the database)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON list of row objects")
    out.add_argument("--csv", action="store_true", help="print CSV with a header row")


def _plan(args: argparse.Namespace) -> duck_catalog.CatalogPlan:
    with session(args) as db:
        listed = db.run_sync(topics.list_topics, readonly=True)
    return duck_catalog.plan_views(listed)


def cmd_catalog(args: argparse.Namespace) -> int:
    import duckdb

    plan = _plan(args)
    out = Path(args.out).expanduser() if args.out else db_path(args).with_suffix(".duckdb")
    if out.resolve() == db_path(args).resolve():
        raise ConfigError(f"catalog: {out} is the database itself; pick another file with --out")
    try:
        duck_catalog.write_catalog(out, plan)
    except duckdb.Error as exc:
        raise ConfigError(f"catalog: DuckDB refused a view: {_first_line(exc)}") from None
    except OSError as exc:
        raise ConfigError(f"catalog: cannot write {out}: {exc.strerror}; pick --out") from None
    if args.json:
        views = [{"view": v.name, "topic": v.topic, "folder": v.folder} for v in plan.views]
        print(_render.dumps({"catalog": str(out), "views": views, "skipped": list(plan.skipped)}))
        return 0
    names = ", ".join(v.name for v in plan.views) or "none"
    print(f"wrote {out}: {_render.plural(len(plan.views), 'view')} ({names})")
    for note in plan.skipped:
        print(f"  no view for {note}")
    print(f"query it: casparian-trio query {_example(plan)}")
    return 0


def _example(plan: duck_catalog.CatalogPlan) -> str:
    """A statement to try, quoted for a POSIX shell."""
    name = plan.views[0].name if plan.views else "TOPIC"
    if not name.isidentifier():
        name = duck_catalog.quote_identifier(name)
    return shlex.quote(f"SELECT count(*) FROM {name}")


def cmd_query(args: argparse.Namespace) -> int:
    import duckdb

    try:
        if args.catalog:
            path = Path(args.catalog).expanduser()
            if not path.is_file():
                raise ConfigError(f"--catalog {path}: no such file; write it with `catalog --out`")
            conn = duckdb.connect(str(path), read_only=True)
        else:
            conn = duckdb.connect()
            duck_catalog.create_views(conn, _plan(args))
        try:
            cursor = conn.execute(args.sql)
            columns = [d[0] for d in cursor.description or ()]
            rows = cursor.fetchall() if columns else []
        finally:
            conn.close()
    except duckdb.Error as exc:
        raise ConfigError(f"query failed: {_first_line(exc)}") from None
    sys.stdout.write(render(columns, rows, as_json=args.json, as_csv=args.csv))
    return 0


def render(columns: list[str], rows: list[tuple[Any, ...]], *, as_json: bool, as_csv: bool) -> str:
    """A query result as text: table (default), ``--json`` or ``--csv``; ends with a newline."""
    if as_json:
        return json_rows(columns, rows) + "\n"
    if as_csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
        return buffer.getvalue()
    if not columns:
        return "done\n"
    shown = rows[:TABLE_ROWS]
    cells = [[_cell(v) for v in row] for row in shown]
    table = _render.table([_render.Column(c, shrink="end", min_width=4) for c in columns], cells)
    more = len(rows) - len(shown)
    tail = f"({_render.plural(len(rows), 'row')}" + (
        f", first {len(shown)} shown)" if more else ")"
    )
    return f"{table}\n{tail}\n"


def json_rows(columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    """Rows as a JSON list of objects: the values as queried, keys in the SELECT's order.

    Not ``_render.dumps``: that sorts keys and rewrites ``*_at`` fields as times,
    which would alter the user's data. NaN and infinities (not JSON) become null;
    other non-JSON values (decimals, dates, blobs) their ``str``. Repeated
    column names get distinct keys (``unique_keys``).
    """
    keys = unique_keys(columns)
    objects = [
        {name: _json_value(value) for name, value in zip(keys, row, strict=True)} for row in rows
    ]
    return json.dumps(objects, indent=2, default=str, allow_nan=False)


def unique_keys(columns: list[str]) -> list[str]:
    """The column names as object keys, in order; a repeated name (``SELECT *`` over
    a join) becomes ``NAME_1``, ``NAME_2``... (the first not a column name nor taken).
    """
    keys: list[str] = []
    for name in columns:
        key, n = name, 0
        while key in keys or (n and key in columns):
            n += 1
            key = f"{name}_{n}"
        keys.append(key)
    return keys


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return value


def _cell(value: Any) -> str:
    return "NULL" if value is None else str(value)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
