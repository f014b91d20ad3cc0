"""A dispatch round's claims: many claims, each resolved into its dispatch, one transaction.

The Sentinel's dispatcher fills every free slot it knows of at once. Claiming
and resolving each job in transactions of its own cost two transactions per
job (a write and a read), and their commits were most of the Sentinel's work
per job; here a whole round is one ``BEGIN IMMEDIATE … COMMIT``.

Each request is one slot of one worker, in the order the slots are to be
filled; each gets the job ``queue.claim`` would have given it at that point,
i.e. exactly what one claim per slot in that order would do. A request whose
capabilities already found nothing is not asked again in this round (nothing
can become claimable inside the transaction). A job that cannot be resolved
(``CatalogError``) is still claimed: the caller records its failure, as it
would after a separate claim.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import attrs

from casparian_trio.errors import CatalogError
from casparian_trio.store import catalog, queue
from casparian_trio.store.rows import DispatchPlan, JobRow


@attrs.frozen
class ClaimRequest:
    """One slot to fill: who claims, and for which plugins.

    Attributes:
        worker_id: recorded on the job as its holder.
        capabilities: plugin names the worker runs ('*': any).
        host: the worker's host (recorded, informational).
        pid: the worker's process id (recorded, informational).
    """

    worker_id: str
    capabilities: tuple[str, ...]
    host: str | None = None
    pid: int | None = None


@attrs.frozen
class Claimed:
    """A job claimed for one request: its plan, or why it cannot be dispatched.

    Attributes:
        job: the job as claimed (RUNNING, with its new attempt).
        plan: what to send (None when ``error`` is set).
        error: the job's catalog entries are incomplete (the caller fails it).
    """

    job: JobRow
    plan: DispatchPlan | None = None
    error: CatalogError | None = None


def claim_round(
    conn: sqlite3.Connection, requests: Sequence[ClaimRequest], *, now: float
) -> list[Claimed | None]:
    """Claim and resolve one job per request, in order; None where nothing was claimable.

    Args:
        conn: inside the caller's write transaction.
        requests: one per slot to fill, in filling order.
        now: unix seconds (claim time, attempt start).

    Returns:
        One entry per request, aligned with ``requests``.
    """
    results: list[Claimed | None] = []
    exhausted: set[frozenset[str]] = set()
    for request in requests:
        caps = frozenset(request.capabilities)
        if caps in exhausted:
            results.append(None)
            continue
        job = queue.claim(
            conn,
            capabilities=request.capabilities,
            worker_id=request.worker_id,
            now=now,
            worker_host=request.host,
            worker_pid=request.pid,
        )
        if job is None:
            exhausted.add(caps)
            results.append(None)
            continue
        results.append(_resolved(conn, job))
    return results


def _resolved(conn: sqlite3.Connection, job: JobRow) -> Claimed:
    try:
        return Claimed(job=job, plan=catalog.resolve_dispatch(conn, job))
    except CatalogError as exc:
        return Claimed(job=job, error=exc)
