"""How the Sentinel reacts to each message and event: registry changes plus one store call.

Every method keeps the registry consistent with the queue: a job leaves a
worker's slots exactly when its row leaves RUNNING for that attempt. Nothing
here sends on the socket directly; messages go through the Outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs
import trio

from casparian_trio.config import SentinelConfig
from casparian_trio.errors import CatalogError
from casparian_trio.protocol import (
    ERR_DEPLOY,
    ERR_UNKNOWN_WORKER,
    Abort,
    Conclude,
    Deploy,
    Dispatch,
    EnvReady,
    Err,
    Heartbeat,
    Identify,
    JobRef,
    Message,
    PrepareEnv,
    Reload,
)
from casparian_trio.sentinel._outbox import Outbox, Outgoing
from casparian_trio.sentinel.decisions import (
    Action,
    judge_receipt,
    needs_env,
    result_summary,
    with_defaults,
)
from casparian_trio.sentinel.registry import (
    HeldJob,
    Registry,
    WorkerState,
    resolve_attempt,
)
from casparian_trio.store import DispatchPlan, JobRow, Store

logger = logging.getLogger(__name__)

# cf_worker.last_seen is for operators (`workers`), not liveness (that is in
# memory): refreshing it every 5 s costs one tiny write per worker per 5 s.
WORKER_RECORD_INTERVAL = 5.0


def orphan_worker_id(identity: bytes) -> str:
    """Our workers route by their worker id (WorkerConfig.identity)."""
    return identity.decode("utf-8", errors="replace")


@attrs.frozen(kw_only=True)
class Orphan:
    """A job left RUNNING by a previous Sentinel, waiting for its worker to name it."""

    job: JobRow
    adopt_until: float


@attrs.define(eq=False, kw_only=True)
class Reactions:
    config: SentinelConfig
    store: Store
    registry: Registry
    outbox: Outbox
    wall: Callable[[], float]
    orphans: dict[int, Orphan] = attrs.field(factory=dict)
    _wake: trio.Event = attrs.field(factory=trio.Event)
    _told_unknown: dict[bytes, float] = attrs.field(factory=dict)

    # --- waking the dispatcher -------------------------------------------------

    def arm_wake(self) -> trio.Event:
        """A fresh event for the dispatcher's next sleep (armed before it dispatches: no lost wake-ups)."""
        self._wake = trio.Event()
        return self._wake

    def wake(self) -> None:
        self._wake.set()

    # --- messages ----------------------------------------------------------------

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
        worker, lost = self.registry.register(identity, msg, now)
        self._told_unknown.pop(identity, None)
        logger.info(
            "worker %s joined (%d slot(s), capabilities %s)",
            msg.worker_id,
            msg.slots,
            ",".join(sorted(worker.capabilities)),
            extra={"event": "worker.joined", "worker_id": msg.worker_id},
        )
        await self.store.upsert_worker(
            worker_id=msg.worker_id,
            host=msg.host,
            pid=msg.pid,
            capabilities=sorted(worker.capabilities),
            slots=msg.slots,
            status="IDLE",
            now=self.wall(),
        )
        for held in lost:
            if held.dispatched_at is None:  # never sent: not the plugin's fault
                await self._requeue(
                    held,
                    worker,
                    "the worker re-registered before it was sent",
                    counted=False,
                    outcome="HANDED_BACK",
                )
                continue
            await self._requeue(
                held, worker, "the worker restarted without it", counted=True, outcome="WORKER_LOST"
            )
        await self._reconcile(worker, msg.jobs)
        self.wake()

    async def heartbeat(self, identity: bytes, msg: Heartbeat) -> None:
        worker = self.registry.get(identity)
        if worker is None:
            self._ask_to_identify(identity)
            return
        was_free = worker.free_slots
        self.registry.beat(worker, msg, trio.current_time())
        named = msg.held_jobs()
        if worker.given_up and not worker.given_up & {ref.job_id for ref in named}:
            worker.given_up.clear()
            worker.healthy = True
            logger.info("worker %s is healthy again", worker.worker_id)
        await self._reconcile(worker, named)
        if worker.free_slots > was_free:
            self.wake()
        await self._record_beat(worker)

    async def _record_beat(self, worker: WorkerState) -> None:
        """Keep cf_worker's status and last_seen fresh for `workers`, without a write per beat."""
        now = trio.current_time()
        status, at = worker.recorded
        if status != worker.status or now - at >= WORKER_RECORD_INTERVAL:
            worker.recorded = (worker.status, now)
            await self.store.touch_worker(worker.worker_id, worker.status, now=self.wall())

    async def conclude(self, identity: bytes, job_id: int, msg: Conclude) -> None:
        worker = self.registry.get(identity)
        held = None if worker is None else resolve_attempt(worker.jobs.get(job_id), msg.attempt)
        if worker is not None and held is not None:
            del worker.jobs[job_id]
            if msg.status == "ABORTED" and held.abort_reason is None:
                worker.credit_hold = True  # it handed work back: wait for its next heartbeat
            await self._record_receipt(held, msg, worker.worker_id)
            return
        orphan = self._orphan_receipt(identity, job_id, msg)
        if orphan is not None:  # finished while the Sentinel was down: keep its result
            await self._record_receipt(orphan, msg, orphan_worker_id(identity))
            return
        logger.warning(
            "ignoring CONCLUDE %s for job %d attempt %s from %r: not held by that worker (stale or duplicate)",
            msg.status,
            job_id,
            msg.attempt,
            identity,
            extra={"event": "receipt.refused", "job_id": job_id},
        )

    def _orphan_receipt(self, identity: bytes, job_id: int, msg: Conclude) -> HeldJob | None:
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
            timeout_s=orphan.job.timeout_s or self.config.job_timeout,
            dispatched_at=trio.current_time(),
        )

    async def _record_receipt(self, held: HeldJob, msg: Conclude, worker_id: str) -> None:
        verdict = judge_receipt(held, msg)
        now, job_id = self.wall(), held.job_id
        status: str | None
        if verdict.action is Action.COMPLETE:
            summary = result_summary(msg, worker_id)
            done = await self.store.complete(job_id, held.attempt, result_summary=summary, now=now)
            status = "COMPLETED" if done else "unchanged (stale)"
        elif verdict.action is Action.FAIL:
            error = verdict.error or ""
            status = await self.store.fail(
                job_id, held.attempt, error=error, now=now, outcome=verdict.outcome
            )
        else:
            status = await self.store.requeue(
                job_id,
                held.attempt,
                reason=verdict.error or "",
                now=now,
                counted=False,
                outcome=verdict.outcome,
            )
        logger.info(
            "job %d %s on %s (attempt %d): %s%s",
            job_id,
            msg.status,
            worker_id,
            held.attempt,
            status,
            f" — {verdict.error}" if verdict.error and msg.status != "SUCCESS" else "",
            extra={"event": "job.concluded", "job_id": job_id},
        )
        self.wake()

    def env_ready(self, identity: bytes, msg: EnvReady) -> None:
        worker = self.registry.get(identity)
        if worker is None:
            self._ask_to_identify(identity)
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
                self._send_dispatch(worker, held, held.pending)

    async def error(self, identity: bytes, job_id: int, msg: Err) -> None:
        worker = self.registry.get(identity)
        if worker is not None and msg.env_hash:
            await self.env_failed(worker, msg.env_hash, msg.message)
            return
        logger.warning(
            "ERR from %r (job %d): %s", identity, job_id, msg.message, extra={"event": "peer.error"}
        )

    async def deploy(self, identity: bytes, msg: Deploy) -> None:
        from casparian_trio.publish import record_deploy

        try:
            result = await record_deploy(self.store, msg, now=self.wall())
        except Exception as exc:  # any rejection is the client's answer, not our crash
            logger.warning(
                "DEPLOY of %s rejected: %s",
                msg.plugin_name,
                exc,
                extra={"event": "deploy.rejected"},
            )
            self.outbox.put(Outgoing(identity, Err(message=str(exc), code=ERR_DEPLOY)))
            return
        self.outbox.put(Outgoing(identity, Conclude(status="SUCCESS", metrics=result)))
        if result["created"]:  # republishing the same artifact changes nothing
            for worker in self.registry.workers.values():
                self.outbox.put(Outgoing(worker.identity, Reload()))
        self.wake()

    # --- dispatch ------------------------------------------------------------------

    async def dispatch_one(self, worker: WorkerState) -> bool:
        """Claim one job this worker can run and send it; False when there is none."""
        if worker.free_slots <= 0 or self.registry.get(worker.identity) is not worker:
            return False
        job = await self.store.claim(
            capabilities=sorted(worker.capabilities),
            worker_id=worker.worker_id,
            now=self.wall(),
            worker_host=worker.host,
            worker_pid=worker.pid,
        )
        if job is None:
            return False
        if self.registry.get(worker.identity) is not worker or job.id in worker.stale:
            # It left while we claimed, or it still runs an older attempt of this very job.
            await self.store.requeue(
                job.id,
                job.attempt,
                reason="not sent",
                now=self.wall(),
                counted=False,
                outcome="HANDED_BACK",
            )
            return False
        held = HeldJob(
            job_id=job.id,
            attempt=job.attempt,
            plugin_name=job.plugin_name,
            timeout_s=self.config.job_timeout,
        )
        worker.jobs[job.id] = held  # take the slot before the next await
        try:
            plan = await self.store.resolve_dispatch(job)
        except CatalogError as exc:
            worker.jobs.pop(job.id, None)
            status = await self.store.fail(
                job.id, job.attempt, error=str(exc), now=self.wall(), outcome="FAILED"
            )
            logger.warning(
                "job %d cannot be dispatched: %s (%s)", job.id, exc, status,
                extra={"event": "job.unresolvable", "job_id": job.id},
            )  # fmt: skip
            return True
        if worker.jobs.get(job.id) is not held or self.registry.get(worker.identity) is not worker:
            return True  # lost meanwhile; whoever removed it has requeued it
        self._send_or_prepare(worker, held, plan)
        return True

    def _send_or_prepare(self, worker: WorkerState, held: HeldJob, plan: DispatchPlan) -> None:
        dispatch = with_defaults(plan.dispatch, default_timeout=self.config.job_timeout)
        held.timeout_s = dispatch.timeout_s or self.config.job_timeout
        held.env_hash = dispatch.env_hash
        env = plan.env
        if env is None or not needs_env(dispatch, worker.envs_ready, has_lockfile=True):
            self._send_dispatch(worker, held, dispatch)
            return
        held.pending = dispatch
        if env.env_hash not in worker.envs_preparing:
            worker.envs_preparing[env.env_hash] = trio.current_time()
            prepare = PrepareEnv(
                env_hash=env.env_hash,
                lockfile=env.lockfile,
                python_version=env.python_version,
                pyproject=env.pyproject,
            )
            self.outbox.put(Outgoing(worker.identity, prepare))
        logger.info(
            "job %d waits for env %s on %s", held.job_id, env.env_hash[:12], worker.worker_id
        )

    def _send_dispatch(self, worker: WorkerState, held: HeldJob, dispatch: Dispatch) -> None:
        held.pending = None
        held.dispatched_at = trio.current_time()
        self.outbox.put(Outgoing(worker.identity, dispatch, held.job_id))
        logger.info(
            "job %d (%s) dispatched to %s, attempt %d",
            held.job_id,
            held.plugin_name,
            worker.worker_id,
            held.attempt,
            extra={"event": "job.dispatched", "job_id": held.job_id},
        )

    # --- losses, give-ups and recovery -------------------------------------------------

    async def unroutable(self, item: Outgoing) -> None:
        """ROUTER_MANDATORY refused a send: the worker is gone, its jobs go back to the queue."""
        worker = self.registry.drop(item.identity)
        logger.warning(
            "cannot reach %r for %s; dropping it", item.identity, type(item.payload).__name__
        )
        if worker is None:
            return
        for held in list(worker.jobs.values()):
            if held.dispatched_at is None or held.job_id == item.job_id:  # never reached it
                await self._requeue(
                    held,
                    worker,
                    "the worker disconnected before the dispatch",
                    counted=False,
                    outcome="HANDED_BACK",
                )
            else:  # it was running there: as if its heartbeats had stopped
                await self._requeue(
                    held,
                    worker,
                    f"worker {worker.worker_id} disconnected",
                    counted=True,
                    outcome="WORKER_LOST",
                )
        await self.store.set_worker_status(worker.worker_id, "GONE", now=self.wall())
        self.wake()

    async def worker_lost(self, worker: WorkerState, why: str) -> None:
        self.registry.drop(worker.identity)
        logger.warning(
            "worker %s lost: %s",
            worker.worker_id,
            why,
            extra={"event": "worker.lost", "worker_id": worker.worker_id},
        )
        for held in list(worker.jobs.values()):
            await self._requeue(
                held,
                worker,
                f"worker {worker.worker_id} lost: {why}",
                counted=True,
                outcome="WORKER_LOST",
            )
        await self.store.set_worker_status(worker.worker_id, "LOST", now=self.wall())
        self.wake()

    async def give_up(self, worker: WorkerState, held: HeldJob) -> None:
        """No receipt one grace after ABORT: fail the attempt and stop trusting the worker."""
        worker.jobs.pop(held.job_id, None)
        worker.given_up.add(held.job_id)
        worker.healthy = False
        error = f"timed out after {held.timeout_s:g} s; worker {worker.worker_id} did not confirm the abort"
        status = await self.store.fail(
            held.job_id, held.attempt, error=error, now=self.wall(), outcome="TIMED_OUT"
        )
        await self.store.set_worker_status(worker.worker_id, "UNHEALTHY", now=self.wall())
        logger.warning(
            "job %d: %s (%s); worker marked unhealthy",
            held.job_id,
            error,
            status,
            extra={"event": "job.given_up", "job_id": held.job_id},
        )
        self.wake()

    async def env_failed(self, worker: WorkerState, env_hash: str, message: str) -> None:
        worker.envs_preparing.pop(env_hash, None)
        for held in [
            h for h in worker.jobs.values() if h.env_hash == env_hash and h.pending is not None
        ]:
            worker.jobs.pop(held.job_id)
            error = (
                f"environment {env_hash[:12]} could not be built on {worker.worker_id}: {message}"
            )
            status = await self.store.fail(
                held.job_id, held.attempt, error=error, now=self.wall(), outcome="FAILED"
            )
            logger.warning(
                "job %d: %s (%s)",
                held.job_id,
                error,
                status,
                extra={"event": "env.failed", "job_id": held.job_id},
            )
        self.wake()

    async def _requeue(
        self, held: HeldJob, worker: WorkerState, reason: str, *, counted: bool, outcome: str
    ) -> None:
        status = await self.store.requeue(
            held.job_id,
            held.attempt,
            reason=reason,
            now=self.wall(),
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
        until = trio.current_time() + self.config.liveness
        for job in await self.store.running_jobs():
            self.orphans[job.id] = Orphan(job=job, adopt_until=until)
        if self.orphans:
            logger.info(
                "%d job(s) left RUNNING by a previous Sentinel await re-adoption", len(self.orphans)
            )

    async def expire_orphans(self, now: float) -> None:
        for job_id, orphan in list(self.orphans.items()):
            if now >= orphan.adopt_until:
                del self.orphans[job_id]
                status = await self.store.requeue(
                    job_id,
                    orphan.job.attempt,
                    reason="no worker re-adopted it after a Sentinel restart",
                    now=self.wall(),
                    counted=True,
                    outcome="WORKER_LOST",
                )
                logger.info(
                    "job %d was not re-adopted: %s",
                    job_id,
                    status,
                    extra={"event": "job.requeued", "job_id": job_id},
                )
                self.wake()

    async def cancel_unsent(self, worker: WorkerState, held: HeldJob) -> None:
        """Cancel a job still waiting for its env on ``worker``: nothing to abort there."""
        worker.jobs.pop(held.job_id, None)
        if await self.store.mark_cancelled(held.job_id, held.attempt, now=self.wall()):
            logger.info(
                "job %d cancelled before it was sent",
                held.job_id,
                extra={"event": "job.cancelled", "job_id": held.job_id},
            )
        self.wake()

    async def hand_back_unsent(self) -> None:
        """At shutdown: jobs claimed but never sent return to the queue, uncounted."""
        for worker in list(self.registry.workers.values()):
            for held in [h for h in worker.jobs.values() if h.dispatched_at is None]:
                worker.jobs.pop(held.job_id, None)
                await self._requeue(
                    held,
                    worker,
                    "the Sentinel stopped before sending it",
                    counted=False,
                    outcome="HANDED_BACK",
                )

    async def cancel_unheld(self, job: JobRow) -> None:
        """A cancel for a RUNNING job no live worker holds (e.g. awaiting re-adoption)."""
        claimed_by_live_worker = any(
            w.worker_id == job.worker_id for w in self.registry.workers.values()
        )
        if job.id in self.orphans or not claimed_by_live_worker:
            self.orphans.pop(job.id, None)
            if await self.store.mark_cancelled(job.id, job.attempt, now=self.wall()):
                logger.info(
                    "job %d cancelled (no worker holds it)",
                    job.id,
                    extra={"event": "job.cancelled", "job_id": job.id},
                )

    async def _reconcile(self, worker: WorkerState, named: tuple[JobRef, ...]) -> None:
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
                self._adopt(worker, orphan)
            else:
                self._stop_stale(worker, ref)

    def _adopt(self, worker: WorkerState, orphan: Orphan) -> None:
        job = orphan.job
        del self.orphans[job.id]
        # its clock started when it was claimed, not now
        ran_for = max(0.0, self.wall() - job.started_at) if job.started_at else 0.0
        worker.jobs[job.id] = HeldJob(
            job_id=job.id,
            attempt=job.attempt,
            plugin_name=job.plugin_name,
            timeout_s=job.timeout_s or self.config.job_timeout,
            dispatched_at=trio.current_time() - ran_for,
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
        if last is not None and now - last < self.config.abort_grace:
            return
        worker.stale[ref.job_id] = now
        if last is None:
            logger.warning(
                "worker %s runs job %d attempt %s that it does not hold; refusing it and sending ABORT",
                worker.worker_id, ref.job_id, ref.attempt, extra={"event": "job.stale", "job_id": ref.job_id},
            )  # fmt: skip
        self.outbox.put(Outgoing(worker.identity, Abort(attempt=ref.attempt), ref.job_id))

    def forget_unknown(self, now: float) -> None:
        """Drop the memory of unknown peers asked to identify longer than a liveness ago."""
        for identity, asked in list(self._told_unknown.items()):
            if now - asked >= self.config.liveness:
                del self._told_unknown[identity]

    def _ask_to_identify(self, identity: bytes) -> None:
        """An unknown peer: ask it (at most once per liveness period) to IDENTIFY again."""
        now = trio.current_time()
        if now - self._told_unknown.get(identity, -1e9) < self.config.liveness:
            return
        self._told_unknown[identity] = now
        logger.info(
            "unknown peer %r; asking it to identify", identity, extra={"event": "worker.unknown"}
        )
        self.outbox.put(
            Outgoing(
                identity, Err(message="unknown worker; send IDENTIFY", code=ERR_UNKNOWN_WORKER)
            )
        )
