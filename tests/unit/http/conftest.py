"""A seeded in-memory database for the dashboard's unit tests (see ``http_seed``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from http_seed import Seeded, seed

from casparian_trio.store import Database, open_database


@pytest.fixture
def db() -> Iterator[Database]:
    database = open_database(":memory:")
    yield database
    database.close()


@pytest.fixture
def seeded(db: Database) -> Seeded:
    return db.run_sync(seed)
