"""Dispatch: claim a job for a worker with a free slot and send it (or its env first).

Credit-based: a worker gets a job only for a slot it advertised, so short jobs
never wait behind a long one on a busy worker while another is idle. A round
claims (and resolves) a job for every free slot in one transaction; each job
takes its slot (a HeldJob) after a check that its worker is still there with
that slot free, and the next await comes only after it took it.
"""

from __future__ import annotations

import logging

import attrs
import trio

from casparian_trio.protocol import Dispatch, PrepareEnv
from casparian_trio.sentinel._context import SentinelContext
from casparian_trio.sentinel._outbox import Outgoing
from casparian_trio.sentinel.decisions import needs_env, with_defaults
from casparian_trio.sentinel.registry import HeldJob, WorkerState
from casparian_trio.store import Claimed, ClaimRequest, DispatchPlan

logger = logging.getLogger(__name__)


@attrs.define(eq=False, kw_only=True)
class Dispatcher:
    ctx: SentinelContext

    async def dispatch_round(self) -> bool:
        """Claim a job for every free slot (one transaction) and send each; False if none.

        The slots are filled in ``Registry.fill_order`` order, as one claim per
        slot would; True also when a claimed job could not be sent (handed back
        or failed), so the caller tries again for the slot it left free.
        """
        order = self.ctx.registry.fill_order()
        if not order:
            return False
        requests = [
            ClaimRequest(
                worker_id=w.worker_id,
                capabilities=tuple(sorted(w.capabilities)),
                host=w.host,
                pid=w.pid,
            )
            for w in order
        ]
        results = await self.ctx.store.claim_round(requests, now=self.ctx.wall())
        claimed = False
        for worker, result in zip(order, results, strict=True):
            if result is not None:
                claimed = True
                await self._take(worker, result)
        return claimed

    async def _take(self, worker: WorkerState, claimed: Claimed) -> None:
        """Give a claimed job its slot and send it, or hand it back (or fail it) at once."""
        job = claimed.job
        if (
            self.ctx.registry.get(worker.identity) is not worker
            or job.id in worker.stale
            or worker.free_slots <= 0
        ):
            # It left (or filled up) while we claimed, or it still runs an older
            # attempt of this very job.
            await self.ctx.store.requeue(
                job.id,
                job.attempt,
                reason="not sent",
                now=self.ctx.wall(),
                counted=False,
                outcome="HANDED_BACK",
            )
            return
        if claimed.error is not None or claimed.plan is None:
            error = str(claimed.error)
            status = await self.ctx.store.fail(
                job.id, job.attempt, error=error, now=self.ctx.wall(), outcome="FAILED"
            )
            logger.warning(
                "job %d cannot be dispatched: %s (%s)", job.id, error, status,
                extra={"event": "job.unresolvable", "job_id": job.id},
            )  # fmt: skip
            return
        held = HeldJob(
            job_id=job.id,
            attempt=job.attempt,
            plugin_name=job.plugin_name,
            timeout_s=self.ctx.config.job_timeout_s,
            retries=claimed.plan.retries,
        )
        worker.jobs[job.id] = held
        self._send_or_prepare(worker, held, claimed.plan)

    def _send_or_prepare(self, worker: WorkerState, held: HeldJob, plan: DispatchPlan) -> None:
        dispatch = with_defaults(plan.dispatch, default_timeout_s=self.ctx.config.job_timeout_s)
        held.timeout_s = dispatch.timeout_s or self.ctx.config.job_timeout_s
        held.env_hash = dispatch.env_hash
        env = plan.env
        if env is None or not needs_env(dispatch, worker.envs_ready, has_lockfile=True):
            self.send_dispatch(worker, held, dispatch)
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
            self.ctx.outbox.put(Outgoing(worker.identity, prepare))
        logger.info(
            "job %d waits for env %s on %s", held.job_id, env.env_hash[:12], worker.worker_id
        )

    def send_dispatch(self, worker: WorkerState, held: HeldJob, dispatch: Dispatch) -> None:
        held.pending = None
        worker.sent(held, trio.current_time())
        self.ctx.outbox.put(Outgoing(worker.identity, dispatch, held.job_id))
        # DEBUG: the outcome line (reactions.py) names the worker and attempt
        # again; a second INFO line per job was a measurable share of its cost.
        logger.debug(
            "job %d (%s) dispatched to %s, attempt %d",
            held.job_id,
            held.plugin_name,
            worker.worker_id,
            held.attempt,
            extra={"event": "job.dispatched", "job_id": held.job_id},
        )

    # --- losses, give-ups and recovery -------------------------------------------------
