"""Pure decisions of the Sentinel: what a receipt means for the queue, what to dispatch.

No I/O and no clock: callers pass the facts in, the tests table-drive them.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from casparian_trio.protocol import Conclude, Dispatch
from casparian_trio.sentinel.registry import AbortReason, HeldJob


class Action(enum.Enum):
    COMPLETE = "complete"
    FAIL = "fail"  # a counted failure: retry with backoff, or FAILED after the last attempt
    FAIL_NOW = "fail_now"  # a deterministic failure: FAILED at once, not retried
    REQUEUE = "requeue"  # not the plugin's fault: straight back to QUEUED, attempt not counted


@attrs.frozen
class Verdict:
    action: Action
    outcome: str  # the attempt-history outcome
    error: str | None = None


def judge_receipt(held: HeldJob, receipt: Conclude) -> Verdict:
    """Map a CONCLUDE onto the queue (``tests/unit/sentinel/test_decisions.py`` tables every case).

    A cancel request wins whatever the receipt says; the store enforces that, so
    here an operator's ABORT simply hands the job back.
    """
    if receipt.status == "SUCCESS":
        return Verdict(Action.COMPLETE, "COMPLETED")
    if receipt.status == "FAILED":
        error = receipt.error_message or "the plugin failed without a message"
        timed_out = held.abort_reason is AbortReason.TIMEOUT or error.startswith("timed out")
        if receipt.deterministic and not timed_out and not held.retry_deterministic:
            return Verdict(Action.FAIL_NOW, "FAILED", error)
        return Verdict(Action.FAIL, "TIMED_OUT" if timed_out else "FAILED", error)
    if held.abort_reason is AbortReason.TIMEOUT:
        return Verdict(
            Action.FAIL,
            "TIMED_OUT",
            f"timed out after {held.timeout_s:g} s (aborted by the Sentinel)",
        )
    if held.abort_reason is AbortReason.CANCEL:
        return Verdict(Action.REQUEUE, "ABORTED", "cancelled by an operator")
    # An ABORTED receipt nobody asked for: the worker is shutting down and hands the job back.
    return Verdict(
        Action.REQUEUE, "HANDED_BACK", receipt.error_message or "handed back by a draining worker"
    )


def result_summary(receipt: Conclude, worker_id: str) -> dict[str, Any]:
    """What `job ID` shows for a completed job."""
    return {
        "worker_id": worker_id,
        "metrics": dict(receipt.metrics),
        "artifacts": [a.to_json() for a in receipt.artifacts],
        "rows": receipt.metrics.get("rows"),
    }


def with_defaults(dispatch: Dispatch, *, default_timeout_s: float) -> Dispatch:
    """Every dispatch carries a timeout, so the worker enforces one even for old manifests."""
    if dispatch.timeout_s is None:
        return attrs.evolve(dispatch, timeout_s=default_timeout_s)
    return dispatch


def needs_env(dispatch: Dispatch, envs_ready: set[str], has_lockfile: bool) -> bool:
    """PREPARE_ENV first when the Sentinel can describe an env the worker lacks."""
    return has_lockfile and dispatch.env_hash != "system" and dispatch.env_hash not in envs_ready
