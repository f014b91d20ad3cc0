"""A batch of receipts recorded in one transaction, each exactly as its own store call would.

The Sentinel reads every CONCLUDE that has arrived before it records any, and
records them together: one ``BEGIN IMMEDIATE … COMMIT`` instead of one per job
(the commit was most of a receipt's cost). Each receipt runs the same sync
function as the single call (``queue.fail``, ``topics.complete_with_outputs``...)
inside a SAVEPOINT: when one raises, the receipts before it are kept (as they
would have been, committed one by one), nothing after it runs, and the error
is handed back with the results so far (a batch of one raises it, rolling its
transaction back, as its own call did). An error of SQLite itself (a full disk,
a busy lock) rolls the whole batch back instead: it concerns all of them.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Sequence
from typing import Any

import attrs

from casparian_trio.store import queue, topics
from casparian_trio.store.topics import TopicOutput


class Write(enum.Enum):
    """Which single store call a receipt stands for."""

    COMPLETE = "complete"  # Store.complete: bool
    FAIL = "fail"  # Store.fail: new status or None
    END = "end"  # Store.end_unretried: new status or None
    REQUEUE = "requeue"  # Store.requeue: new status or None


@attrs.frozen
class ReceiptWrite:
    """The arguments of one receipt's store call (see ``Write`` for which).

    Attributes:
        write: which call.
        job_id: the job.
        attempt: the attempt the receipt is for (another one is stale: no change).
        result_summary: COMPLETE: what ``job ID`` shows.
        outputs: COMPLETE: the receipt's topics.
        error: FAIL/END/REQUEUE: the one-line reason.
        outcome: FAIL/REQUEUE: the attempt's outcome; END: SUPERSEDED or SKIPPED.
        traceback: FAIL: the failure's traceback.
        final: FAIL: deterministic, FAILED at once.
    """

    write: Write
    job_id: int
    attempt: int
    result_summary: dict[str, Any] | None = None
    outputs: tuple[TopicOutput, ...] = ()
    error: str = ""
    outcome: str = ""
    traceback: str | None = None
    final: bool = False


@attrs.frozen
class Recorded:
    """What a batch did: one result per receipt that ran, and the error that stopped it.

    Attributes:
        results: aligned with the receipts (fewer when ``error`` stopped the batch):
            COMPLETE gives a bool, the others the new status or None (stale).
        error: what the receipt after the last result raised (None: all ran).
    """

    results: tuple[bool | str | None, ...]
    error: Exception | None = None


def record_receipts(
    conn: sqlite3.Connection,
    writes: Sequence[ReceiptWrite],
    *,
    now: float,
    backoff_base_s: float,
    backoff_cap_s: float,
) -> Recorded:
    """Run each write in order inside the caller's transaction (see the module docstring)."""
    if len(writes) == 1:  # alone, an error rolls it back as its own call would: no SAVEPOINT
        return Recorded((_one(conn, writes[0], now, backoff_base_s, backoff_cap_s),))
    results: list[bool | str | None] = []
    for write in writes:
        conn.execute("SAVEPOINT receipt")
        try:
            result = _one(conn, write, now, backoff_base_s, backoff_cap_s)
        except sqlite3.Error:
            raise  # SQLite itself failed (or is busy: the caller retries): the whole batch
        except Exception as exc:
            conn.execute("ROLLBACK TO receipt")
            conn.execute("RELEASE receipt")
            return Recorded(tuple(results), exc)
        conn.execute("RELEASE receipt")
        results.append(result)
    return Recorded(tuple(results))


def _one(
    conn: sqlite3.Connection, w: ReceiptWrite, now: float, base_s: float, cap_s: float
) -> bool | str | None:
    if w.write is Write.COMPLETE:
        return topics.complete_with_outputs(
            conn,
            w.job_id,
            w.attempt,
            result_summary=w.result_summary or {},
            now=now,
            outputs=w.outputs,
        )
    if w.write is Write.FAIL:
        return queue.fail(
            conn,
            w.job_id,
            w.attempt,
            error=w.error,
            now=now,
            outcome=w.outcome,
            traceback=w.traceback,
            backoff_base_s=base_s,
            backoff_cap_s=cap_s,
            final=w.final,
        )
    if w.write is Write.END:
        return queue.end_unretried(
            conn, w.job_id, w.attempt, status=w.outcome, reason=w.error, now=now
        )
    return queue.requeue(
        conn,
        w.job_id,
        w.attempt,
        reason=w.error,
        now=now,
        counted=False,
        outcome=w.outcome,
        backoff_base_s=base_s,
        backoff_cap_s=cap_s,
    )
