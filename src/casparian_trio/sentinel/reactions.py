"""How the Sentinel reacts to each message and event: registry changes plus one store call.

Every method keeps the registry consistent with the queue: a job leaves a
worker's slots exactly when its row leaves RUNNING for that attempt. Nothing
here sends on the socket directly; messages go through the Outbox.

A worker that asked for them (``Identify.answer_heartbeats``) gets a HEARTBEAT
back for its IDENTIFY and for each of its HEARTBEATs: that is how it knows the
Sentinel is there (protocol/messages.py, ``Heartbeat``, says why this message).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import attrs
import trio

from casparian_trio.plugins import deploy_summary, release_of
from casparian_trio.protocol import (
    ERR_DEPLOY,
    Conclude,
    Deploy,
    EnvReady,
    Err,
    Heartbeat,
    Identify,
    Message,
    Reload,
)
from casparian_trio.sentinel._context import SentinelContext
from casparian_trio.sentinel._outbox import Outgoing
from casparian_trio.sentinel.decisions import (
    Action,
    Verdict,
    judge_receipt,
    result_summary,
)
from casparian_trio.sentinel.dispatch import Dispatcher
from casparian_trio.sentinel.recovery import Recovery, orphan_worker_id
from casparian_trio.sentinel.registry import (
    HeldJob,
    WorkerState,
    resolve_attempt,
)
from casparian_trio.store import ReceiptWrite, Write
from casparian_trio.store.topics import outputs_of

logger = logging.getLogger(__name__)

# cf_worker.last_seen is for operators (`workers`), not liveness (that is in
# memory): refreshing it every 5 s costs one tiny write per worker per 5 s.
WORKER_RECORD_INTERVAL_S = 5.0


@attrs.define(eq=False, kw_only=True)
class Reactions:
    ctx: SentinelContext
    dispatcher: Dispatcher
    recovery: Recovery

    def arm_wake(self) -> trio.Event:
        return self.ctx.waker.arm()

    def wake(self) -> None:
        self.ctx.waker.wake()

    async def react(self, identity: bytes, message: Message) -> None:
        payload = message.payload
        if isinstance(payload, Heartbeat):
            await self.heartbeat(identity, payload)
        elif isinstance(payload, Conclude):
            await self.conclude(identity, message.job_id, payload)
        elif isinstance(payload, Identify):
            await self.identify(identity, payload)
        elif isinstance(payload, EnvReady):
            self.env_ready(identity, payload)
        elif isinstance(payload, Err):
            await self.error(identity, message.job_id, payload)
        elif isinstance(payload, Deploy):
            await self.deploy(identity, payload)
        else:
            logger.warning(
                "dropping %s from %r: only workers and clients talk to the Sentinel",
                type(payload).__name__,
                identity,
                extra={"event": "protocol.unexpected"},
            )

    async def identify(self, identity: bytes, msg: Identify) -> None:
        now = trio.current_time()
        worker, lost = self.ctx.registry.register(identity, msg, now)
        self.recovery.forget(identity)
        self._answer(worker)  # first, so it goes out ahead of any DISPATCH
        logger.info(
            "worker %s joined (%d slot(s), capabilities %s)",
            msg.worker_id,
            msg.slots,
            ",".join(sorted(worker.capabilities)),
            extra={"event": "worker.joined", "worker_id": msg.worker_id},
        )
        await self.ctx.store.upsert_worker(
            worker_id=msg.worker_id,
            host=msg.host,
            pid=msg.pid,
            capabilities=sorted(worker.capabilities),
            slots=msg.slots,
            status="IDLE",
            now=self.ctx.wall(),
        )
        for held in lost:
            if held.dispatched_at is None or held.queued:  # never sent, or never started
                await self.recovery.requeue(
                    held,
                    worker,
                    "the worker re-registered before it was sent",
                    counted=False,
                    outcome="HANDED_BACK",
                )
                continue
            await self.recovery.requeue(
                held, worker, "the worker restarted without it", counted=True, outcome="WORKER_LOST"
            )
        await self.recovery.reconcile(worker, msg.jobs)
        self.wake()

    async def heartbeat(self, identity: bytes, msg: Heartbeat) -> None:
        worker = self.ctx.registry.get(identity)
        if msg.stopping:
            await self.recovery.worker_stopped(identity, worker)
            return
        if worker is None:
            self.recovery.ask_to_identify(identity)
            return
        was_free = worker.free_slots
        self.ctx.registry.beat(worker, msg, trio.current_time())
        self._answer(worker)
        named = msg.held_jobs()
        if worker.given_up and not worker.given_up & {ref.job_id for ref in named}:
            worker.given_up.clear()
            worker.healthy = True
            logger.info("worker %s is healthy again", worker.worker_id)
        await self.recovery.reconcile(worker, named)
        if worker.free_slots > was_free:
            self.wake()
        await self._record_beat(worker)

    def _answer(self, worker: WorkerState) -> None:
        if worker.answers:
            roots = self.ctx.source_roots or None  # none known: say nothing (an old answer)
            answer = Heartbeat.answer(worker.worker_id, source_roots=roots)
            self.ctx.outbox.put(Outgoing(worker.identity, answer))

    async def _record_beat(self, worker: WorkerState) -> None:
        """Keep cf_worker's status and last_seen fresh for `workers`, without a write per beat."""
        now = trio.current_time()
        status, at = worker.recorded
        if status != worker.status or now - at >= WORKER_RECORD_INTERVAL_S:
            worker.recorded = (worker.status, now)
            await self.ctx.store.touch_worker(worker.worker_id, worker.status, now=self.ctx.wall())

    async def conclude(self, identity: bytes, job_id: int, msg: Conclude) -> None:
        await self.conclude_many([(identity, job_id, msg)])

    async def conclude_many(self, receipts: Sequence[tuple[bytes, int, Conclude]]) -> None:
        """React to CONCLUDEs that arrived together: each frees its slot, one transaction records all.

        Args:
            receipts: (routing identity, job id, receipt), in arrival order.

        Raises:
            Exception: what recording a receipt raised (the ones before it are kept).
        """
        taken = [
            found
            for identity, job_id, msg in receipts
            if (found := self._take_receipt(identity, job_id, msg)) is not None
        ]
        if not taken:
            return
        verdicts = [judge_receipt(held, msg) for held, msg, _ in taken]
        writes = [
            receipt_write(held, msg, worker_id, verdict)
            for (held, msg, worker_id), verdict in zip(taken, verdicts, strict=True)
        ]
        recorded = await self.ctx.store.record_receipts(writes, now=self.ctx.wall())
        # results stop short of the receipt that raised (recorded.error)
        done = zip(taken, verdicts, recorded.results, strict=False)
        for (held, msg, worker_id), verdict, result in done:
            _log_receipt(held, msg, worker_id, verdict, result)
        self.wake()
        if recorded.error is not None:
            raise recorded.error

    def _take_receipt(
        self, identity: bytes, job_id: int, msg: Conclude
    ) -> tuple[HeldJob, Conclude, str] | None:
        """(held job, receipt, worker id) when the receipt is for a job held (or orphaned)."""
        worker = self.ctx.registry.get(identity)
        held = None if worker is None else resolve_attempt(worker.jobs.get(job_id), msg.attempt)
        if worker is not None and held is not None:
            now = trio.current_time()
            handed_back = msg.status == "ABORTED" and held.abort_reason is None
            took = None if held.dispatched_at is None or handed_back else now - held.dispatched_at
            worker.release(job_id, now, took_s=took)
            if handed_back:
                worker.credit_hold = True  # it handed work back: wait for its next heartbeat
                worker.short_jobs = False  # ... and hold nothing more until a job is short
            return held, msg, worker.worker_id
        orphan = self.recovery.orphan_receipt(identity, job_id, msg)
        if orphan is not None:  # finished while the Sentinel was down: keep its result
            return orphan, msg, orphan_worker_id(identity)
        logger.warning(
            "ignoring CONCLUDE %s for job %d attempt %s from %r: not held by that worker (stale or duplicate)",
            msg.status,
            job_id,
            msg.attempt,
            identity,
            extra={"event": "receipt.refused", "job_id": job_id},
        )
        return None

    def env_ready(self, identity: bytes, msg: EnvReady) -> None:
        worker = self.ctx.registry.get(identity)
        if worker is None:
            self.recovery.ask_to_identify(identity)
            return
        worker.envs_ready.add(msg.env_hash)
        worker.envs_preparing.pop(msg.env_hash, None)
        logger.info(
            "env %s ready on %s%s",
            msg.env_hash[:12],
            worker.worker_id,
            " (cached)" if msg.cached else "",
        )
        for held in worker.jobs.values():
            if (
                held.env_hash == msg.env_hash
                and held.pending is not None
                and held.abort_reason is None
            ):
                self.dispatcher.send_dispatch(worker, held, held.pending)

    async def error(self, identity: bytes, job_id: int, msg: Err) -> None:
        worker = self.ctx.registry.get(identity)
        if worker is not None and msg.env_hash:
            await self.recovery.env_failed(worker, msg.env_hash, msg.message)
            return
        logger.warning(
            "ERR from %r (job %d): %s", identity, job_id, msg.message, extra={"event": "peer.error"}
        )

    async def deploy(self, identity: bytes, msg: Deploy) -> None:
        try:
            release = release_of(msg)
            manifest_id, created, requeued = await self.ctx.store.record_deploy(
                release, now=self.ctx.wall()
            )
        except Exception as exc:  # any rejection is the client's answer, not our crash
            logger.warning(
                "DEPLOY of %s rejected: %s",
                msg.plugin_name,
                exc,
                extra={"event": "deploy.rejected"},
            )
            self.ctx.outbox.put(Outgoing(identity, Err(message=str(exc), code=ERR_DEPLOY)))
            return
        result = deploy_summary(release, manifest_id, created, requeued)
        self.ctx.outbox.put(Outgoing(identity, Conclude(status="SUCCESS", metrics=result)))
        if created:  # republishing the same artifact changes nothing
            for worker in self.ctx.registry.workers.values():
                self.ctx.outbox.put(Outgoing(worker.identity, Reload()))
        self.wake()


def receipt_write(held: HeldJob, msg: Conclude, worker_id: str, verdict: Verdict) -> ReceiptWrite:
    """The store write a judged receipt makes (``store.receipts``)."""
    job_id, attempt = held.job_id, held.attempt
    if verdict.action is Action.COMPLETE:
        return ReceiptWrite(
            Write.COMPLETE,
            job_id,
            attempt,
            result_summary=result_summary(msg, worker_id),
            outputs=tuple(outputs_of(msg.artifacts)),  # topics and contracts, same transaction
        )
    if verdict.action in (Action.FAIL, Action.FAIL_NOW):
        return ReceiptWrite(
            Write.FAIL,
            job_id,
            attempt,
            error=verdict.error or "",
            outcome=verdict.outcome,
            traceback=verdict.traceback,
            final=verdict.action is Action.FAIL_NOW,
        )
    if verdict.action is Action.END:
        return ReceiptWrite(
            Write.END, job_id, attempt, error=verdict.error or "", outcome=verdict.outcome
        )
    return ReceiptWrite(
        Write.REQUEUE, job_id, attempt, error=verdict.error or "", outcome=verdict.outcome
    )


def _log_receipt(
    held: HeldJob, msg: Conclude, worker_id: str, verdict: Verdict, result: bool | str | None
) -> None:
    status: str | None
    if verdict.action is Action.COMPLETE:
        status = "COMPLETED" if result else "unchanged (stale)"
    else:
        status = None if isinstance(result, bool) else result
        if verdict.action is Action.FAIL_NOW and status == "FAILED":
            status = "FAILED (deterministic: not retried; set MANIFEST retries to retry)"
    logger.info(
        "job %d %s on %s (attempt %d): %s%s",
        held.job_id,
        msg.status,
        worker_id,
        held.attempt,
        status,
        f" — {verdict.error}" if verdict.error and msg.status != "SUCCESS" else "",
        extra={"event": "job.concluded", "job_id": held.job_id},
    )
