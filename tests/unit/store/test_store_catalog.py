"""The catalog: dispatch resolution, publishing, topics, routing, files."""

from __future__ import annotations

import pytest

from casparian_trio.errors import CatalogError, StoreError
from casparian_trio.store import EnvSpec, JobRow, Store

NOW = 1_700_000_000.0
SOURCE = "class Handler:\n    pass\n"


async def publish(
    store: Store, version: str = "1.0", *, artifact: str = "a1", **kw: object
) -> tuple[int, bool]:
    params: dict[str, object] = {
        "plugin_name": "p",
        "version": version,
        "source_code": SOURCE + f"# {version}\n",
        "source_hash": f"src-{version}",
        "env_hash": None,
        "artifact_hash": artifact,
        "manifest": {},
        "now": NOW,
    }
    params.update(kw)
    return await store.publish_manifest(**params)  # type: ignore[arg-type]


async def queued_job(store: Store, **enqueue_kw: object) -> int:
    root_id, _ = await store.add_source_root("/data")
    fv, _ = await store.record_file(
        source_root_id=root_id, rel_path="in/a.csv", size=3, mtime=NOW, content_hash="h1", now=NOW
    )
    job_id, _ = await store.enqueue(fv, "p", now=NOW, **enqueue_kw)  # type: ignore[arg-type]
    return job_id


async def claimed(store: Store) -> JobRow:
    job = await store.claim(capabilities=["*"], worker_id="w", now=NOW)
    assert job is not None
    return job


async def test_resolve_full_dispatch(store: Store) -> None:
    await queued_job(store, timeout_s=None)
    await publish(store, env_hash="e1", manifest={"timeout_s": 30, "memory_mb": 512})
    await store.record_environment(
        EnvSpec(env_hash="e1", lockfile="lock", python_version="3.11"), now=NOW
    )
    await store.set_topic(
        "p", "errors", "sqlite://out.db/errors", mode="replace", schema_json='{"a": 1}'
    )
    plan = await store.resolve_dispatch(await claimed(store))
    d = plan.dispatch
    assert d.file_path == "/data/in/a.csv"
    assert (d.env_hash, d.artifact_hash, d.attempt, d.timeout_s) == ("e1", "a1", 1, 30.0)
    assert d.memory_limit_mb == 512
    assert [(s.topic, s.uri, s.mode, s.schema_def) for s in d.sinks] == [
        ("errors", "sqlite://out.db/errors", "replace", '{"a": 1}'),
        ("output", "parquet://p", "append", None),
    ]
    assert plan.env == EnvSpec(env_hash="e1", lockfile="lock", python_version="3.11")


async def test_manifest_reuse_guest_false_makes_a_single_use_guest_dispatch(store: Store) -> None:
    await queued_job(store)
    await publish(store, manifest={"reuse_guest": False})
    assert (await store.resolve_dispatch(await claimed(store))).dispatch.single_use_guest


async def test_guests_are_reused_unless_the_manifest_says_not(store: Store) -> None:
    await queued_job(store)
    await publish(store, manifest={})
    assert not (await store.resolve_dispatch(await claimed(store))).dispatch.single_use_guest


async def test_dispatch_carries_the_queued_version_for_the_input_check(store: Store) -> None:
    await queued_job(store)
    await publish(store)
    d = (await store.resolve_dispatch(await claimed(store))).dispatch
    assert (d.source_root, d.file_size, d.file_mtime) == ("/data", 3, NOW)


async def test_a_touch_without_new_content_keeps_the_queued_version_current(
    store: Store,
) -> None:
    await queued_job(store)
    await publish(store)
    root_id, _ = await store.add_source_root("/data")
    # rescanned after a touch: same content, so the same version, with the new mtime
    await store.record_file(
        source_root_id=root_id,
        rel_path="in/a.csv",
        size=3,
        mtime=NOW + 60.5,
        content_hash="h1",
        now=NOW,
    )
    d = (await store.resolve_dispatch(await claimed(store))).dispatch
    assert (d.file_size, d.file_mtime) == (3, NOW + 60.5)


async def test_an_older_version_carries_its_own_size_and_whole_second_mtime(
    store: Store,
) -> None:
    await queued_job(store)
    await publish(store)
    root_id, _ = await store.add_source_root("/data")
    await store.record_file(
        source_root_id=root_id,
        rel_path="in/a.csv",
        size=9,
        mtime=NOW + 60.5,
        content_hash="h2",
        now=NOW,
    )
    d = (await store.resolve_dispatch(await claimed(store))).dispatch
    assert (d.source_root, d.file_size, d.file_mtime) == ("/data", 3, NOW)


async def test_config_overrides_replace_sinks_by_topic(store: Store) -> None:
    overrides = {
        "sinks": [
            {
                "topic": "output",
                "uri": "parquet:///tmp/x",
                "mode": "replace",
                "schema_def": {"id": "int64"},
            }
        ],
        "config": {"delimiter": ";"},
    }
    await queued_job(store, config_overrides=overrides, timeout_s=5.0)
    await publish(store, manifest={"timeout_s": 30})
    await store.set_topic("p", "output", "parquet://configured")
    plan = await store.resolve_dispatch(await claimed(store))
    [sink] = plan.dispatch.sinks
    assert (sink.topic, sink.uri, sink.mode, sink.schema_def) == (
        "output",
        "parquet:///tmp/x",
        "replace",
        '{"id": "int64"}',
    )
    assert plan.dispatch.config == {"delimiter": ";"}
    assert plan.dispatch.timeout_s == 5.0  # the job's own timeout wins
    assert plan.dispatch.env_hash == "system"
    assert plan.env is None


async def test_missing_manifest_is_a_catalog_error(store: Store) -> None:
    job_id = await queued_job(store)
    job = await claimed(store)
    with pytest.raises(CatalogError, match=r"no ACTIVE manifest for plugin 'p'.*publish") as info:
        await store.resolve_dispatch(job)
    assert info.value.job_id == job_id


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("DELETE FROM cf_source_root", "source root"),
        ("DELETE FROM cf_file_location", "no file location"),
        ("DELETE FROM cf_file_version", "does not exist"),
    ],
)
async def test_missing_file_pieces_are_catalog_errors(
    store: Store, breakage: str, message: str
) -> None:
    job_id = await queued_job(store)
    await publish(store)
    job = await claimed(store)
    # simulate a database damaged by hand: the pragma only works outside a transaction
    store.db._conn.execute("PRAGMA foreign_keys = OFF")
    store.db.run_sync(lambda c: c.execute(breakage))
    with pytest.raises(CatalogError, match=message) as info:
        await store.resolve_dispatch(job)
    assert info.value.job_id == job_id


async def test_malformed_sink_override_is_a_catalog_error(store: Store) -> None:
    await queued_job(store, config_overrides={"sinks": [{"topic": "output"}]})
    await publish(store)
    with pytest.raises(CatalogError, match="'topic' and 'uri'"):
        await store.resolve_dispatch(await claimed(store))


async def test_a_sink_mode_the_protocol_does_not_know_is_a_catalog_error(store: Store) -> None:
    job_id = await queued_job(
        store, config_overrides={"sinks": [{"topic": "output", "uri": "u", "mode": "upsert"}]}
    )
    await publish(store)
    with pytest.raises(CatalogError, match="sink mode must be one of") as info:
        await store.resolve_dispatch(await claimed(store))
    assert info.value.job_id == job_id


async def test_publish_supersedes_and_is_idempotent(store: Store) -> None:
    first, created = await publish(store, "1.0", artifact="a1")
    assert created
    assert await publish(store, "1.0", artifact="a1") == (first, False)
    second, created = await publish(store, "2.0", artifact="a2")
    assert created
    assert second != first
    rows = store.db.run_sync(
        lambda c: c.execute("SELECT id, status FROM cf_plugin_manifest ORDER BY id").fetchall()
    )
    assert [tuple(r) for r in rows] == [(first, "SUPERSEDED"), (second, "ACTIVE")]
    # republishing the old source (source_hash is UNIQUE) reactivates its row
    again, created = await publish(store, "1.0", artifact="a1")
    assert (again, created) == (first, True)
    rows = store.db.run_sync(
        lambda c: c.execute("SELECT id, status FROM cf_plugin_manifest ORDER BY id").fetchall()
    )
    assert [tuple(r) for r in rows] == [(first, "ACTIVE"), (second, "SUPERSEDED")]


async def test_same_source_under_another_plugin_is_refused(store: Store) -> None:
    await publish(store)
    with pytest.raises(StoreError, match="already published as plugin 'p'"):
        await publish(store, plugin_name="q", artifact="other")


async def test_environment_is_recorded_once(store: Store) -> None:
    spec = EnvSpec(env_hash="e", lockfile="one")
    await store.record_environment(spec, now=NOW)
    await store.record_environment(EnvSpec(env_hash="e", lockfile="two"), now=NOW)
    assert await store.get_environment("e") == spec
    assert await store.get_environment("system") is None
    assert await store.get_environment("nope") is None


async def test_set_topic_upserts(store: Store) -> None:
    await store.set_topic("p", "output", "parquet://one")
    await store.set_topic("p", "output", "parquet://two", mode="replace")
    rows = store.db.run_sync(
        lambda c: c.execute("SELECT uri, mode FROM cf_topic_config").fetchall()
    )
    assert [tuple(r) for r in rows] == [("parquet://two", "replace")]


async def test_routing_rules(store: Store) -> None:
    rule, created = await store.add_routing_rule("*.csv", "p", now=NOW)
    assert created
    assert await store.add_routing_rule("*.csv", "p", priority=5) == (rule, False)
    await store.add_routing_rule("*.json", "q", priority=1)
    rules = await store.routing_rules()
    assert [(r["pattern"], r["plugin_name"], r["priority"]) for r in rules] == [
        ("*.csv", "p", 5),
        ("*.json", "q", 1),
    ]


async def test_source_roots(store: Store) -> None:
    root, created = await store.add_source_root("/a")
    assert created
    assert await store.add_source_root("/a") == (root, False)
    assert [r["path"] for r in await store.source_roots()] == ["/a"]


async def test_record_file_versions_only_on_content_change(store: Store) -> None:
    root, _ = await store.add_source_root("/a")
    kw = {"source_root_id": root, "rel_path": "x/f.csv", "now": NOW}
    v1, new = await store.record_file(size=1, mtime=1.0, content_hash="h1", **kw)  # type: ignore[arg-type]
    assert new
    assert await store.record_file(size=1, mtime=2.0, content_hash="h1", **kw) == (v1, False)  # type: ignore[arg-type]
    v2, new = await store.record_file(size=2, mtime=3.0, content_hash="h2", **kw)  # type: ignore[arg-type]
    assert new
    assert v2 != v1
    assert await store.file_location_state(root) == {"x/f.csv": (3.0, 2)}
    with pytest.raises(CatalogError, match="source root 99"):
        await store.record_file(
            source_root_id=99, rel_path="f", size=1, mtime=None, content_hash="h", now=NOW
        )


async def test_record_file_adopts_a_seed_version(seed_db: tuple[object, object]) -> None:
    from casparian_trio.store import open_database

    store = Store(open_database(seed_db[0], inline=True))  # type: ignore[arg-type]
    assert await store.record_file(
        source_root_id=1,
        rel_path="test_input.csv",
        size=100,
        mtime=1.0,
        content_hash="test_hash_abc123",
        now=NOW,
    ) == (1, False)
