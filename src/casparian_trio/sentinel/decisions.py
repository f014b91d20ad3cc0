"""Pure decisions of the Sentinel: what a receipt means for the queue, what to dispatch.

No I/O and no clock: callers pass the facts in, the tests table-drive them.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from casparian_trio.failure_text import split_message
from casparian_trio.protocol import Conclude, Dispatch
from casparian_trio.sentinel.registry import AbortReason, HeldJob


class Action(enum.Enum):
    COMPLETE = "complete"
    FAIL = "fail"  # a counted failure: retry with backoff, or FAILED after the last attempt
    FAIL_NOW = "fail_now"  # a deterministic failure: FAILED at once, not retried
    REQUEUE = "requeue"  # not the plugin's fault: straight back to QUEUED, attempt not counted
    # the input is not the queued version: SUPERSEDED/SKIPPED (the outcome), not
    # counted, not retried
    END = "end"


# Conclude.skip_reason → the job's (and the attempt's) final state.
SKIP_STATUSES = {"superseded": "SUPERSEDED", "gone": "SKIPPED"}


@attrs.frozen
class Verdict:
    action: Action
    outcome: str  # the attempt-history outcome
    error: str | None = None  # one line
    traceback: str | None = None  # a failure's traceback and/or guest output tail


def judge_receipt(held: HeldJob, receipt: Conclude) -> Verdict:
    """Map a CONCLUDE onto the queue (``tests/unit/sentinel/test_decisions.py`` tables every case).

    A cancel request wins whatever the receipt says; the store enforces that, so
    here an operator's ABORT simply hands the job back.
    """
    if receipt.status == "SUCCESS":
        return Verdict(Action.COMPLETE, "COMPLETED")
    if receipt.status == "FAILED":
        error, traceback = failure_parts(receipt)
        skipped = SKIP_STATUSES.get(receipt.skip_reason or "")
        if skipped is not None:
            return Verdict(Action.END, skipped, error)
        timed_out = held.abort_reason is AbortReason.TIMEOUT or error.startswith("timed out")
        retries_left = (held.retries or 0) >= held.attempt  # attempt N is retry N - 1
        if receipt.deterministic and not timed_out and not retries_left:
            return Verdict(Action.FAIL_NOW, "FAILED", error, traceback)
        return Verdict(Action.FAIL, "TIMED_OUT" if timed_out else "FAILED", error, traceback)
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


def failure_parts(receipt: Conclude) -> tuple[str, str | None]:
    """A FAILED receipt's (one-line error, traceback).

    A receipt with ``traceback`` (this worker) still has the whole text in
    ``error_message``, for old Sentinels: its first line is the error. One
    without (an old worker) is split at its first newline.
    """
    head, body = split_message(receipt.error_message or "the plugin failed without a message")
    if receipt.traceback is not None:
        return head, receipt.traceback.strip() or None
    return head, body


def result_summary(receipt: Conclude, worker_id: str) -> dict[str, Any]:
    """What `job ID` shows for a completed job (and `logs ID`: its plugin's log tail)."""
    summary: dict[str, Any] = {
        "worker_id": worker_id,
        "metrics": dict(receipt.metrics),
        "artifacts": [a.to_json() for a in receipt.artifacts],
        "rows": receipt.metrics.get("rows"),
    }
    if receipt.log_tail:
        summary["log_tail"] = receipt.log_tail
    return summary


def with_defaults(dispatch: Dispatch, *, default_timeout_s: float) -> Dispatch:
    """Every dispatch carries a timeout, so the worker enforces one even for old manifests."""
    if dispatch.timeout_s is None:
        return attrs.evolve(dispatch, timeout_s=default_timeout_s)
    return dispatch


def needs_env(dispatch: Dispatch, envs_ready: set[str], has_lockfile: bool) -> bool:
    """PREPARE_ENV first when the Sentinel can describe an env the worker lacks."""
    return has_lockfile and dispatch.env_hash != "system" and dispatch.env_hash not in envs_ready
