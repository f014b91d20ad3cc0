"""The catalog's sync core: files, plugins, environments, topics, routing rules.

Each function takes the connection first and runs inside one ``Database.run``
transaction. ``resolve_dispatch`` turns a claimed job into a ready ``Dispatch``
and raises ``CatalogError(job_id=...)`` naming what is missing and how to fix it.

Invariants: at most one ACTIVE manifest per plugin after ``publish_manifest``
(earlier ones become SUPERSEDED, never deleted); a file gets a new
cf_file_version only when its content hash changes.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from datetime import UTC, datetime
from typing import Any

import attrs

from casparian_trio import filenames
from casparian_trio.errors import CatalogError, LocalProtocolError, StoreError
from casparian_trio.protocol.messages import Dispatch, SinkConfig
from casparian_trio.store._sql import q
from casparian_trio.store.queue import iso_time
from casparian_trio.store.rows import (
    JOB_RETRACT,
    DispatchPlan,
    EnvSpec,
    JobRow,
    PluginRelease,
    decode_json,
)

logger = logging.getLogger(__name__)

SYSTEM_ENV = "system"  # env hash of "run in the worker's own interpreter"
DEFAULT_TOPIC = "output"  # the topic a seed-style Handler.execute() writes


# --- dispatch resolution ---------------------------------------------------------


def _file_row(conn: sqlite3.Connection, job: JobRow) -> sqlite3.Row:
    """The queued version's file row (path parts, hash, scan state), checked to be complete."""
    row: sqlite3.Row | None = conn.execute(
        q("file_of_version"), {"file_version_id": job.file_version_id}
    ).fetchone()
    if row is None:
        raise CatalogError(
            f"job {job.id}: file version {job.file_version_id} does not exist "
            "— rescan the source or cancel the job",
            job_id=job.id,
        )
    if row["rel_path"] is None:
        raise CatalogError(
            f"job {job.id}: file version {job.file_version_id} has no file location "
            "— rescan the source or cancel the job",
            job_id=job.id,
        )
    if row["root_path"] is None:
        raise CatalogError(
            f"job {job.id}: the source root of {filenames.shown(_file_path_rel(row))!r} is missing "
            "— add it again with `casparian-trio source add`",
            job_id=job.id,
        )
    return row


def _file_path_rel(row: sqlite3.Row) -> str:
    return filenames.from_db(row["rel_path"])


def _file_path(row: sqlite3.Row) -> str:
    root: str = row["root_path"]
    return os.path.join(root, filenames.from_db(row["rel_path"]))


def _content_hash(row: sqlite3.Row) -> str | None:
    return None if row["content_hash"] is None else str(row["content_hash"])


def _scanned_state(row: sqlite3.Row) -> tuple[str | None, int | None, float | None]:
    """(source root, size, mtime in seconds) of the queued version, for the worker's check.

    While the version is its location's current one, the location's last scan has
    the exact size and mtime (a ``touch`` that left the content alone updates them
    without a new version). Otherwise the version's own columns: ``modified_time``
    is whole seconds (the seed's TEXT format), which the worker's check allows for.
    """
    root = str(row["root_path"])
    current = row["current_version_id"] == row["file_version_id"]
    if current and row["last_known_mtime"] is not None and row["last_known_size"] is not None:
        return root, int(row["last_known_size"]), float(row["last_known_mtime"])
    if current or row["current_version_id"] is None:
        # Recorded by another system (the seed's database) and never scanned by us:
        # its size and mtime are not ours to trust; only the file itself is checked.
        return root, None, None
    return root, _int_or_none(row["size_bytes"]), _seconds(row["modified_time"])


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _seconds(text: Any) -> float | None:
    """'2026-03-01 14:03:07' (UTC, as ``queue.iso_time`` writes it) as a unix time."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return moment.timestamp()


def replaced_jobs(conn: sqlite3.Connection, job: JobRow, location_id: int) -> tuple[int, ...]:
    """The plugin's other parse jobs on any version of the job's file (output identity)."""
    rows = conn.execute(
        q("jobs_of_location"), {"location_id": location_id, "plugin_name": job.plugin_name}
    )
    return tuple(int(r["id"]) for r in rows if r["kind"] != JOB_RETRACT and r["id"] != job.id)


def wants_hash_check(declared: dict[str, Any]) -> bool:
    """MANIFEST ``verify: hash`` (top level, or on any of its topics)."""
    if declared.get("verify") == "hash":
        return True
    topics = declared.get("topics")
    if isinstance(topics, dict):
        return any(isinstance(t, dict) and t.get("verify") == "hash" for t in topics.values())
    return False


# MANIFEST topic keys that travel to the worker as SinkConfig.options.
TOPIC_OPTIONS = ("evolve", "on_invalid", "max_invalid_fraction")


def _with_options(sinks: dict[str, SinkConfig], declared: dict[str, Any]) -> None:
    """Each topic's contract options from the MANIFEST (kept whole in manifest_json)."""
    topics = declared.get("topics")
    if not isinstance(topics, dict):
        return
    for topic, spec in topics.items():
        sink = sinks.get(str(topic))
        if sink is None or not isinstance(spec, dict):
            continue
        options = {k: spec[k] for k in TOPIC_OPTIONS if k in spec}
        if options:
            sinks[str(topic)] = attrs.evolve(sink, options=options)


def _manifest(conn: sqlite3.Connection, job: JobRow) -> sqlite3.Row:
    row: sqlite3.Row | None
    row = conn.execute(q("active_manifest"), {"plugin_name": job.plugin_name}).fetchone()
    if row is None:
        raise CatalogError(
            f"job {job.id}: no ACTIVE manifest for plugin {job.plugin_name!r} "
            "— publish it with `casparian-trio publish`",
            job_id=job.id,
        )
    return row


def _schema_def(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _configured_sinks(conn: sqlite3.Connection, plugin_name: str) -> dict[str, SinkConfig]:
    sinks: dict[str, SinkConfig] = {}
    for row in conn.execute(q("topics_of_plugin"), {"plugin_name": plugin_name}):
        sinks[row["topic_name"]] = SinkConfig(
            topic=row["topic_name"],
            uri=row["uri"],
            mode=row["mode"] or "append",
            schema_def=row["schema_json"],
        )
    if DEFAULT_TOPIC not in sinks:
        sinks[DEFAULT_TOPIC] = SinkConfig(DEFAULT_TOPIC, f"parquet://{plugin_name}", "append")
    return sinks


def _override_sinks(job: JobRow, sinks: dict[str, SinkConfig]) -> None:
    """Replace sinks by topic from ``config_overrides["sinks"]`` (in place)."""
    overrides = (job.config_overrides or {}).get("sinks") or []
    if not isinstance(overrides, list):
        raise CatalogError(f"job {job.id}: config_overrides.sinks must be a list", job_id=job.id)
    for item in overrides:
        if not isinstance(item, dict) or not item.get("topic") or not item.get("uri"):
            raise CatalogError(
                f"job {job.id}: each config_overrides.sinks entry needs 'topic' and 'uri', "
                f"got {item!r}",
                job_id=job.id,
            )
        sinks[item["topic"]] = SinkConfig(
            topic=str(item["topic"]),
            uri=str(item["uri"]),
            mode=str(item.get("mode") or "append"),
            schema_def=_schema_def(item.get("schema_def")),
        )


def _timeout(job: JobRow, manifest: dict[str, Any]) -> float | None:
    if job.timeout_s is not None:
        return job.timeout_s
    value = manifest.get("timeout_s", manifest.get("timeout"))
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _memory_limit(manifest: dict[str, Any]) -> int | None:
    value = manifest.get("memory_mb")
    return (
        int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
    )


def resolve_dispatch(conn: sqlite3.Connection, job: JobRow) -> DispatchPlan:
    """Everything a worker needs to run ``job`` (as claimed), plus its environment.

    Raises:
        CatalogError: the file version, its location or source root, or an ACTIVE
            manifest of the plugin is missing (``job_id`` set).
    """
    file_row = _file_row(conn, job)
    file_path = _file_path(file_row)
    source_root, file_size, file_mtime = _scanned_state(file_row)
    manifest = _manifest(conn, job)
    declared = decode_json(manifest["manifest_json"], column="manifest_json") or {}
    try:
        sinks = _configured_sinks(conn, job.plugin_name)
        _with_options(sinks, declared)
        _override_sinks(job, sinks)
    except LocalProtocolError as exc:  # e.g. a sink mode protocol v4 does not know
        raise CatalogError(f"job {job.id}: {exc}", job_id=job.id) from None
    config = (job.config_overrides or {}).get("config") or {}
    env_hash = manifest["env_hash"] or SYSTEM_ENV
    location_id = int(file_row["location_id"])
    replaces = replaced_jobs(conn, job, location_id)
    dispatch = Dispatch(
        plugin_name=job.plugin_name,
        file_path=file_path,
        sinks=tuple(sinks.values()),
        file_version_id=job.file_version_id,
        env_hash=env_hash,
        source_code=manifest["source_code"],
        artifact_hash=manifest["artifact_hash"] or manifest["source_hash"],
        attempt=job.attempt,
        timeout_s=_timeout(job, declared),
        memory_limit_mb=_memory_limit(declared),
        config=dict(config) if isinstance(config, dict) else {},
        source_hash=_content_hash(file_row),
        parser_version=f"{job.plugin_name} {manifest['version']}",
        source_root=source_root,
        file_size=file_size,
        file_mtime=file_mtime,
        source_file_id=location_id,
        replaces_jobs=replaces,
        retract=job.kind == JOB_RETRACT,
        verify_hash=wants_hash_check(declared),
        single_use_guest=declared.get("reuse_guest") is False,
    )
    retries = declared.get("retries")
    return DispatchPlan(
        job=job,
        dispatch=dispatch,
        env=get_environment(conn, env_hash),
        retries=retries if isinstance(retries, int) and not isinstance(retries, bool) else None,
    )


# --- environments and manifests ----------------------------------------------------


def get_environment(conn: sqlite3.Connection, env_hash: str) -> EnvSpec | None:
    """The environment's lockfile spec; None for 'system' or an unknown hash."""
    if env_hash == SYSTEM_ENV:
        return None
    row = conn.execute(q("environment"), {"env_hash": env_hash}).fetchone()
    return None if row is None else EnvSpec.from_row(row)


def record_environment(conn: sqlite3.Connection, spec: EnvSpec, *, now: float) -> None:
    """Store an environment spec once (a later call with the same hash changes nothing)."""
    conn.execute(
        q("record_environment"),
        {
            "env_hash": spec.env_hash,
            "lockfile": spec.lockfile,
            "pyproject": spec.pyproject,
            "python_version": spec.python_version,
            "now": now,
        },
    )


def publish_manifest(
    conn: sqlite3.Connection,
    *,
    plugin_name: str,
    version: str,
    source_code: str,
    source_hash: str,
    env_hash: str | None,
    artifact_hash: str,
    manifest: dict[str, Any],
    now: float,
) -> tuple[int, bool]:
    """Make this artifact the plugin's ACTIVE manifest; return (manifest_id, changed).

    Republishing the ACTIVE artifact changes nothing. Republishing an older source
    (source_hash is UNIQUE) reactivates that row. Other ACTIVE rows → SUPERSEDED.

    Raises:
        StoreError: the same source is already published under another plugin name.
    """
    key = {"plugin_name": plugin_name, "artifact_hash": artifact_hash}
    active = conn.execute(q("active_manifest_with_artifact"), key).fetchone()
    if active is not None:
        return int(active[0]), False
    params = {
        "plugin_name": plugin_name,
        "version": version,
        "source_code": source_code,
        "source_hash": source_hash,
        "env_hash": env_hash,
        "artifact_hash": artifact_hash,
        "manifest_json": json.dumps(manifest, sort_keys=True),
        "iso": iso_time(now),
    }
    existing = conn.execute(q("manifest_by_source_hash"), params).fetchone()
    if existing is None:
        manifest_id = int(conn.execute(q("insert_manifest"), params).lastrowid or 0)
    elif existing["plugin_name"] == plugin_name:
        manifest_id = int(existing["id"])
        conn.execute(q("reactivate_manifest"), {**params, "id": manifest_id})
    else:
        raise StoreError(
            f"this source (hash {source_hash}) is already published as plugin "
            f"{existing['plugin_name']!r}; give {plugin_name!r} its own source"
        )
    conn.execute(q("supersede_manifests"), {"plugin_name": plugin_name, "keep_id": manifest_id})
    logger.info(
        "published %s %s as manifest %d",
        plugin_name,
        version,
        manifest_id,
        extra={"event": "plugin.published", "plugin": plugin_name},
    )
    return manifest_id, True


def record_deploy(
    conn: sqlite3.Connection, release: PluginRelease, *, now: float
) -> tuple[int, bool]:
    """Record a release (env, manifest, topics, routing rule); return (manifest_id, changed).

    One transaction: a failure anywhere leaves nothing of the deploy behind.
    Reprocessing a new version's files is the caller's (``scans.record_release``).

    Raises:
        StoreError: as ``publish_manifest``; sqlite3 errors roll everything back.
    """
    if release.env is not None:
        record_environment(conn, release.env, now=now)
    manifest_id, created = publish_manifest(
        conn,
        plugin_name=release.plugin_name,
        version=release.version,
        source_code=release.source_code,
        source_hash=release.source_hash,
        env_hash=release.env_hash,
        artifact_hash=release.artifact_hash,
        manifest=release.manifest,
        now=now,
    )
    for sink in release.topics:
        set_topic(
            conn,
            release.plugin_name,
            sink.topic,
            sink.uri,
            mode=sink.mode,
            schema_json=sink.schema_json,
        )
    if release.pattern is not None:
        add_routing_rule(
            conn, release.pattern, release.plugin_name, priority=release.priority, now=now
        )
    logger.info(
        "plugin %s %s %s (env %s)",
        release.plugin_name,
        release.version,
        "published" if created else "already published",
        release.env_hash[:12],
        extra={"event": "plugin.published"},
    )
    return manifest_id, created


def set_topic(
    conn: sqlite3.Connection,
    plugin_name: str,
    topic_name: str,
    uri: str,
    *,
    mode: str = "append",
    schema_json: str | None = None,
) -> None:
    """Upsert the sink of (plugin, topic)."""
    params = {
        "plugin_name": plugin_name,
        "topic_name": topic_name,
        "uri": uri,
        "mode": mode,
        "schema_json": schema_json,
    }
    if conn.execute(q("update_topic"), params).rowcount == 0:
        conn.execute(q("insert_topic"), params)


# --- routing and sources --------------------------------------------------------------


def add_routing_rule(
    conn: sqlite3.Connection, pattern: str, plugin_name: str, *, priority: int = 0, now: float
) -> tuple[int, bool]:
    """Add (pattern → plugin); an existing pair is re-enabled with the new priority."""
    params = {"pattern": pattern, "plugin_name": plugin_name, "priority": priority, "now": now}
    cursor = conn.execute(q("insert_routing_rule"), params)
    if cursor.rowcount == 1:
        return int(cursor.lastrowid or 0), True
    row = conn.execute(q("update_routing_rule"), params).fetchall()[0]
    return int(row[0]), False


def routing_rules(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """All rules, highest priority first (``enabled`` tells which apply)."""
    return [dict(r) for r in conn.execute(q("routing_rules"))]


def add_source_root(conn: sqlite3.Connection, path: str) -> tuple[int, bool]:
    cursor = conn.execute(q("insert_source_root"), {"path": path})
    if cursor.rowcount == 1:
        return int(cursor.lastrowid or 0), True
    return int(conn.execute(q("source_root_by_path"), {"path": path}).fetchone()[0]), False


def source_roots(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(q("source_roots"))]


# --- files --------------------------------------------------------------------------


def _location(conn: sqlite3.Connection, params: dict[str, Any]) -> tuple[int, int | None]:
    row = conn.execute(q("location_by_path"), params).fetchone()
    if row is not None:
        return int(row["id"]), row["current_version_id"]
    try:
        cursor = conn.execute(q("insert_location"), params)
    except sqlite3.IntegrityError as exc:
        raise CatalogError(f"source root {params['source_root_id']} does not exist") from exc
    return int(cursor.lastrowid or 0), None


def record_file(
    conn: sqlite3.Connection,
    *,
    source_root_id: int,
    rel_path: str,
    size: int,
    mtime: float | None,
    content_hash: str,
    now: float,
) -> tuple[int, bool]:
    """Record a scanned file; return (file_version_id, is_new_version).

    A new cf_file_version is created only when the content hash differs from the
    location's current version; the location's mtime/size/last_seen always update.
    """
    params: dict[str, Any] = {
        "source_root_id": source_root_id,
        "rel_path": filenames.to_db(rel_path),
        "filename": filenames.to_db(os.path.basename(rel_path)),
        "size": size,
        "mtime": mtime,
        "content_hash": content_hash,
        "iso": iso_time(now),
        "modified_time": iso_time(mtime if mtime is not None else now),
    }
    location_id, current_id = _location(conn, params)
    params.update(location_id=location_id, current_version_id=current_id)
    current = conn.execute(q("current_version"), params).fetchone()
    is_new = current is None or current["content_hash"] != content_hash
    if is_new:
        conn.execute(q("register_hash"), params)
        version_id = int(conn.execute(q("insert_file_version"), params).lastrowid or 0)
    else:
        version_id = int(current["id"])
    conn.execute(q("touch_location"), {**params, "version_id": version_id})
    return version_id, is_new


@attrs.frozen
class LocationState:
    """What the catalog knows of one file location of a root (for the scanner)."""

    location_id: int
    mtime: float | None
    size: int | None
    deleted: bool


def location_states(conn: sqlite3.Connection, source_root_id: int) -> dict[str, LocationState]:
    """rel_path → its location's state, deleted ones included."""
    rows = conn.execute(q("file_location_state"), {"source_root_id": source_root_id})
    return {
        filenames.from_db(r["rel_path"]): LocationState(
            int(r["id"]), r["last_known_mtime"], r["last_known_size"], r["deleted_at"] is not None
        )
        for r in rows
    }


def file_location_state(
    conn: sqlite3.Connection, source_root_id: int
) -> dict[str, tuple[float | None, int | None]]:
    """rel_path → (last known mtime, size) of files not deleted: lets the scanner skip them."""
    states = location_states(conn, source_root_id)
    return {p: (s.mtime, s.size) for p, s in states.items() if not s.deleted}
