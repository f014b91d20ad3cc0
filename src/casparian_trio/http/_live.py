"""What only the running Sentinel knows: each connected worker's busy and free slots.

The worker table in the database says who is there; the registry (memory of the
Sentinel's process) says how many jobs each one holds right now. Pure reads of
the registry: the dashboard runs on the Sentinel's Trio thread, so no lock.
"""

from __future__ import annotations

import attrs

from casparian_trio.sentinel.registry import Registry


@attrs.frozen(kw_only=True)
class Slots:
    """One connected worker's slots (``busy`` counts jobs held, stale ones included)."""

    worker_id: str
    slots: int
    busy: int
    free: int


def live_slots(registry: Registry | None) -> dict[str, Slots]:
    """Connected workers' slots by worker id (empty: no registry, or nobody connected)."""
    if registry is None:
        return {}
    found = {}
    for worker in registry.workers.values():
        # A job held in a prefetch slot waits for a slot: it is neither busy nor free.
        found[worker.worker_id] = Slots(
            worker_id=worker.worker_id,
            slots=worker.slots,
            busy=worker.busy_slots,
            free=worker.open_slots,
        )
    return found


def slot_totals(slots: dict[str, Slots]) -> tuple[int, int]:
    """(busy, free) over every connected worker."""
    return sum(s.busy for s in slots.values()), sum(s.free for s in slots.values())
