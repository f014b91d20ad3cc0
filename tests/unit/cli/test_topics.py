"""``topics``, ``topic NAME``, and the topic parts of ``job ID`` and ``status``."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from cli_harness import Cli

from casparian_trio.cli import _render
from casparian_trio.protocol.messages import Artifact
from casparian_trio.store import Database, queue, topics

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z")
V1 = [{"name": "id", "type": "int64"}, {"name": "val", "type": "int64"}]
V2 = [*V1, {"name": "note", "type": "string"}]


@pytest.fixture
def two_jobs(cli: Cli, write_plugin: Callable[..., Path], data_dir: Path) -> None:
    cli("publish", str(write_plugin()))
    cli("source", "add", str(data_dir))
    assert "queued 2 jobs" in cli("scan").out


def finish(db: Database, *, rows: int, bad: int = 0, columns: Any = V1, version: int = 1) -> int:
    """Claim the next job and complete it with a 'sales' artifact (and its quarantine)."""
    job = db.run_sync(partial(queue.claim, capabilities=["*"], worker_id="w1", now=time.time()))
    assert job is not None
    arts = [
        Artifact(
            topic="sales",
            uri=f"/out/sales/sales.job-{job.id}.parquet",
            rows=rows,
            contract={"version": version, "columns": columns},
        )
    ]
    if bad:
        uri = f"/out/sales_quarantine/sales_quarantine.job-{job.id}.parquet"
        arts.append(Artifact(topic="sales_quarantine", uri=uri, rows=bad))
    db.run_sync(
        partial(
            topics.complete_with_outputs,
            job_id=job.id,
            attempt=job.attempt,
            result_summary={"rows": rows, "metrics": {"rows": rows, "rows_quarantined": bad}},
            now=time.time(),
            outputs=topics.outputs_of(arts),
        )
    )
    return job.id


def test_topics_lists_every_topic(cli: Cli, two_jobs: None, ops_db: Database) -> None:
    finish(ops_db, rows=3)
    finish(ops_db, rows=1, bad=1)
    doc = {t["topic"]: t for t in cli("topics", "--json").json()}
    assert set(doc) == {"sales", "sales_quarantine"}
    sales = doc["sales"]
    assert (sales["sink_uri"], sales["contract_version"]) == ("/out/sales", 1)
    assert (sales["rows"], sales["files"], sales["rows_quarantined"]) == (4, 2, 1)
    assert doc["sales_quarantine"]["contract_version"] is None
    out = cli("topics").out.splitlines()
    assert out[0].split() == ["topic", "sink", "contract", "rows", "files", "quarantined"]
    assert out[1].split() == ["sales", "/out/sales", "v1", "4", "2", "1"]
    assert out[2].split() == ["sales_quarantine", "/out/sales_quarantine", "-", "1", "1", "0"]
    assert all(len(line) <= _render.TABLE_WIDTH for line in out)


def test_topics_before_any_output(cli: Cli) -> None:
    assert cli("topics").out.startswith("no topics yet")
    assert cli("topics", "--json").json() == []


def test_topic_shows_the_contract_and_its_history(
    cli: Cli, two_jobs: None, ops_db: Database
) -> None:
    first = finish(ops_db, rows=3)
    second = finish(ops_db, rows=2, columns=V2, version=2)
    doc = cli("topic", "sales", "--json").json()
    (sink,) = doc["sinks"]
    assert doc["topic"] == "sales"
    assert sink["contract"]["version"] == 2
    assert sink["contract"]["columns"] == V2
    assert [(v["version"], v["first_job_id"]) for v in sink["history"]] == [(1, first), (2, second)]
    assert all(ISO_UTC.fullmatch(v["recorded_at"]) for v in sink["history"])
    text = cli("topic", "sales").out
    assert "contract v2:" in text
    assert re.search(r"note\s+string", text)
    assert re.search(rf"v2\s+{second}\s+\S+Z\s+\+note: string", text)
    assert "first version" in text


def test_topic_unknown_is_one_line(cli: Cli) -> None:
    result = cli("topic", "nope")
    assert result.rc == 1
    assert result.err.strip() == "error: no topic 'nope'; list topics with `casparian-trio topics`"


def test_job_shows_rows_written_and_quarantined_per_topic(
    cli: Cli, two_jobs: None, ops_db: Database
) -> None:
    job_id = finish(ops_db, rows=9, bad=2)
    doc = cli("job", str(job_id), "--json").json()
    assert [(t["topic"], t["rows"], t["rows_quarantined"]) for t in doc["topics"]] == [
        ("sales", 9, 2),
        ("sales_quarantine", 2, 0),
    ]
    text = cli("job", str(job_id)).out
    assert "  topics:" in text
    assert re.search(r"sales\s+9\s+2\s+v1\s+/out/sales/sales\.job", text)


def test_status_totals_quarantined_rows(cli: Cli, two_jobs: None, ops_db: Database) -> None:
    assert "quarantine" not in cli("status").out
    assert cli("status", "--json").json()["rows_quarantined"] == 0
    finish(ops_db, rows=9, bad=2)
    finish(ops_db, rows=9, bad=1)
    assert cli("status", "--json").json()["rows_quarantined"] == 3
    assert "quarantine 3 rows quarantined (see `topics`)" in cli("status").out
