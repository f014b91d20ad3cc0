"""``Store``: the async facade the Sentinel and CLI use.

Every method is exactly one ``Database.run`` of one sync function from
``queue``, ``catalog``, ``workers`` or ``sentinels`` — one transaction,
all-or-nothing, never torn by cancellation (see ``_db``). Reads use ``BEGIN
DEFERRED``.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

import attrs

from casparian_trio.store import catalog, claims, queue, receipts, scans, sentinels, topics, workers
from casparian_trio.store._db import Database
from casparian_trio.store.claims import Claimed, ClaimRequest
from casparian_trio.store.receipts import ReceiptWrite, Recorded
from casparian_trio.store.rows import (
    DispatchPlan,
    EnvSpec,
    JobRow,
    PluginRelease,
    SentinelRecord,
)
from casparian_trio.store.topics import TopicOutput

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _bind(
    fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Callable[[sqlite3.Connection], T]:
    """``conn -> fn(conn, *args, **kwargs)``: the sync cores take the connection first."""

    def call(conn: sqlite3.Connection) -> T:
        return fn(conn, *args, **kwargs)

    return call


@attrs.define(eq=False)
class Store:
    """Queue, catalog and worker table over one ``Database``.

    Attributes:
        db: the database (thread or inline mode).
        backoff_base_s: seconds of backoff after the first counted failure.
        backoff_cap_s: the longest backoff.
    """

    db: Database
    backoff_base_s: float = queue.DEFAULT_BACKOFF_BASE_S
    backoff_cap_s: float = queue.DEFAULT_BACKOFF_CAP_S

    async def _write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self.db.run(_bind(fn, args, kwargs))

    async def _read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self.db.run(_bind(fn, args, kwargs), readonly=True)

    # The Sentinel's per-job and per-tick transactions: a few indexed statements,
    # run on the Trio thread when that needs no wait (``Database.run(quick=True)``).
    async def _quick_write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self.db.run(_bind(fn, args, kwargs), quick=True)

    async def _quick_read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self.db.run(_bind(fn, args, kwargs), readonly=True, quick=True)

    # --- queue -------------------------------------------------------------------

    async def enqueue(
        self,
        file_version_id: int,
        plugin_name: str,
        *,
        priority: int = 0,
        now: float,
        config_overrides: dict[str, Any] | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
    ) -> tuple[int, bool]:
        """Queue a job; (job_id, created). Idempotent per (file_version_id, plugin_name)."""
        return await self._write(
            queue.enqueue,
            file_version_id,
            plugin_name,
            priority=priority,
            now=now,
            config_overrides=config_overrides,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
        )

    async def claim(
        self,
        *,
        capabilities: Collection[str],
        worker_id: str,
        now: float,
        worker_host: str | None = None,
        worker_pid: int | None = None,
    ) -> JobRow | None:
        """Atomically take the next job runnable with ``capabilities`` ('*': any)."""
        return await self._quick_write(
            queue.claim,
            capabilities=tuple(capabilities),
            worker_id=worker_id,
            now=now,
            worker_host=worker_host,
            worker_pid=worker_pid,
        )

    async def claim_round(
        self, requests: Sequence[ClaimRequest], *, now: float
    ) -> list[Claimed | None]:
        """One claim per request (a free slot, in filling order), each resolved: one transaction.

        Returns one entry per request (None: nothing claimable for it); see ``claims``.
        """
        if not requests:
            return []
        return await self._quick_write(claims.claim_round, tuple(requests), now=now)

    async def complete(
        self,
        job_id: int,
        attempt: int,
        *,
        result_summary: dict[str, Any],
        now: float,
        outputs: Sequence[TopicOutput] = (),
    ) -> bool:
        """COMPLETED (CANCELLED if a cancel was requested); False if the receipt is stale.

        ``outputs`` (the receipt's topics) are recorded in the same transaction.
        """
        return await self._quick_write(
            topics.complete_with_outputs,
            job_id,
            attempt,
            result_summary=result_summary,
            now=now,
            outputs=outputs,
        )

    async def record_receipts(self, writes: Sequence[ReceiptWrite], *, now: float) -> Recorded:
        """Several receipts' writes in one transaction, each as its own call would do.

        See ``receipts``: a receipt that raises keeps the ones before it and
        stops the batch (``Recorded.error``).
        """
        return await self._quick_write(
            receipts.record_receipts,
            tuple(writes),
            now=now,
            backoff_base_s=self.backoff_base_s,
            backoff_cap_s=self.backoff_cap_s,
        )

    async def fail(
        self,
        job_id: int,
        attempt: int,
        *,
        error: str,
        now: float,
        outcome: str = "FAILED",
        traceback: str | None = None,
        final: bool = False,
    ) -> str | None:
        """A counted failure: QUEUED with backoff, FAILED, or CANCELLED; None if stale."""
        return await self._quick_write(
            queue.fail,
            job_id,
            attempt,
            error=error,
            now=now,
            outcome=outcome,
            traceback=traceback,
            backoff_base_s=self.backoff_base_s,
            backoff_cap_s=self.backoff_cap_s,
            final=final,
        )

    async def end_unretried(
        self, job_id: int, attempt: int, *, status: str, reason: str, now: float
    ) -> str | None:
        """SUPERSEDED or SKIPPED: not counted, not retried; None if stale."""
        return await self._quick_write(
            queue.end_unretried, job_id, attempt, status=status, reason=reason, now=now
        )

    async def requeue(
        self, job_id: int, attempt: int, *, reason: str, now: float, counted: bool, outcome: str
    ) -> str | None:
        """Worker lost (counted) or handed back (not counted); None if stale."""
        return await self._quick_write(
            queue.requeue,
            job_id,
            attempt,
            reason=reason,
            now=now,
            counted=counted,
            outcome=outcome,
            backoff_base_s=self.backoff_base_s,
            backoff_cap_s=self.backoff_cap_s,
        )

    async def mark_cancelled(self, job_id: int, attempt: int | None, *, now: float) -> bool:
        return await self._write(queue.mark_cancelled, job_id, attempt, now=now)

    async def request_cancel(self, job_id: int, *, now: float) -> str:
        return await self._write(queue.request_cancel, job_id, now=now)

    async def retry(self, job_id: int, *, now: float) -> str:
        return await self._write(queue.retry, job_id, now=now)

    async def running_jobs(self) -> list[JobRow]:
        return await self._read(queue.running_jobs)

    async def cancel_requested_jobs(self) -> list[JobRow]:
        return await self._quick_read(queue.cancel_requested_jobs)

    async def cancel_queued_requests(self, *, now: float) -> int:
        return await self._quick_write(queue.cancel_queued_requests, now=now)

    async def next_wakeup(self, *, now: float) -> float | None:
        return await self._quick_read(queue.next_wakeup, now=now)

    async def data_version(self) -> int:
        return await self._quick_read(queue.data_version)

    async def stats(self) -> dict[str, int]:
        return await self._read(queue.stats)

    async def get_job(self, job_id: int) -> JobRow | None:
        return await self._read(queue.get_job, job_id)

    async def list_jobs(
        self, *, status: str | None = None, plugin: str | None = None, limit: int = 50
    ) -> list[JobRow]:
        return await self._read(queue.list_jobs, status=status, plugin=plugin, limit=limit)

    async def attempts(self, job_id: int) -> list[dict[str, Any]]:
        return await self._read(queue.attempts, job_id)

    # --- workers -------------------------------------------------------------------

    async def upsert_worker(
        self,
        *,
        worker_id: str,
        host: str | None,
        pid: int | None,
        capabilities: Sequence[str],
        slots: int,
        status: str,
        now: float,
    ) -> None:
        await self._write(
            workers.upsert_worker,
            worker_id=worker_id,
            host=host,
            pid=pid,
            capabilities=tuple(capabilities),
            slots=slots,
            status=status,
            now=now,
        )

    async def set_worker_status(self, worker_id: str, status: str, *, now: float) -> None:
        await self._write(workers.set_worker_status, worker_id, status, now=now)

    async def touch_worker(self, worker_id: str, status: str, *, now: float) -> None:
        await self._quick_write(workers.touch_worker, worker_id, status, now=now)

    async def prune_workers(self, *, before: float) -> int:
        """Forget LOST/GONE/STOPPED workers last seen before ``before`` (wall seconds)."""
        return await self._write(workers.prune_workers, before=before)

    async def list_workers(self) -> list[dict[str, Any]]:
        return await self._read(workers.list_workers)

    # --- the Sentinel's own row ---------------------------------------------------------

    async def record_sentinel_start(self, record: SentinelRecord) -> None:
        await self._write(sentinels.record_start, record)

    async def record_sentinel_beat(self, record: SentinelRecord, *, now: float) -> bool:
        """False when another Sentinel has taken the row over since."""
        return await self._write(sentinels.record_beat, record, now=now)

    async def record_sentinel_stop(self, record: SentinelRecord, *, now: float) -> bool:
        return await self._write(sentinels.record_stop, record, now=now)

    async def sentinel(self) -> SentinelRecord | None:
        return await self._read(sentinels.current)

    # --- catalog -------------------------------------------------------------------

    async def resolve_dispatch(self, job: JobRow) -> DispatchPlan:
        """The Dispatch (and env) for a claimed job; CatalogError(job_id=) if unresolvable."""
        return await self._quick_read(catalog.resolve_dispatch, job)

    async def get_environment(self, env_hash: str) -> EnvSpec | None:
        return await self._read(catalog.get_environment, env_hash)

    async def record_environment(self, spec: EnvSpec, *, now: float) -> None:
        await self._write(catalog.record_environment, spec, now=now)

    async def publish_manifest(
        self,
        *,
        plugin_name: str,
        version: str,
        source_code: str,
        source_hash: str,
        env_hash: str | None,
        artifact_hash: str,
        manifest: dict[str, Any],
        now: float,
    ) -> tuple[int, bool]:
        return await self._write(
            catalog.publish_manifest,
            plugin_name=plugin_name,
            version=version,
            source_code=source_code,
            source_hash=source_hash,
            env_hash=env_hash,
            artifact_hash=artifact_hash,
            manifest=manifest,
            now=now,
        )

    async def record_deploy(self, release: PluginRelease, *, now: float) -> tuple[int, bool, int]:
        """Record a checked plugin release in one transaction, reprocessing its files if new.

        Returns:
            (manifest_id, created, requeued): created is False when this artifact was
            already ACTIVE; requeued counts the jobs queued again (``scans.record_release``).
        """
        return await self._write(scans.record_release, release, now=now)

    async def set_topic(
        self,
        plugin_name: str,
        topic_name: str,
        uri: str,
        *,
        mode: str = "append",
        schema_json: str | None = None,
    ) -> None:
        await self._write(
            catalog.set_topic, plugin_name, topic_name, uri, mode=mode, schema_json=schema_json
        )

    async def add_routing_rule(
        self, pattern: str, plugin_name: str, *, priority: int = 0, now: float | None = None
    ) -> tuple[int, bool]:
        now = time.time() if now is None else now
        return await self._write(
            catalog.add_routing_rule, pattern, plugin_name, priority=priority, now=now
        )

    async def routing_rules(self) -> list[dict[str, Any]]:
        return await self._read(catalog.routing_rules)

    async def add_source_root(self, path: str) -> tuple[int, bool]:
        return await self._write(catalog.add_source_root, path)

    async def source_roots(self) -> list[dict[str, Any]]:
        return await self._read(catalog.source_roots)

    async def record_file(
        self,
        *,
        source_root_id: int,
        rel_path: str,
        size: int,
        mtime: float | None,
        content_hash: str,
        now: float,
    ) -> tuple[int, bool]:
        return await self._write(
            catalog.record_file,
            source_root_id=source_root_id,
            rel_path=rel_path,
            size=size,
            mtime=mtime,
            content_hash=content_hash,
            now=now,
        )

    async def file_location_state(
        self, source_root_id: int
    ) -> dict[str, tuple[float | None, int | None]]:
        return await self._read(catalog.file_location_state, source_root_id)
