"""``topics`` and ``topic NAME``: what each topic holds and the schema contract it keeps.

Everything comes from the store (``store.topics``): what SUCCESS receipts
reported, recorded by the Sentinel with each job's completion. No sink is read,
so the commands work where the database is, whether or not the output is.

Documents (``--json``): ``topics`` is a list of ``{topic, sink_uri,
contract_version, rows, files, rows_quarantined, jobs, last_job_id}``; ``topic
NAME`` is ``{topic, sinks: [... each with contract {version, columns,
first_job_id, recorded_at} and history [versions, oldest first]]}``. A topic
configured by a published plugin but never written shows zero counts and no
contract (``contract_version`` null).
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

from casparian_trio.cli import _render
from casparian_trio.cli._common import command, json_flag
from casparian_trio.cli._db import session
from casparian_trio.store import topics


def add_commands(sub: Any) -> None:
    """``topics``, ``topic NAME``."""
    p = command(
        sub, "topics", cmd_topics, "list topics: sink, contract version, rows, files, quarantined"
    )
    json_flag(p)
    p = command(sub, "topic", cmd_topic, "one topic's schema contract and its version history")
    p.add_argument("name", metavar="NAME", help="the topic's name (see `topics`)")
    json_flag(p)


# --- documents (pure) ----------------------------------------------------------------


def summary_doc(row: dict[str, Any]) -> dict[str, Any]:
    """A store summary row as the command line names it (``topic``, counts as ints)."""
    doc = {key: value for key, value in row.items() if key != "topic_name"}
    return {"topic": row["topic_name"], **doc}


def topic_doc(detail: dict[str, Any]) -> dict[str, Any]:
    """``topic NAME --json``: every sink of the topic with its latest contract and history."""
    sinks = []
    for row in detail["sinks"]:
        history = [
            {key: value for key, value in v.items() if key not in ("topic_name", "sink_uri")}
            for v in detail["versions"]
            if v["sink_uri"] == row["sink_uri"]
        ]
        sinks.append(
            {**summary_doc(row), "contract": history[-1] if history else None, "history": history}
        )
    return {"topic": detail["topic_name"], "sinks": sinks}


# --- commands --------------------------------------------------------------------------


def cmd_topics(args: argparse.Namespace) -> int:
    with session(args) as db:
        rows = db.run_sync(topics.list_topics, readonly=True)
    docs = [summary_doc(r) for r in rows]
    if args.json:
        print(_render.dumps(docs))
        return 0
    if not docs:
        print("no topics yet: publish a plugin and let a job complete")
        return 0
    print(_render.topics_table(docs))
    return 0


def cmd_topic(args: argparse.Namespace) -> int:
    with session(args) as db:
        detail = db.run_sync(partial(topics.topic_detail, name=args.name), readonly=True)
    doc = topic_doc(detail)
    if args.json:
        print(_render.dumps(doc))
        return 0
    blocks = ["\n".join(_render.topic_lines(sink)) for sink in doc["sinks"]]
    print("\n\n".join(blocks))
    return 0
