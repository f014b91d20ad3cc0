"""Fixtures for the deterministic Sentinel/Worker tests: MockClock, memory transport, inline SQLite.

Virtual time jumps while a thread or a real socket is pending (trio#456), so
these tests forbid both: the ``no_threads_or_sockets`` guard makes any use fail.
pytest-trio only takes the clock from the test's own arguments, so every test
asks for ``autojump_clock`` itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import trio
import trio.testing
from services_harness import Cluster

from casparian_trio.store import Store, open_database
from casparian_trio.transport import MemoryNetwork


@pytest.fixture(autouse=True)
def no_threads_or_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    async def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("MockClock tests must not use threads or real sockets")

    monkeypatch.setattr(trio.to_thread, "run_sync", refuse)
    monkeypatch.setattr(trio.lowlevel, "wait_readable", refuse)
    return


@pytest.fixture
def store() -> Iterator[Store]:
    db = open_database(":memory:", inline=True)
    try:
        yield Store(db)
    finally:
        db.close()


@pytest.fixture
async def cluster(store: Store) -> AsyncIterator[Cluster]:
    async with trio.open_nursery() as nursery:
        yield Cluster(store=store, network=MemoryNetwork(), nursery=nursery)
        nursery.cancel_scope.cancel()
