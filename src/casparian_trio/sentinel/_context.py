"""What the Sentinel's parts share: one object instead of the same six fields in each.

The dispatcher, recovery, reactions and presence each hold a ``SentinelContext``
and nothing else in common. There is one per Sentinel; its parts mutate the
registry, put on the outbox and wake the dispatcher, never replace them.
Decision times come from ``trio.current_time()``; times written to the database
come from ``wall()`` (a virtual wall clock in MockClock tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs

from casparian_trio.config import SentinelConfig
from casparian_trio.sentinel._outbox import Outbox
from casparian_trio.sentinel._waker import Waker
from casparian_trio.sentinel.registry import Registry
from casparian_trio.store import Store


@attrs.define(eq=False, kw_only=True)
class SentinelContext:
    """The Sentinel's shared state and collaborators.

    Attributes:
        config: the Sentinel's settings.
        store: the job queue and catalog.
        registry: the connected workers and the jobs each holds (memory only).
        outbox: the bounded channel to the socket's sender task.
        waker: wakes the dispatcher (a slot freed, work committed, a worker joined).
        wall: the clock for times written to the database.
        source_roots: the active source roots, told to workers.
    """

    config: SentinelConfig
    store: Store
    registry: Registry = attrs.field(factory=Registry)
    outbox: Outbox = attrs.field(factory=Outbox)
    waker: Waker = attrs.field(factory=Waker)
    wall: Callable[[], float] = time.time
    # Active source roots (absolute), announced to workers in every answer so
    # they refuse inputs outside them; refreshed when the database changes.
    source_roots: tuple[str, ...] = ()
