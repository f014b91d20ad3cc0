"""The Sentinel's pure decisions, table-driven: no Trio, no store, no clock."""

from __future__ import annotations

import pytest

from casparian_trio.protocol import Artifact, Conclude, Dispatch
from casparian_trio.sentinel.decisions import (
    Action,
    Verdict,
    judge_receipt,
    needs_env,
    result_summary,
    with_defaults,
)
from casparian_trio.sentinel.registry import AbortReason, HeldJob

TIMEOUT_S = 30.0


def held(abort_reason: AbortReason | None = None) -> HeldJob:
    return HeldJob(
        job_id=1, attempt=1, plugin_name="p", timeout_s=TIMEOUT_S, abort_reason=abort_reason
    )


# (receipt status, its error message, why the Sentinel aborted it, the verdict)
RECEIPT_CASES: list[tuple[str, str | None, AbortReason | None, Verdict]] = [
    ("SUCCESS", None, None, Verdict(Action.COMPLETE, "COMPLETED")),
    # a success wins over an abort that crossed it on the wire
    ("SUCCESS", None, AbortReason.TIMEOUT, Verdict(Action.COMPLETE, "COMPLETED")),
    ("SUCCESS", None, AbortReason.CANCEL, Verdict(Action.COMPLETE, "COMPLETED")),
    ("FAILED", "ValueError: bad row", None, Verdict(Action.FAIL, "FAILED", "ValueError: bad row")),
    (
        "FAILED",
        None,
        None,
        Verdict(Action.FAIL, "FAILED", "the plugin failed without a message"),
    ),
    # the worker enforced the timeout itself
    (
        "FAILED",
        "timed out after 30 s",
        None,
        Verdict(Action.FAIL, "TIMED_OUT", "timed out after 30 s"),
    ),
    ("FAILED", "boom", AbortReason.TIMEOUT, Verdict(Action.FAIL, "TIMED_OUT", "boom")),
    ("FAILED", "boom", AbortReason.CANCEL, Verdict(Action.FAIL, "FAILED", "boom")),
    (
        "ABORTED",
        "aborted",
        AbortReason.TIMEOUT,
        Verdict(Action.FAIL, "TIMED_OUT", "timed out after 30 s (aborted by the Sentinel)"),
    ),
    (
        "ABORTED",
        "aborted",
        AbortReason.CANCEL,
        Verdict(Action.REQUEUE, "ABORTED", "cancelled by an operator"),
    ),
    # nobody asked: a draining worker hands the job back, uncounted
    (
        "ABORTED",
        None,
        None,
        Verdict(Action.REQUEUE, "HANDED_BACK", "handed back by a draining worker"),
    ),
    ("ABORTED", "shutdown", None, Verdict(Action.REQUEUE, "HANDED_BACK", "shutdown")),
]


@pytest.mark.parametrize(("status", "error", "reason", "verdict"), RECEIPT_CASES)
def test_judge_receipt(
    status: str, error: str | None, reason: AbortReason | None, verdict: Verdict
) -> None:
    receipt = Conclude(status=status, error_message=error)
    assert judge_receipt(held(reason), receipt) == verdict


# (deterministic receipt?, MANIFEST retries, this attempt, timed out?, the action)
DETERMINISTIC_CASES: list[tuple[bool, int | None, int, bool, Action]] = [
    (True, None, 1, False, Action.FAIL_NOW),  # the plugin raised: failing again is certain
    (True, 0, 1, False, Action.FAIL_NOW),
    (True, 2, 1, False, Action.FAIL),  # MANIFEST retries: 2 -> attempts 1 and 2 retried
    (True, 2, 2, False, Action.FAIL),
    (True, 2, 3, False, Action.FAIL_NOW),
    (False, None, 1, False, Action.FAIL),  # transient (signal, disk): retried with backoff
    (True, None, 1, True, Action.FAIL),  # a timeout is never deterministic
]


@pytest.mark.parametrize(
    ("deterministic", "retries", "attempt", "timed_out", "action"), DETERMINISTIC_CASES
)
def test_deterministic_failures_are_not_retried(
    deterministic: bool, retries: int | None, attempt: int, timed_out: bool, action: Action
) -> None:
    job = held(AbortReason.TIMEOUT if timed_out else None)
    job.retries = retries
    job.attempt = attempt
    receipt = Conclude(status="FAILED", error_message="boom", deterministic=deterministic)
    assert judge_receipt(job, receipt).action is action


GONE = "file gone: /r/a.csv (deleted since scan)"
CHANGED = "file changed since scan: /r/a.csv; the next scan queues the new version"

# (skip_reason, deterministic?, the verdict): the input was not the queued version
SKIP_CASES: list[tuple[str | None, bool, Verdict]] = [
    ("gone", False, Verdict(Action.END, "SKIPPED", GONE)),
    ("superseded", False, Verdict(Action.END, "SUPERSEDED", CHANGED)),
    # the skip wins over whatever else the receipt says: not counted, not retried
    ("superseded", True, Verdict(Action.END, "SUPERSEDED", CHANGED)),
    # a reason this Sentinel does not know: an ordinary failure
    ("vanished", False, Verdict(Action.FAIL, "FAILED", CHANGED)),
    (None, True, Verdict(Action.FAIL_NOW, "FAILED", CHANGED)),
]


@pytest.mark.parametrize(("skip_reason", "deterministic", "verdict"), SKIP_CASES)
def test_skipped_inputs_end_the_job(
    skip_reason: str | None, deterministic: bool, verdict: Verdict
) -> None:
    error = verdict.error or ""
    receipt = Conclude(
        status="FAILED",
        error_message=error,
        deterministic=deterministic,
        skip_reason=skip_reason,
    )
    assert judge_receipt(held(), receipt) == verdict


SUMMARY_CASES: list[tuple[Conclude, dict[str, object]]] = [
    (
        Conclude(status="SUCCESS"),
        {"worker_id": "w1", "metrics": {}, "artifacts": [], "rows": None},
    ),
    (
        Conclude(
            status="SUCCESS",
            metrics={"rows": 3, "bytes": 100},
            artifacts=(Artifact(topic="t", uri="parquet://t/0.parquet", rows=3),),
        ),
        {
            "worker_id": "w1",
            "metrics": {"rows": 3, "bytes": 100},
            "artifacts": [{"topic": "t", "uri": "parquet://t/0.parquet", "rows": 3}],
            "rows": 3,
        },
    ),
    # the plugin's log tail is kept with the result, for `logs ID`
    (
        Conclude(status="SUCCESS", log_tail="read 3 rows"),
        {
            "worker_id": "w1",
            "metrics": {},
            "artifacts": [],
            "rows": None,
            "log_tail": "read 3 rows",
        },
    ),
]

BODY = 'Traceback (most recent call last):\n  File "plugin.py", line 3, in f\nValueError: x'
# (error_message, traceback field) -> (the job's error, its traceback)
FAILURE_CASES: list[tuple[str | None, str | None, tuple[str, str | None]]] = [
    # this worker: the whole text in error_message for old Sentinels, the body apart
    (f"plugin 'p' raised ValueError: x\n{BODY}", BODY, ("plugin 'p' raised ValueError: x", BODY)),
    # an old worker: split at the first newline
    (f"plugin 'p' raised ValueError: x\n{BODY}\n", None, ("plugin 'p' raised ValueError: x", BODY)),
    ("timed out after 30 s", None, ("timed out after 30 s", None)),
    (None, None, ("the plugin failed without a message", None)),
]


@pytest.mark.parametrize(("message", "traceback", "expected"), FAILURE_CASES)
def test_a_failure_is_recorded_as_one_line_and_a_traceback(
    message: str | None, traceback: str | None, expected: tuple[str, str | None]
) -> None:
    receipt = Conclude(status="FAILED", error_message=message, traceback=traceback)
    verdict = judge_receipt(held(), receipt)
    assert (verdict.error, verdict.traceback) == expected


@pytest.mark.parametrize(("receipt", "summary"), SUMMARY_CASES)
def test_result_summary(receipt: Conclude, summary: dict[str, object]) -> None:
    assert result_summary(receipt, "w1") == summary


def dispatch(*, env_hash: str = "e1", timeout_s: float | None = None) -> Dispatch:
    return Dispatch(
        plugin_name="p",
        file_path="/data/a.csv",
        sinks=(),
        file_version_id=1,
        env_hash=env_hash,
        source_code="class Handler: ...",
        artifact_hash="a",
        timeout_s=timeout_s,
    )


# (the dispatch's own timeout, the default, what goes on the wire)
TIMEOUT_CASES: list[tuple[float | None, float, float]] = [
    (None, 600.0, 600.0),
    (5.0, 600.0, 5.0),
    (0.5, 600.0, 0.5),
]


@pytest.mark.parametrize(("own", "default", "sent"), TIMEOUT_CASES)
def test_with_defaults(own: float | None, default: float, sent: float) -> None:
    result = with_defaults(dispatch(timeout_s=own), default_timeout_s=default)
    assert result.timeout_s == sent
    assert result == dispatch(timeout_s=sent)


# (env hash, envs the worker has, whether the Sentinel has the lockfile, PREPARE_ENV first?)
ENV_CASES: list[tuple[str, set[str], bool, bool]] = [
    ("e1", set(), True, True),
    ("e1", {"e2"}, True, True),
    ("e1", {"e1"}, True, False),
    ("e1", set(), False, False),  # nothing to describe it with: the worker must have it
    ("system", set(), True, False),
    ("system", set(), False, False),
]


@pytest.mark.parametrize(("env_hash", "ready", "has_lockfile", "expected"), ENV_CASES)
def test_needs_env(env_hash: str, ready: set[str], has_lockfile: bool, expected: bool) -> None:
    assert needs_env(dispatch(env_hash=env_hash), ready, has_lockfile) is expected
