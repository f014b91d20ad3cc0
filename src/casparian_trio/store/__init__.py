"""SQLite store: connection driven from Trio, migrations, job queue, catalog.

The only package that imports sqlite3. ``Store`` is the async facade; the sync
cores (``queue``, ``catalog``, ``workers``, ``sentinels``) take a connection and
run inside one ``Database.run`` transaction each.
"""

from __future__ import annotations

from casparian_trio.store._db import Database, open_database
from casparian_trio.store._migrate import migrate
from casparian_trio.store.claims import Claimed, ClaimRequest
from casparian_trio.store.receipts import ReceiptWrite, Recorded, Write
from casparian_trio.store.rows import (
    DispatchPlan,
    EnvSpec,
    JobRow,
    JobStatus,
    Outcome,
    PluginRelease,
    SentinelRecord,
    TopicSink,
    backoff_delay,
)
from casparian_trio.store.service import Store
from casparian_trio.store.topics import TopicOutput

__all__ = [
    "ClaimRequest",
    "Claimed",
    "Database",
    "DispatchPlan",
    "EnvSpec",
    "JobRow",
    "JobStatus",
    "Outcome",
    "PluginRelease",
    "ReceiptWrite",
    "Recorded",
    "SentinelRecord",
    "Store",
    "TopicOutput",
    "TopicSink",
    "Write",
    "backoff_delay",
    "migrate",
    "open_database",
]
