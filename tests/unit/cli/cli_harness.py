"""Shared pieces of the operator-command tests (a module, so tests can import its types)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import attrs

from casparian_trio.store import Database, SentinelRecord, sentinels

PLUGIN = """
MANIFEST = {{"name": "{name}", "version": "{version}", "pattern": "{pattern}"}}


class Handler:
    def execute(self, file_path):
        yield from ()
"""


@attrs.frozen
class Result:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Cli = Callable[..., Result]


def sentinel_record(
    *,
    started_ago: float = 60.0,
    seen_ago: float = 1.0,
    stopped: bool = False,
    now: float | None = None,
) -> SentinelRecord:
    """A cf_sentinel row for a Sentinel started and last seen that long before ``now``."""
    now = time.time() if now is None else now
    return SentinelRecord(
        pid=4711,
        host="ctl-host",
        bind="tcp://127.0.0.1:5555",
        started_at=now - started_ago,
        last_seen_at=now - seen_ago,
        stopped_at=now - seen_ago if stopped else None,
        heartbeat_interval_s=2.0,
        liveness_s=6.0,
    )


def put_sentinel(db: Database, record: SentinelRecord) -> None:
    """Write ``record`` as the Sentinel's row, as the Sentinel itself would."""
    db.run_sync(partial(sentinels.record_start, record=record))
    db.run_sync(
        lambda conn: conn.execute(
            "UPDATE cf_sentinel SET last_seen_at = ?, stopped_at = ?",
            (record.last_seen_at, record.stopped_at),
        )
    )
