"""Fixtures for the store's unit tests: in-memory databases and the seed database."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from casparian_trio.store import Database, Store, open_database

SEED_SQL = Path(__file__).resolve().parents[2] / "fixtures" / "seed_phase4.sql"
NOW = 1_700_000_000.0  # a fixed unix time; tests pass time explicitly


def build_seed_db(directory: Path) -> tuple[Path, Path]:
    """Create a database exactly as the seed does; return (db path, data dir)."""
    data_dir = directory / "data"
    data_dir.mkdir()
    (data_dir / "test_input.csv").write_text("id,value\n1,10.5\n2,20.3\n3,30.1\n")
    db_path = directory / "seed.db"
    conn = sqlite3.connect(db_path)
    conn.executescript(SEED_SQL.read_text().replace("{{DATA_DIR}}", str(data_dir)))
    conn.close()
    return db_path, data_dir


def add_file_versions(db: Database, count: int, *, root: str = "/data") -> list[int]:
    """Create ``count`` file versions under one source root; return their ids."""

    def fn(conn: sqlite3.Connection) -> list[int]:
        conn.execute("INSERT OR IGNORE INTO cf_source_root (path) VALUES (?)", (root,))
        root_id = conn.execute("SELECT id FROM cf_source_root WHERE path = ?", (root,)).fetchone()[
            0
        ]
        start = conn.execute("SELECT count(*) FROM cf_file_location").fetchone()[0]
        ids = []
        for i in range(start, start + count):
            name = f"file{i}.csv"
            loc = conn.execute(
                "INSERT INTO cf_file_location (source_root_id, rel_path, filename)"
                " VALUES (?, ?, ?)",
                (root_id, name, name),
            ).lastrowid
            conn.execute(
                "INSERT OR IGNORE INTO cf_file_hash_registry (content_hash, size_bytes)"
                " VALUES (?, 1)",
                (f"h{name}",),
            )
            ids.append(
                conn.execute(
                    "INSERT INTO cf_file_version (location_id, content_hash, size_bytes,"
                    " modified_time) VALUES (?, ?, 1, 'x')",
                    (loc, f"h{name}"),
                ).lastrowid
            )
        return ids

    return db.run_sync(fn)


@pytest.fixture
def db() -> Iterator[Database]:
    database = open_database(":memory:", inline=True)
    yield database
    database.close()


@pytest.fixture
def store(db: Database) -> Store:
    return Store(db)


@pytest.fixture
def file_versions() -> Callable[..., list[int]]:
    """``file_versions(db, n)`` creates n file versions and returns their ids."""
    return add_file_versions


@pytest.fixture
def seed_db(tmp_path: Path) -> tuple[Path, Path]:
    return build_seed_db(tmp_path)
