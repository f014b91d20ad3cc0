"""Dispatch: claim a job for a worker with a free slot and send it (or its env first).

Credit-based: a worker gets a job only for a slot it advertised, so short jobs
never wait behind a long one on a busy worker while another is idle. The slot
is taken (a HeldJob) before the first await after the claim, and every await
is followed by a check that the worker and the slot are still the ones we took.
"""

from __future__ import annotations

import logging

import attrs
import trio

from casparian_trio.errors import CatalogError
from casparian_trio.protocol import Dispatch, PrepareEnv
from casparian_trio.sentinel._context import SentinelContext
from casparian_trio.sentinel._outbox import Outgoing
from casparian_trio.sentinel.decisions import needs_env, with_defaults
from casparian_trio.sentinel.registry import HeldJob, WorkerState
from casparian_trio.store import DispatchPlan

logger = logging.getLogger(__name__)


@attrs.define(eq=False, kw_only=True)
class Dispatcher:
    ctx: SentinelContext

    async def dispatch_one(self, worker: WorkerState) -> bool:
        """Claim one job this worker can run and send it; False when there is none."""
        if worker.free_slots <= 0 or self.ctx.registry.get(worker.identity) is not worker:
            return False
        job = await self.ctx.store.claim(
            capabilities=sorted(worker.capabilities),
            worker_id=worker.worker_id,
            now=self.ctx.wall(),
            worker_host=worker.host,
            worker_pid=worker.pid,
        )
        if job is None:
            return False
        if self.ctx.registry.get(worker.identity) is not worker or job.id in worker.stale:
            # It left while we claimed, or it still runs an older attempt of this very job.
            await self.ctx.store.requeue(
                job.id,
                job.attempt,
                reason="not sent",
                now=self.ctx.wall(),
                counted=False,
                outcome="HANDED_BACK",
            )
            return False
        held = HeldJob(
            job_id=job.id,
            attempt=job.attempt,
            plugin_name=job.plugin_name,
            timeout_s=self.ctx.config.job_timeout_s,
        )
        worker.jobs[job.id] = held  # take the slot before the next await
        try:
            plan = await self.ctx.store.resolve_dispatch(job)
        except CatalogError as exc:
            worker.jobs.pop(job.id, None)
            status = await self.ctx.store.fail(
                job.id, job.attempt, error=str(exc), now=self.ctx.wall(), outcome="FAILED"
            )
            logger.warning(
                "job %d cannot be dispatched: %s (%s)", job.id, exc, status,
                extra={"event": "job.unresolvable", "job_id": job.id},
            )  # fmt: skip
            return True
        if (
            worker.jobs.get(job.id) is not held
            or self.ctx.registry.get(worker.identity) is not worker
        ):
            return True  # lost meanwhile; whoever removed it has requeued it
        held.retries = plan.retries
        self._send_or_prepare(worker, held, plan)
        return True

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
        held.dispatched_at = trio.current_time()
        self.ctx.outbox.put(Outgoing(worker.identity, dispatch, held.job_id))
        logger.info(
            "job %d (%s) dispatched to %s, attempt %d",
            held.job_id,
            held.plugin_name,
            worker.worker_id,
            held.attempt,
            extra={"event": "job.dispatched", "job_id": held.job_id},
        )

    # --- losses, give-ups and recovery -------------------------------------------------
