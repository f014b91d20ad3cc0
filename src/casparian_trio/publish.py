"""Publishing a plugin: check it without running it, hash it, record it.

A plugin is one Python file with a ``Handler`` class and an optional literal
``MANIFEST`` dict::

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
same artifact is a no-op and any change is a new version. The Sentinel
re-checks and re-hashes what a client DEPLOYs: it never trusts client hashes.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import platform
from pathlib import Path
from typing import Any

import attrs

from casparian_trio.envs import SYSTEM_ENV, compute_env_hash
from casparian_trio.errors import PluginError
from casparian_trio.protocol import SINK_MODES, Deploy
from casparian_trio.store import EnvSpec, Store

logger = logging.getLogger(__name__)

MANIFEST_KEYS = frozenset(
    {"name", "version", "pattern", "topic", "topics", "priority", "timeout", "memory_mb"}
)


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
    }
    for key, (kind, what) in checks.items():
        if key in value and (not isinstance(value[key], kind) or isinstance(value[key], bool)):
            raise PluginError(f"{filename}: MANIFEST[{key!r}] must be {what}")
    for key in ("timeout", "memory_mb"):
        if key in value and value[key] <= 0:
            raise PluginError(f"{filename}: MANIFEST[{key!r}] must be > 0")
    for topic, spec in value.get("topics", {}).items():
        _topic_sink(str(topic), spec, filename)
    return value


def _topic_sink(topic: str, spec: object, filename: str) -> tuple[str, str, str | None]:
    """(uri, mode, schema_json) of one MANIFEST topic entry."""
    if isinstance(spec, str):
        return spec, "append", None
    if not isinstance(spec, dict) or not isinstance(spec.get("uri"), str):
        raise PluginError(
            f"{filename}: MANIFEST['topics'][{topic!r}] needs a 'uri' such as 'parquet://{topic}'"
        )
    mode = spec.get("mode", "append")
    if mode not in SINK_MODES:
        raise PluginError(
            f"{filename}: topic {topic!r} mode must be one of {', '.join(SINK_MODES)}"
        )
    schema = spec.get("schema")
    return spec["uri"], mode, None if schema is None else json.dumps(schema)


def topic_sinks(info: PluginInfo) -> dict[str, tuple[str, str, str | None]]:
    """Every topic's (uri, mode, schema_json); ``topic`` names the default output's table."""
    sinks: dict[str, tuple[str, str, str | None]] = {}
    if "topic" in info.manifest:
        sinks["output"] = (f"parquet://{info.manifest['topic']}", "append", None)
    for topic, spec in info.manifest.get("topics", {}).items():
        sinks[str(topic)] = _topic_sink(str(topic), spec, info.plugin_name)
    return sinks


def build_deploy(
    plugin: Path, *, lockfile: Path | None = None, version: str | None = None
) -> Deploy:
    """Read a plugin (and its uv project) from disk into a DEPLOY message."""
    try:
        source = plugin.read_text(encoding="utf-8")
    except OSError as exc:
        raise PluginError(f"cannot read plugin {plugin}: {exc.strerror}") from None
    lock_text, pyproject = _read_lockfile(lockfile) if lockfile else (None, None)
    env_hash = (
        compute_env_hash(lock_text, pyproject, python_version())
        if lock_text is not None
        else SYSTEM_ENV
    )
    info = inspect_plugin(source, filename=plugin.name, version=version, env_hash=env_hash)
    return Deploy(
        plugin_name=info.plugin_name,
        version=info.version,
        source_code=source,
        lockfile=lock_text,
        pyproject=pyproject,
        env_hash=env_hash,
        artifact_hash=info.artifact_hash,
        manifest=info.manifest,
    )


def python_version() -> str:
    """The Python (major.minor) plugin environments target: the workers' own."""
    major, minor, _ = platform.python_version_tuple()
    return f"{major}.{minor}"


def _read_lockfile(lockfile: Path) -> tuple[str, str]:
    """A uv.lock and the pyproject.toml beside it (``--lockfile`` may name either or their folder)."""
    folder = lockfile if lockfile.is_dir() else lockfile.parent
    lock, project = folder / "uv.lock", folder / "pyproject.toml"
    for needed in (lock, project):
        if not needed.is_file():
            raise PluginError(
                f"--lockfile: {needed} not found; run `uv lock` in the plugin's project folder first"
            )
    return lock.read_text(encoding="utf-8"), project.read_text(encoding="utf-8")


async def record_deploy(store: Store, deploy: Deploy, *, now: float) -> dict[str, Any]:
    """Record a plugin as ACTIVE (superseding older versions), with its env, topics and routing rule."""
    env_hash = SYSTEM_ENV
    if deploy.lockfile is not None:
        env_hash = compute_env_hash(deploy.lockfile, deploy.pyproject, python_version())
        spec = EnvSpec(
            env_hash=env_hash,
            lockfile=deploy.lockfile,
            pyproject=deploy.pyproject,
            python_version=python_version(),
        )
        await store.record_environment(spec, now=now)
    info = inspect_plugin(
        deploy.source_code,
        filename=f"{deploy.plugin_name}.py",
        version=deploy.version,
        env_hash=env_hash,
    )
    if info.plugin_name != deploy.plugin_name:
        info = attrs.evolve(info, plugin_name=deploy.plugin_name)
    manifest_id, created = await store.publish_manifest(
        plugin_name=info.plugin_name,
        version=info.version,
        source_code=deploy.source_code,
        source_hash=info.source_hash,
        env_hash=env_hash,
        artifact_hash=info.artifact_hash,
        manifest=info.manifest,
        now=now,
    )
    for topic, (uri, mode, schema_json) in topic_sinks(info).items():
        await store.set_topic(info.plugin_name, topic, uri, mode=mode, schema_json=schema_json)
    if "pattern" in info.manifest:
        await store.add_routing_rule(
            info.manifest["pattern"],
            info.plugin_name,
            priority=int(info.manifest.get("priority", 0)),
        )
    logger.info(
        "plugin %s %s %s (env %s)",
        info.plugin_name,
        info.version,
        "published" if created else "already published",
        env_hash[:12],
        extra={"event": "plugin.published"},
    )
    return {
        "manifest_id": manifest_id,
        "created": created,
        "plugin_name": info.plugin_name,
        "version": info.version,
        "artifact_hash": info.artifact_hash,
        "env_hash": env_hash,
    }
