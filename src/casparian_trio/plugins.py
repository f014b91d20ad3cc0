"""A plugin checked without running it, hashed, and turned into a store release.

Pure: no I/O. The client (``publish.build_deploy``) and the Sentinel (when a
DEPLOY arrives) both check a plugin here, so the Sentinel never trusts a
client's hashes. A plugin is one Python file with a ``Handler`` class and an
optional literal ``MANIFEST`` dict::

    MANIFEST = {
        "name": "sales",              # default: the file's stem
        "version": "1.2.0",           # default: "0" (or --version)
        "pattern": "*.csv",           # routing rule: files whose path matches get a job
        "topic": "sales",             # the default output goes to parquet://sales
        "topics": {"rejects": {"uri": "parquet://rejects", "mode": "append",
                               "schema": {"id": "int64"}}},
        "priority": 5,
        "timeout": 600,               # seconds
        "memory_mb": 2048,            # address-space cap for the plugin (RLIMIT_AS)
    }

Hashes: ``source_hash`` = SHA-256 of the source; ``env_hash`` = the uv
project's hash (``envs.compute_env_hash``) or ``system`` without a lockfile;
``artifact_hash`` = SHA-256 over both plus the manifest, so republishing the
same artifact is a no-op and any change is a new version.
"""

from __future__ import annotations

import ast
import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import attrs

from casparian_trio.envs import SYSTEM_ENV, compute_env_hash
from casparian_trio.errors import PluginError
from casparian_trio.protocol import SINK_MODES, Deploy
from casparian_trio.store import EnvSpec, PluginRelease, TopicSink

MANIFEST_KEYS = frozenset(
    {
        "name",
        "version",
        "pattern",
        "topic",
        "topics",
        "priority",
        "timeout",
        "memory_mb",
        "retries",
        "reuse_guest",
        "verify",
    }
)
# MANIFEST/topic ``verify``: how the worker checks the input is the queued version:
# "stat" (size and mtime, the default) or "hash" (also its sha256).
VERIFY_MODES = ("stat", "hash")


@attrs.frozen(kw_only=True)
class PluginInfo:
    plugin_name: str
    version: str
    manifest: dict[str, Any]
    source_hash: str
    env_hash: str
    artifact_hash: str


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def inspect_plugin(
    source: str, *, filename: str, version: str | None = None, env_hash: str = SYSTEM_ENV
) -> PluginInfo:
    """Validate a plugin's source without running it.

    Raises:
        PluginError: a syntax error, no ``Handler`` class, or a bad MANIFEST.
    """
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise PluginError(
            f"{filename} line {exc.lineno}: syntax error: {exc.msg}; fix the plugin and publish again"
        ) from None
    if not any(isinstance(node, ast.ClassDef) and node.name == "Handler" for node in tree.body):
        raise PluginError(
            f"{filename}: no top-level `class Handler`; a plugin defines Handler.execute(file_path) or configure/consume"
        )
    manifest = _literal_manifest(tree, filename)
    name = str(manifest.get("name") or Path(filename).stem)
    if not name.replace("_", "").replace("-", "").isalnum():
        raise PluginError(
            f"{filename}: plugin name {name!r} may only use letters, digits, '-' and '_'"
        )
    version = version or str(manifest.get("version", "0"))
    source_hash = sha256(source)
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    artifact_hash = sha256(f"{source_hash}\n{env_hash}\n{name}\n{version}\n{canonical}")
    return PluginInfo(
        plugin_name=name,
        version=version,
        manifest=manifest,
        source_hash=source_hash,
        env_hash=env_hash,
        artifact_hash=artifact_hash,
    )


def _literal_manifest(tree: ast.Module, filename: str) -> dict[str, Any]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "MANIFEST" for t in node.targets
        ):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                raise PluginError(
                    f"{filename} line {node.lineno}: MANIFEST must be a literal dict (no names or calls)"
                ) from None
            return _checked_manifest(value, filename)
    return {}


def _checked_manifest(value: object, filename: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PluginError(f"{filename}: MANIFEST must be a dict")
    unknown = set(value) - MANIFEST_KEYS
    if unknown:
        raise PluginError(
            f"{filename}: unknown MANIFEST key(s) {sorted(unknown)}; allowed: {sorted(MANIFEST_KEYS)}"
        )
    checks: dict[str, tuple[type | tuple[type, ...], str]] = {
        "name": (str, "a string"),
        "version": (str, "a string"),
        "pattern": (str, "a glob string like '*.csv'"),
        "topic": (str, "a string"),
        "topics": (dict, "a dict of topic -> uri or {uri, mode, schema}"),
        "priority": (int, "an integer"),
        "timeout": ((int, float), "a number of seconds"),
        "memory_mb": (int, "a number of megabytes"),
        "retries": (int, "a number of retries (deterministic failures too)"),
    }
    for key, (kind, what) in checks.items():
        if key in value and (not isinstance(value[key], kind) or isinstance(value[key], bool)):
            raise PluginError(f"{filename}: MANIFEST[{key!r}] must be {what}")
    if "reuse_guest" in value and not isinstance(value["reuse_guest"], bool):
        raise PluginError(f"{filename}: MANIFEST['reuse_guest'] must be True or False")
    if "retries" in value and value["retries"] < 0:
        raise PluginError(f"{filename}: MANIFEST['retries'] must be >= 0")
    for key in ("timeout", "memory_mb"):
        if key in value and value[key] <= 0:
            raise PluginError(f"{filename}: MANIFEST[{key!r}] must be > 0")
    _check_choice(value, "verify", VERIFY_MODES, f"{filename}: MANIFEST")
    for topic, spec in value.get("topics", {}).items():
        _topic_sink(str(topic), spec, filename)
    return value


TOPIC_KEYS = frozenset(
    {"uri", "mode", "schema", "evolve", "on_invalid", "max_invalid_fraction", "verify"}
)
SINK_SCHEMES = ("parquet", "sqlite")
EVOLVE_MODES = ("none", "add_columns")
ON_INVALID = ("quarantine", "fail")
TYPE_HINT = "a pyarrow type name such as int64, float64, string, bool, date32, timestamp[ms]"


def _topic_sink(topic: str, spec: object, filename: str) -> tuple[str, str, str | None]:
    """(uri, mode, schema_json) of one MANIFEST topic entry, every part checked.

    Raises:
        PluginError: one line naming the topic, the key and the bad value.
    """
    where = f"{filename}: topic {topic!r}"
    if isinstance(spec, str):
        _check_uri(spec, where)
        return spec, "append", None
    if not isinstance(spec, dict) or not isinstance(spec.get("uri"), str):
        raise PluginError(
            f"{filename}: MANIFEST['topics'][{topic!r}] needs a 'uri' such as 'parquet://{topic}'"
        )
    unknown = sorted(set(spec) - TOPIC_KEYS)
    if unknown:
        raise PluginError(f"{where}: unknown key {unknown[0]!r}; allowed: {sorted(TOPIC_KEYS)}")
    _check_uri(spec["uri"], where)
    mode = spec.get("mode", "append")
    if mode not in SINK_MODES:
        raise PluginError(f"{where}: mode {mode!r} must be one of {', '.join(SINK_MODES)}")
    _check_choice(spec, "evolve", EVOLVE_MODES, where)
    _check_choice(spec, "verify", VERIFY_MODES, where)
    _check_choice(spec, "on_invalid", ON_INVALID, where)
    fraction = spec.get("max_invalid_fraction", 0.1)
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, int | float)
        or not 0 <= fraction <= 1
    ):
        raise PluginError(
            f"{where}: max_invalid_fraction {fraction!r} must be a number from 0 to 1"
        )
    schema = spec.get("schema")
    if schema is not None:
        _check_schema(schema, where)
    return spec["uri"], mode, None if schema is None else json.dumps(schema)


def _check_uri(uri: str, where: str) -> None:
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in SINK_SCHEMES or not rest:
        raise PluginError(
            f"{where}: sink URI {uri!r} must be parquet://DIR or sqlite://FILE/TABLE "
            f"(schemes: {', '.join(SINK_SCHEMES)})"
        )


def _check_choice(spec: dict[str, Any], key: str, allowed: tuple[str, ...], where: str) -> None:
    if key in spec and spec[key] not in allowed:
        raise PluginError(f"{where}: {key} {spec[key]!r} must be one of {', '.join(allowed)}")


def _check_schema(schema: object, where: str) -> None:
    """Column names and pyarrow type aliases, without importing pyarrow in the Sentinel twice."""
    import pyarrow as pa

    if isinstance(schema, dict):
        pairs = list(schema.items())
    elif isinstance(schema, list) and all(isinstance(c, dict) for c in schema):
        pairs = [(c.get("name"), c.get("type")) for c in schema]
    else:
        raise PluginError(f"{where}: schema must be a dict of column -> type")
    for name, type_name in pairs:
        if not isinstance(name, str) or not name:
            raise PluginError(f"{where}: schema column name {name!r} must be a non-empty string")
        if name.startswith("_cf_"):
            raise PluginError(
                f"{where}: schema column {name!r} uses the reserved prefix '_cf_' (lineage)"
            )
        try:
            pa.lib.type_for_alias(str(type_name))
        except ValueError:
            raise PluginError(
                f"{where}: column {name!r} has unknown type {type_name!r}; use {TYPE_HINT}"
            ) from None


def topic_sinks(info: PluginInfo) -> dict[str, tuple[str, str, str | None]]:
    """Every topic's (uri, mode, schema_json); ``topic`` names the default output's table."""
    sinks: dict[str, tuple[str, str, str | None]] = {}
    if "topic" in info.manifest:
        sinks["output"] = (f"parquet://{info.manifest['topic']}", "append", None)
    for topic, spec in info.manifest.get("topics", {}).items():
        sinks[str(topic)] = _topic_sink(str(topic), spec, info.plugin_name)
    return sinks


def python_version() -> str:
    """The Python (major.minor) plugin environments target: the workers' own."""
    major, minor, _ = platform.python_version_tuple()
    return f"{major}.{minor}"


def release_of(deploy: Deploy) -> PluginRelease:
    """Check and re-hash a DEPLOY into what the store records (its name wins over MANIFEST's).

    Raises:
        PluginError: the plugin does not pass ``inspect_plugin``.
    """
    env: EnvSpec | None = None
    env_hash = SYSTEM_ENV
    if deploy.lockfile is not None:
        env_hash = compute_env_hash(deploy.lockfile, deploy.pyproject, python_version())
        env = EnvSpec(
            env_hash=env_hash,
            lockfile=deploy.lockfile,
            pyproject=deploy.pyproject,
            python_version=python_version(),
        )
    info = inspect_plugin(
        deploy.source_code,
        filename=f"{deploy.plugin_name}.py",
        version=deploy.version,
        env_hash=env_hash,
    )
    if info.plugin_name != deploy.plugin_name:
        info = attrs.evolve(info, plugin_name=deploy.plugin_name)
    return PluginRelease(
        plugin_name=info.plugin_name,
        version=info.version,
        source_code=deploy.source_code,
        source_hash=info.source_hash,
        env_hash=env_hash,
        artifact_hash=info.artifact_hash,
        manifest=info.manifest,
        env=env,
        topics=tuple(TopicSink(t, *sink) for t, sink in topic_sinks(info).items()),
        pattern=info.manifest.get("pattern"),
        priority=int(info.manifest.get("priority", 0)),
        reprocess=not deploy.no_reprocess,
    )


def deploy_summary(
    release: PluginRelease, manifest_id: int, created: bool, requeued: int = 0
) -> dict[str, Any]:
    """The CONCLUDE metrics (and `publish --json`) of a recorded deploy.

    ``requeued``: jobs queued again to reprocess the plugin's files with this version.
    """
    return {
        "manifest_id": manifest_id,
        "created": created,
        "reprocess": release.reprocess,
        "requeued": requeued,
        "plugin_name": release.plugin_name,
        "version": release.version,
        "artifact_hash": release.artifact_hash,
        "env_hash": release.env_hash,
    }
