"""What each topic holds: its schema contract's versions and every job's output to it.

Sync core like ``queue``: each function takes the connection first and runs
inside the caller's transaction; the SQL is in ``schema/queries.sql``
(``topics`` section, tables from ``004_topic_contracts``).

Invariants:
- Only SUCCESS receipts are recorded, in the transaction that completes the
  job (``complete_with_outputs``): a job is COMPLETED with its outputs or not
  at all.
- A topic is identified by (name, sink): the sink is the Parquet folder of
  the artifact's file, or the ``sqlite://PATH/TABLE`` URI itself. The same
  name at two sinks is two topics with contracts of their own.
- A quarantine artifact (topic ``<topic>_quarantine``) is recorded as a topic of
  its own, and its rows are the ``rows_quarantined`` of ``<topic>`` in that job.
- A contract version is recorded once, by the first receipt naming it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

import attrs

from casparian_trio.errors import StoreError
from casparian_trio.protocol.messages import Artifact
from casparian_trio.store import queue
from casparian_trio.store._sql import q
from casparian_trio.store.queue import iso_time

# The sinks' ``QUARANTINE_SUFFIX`` (sinks/_schema.py), repeated so the store and
# the CLI need not import pyarrow; a unit test keeps the two equal.
QUARANTINE_SUFFIX = "_quarantine"
SQLITE_SCHEME = "sqlite://"


@attrs.frozen(kw_only=True)
class TopicOutput:
    """One topic of one SUCCESS receipt, ready to record.

    Attributes:
        contract_version: None when the sink reported no contract (a quarantine file).
        columns: the contract's columns as reported ({"name", "type"}).
    """

    topic: str
    uri: str
    sink_uri: str
    rows: int
    rows_quarantined: int = 0
    contract_version: int | None = None
    columns: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_artifact(cls, artifact: Artifact, *, rows_quarantined: int = 0) -> TopicOutput:
        contract = artifact.contract or {}
        version = contract.get("version")
        return cls(
            topic=artifact.topic,
            uri=artifact.uri,
            sink_uri=sink_of(artifact.uri),
            rows=artifact.rows or 0,
            rows_quarantined=rows_quarantined,
            contract_version=None if version is None else int(version),
            columns=tuple(contract.get("columns") or ()),
        )


def sink_of(uri: str) -> str:
    """The sink an artifact went to: a file's folder, or the sqlite:// table URI."""
    if uri.startswith(SQLITE_SCHEME):
        return uri
    return str(PurePosixPath(uri).parent)


def outputs_of(artifacts: Iterable[Artifact]) -> list[TopicOutput]:
    """A receipt's artifacts as outputs; each topic's quarantine rows counted on it."""
    found = list(artifacts)
    # One receipt holds at most one artifact per topic, so the name is the key.
    quarantined = {
        a.topic.removesuffix(QUARANTINE_SUFFIX): a.rows or 0
        for a in found
        if a.topic.endswith(QUARANTINE_SUFFIX)
    }
    return [
        TopicOutput.from_artifact(a, rows_quarantined=quarantined.get(a.topic, 0)) for a in found
    ]


def record_outputs(
    conn: sqlite3.Connection,
    job_id: int,
    attempt: int,
    outputs: Sequence[TopicOutput],
    *,
    now: float,
) -> None:
    """Record one receipt's outputs and any contract version not seen before."""
    for out in outputs:
        conn.execute(
            q("upsert_job_topic_output"),
            {
                "job_id": job_id,
                "attempt": attempt,
                "topic_name": out.topic,
                "uri": out.uri,
                "sink_uri": out.sink_uri,
                "rows": out.rows,
                "rows_quarantined": out.rows_quarantined,
                "contract_version": out.contract_version,
            },
        )
        if out.contract_version is not None:
            conn.execute(
                q("insert_topic_contract"),
                {
                    "topic_name": out.topic,
                    "sink_uri": out.sink_uri,
                    "version": out.contract_version,
                    "columns_json": json.dumps([dict(c) for c in out.columns]),
                    "job_id": job_id,
                    "recorded_at": iso_time(now),
                },
            )


def complete_with_outputs(
    conn: sqlite3.Connection,
    job_id: int,
    attempt: int,
    *,
    result_summary: dict[str, Any],
    now: float,
    outputs: Sequence[TopicOutput] = (),
) -> bool:
    """``queue.complete`` and, when it took the receipt, its outputs: one transaction."""
    done = queue.complete(conn, job_id, attempt, result_summary=result_summary, now=now)
    if done:
        record_outputs(conn, job_id, attempt, outputs, now=now)
    return done


# --- reads ---------------------------------------------------------------------------


def list_topics(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every topic: name, sink, contract version, rows, files, quarantined rows, jobs."""
    return [dict(r) for r in conn.execute(q("topic_summaries"))]


def topic_detail(conn: sqlite3.Connection, name: str) -> dict[str, Any]:
    """One topic: its sinks' summaries and each contract version with its columns.

    Raises:
        StoreError: no output and no configuration names ``name``.
    """
    sinks = [t for t in list_topics(conn) if t["topic_name"] == name]
    if not sinks:
        raise StoreError(f"no topic {name!r}; list topics with `casparian-trio topics`")
    versions = []
    for row in conn.execute(q("topic_contracts"), {"topic_name": name}):
        version = dict(row)
        version["columns"] = json.loads(version.pop("columns_json"))
        versions.append(version)
    return {"topic_name": name, "sinks": sinks, "versions": versions}


def job_outputs(conn: sqlite3.Connection, job_id: int) -> list[dict[str, Any]]:
    """The topics of a job's latest recorded attempt: rows written and quarantined."""
    return [dict(r) for r in conn.execute(q("job_topic_outputs"), {"job_id": job_id})]


def rows_quarantined_total(conn: sqlite3.Connection) -> int:
    """Rows quarantined across every job's latest recorded attempt."""
    return int(conn.execute(q("rows_quarantined_total")).fetchone()[0])
