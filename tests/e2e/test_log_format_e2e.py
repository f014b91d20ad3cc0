"""``--log-format json``: every line a JSON object, job lifecycle lines carry ``event``."""

from __future__ import annotations

import datetime
import json
import sys

import pytest
from e2e_procs import SLOW_PLUGIN, Cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

HANG_GUARD_S = 120


def _records(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_sentinel_and_worker_write_json_lines_with_events(cluster: Cluster) -> None:
    [job_id] = cluster.seed_jobs("slow", SLOW_PLUGIN, {"in.txt": "rows=3\n"})
    sentinel = cluster.start_sentinel("--log-format", "json")
    worker = cluster.start_worker("w1", "--log-format", "json")
    cluster.wait_for_status(job_id, "COMPLETED", timeout=HANG_GUARD_S)
    worker.wait_for_log(r"job.finished")
    worker.stop()
    sentinel.stop()
    for proc in (sentinel, worker):
        records = _records(proc.log())  # json.loads accepts every line
        assert records, proc.name
        for record in records:
            assert {"time", "level", "logger", "message"} <= record.keys(), record
            moment = datetime.datetime.fromisoformat(str(record["time"]))
            assert moment.utcoffset() is not None  # ISO 8601 with its zone
    sentinel_events = {r.get("event") for r in _records(sentinel.log())}
    worker_events = {r.get("event") for r in _records(worker.log())}
    assert any(str(e).startswith("job.") for e in sentinel_events), sentinel_events
    assert {"job.started", "job.finished"} <= worker_events, worker_events
    [started] = [r for r in _records(worker.log()) if r.get("event") == "job.started"]
    assert started["job_id"] == job_id
