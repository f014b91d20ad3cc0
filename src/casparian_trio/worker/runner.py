"""One job, one cancel scope, exactly one receipt.

The executor (the bridge, in production) runs the plugin and returns a
SUCCESS or FAILED receipt; when its caller's scope is cancelled it kills the
guest, removes staged output and re-raises ``trio.Cancelled``. This module
decides which receipt a cancellation means: the timeout is a failure, an ABORT
or a shutdown is ABORTED (the Sentinel decides between CANCELLED and requeue).
"""

from __future__ import annotations

import enum
import logging
import math
from typing import Protocol

import attrs
import trio

from casparian_trio.errors import first_cause, one_line
from casparian_trio.protocol import Conclude, Dispatch

logger = logging.getLogger(__name__)


class JobExecutor(Protocol):
    async def run(self, job_id: int, dispatch: Dispatch) -> Conclude: ...


class StopReason(enum.Enum):
    ABORT = "aborted by the Sentinel"
    SHUTDOWN = "handed back: the worker is shutting down"


@attrs.define(eq=False, kw_only=True)
class JobRun:
    job_id: int
    dispatch: Dispatch
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    reason: StopReason | None = None

    def stop(self, reason: StopReason) -> None:
        self.reason = self.reason or reason
        self.scope.cancel(reason=reason.value)

    def stop_at(self, deadline: float, reason: StopReason) -> None:
        """Let the job run until ``deadline`` (the shutdown grace), then stop it."""
        self.reason = self.reason or reason
        self.scope.deadline = min(self.scope.deadline, deadline)

    async def execute(self, executor: JobExecutor) -> Conclude:
        """Run the job and return its one receipt, whatever ends it."""
        started = trio.current_time()
        timeout_s = self.dispatch.timeout_s
        receipt: Conclude | None = None
        logger.info(
            "job %d (%s) started, attempt %s",
            self.job_id,
            self.dispatch.plugin_name,
            self.dispatch.attempt,
            extra={"event": "job.started", "job_id": self.job_id},
        )
        with self.scope:
            with trio.move_on_after(timeout_s if timeout_s else math.inf) as timer:
                receipt = await self._guarded(executor)
            if timer.cancelled_caught:
                receipt = Conclude(
                    status="FAILED", error_message=f"timed out after {timeout_s:g} s"
                )
        if receipt is None:
            reason = self.reason or StopReason.ABORT
            receipt = Conclude(status="ABORTED", error_message=reason.value)
        receipt = _finish(receipt, self.dispatch.attempt, trio.current_time() - started)
        rows = receipt.metrics.get("rows") if receipt.status == "SUCCESS" else None
        logger.info(
            "job %d %s%s",
            self.job_id,
            receipt.status,
            f": {receipt.error_message.splitlines()[0]}"
            if receipt.error_message
            else (f": {rows} rows" if rows is not None else ""),
            extra={"event": "job.finished", "job_id": self.job_id},
        )
        return receipt

    async def _guarded(self, executor: JobExecutor) -> Conclude:
        try:
            return await executor.run(self.job_id, self.dispatch)
        except Exception as exc:  # an executor bug must fail the job, not kill the worker
            logger.error("job %d: executor error", self.job_id, exc_info=first_cause(exc)[0])
            return Conclude(status="FAILED", error_message=f"worker error: {one_line(exc)}")


def _finish(receipt: Conclude, attempt: int | None, elapsed_s: float) -> Conclude:
    metrics = dict(receipt.metrics)
    metrics.setdefault("duration_s", round(elapsed_s, 3))
    return attrs.evolve(receipt, attempt=attempt, metrics=metrics)
