"""Migrations: fresh and upgraded-seed databases end with the same schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from casparian_trio.errors import SchemaError
from casparian_trio.store import Store, migrate, open_database
from casparian_trio.store._conn import connect
from casparian_trio.store._migrate import latest_version, migrations
from casparian_trio.store.scans import record_deletions

NOW = 1_700_000_000.0

SEED_TABLES = {
    "cf_source_root",
    "cf_file_location",
    "cf_file_hash_registry",
    "cf_file_version",
    "cf_plugin_manifest",
    "cf_processing_queue",
    "cf_topic_config",
}
NEW_TABLES = {
    "cf_job_attempt",
    "cf_plugin_environment",
    "cf_routing_rule",
    "cf_worker",
    "cf_sentinel",
    "cf_topic_contract",
    "cf_job_topic_output",
}


def schema_snapshot(conn: sqlite3.Connection) -> dict[str, object]:
    """Every object's normalised SQL plus per-table columns, indexes and foreign keys."""
    objects = {
        (row[0], row[1]): " ".join((row[2] or "").split())
        for row in conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        )
    }
    tables = [name for (kind, name) in objects if kind == "table"]
    details = {
        t: (
            [tuple(r) for r in conn.execute(f"PRAGMA table_info({t})")],
            sorted(tuple(r)[1:] for r in conn.execute(f"PRAGMA index_list({t})")),
            [tuple(r) for r in conn.execute(f"PRAGMA foreign_key_list({t})")],
        )
        for t in tables
    }
    return {"objects": objects, "details": details}


def table_names(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_migrations_are_numbered_from_one() -> None:
    assert [v for v, _, _ in migrations()] == list(range(1, latest_version() + 1))


def test_fresh_database_has_seed_and_new_tables() -> None:
    conn = connect(":memory:")
    assert migrate(conn) == latest_version()
    assert table_names(conn) >= SEED_TABLES | NEW_TABLES


def test_fresh_and_upgraded_seed_have_the_same_schema(seed_db: tuple[Path, Path]) -> None:
    fresh = connect(":memory:")
    migrate(fresh)
    upgraded = connect(seed_db[0])
    migrate(upgraded)
    assert schema_snapshot(upgraded) == schema_snapshot(fresh)


def test_seed_upgrade_keeps_rows_and_normalises_status(seed_db: tuple[Path, Path]) -> None:
    conn = connect(seed_db[0])
    before = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in SEED_TABLES}
    conn.execute("UPDATE cf_processing_queue SET status = 'PENDING'")
    migrate(conn)
    after = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in SEED_TABLES}
    assert after == before
    row = conn.execute("SELECT status, attempt, max_attempts, created_at FROM cf_processing_queue")
    status, attempt, max_attempts, created_at = row.fetchone()
    assert (status, attempt, max_attempts) == ("QUEUED", 0, 3)
    assert created_at is not None


def test_migrate_twice_is_a_no_op(seed_db: tuple[Path, Path]) -> None:
    conn = connect(seed_db[0])
    migrate(conn)
    snapshot = schema_snapshot(conn)
    assert migrate(conn) == latest_version()
    assert schema_snapshot(conn) == snapshot


def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {latest_version() + 1}")
    raw.close()
    with pytest.raises(SchemaError, match="newer than this casparian_trio"):
        open_database(path)


def test_failed_migration_rolls_back_whole(seed_db: tuple[Path, Path]) -> None:
    conn = connect(seed_db[0])
    conn.execute(
        "INSERT INTO cf_processing_queue (file_version_id, plugin_name) VALUES (1, 'test_plugin')"
    )  # a duplicate job: the idempotent-enqueue unique index cannot be built
    with pytest.raises(SchemaError, match=r"migration 002_lifecycle\.sql failed"):
        migrate(conn)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert not conn.in_transaction
    columns = {r[1] for r in conn.execute("PRAGMA table_info(cf_processing_queue)")}
    assert "attempt" not in columns


def test_legacy_pending_insert_becomes_queued(seed_db: tuple[Path, Path]) -> None:
    db = open_database(seed_db[0], inline=True)
    db.run_sync(
        lambda c: c.execute(
            "INSERT INTO cf_processing_queue (file_version_id, plugin_name) VALUES (1, 'legacy')"
        )
    )
    assert (
        db.run_sync(
            lambda c: c.execute(
                "SELECT status FROM cf_processing_queue WHERE plugin_name = 'legacy'"
            )
        ).fetchone()[0]
        == "QUEUED"
    )


@pytest.mark.parametrize(
    ("capabilities", "claimable"),
    [(["test_plugin"], True), (["*"], True), (["other"], False), ([], False)],
)
async def test_seed_job_is_claimable_by_capability(
    seed_db: tuple[Path, Path], capabilities: list[str], claimable: bool
) -> None:
    store = Store(open_database(seed_db[0], inline=True))
    job = await store.claim(capabilities=capabilities, worker_id="w1", now=NOW)
    assert (job is not None) == claimable
    if job is not None:
        assert (job.id, job.plugin_name, job.attempt, job.priority) == (1, "test_plugin", 1, 10)


async def test_seed_job_resolves_to_a_dispatch(seed_db: tuple[Path, Path]) -> None:
    db_path, data_dir = seed_db
    store = Store(open_database(db_path, inline=True))
    job = await store.claim(capabilities=["test_plugin"], worker_id="w1", now=NOW)
    assert job is not None
    plan = await store.resolve_dispatch(job)
    d = plan.dispatch
    assert d.file_path == str(data_dir / "test_input.csv")
    assert d.env_hash == "test_env_hash_123"
    assert [(s.topic, s.uri, s.mode) for s in d.sinks] == [
        ("output", "parquet://test_output.parquet", "append")
    ]
    assert d.artifact_hash == "test_source_hash_xyz"  # artifact_hash NULL → source_hash
    assert d.attempt == 1
    assert "class Handler" in d.source_code
    assert plan.env is None  # no cf_plugin_environment row for that hash


def test_a_seed_file_deleted_after_the_upgrade_is_retracted(seed_db: tuple[Path, Path]) -> None:
    # The seed leaves current_version_id NULL: the newest version is the current one.
    conn = connect(seed_db[0])
    migrate(conn)
    conn.execute("UPDATE cf_processing_queue SET status = 'COMPLETED'")
    (location_id,) = conn.execute("SELECT id FROM cf_file_location").fetchone()
    counts = record_deletions(conn, location_ids=[location_id], now=NOW)
    assert (counts.deleted, counts.retractions) == (1, 1)
    row = conn.execute(
        "SELECT kind, status, file_version_id FROM cf_processing_queue WHERE kind = 'retract'"
    ).fetchone()
    newest = conn.execute("SELECT max(id) FROM cf_file_version").fetchone()[0]
    assert tuple(row) == ("retract", "QUEUED", newest)
