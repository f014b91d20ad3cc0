"""The Sentinel's own heartbeat in the database (cf_sentinel), for operators.

``status`` and ``workers`` run in other processes: this row is how they tell a
running Sentinel from a stopped one, instead of showing its last known workers
as alive. ``announce`` writes it when the Sentinel starts, ``serve`` (the
``sentinel.presence`` task) refreshes it every heartbeat interval, ``withdraw``
marks it stopped on a clean exit. A Sentinel killed outright leaves the row to
age: past the liveness timeout recorded in it, it reads as not running
(``SentinelRecord.is_running``).

Best effort by design: a failed write is logged and retried at the next beat,
never a reason to stop dispatching.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import NoReturn

import attrs
import trio

from casparian_trio.errors import StoreError
from casparian_trio.sentinel._context import SentinelContext
from casparian_trio.store import SentinelRecord

logger = logging.getLogger(__name__)


@attrs.define(eq=False, kw_only=True)
class Presence:
    ctx: SentinelContext
    endpoint: str
    record: SentinelRecord | None = None
    _displaced: bool = False  # another Sentinel took the row over (told once)

    async def announce(self) -> None:
        """Record this Sentinel as started (and seen) now."""
        now = self.ctx.wall()
        self.record = SentinelRecord(
            pid=os.getpid(),
            host=socket.gethostname(),
            bind=self.endpoint,
            started_at=now,
            last_seen_at=now,
            heartbeat_interval_s=self.ctx.config.heartbeat_interval_s,
            liveness_s=self.ctx.config.liveness_s,
        )
        await self.ctx.store.record_sentinel_start(self.record)

    async def serve(self) -> NoReturn:
        """Refresh last_seen_at every heartbeat interval, until cancelled."""
        while True:
            await trio.sleep(self.ctx.config.heartbeat_interval_s)
            await self._beat()

    async def withdraw(self) -> None:
        """Record a clean stop (callers shield and bound it)."""
        if self.record is None or self._displaced:
            return
        try:
            await self.ctx.store.record_sentinel_stop(self.record, now=self.ctx.wall())
        except StoreError as exc:
            logger.warning("could not record the sentinel's stop: %s", exc)

    async def _beat(self) -> None:
        assert self.record is not None, "announce() first"
        try:
            ours = await self.ctx.store.record_sentinel_beat(self.record, now=self.ctx.wall())
        except StoreError as exc:
            logger.warning(
                "could not record the sentinel's heartbeat: %s", exc, extra={"event": "store.error"}
            )
            return
        if not ours and not self._displaced:
            self._displaced = True
            logger.warning(
                "another sentinel started on this database; `status` now shows that one, not us",
                extra={"event": "sentinel.displaced"},
            )
