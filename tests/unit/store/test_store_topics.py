"""store.topics: receipts' outputs and contracts recorded with the completion, and read back."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from casparian_trio.errors import StoreError
from casparian_trio.protocol.messages import Artifact
from casparian_trio.sinks._schema import QUARANTINE_SUFFIX
from casparian_trio.store import Database, JobStatus, Store, queue, reports, topics

NOW = 1_700_000_000.0
V1 = {"version": 1, "columns": [{"name": "id", "type": "int64"}, {"name": "val", "type": "int64"}]}
V2 = {"version": 2, "columns": [*V1["columns"], {"name": "note", "type": "string"}]}


def artifacts(job_id: int, *, rows: int, bad: int = 0, contract: Any = V1) -> tuple[Artifact, ...]:
    main = Artifact(
        topic="sales", uri=f"/out/sales/sales.job-{job_id}.parquet", rows=rows, contract=contract
    )
    if not bad:
        return (main,)
    quarantine = Artifact(
        topic=f"sales{QUARANTINE_SUFFIX}",
        uri=f"/out/sales_quarantine/sales_quarantine.job-{job_id}.parquet",
        rows=bad,
    )
    return main, quarantine


def run_job(db: Database, fv: int, arts: tuple[Artifact, ...], *, now: float = NOW) -> int:
    """Enqueue, claim and complete one job with ``arts``; its id."""
    job_id, _ = db.run_sync(partial(queue.enqueue, file_version_id=fv, plugin_name="p", now=now))
    job = db.run_sync(partial(queue.claim, capabilities=["*"], worker_id="w", now=now))
    assert job is not None
    assert job.id == job_id
    done = db.run_sync(
        partial(
            topics.complete_with_outputs,
            job_id=job.id,
            attempt=job.attempt,
            result_summary={"rows": 1},
            now=now,
            outputs=topics.outputs_of(arts),
        )
    )
    assert done
    return job_id


def test_the_store_repeats_the_sinks_quarantine_suffix() -> None:
    assert topics.QUARANTINE_SUFFIX == QUARANTINE_SUFFIX


@pytest.mark.parametrize(
    ("uri", "sink"),
    [
        ("/out/sales/sales.job-3.parquet", "/out/sales"),
        ("sqlite:///data/out.db/sales", "sqlite:///data/out.db/sales"),
    ],
)
def test_sink_of(uri: str, sink: str) -> None:
    assert topics.sink_of(uri) == sink


def test_outputs_count_each_topics_quarantine_on_it() -> None:
    main, quarantine = topics.outputs_of(artifacts(7, rows=10, bad=2))
    assert (main.topic, main.rows, main.rows_quarantined, main.contract_version) == (
        "sales",
        10,
        2,
        1,
    )
    assert (quarantine.topic, quarantine.rows_quarantined, quarantine.contract_version) == (
        "sales_quarantine",
        0,
        None,
    )
    assert main.columns[1] == {"name": "val", "type": "int64"}


def test_topics_total_rows_files_and_quarantine(
    db: Database, file_versions: Callable[..., list[int]]
) -> None:
    fv1, fv2 = file_versions(db, 2)
    run_job(db, fv1, artifacts(1, rows=3))
    run_job(db, fv2, artifacts(2, rows=1, bad=1))
    listed = {t["topic_name"]: t for t in db.run_sync(topics.list_topics)}
    assert listed["sales"] == {
        "topic_name": "sales",
        "sink_uri": "/out/sales",
        "contract_version": 1,
        "rows": 4,
        "files": 2,
        "rows_quarantined": 1,
        "jobs": 2,
        "last_job_id": 2,
    }
    assert listed["sales_quarantine"]["rows"] == 1
    assert listed["sales_quarantine"]["contract_version"] is None
    assert db.run_sync(topics.rows_quarantined_total) == 1
    assert db.run_sync(partial(reports.status_snapshot, since=0)).rows_quarantined == 1


def test_a_version_is_recorded_once_by_its_first_job(
    db: Database, file_versions: Callable[..., list[int]]
) -> None:
    fv1, fv2, fv3 = file_versions(db, 3)
    run_job(db, fv1, artifacts(1, rows=3), now=NOW)
    run_job(db, fv2, artifacts(2, rows=3), now=NOW + 10)
    run_job(db, fv3, artifacts(3, rows=3, contract=V2), now=NOW + 20)
    detail = db.run_sync(partial(topics.topic_detail, name="sales"))
    versions = [(v["version"], v["first_job_id"], v["recorded_at"]) for v in detail["versions"]]
    assert versions == [(1, 1, "2023-11-14 22:13:20"), (2, 3, "2023-11-14 22:13:40")]
    assert detail["versions"][1]["columns"][-1] == {"name": "note", "type": "string"}
    assert detail["sinks"][0]["contract_version"] == 2


def test_job_outputs_are_its_latest_attempts(
    db: Database, file_versions: Callable[..., list[int]]
) -> None:
    (fv,) = file_versions(db, 1)
    job_id, _ = db.run_sync(partial(queue.enqueue, file_version_id=fv, plugin_name="p", now=NOW))
    assert db.run_sync(partial(queue.claim, capabilities=["*"], worker_id="w", now=NOW))
    db.run_sync(partial(queue.request_cancel, job_id=job_id, now=NOW))
    db.run_sync(  # cancelled while running: CANCELLED, but its output was written
        partial(
            topics.complete_with_outputs,
            job_id=job_id,
            attempt=1,
            result_summary={},
            now=NOW,
            outputs=topics.outputs_of(artifacts(1, rows=5, bad=1)),
        )
    )
    assert db.run_sync(partial(topics.job_outputs, job_id=job_id))[0]["rows"] == 5
    db.run_sync(partial(queue.retry, job_id=job_id, now=NOW + 1))
    job = db.run_sync(partial(queue.claim, capabilities=["*"], worker_id="w", now=NOW + 2))
    assert job is not None
    assert job.attempt == 2
    db.run_sync(
        partial(
            topics.complete_with_outputs,
            job_id=job_id,
            attempt=2,
            result_summary={},
            now=NOW + 3,
            outputs=topics.outputs_of(artifacts(1, rows=6)),
        )
    )
    outputs = db.run_sync(partial(topics.job_outputs, job_id=job_id))
    assert [(o["topic_name"], o["rows"], o["rows_quarantined"], o["attempt"]) for o in outputs] == [
        ("sales", 6, 0, 2)
    ]
    (sales,) = [t for t in db.run_sync(topics.list_topics) if t["topic_name"] == "sales"]
    assert (sales["rows"], sales["files"], sales["rows_quarantined"]) == (6, 1, 0)


def test_a_stale_receipt_records_nothing(
    db: Database, file_versions: Callable[..., list[int]]
) -> None:
    (fv,) = file_versions(db, 1)
    job_id = run_job(db, fv, artifacts(1, rows=5))
    stale = db.run_sync(
        partial(
            topics.complete_with_outputs,
            job_id=job_id,
            attempt=1,
            result_summary={},
            now=NOW,
            outputs=topics.outputs_of(artifacts(1, rows=99)),
        )
    )
    assert not stale
    assert db.run_sync(partial(topics.job_outputs, job_id=job_id))[0]["rows"] == 5


def test_configured_topics_without_output_are_listed(db: Database) -> None:
    def configure(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO cf_topic_config (plugin_name, topic_name, uri) VALUES ('p', 'empty', 'x')"
        )

    db.run_sync(configure)
    (row,) = db.run_sync(topics.list_topics)
    assert (row["topic_name"], row["sink_uri"], row["rows"], row["contract_version"]) == (
        "empty",
        "x",
        0,
        None,
    )


def test_an_unknown_topic_names_the_fix(db: Database) -> None:
    with pytest.raises(StoreError, match=r"no topic 'nope'.*casparian-trio topics"):
        db.run_sync(partial(topics.topic_detail, name="nope"))


async def test_store_complete_records_outputs_in_its_transaction(
    store: Store, db: Database, file_versions: Callable[..., list[int]]
) -> None:
    (fv,) = file_versions(db, 1)
    job_id, _ = await store.enqueue(fv, "p", now=NOW)
    job = await store.claim(capabilities=["*"], worker_id="w", now=NOW)
    assert job is not None
    outputs = topics.outputs_of(artifacts(job_id, rows=2, bad=1))
    assert await store.complete(job_id, 1, result_summary={}, now=NOW, outputs=outputs)
    assert (await store.get_job(job_id)).status == JobStatus.COMPLETED  # type: ignore[union-attr]
    assert db.run_sync(topics.rows_quarantined_total) == 1
