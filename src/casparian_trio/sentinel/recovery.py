"""Recovery: what the Sentinel does when workers vanish, stall, restart or run stale work.

Covers the paths where a job leaves a worker without a receipt: a send the
ROUTER cannot route, a worker that says goodbye (a stopping HEARTBEAT: no
warning, nothing counted), a worker silent past the liveness timeout, a job the
watchdog gives up on, an env that cannot be built, jobs left RUNNING by a
previous Sentinel (adopted when their worker names them, else requeued), and
work a worker still runs that is no longer its own. Counted or not follows one
rule: an attempt the plugin may have caused counts; one it never reached does not.
"""

from __future__ import annotations

import logging

import attrs
import trio

from casparian_trio.protocol import ERR_UNKNOWN_WORKER, Abort, Conclude, Err, Heartbeat, JobRef
from casparian_trio.sentinel._context import SentinelContext
from casparian_trio.sentinel._outbox import Outgoing
from casparian_trio.sentinel.registry import HeldJob, WorkerState
from casparian_trio.store import JobRow

logger = logging.getLogger(__name__)


def orphan_worker_id(identity: bytes) -> str:
    """Our workers route by their worker id (WorkerConfig.identity)."""
    return identity.decode("utf-8", errors="replace")


@attrs.frozen(kw_only=True)
class Orphan:
    """A job left RUNNING by a previous Sentinel, waiting for its worker to name it."""

    job: JobRow
    adopt_until: float


@attrs.define(eq=False, kw_only=True)
class Recovery:
    ctx: SentinelContext
    orphans: dict[int, Orphan] = attrs.field(factory=dict)
    _told_unknown: dict[bytes, float] = attrs.field(factory=dict)

    def forget(self, identity: bytes) -> None:
        """It identified: no longer an unknown peer."""
        self._told_unknown.pop(identity, None)

    async def unroutable(self, item: Outgoing) -> None:
        """ROUTER_MANDATORY refused a send: the worker is gone, its jobs go back to the queue."""
        worker = self.ctx.registry.drop(item.identity)
        if worker is None:  # already gone (e.g. it said goodbye): nothing to recover
            logger.debug(
                "cannot reach %r for %s; it is not registered",
                item.identity,
                type(item.payload).__name__,
            )
            return
        logger.warning(
            "cannot reach %r for %s; dropping it", item.identity, type(item.payload).__name__
        )
        for held in list(worker.jobs.values()):
            if held.dispatched_at is None or held.job_id == item.job_id:  # never reached it
                await self.requeue(
                    held,
                    worker,
                    "the worker disconnected before the dispatch",
                    counted=False,
                    outcome="HANDED_BACK",
                )
            else:  # it was running there: as if its heartbeats had stopped
                await self.requeue(
                    held,
                    worker,
                    f"worker {worker.worker_id} disconnected",
                    counted=True,
                    outcome="WORKER_LOST",
                )
        await self.ctx.store.set_worker_status(worker.worker_id, "GONE", now=self.ctx.wall())
        self.ctx.waker.wake()

    async def worker_stopped(self, identity: bytes, worker: WorkerState | None) -> None:
        """Its goodbye: forget it now, record it STOPPED; what it still holds goes back uncounted.

        It sent its receipts before saying goodbye, so normally it holds nothing;
        a DISPATCH that crossed its goodbye was never run, so it is not counted.
        """
        worker_id = orphan_worker_id(identity) if worker is None else worker.worker_id
        self.forget(identity)
        if worker is not None and self.ctx.registry.get(identity) is worker:
            self.ctx.registry.drop(identity)
        # Acknowledge first: the worker keeps its socket open only until this arrives.
        self.ctx.outbox.put(Outgoing(identity, Heartbeat.answer(worker_id, stopping=True)))
        logger.info(
            "worker %s stopped (it said goodbye)",
            worker_id,
            extra={"event": "worker.stopped", "worker_id": worker_id},
        )
        if worker is not None:
            for held in list(worker.jobs.values()):
                await self.requeue(
                    held,
                    worker,
                    f"worker {worker_id} stopped without returning it",
                    counted=False,
                    outcome="HANDED_BACK",
                )
        await self.ctx.store.touch_worker(worker_id, "STOPPED", now=self.ctx.wall())
        self.ctx.waker.wake()

    async def worker_lost(self, worker: WorkerState, why: str) -> None:
        self.ctx.registry.drop(worker.identity)
        logger.warning(
            "worker %s lost: %s",
            worker.worker_id,
            why,
            extra={"event": "worker.lost", "worker_id": worker.worker_id},
        )
        for held in list(worker.jobs.values()):
            # A job never sent (its env was still being built) or still held ready
            # in a prefetch slot never ran: it costs no attempt.
            ran = held.dispatched_at is not None and not held.queued
            await self.requeue(
                held,
                worker,
                f"worker {worker.worker_id} lost: {why}",
                counted=ran,
                outcome="WORKER_LOST" if ran else "HANDED_BACK",
            )
        await self.ctx.store.set_worker_status(worker.worker_id, "LOST", now=self.ctx.wall())
        self.ctx.waker.wake()

    async def give_up(self, worker: WorkerState, held: HeldJob) -> None:
        """No receipt one grace after ABORT: fail the attempt and stop trusting the worker."""
        worker.release(held.job_id, trio.current_time())
        worker.given_up.add(held.job_id)
        worker.healthy = False
        error = f"timed out after {held.timeout_s:g} s; worker {worker.worker_id} did not confirm the abort"
        status = await self.ctx.store.fail(
            held.job_id, held.attempt, error=error, now=self.ctx.wall(), outcome="TIMED_OUT"
        )
        await self.ctx.store.set_worker_status(worker.worker_id, "UNHEALTHY", now=self.ctx.wall())
        logger.warning(
            "job %d: %s (%s); worker marked unhealthy",
            held.job_id,
            error,
            status,
            extra={"event": "job.given_up", "job_id": held.job_id},
        )
        self.ctx.waker.wake()

    async def env_failed(self, worker: WorkerState, env_hash: str, message: str) -> None:
        worker.envs_preparing.pop(env_hash, None)
        for held in [
            h for h in worker.jobs.values() if h.env_hash == env_hash and h.pending is not None
        ]:
            worker.release(held.job_id, trio.current_time())
            error = (
                f"environment {env_hash[:12]} could not be built on {worker.worker_id}: {message}"
            )
            status = await self.ctx.store.fail(
                held.job_id, held.attempt, error=error, now=self.ctx.wall(), outcome="FAILED"
            )
            logger.warning(
                "job %d: %s (%s)",
                held.job_id,
                error,
                status,
                extra={"event": "env.failed", "job_id": held.job_id},
            )
        self.ctx.waker.wake()

    async def requeue(
        self, held: HeldJob, worker: WorkerState, reason: str, *, counted: bool, outcome: str
    ) -> None:
        status = await self.ctx.store.requeue(
            held.job_id,
            held.attempt,
            reason=reason,
            now=self.ctx.wall(),
            counted=counted,
            outcome=outcome,
        )
        logger.info(
            "job %d (attempt %d) %s: %s",
            held.job_id,
            held.attempt,
            status,
            reason,
            extra={"event": "job.requeued", "job_id": held.job_id},
        )

    async def adopt_previous_running(self) -> None:
        """On start: jobs left RUNNING wait one liveness period for their worker to name them."""
        until = trio.current_time() + self.ctx.config.liveness_s
        for job in await self.ctx.store.running_jobs():
            self.orphans[job.id] = Orphan(job=job, adopt_until=until)
        if self.orphans:
            logger.info(
                "%d job(s) left RUNNING by a previous Sentinel await re-adoption", len(self.orphans)
            )

    async def expire_orphans(self, now: float) -> None:
        for job_id, orphan in list(self.orphans.items()):
            if now >= orphan.adopt_until:
                del self.orphans[job_id]
                status = await self.ctx.store.requeue(
                    job_id,
                    orphan.job.attempt,
                    reason="no worker re-adopted it after a Sentinel restart",
                    now=self.ctx.wall(),
                    counted=True,
                    outcome="WORKER_LOST",
                )
                logger.info(
                    "job %d was not re-adopted: %s",
                    job_id,
                    status,
                    extra={"event": "job.requeued", "job_id": job_id},
                )
                self.ctx.waker.wake()

    async def cancel_unsent(self, worker: WorkerState, held: HeldJob) -> None:
        """Cancel a job still waiting for its env on ``worker``: nothing to abort there."""
        worker.release(held.job_id, trio.current_time())
        if await self.ctx.store.mark_cancelled(held.job_id, held.attempt, now=self.ctx.wall()):
            logger.info(
                "job %d cancelled before it was sent",
                held.job_id,
                extra={"event": "job.cancelled", "job_id": held.job_id},
            )
        self.ctx.waker.wake()

    async def hand_back_unsent(self) -> None:
        """At shutdown: jobs claimed but never sent return to the queue, uncounted."""
        for worker in list(self.ctx.registry.workers.values()):
            for held in [h for h in worker.jobs.values() if h.dispatched_at is None]:
                worker.release(held.job_id, trio.current_time())
                await self.requeue(
                    held,
                    worker,
                    "the Sentinel stopped before sending it",
                    counted=False,
                    outcome="HANDED_BACK",
                )

    async def cancel_unheld(self, job: JobRow) -> None:
        """A cancel for a RUNNING job no live worker holds (e.g. awaiting re-adoption)."""
        claimed_by_live_worker = any(
            w.worker_id == job.worker_id for w in self.ctx.registry.workers.values()
        )
        if job.id in self.orphans or not claimed_by_live_worker:
            self.orphans.pop(job.id, None)
            if await self.ctx.store.mark_cancelled(job.id, job.attempt, now=self.ctx.wall()):
                logger.info(
                    "job %d cancelled (no worker holds it)",
                    job.id,
                    extra={"event": "job.cancelled", "job_id": job.id},
                )

    async def reconcile(self, worker: WorkerState, named: tuple[JobRef, ...]) -> None:
        """Adopt jobs a worker names that a previous Sentinel gave it; stop stale ones."""
        for ref in named:
            held = worker.jobs.get(ref.job_id)
            if held is not None and ref.attempt in (None, held.attempt):
                continue
            orphan = self.orphans.get(ref.job_id)
            if (
                held is None
                and orphan is not None
                and orphan.job.worker_id == worker.worker_id
                and ref.attempt in (None, orphan.job.attempt)
            ):
                self._adopt(worker, orphan, held_ready=ref.held)
            else:
                self._stop_stale(worker, ref)

    def _adopt(self, worker: WorkerState, orphan: Orphan, *, held_ready: bool = False) -> None:
        job = orphan.job
        del self.orphans[job.id]
        # its clock started when it was claimed, not now
        ran_for = max(0.0, self.ctx.wall() - job.started_at) if job.started_at else 0.0
        worker.jobs[job.id] = HeldJob(
            job_id=job.id,
            attempt=job.attempt,
            plugin_name=job.plugin_name,
            timeout_s=job.timeout_s or self.ctx.config.job_timeout_s,
            dispatched_at=trio.current_time() - ran_for,
            queued=held_ready,  # held ready in a prefetch slot: not started yet
        )
        logger.info(
            "job %d re-adopted from %s",
            job.id,
            worker.worker_id,
            extra={"event": "job.adopted", "job_id": job.id},
        )

    def _stop_stale(self, worker: WorkerState, ref: JobRef) -> None:
        """It runs an attempt that is no longer its own: ABORT it, once per grace period."""
        now = trio.current_time()
        last = worker.stale.get(ref.job_id)
        if last is not None and now - last < self.ctx.config.abort_grace_s:
            return
        worker.stale[ref.job_id] = now
        if last is None:
            logger.warning(
                "worker %s runs job %d attempt %s that it does not hold; refusing it and sending ABORT",
                worker.worker_id, ref.job_id, ref.attempt, extra={"event": "job.stale", "job_id": ref.job_id},
            )  # fmt: skip
        self.ctx.outbox.put(Outgoing(worker.identity, Abort(attempt=ref.attempt), ref.job_id))

    def forget_unknown(self, now: float) -> None:
        """Drop the memory of unknown peers asked to identify longer than a liveness ago."""
        for identity, asked in list(self._told_unknown.items()):
            if now - asked >= self.ctx.config.liveness_s:
                del self._told_unknown[identity]

    def ask_to_identify(self, identity: bytes) -> None:
        """An unknown peer: ask it (at most once per liveness period) to IDENTIFY again."""
        now = trio.current_time()
        if now - self._told_unknown.get(identity, -1e9) < self.ctx.config.liveness_s:
            return
        self._told_unknown[identity] = now
        logger.info(
            "unknown peer %r; asking it to identify", identity, extra={"event": "worker.unknown"}
        )
        self.ctx.outbox.put(
            Outgoing(
                identity, Err(message="unknown worker; send IDENTIFY", code=ERR_UNKNOWN_WORKER)
            )
        )

    def orphan_receipt(self, identity: bytes, job_id: int, msg: Conclude) -> HeldJob | None:
        """A receipt for a job a previous Sentinel gave this worker (same id, same attempt)."""
        orphan = self.orphans.get(job_id)
        if orphan is None or orphan.job.worker_id != orphan_worker_id(identity):
            return None
        if msg.attempt not in (None, orphan.job.attempt):
            return None
        del self.orphans[job_id]
        return HeldJob(
            job_id=job_id,
            attempt=orphan.job.attempt,
            plugin_name=orphan.job.plugin_name,
            timeout_s=orphan.job.timeout_s or self.ctx.config.job_timeout_s,
            dispatched_at=trio.current_time(),
        )
