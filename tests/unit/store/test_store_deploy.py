"""A deploy is one transaction: environment, manifest, topics and routing rule, or nothing."""

from __future__ import annotations

import sqlite3

import attrs
import pytest

from casparian_trio.errors import StoreError
from casparian_trio.plugins import release_of
from casparian_trio.protocol import Deploy
from casparian_trio.store import Database, PluginRelease, Store, TopicSink

NOW = 1_700_000_000.0
SOURCE = (
    "MANIFEST = {'pattern': '*.csv', 'topic': 'sales',"
    " 'topics': {'rejects': 'parquet://rejects'}, 'priority': 3}\n"
    "class Handler:\n    pass\n"
)
TABLES = ("cf_plugin_environment", "cf_plugin_manifest", "cf_topic_config", "cf_routing_rule")


def release(**changes: object) -> PluginRelease:
    deploy = Deploy(
        plugin_name="sales",
        version="1",
        source_code=SOURCE,
        lockfile="version = 1\n",
        pyproject="[project]\nname = 'p'\n",
        env_hash="ignored: the Sentinel re-hashes",
        artifact_hash="ignored",
        manifest={},
    )
    return attrs.evolve(release_of(deploy), **changes)  # type: ignore[arg-type]


def counts(db: Database) -> dict[str, int]:
    def fn(conn: sqlite3.Connection) -> dict[str, int]:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}

    return db.run_sync(fn, readonly=True)


async def test_a_deploy_records_env_manifest_topics_and_rule(db: Database, store: Store) -> None:
    manifest_id, created, _ = await store.record_deploy(release(), now=NOW)
    assert created
    assert counts(db) == dict.fromkeys(TABLES, 1) | {"cf_topic_config": 2}
    rules = await store.routing_rules()
    assert [(r["pattern"], r["plugin_name"], r["priority"]) for r in rules] == [
        ("*.csv", "sales", 3)
    ]
    assert await store.record_deploy(release(), now=NOW) == (manifest_id, False, 0)


async def test_a_failure_part_way_leaves_nothing_of_the_deploy(db: Database, store: Store) -> None:
    good = release()
    bad_topic = TopicSink("rejects", None)  # type: ignore[arg-type]  # uri is NOT NULL
    with pytest.raises(StoreError, match="NOT NULL"):
        await store.record_deploy(attrs.evolve(good, topics=(good.topics[0], bad_topic)), now=NOW)
    assert counts(db) == dict.fromkeys(TABLES, 0)
