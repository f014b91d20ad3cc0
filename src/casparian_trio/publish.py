"""Publishing a plugin: read it from disk into a DEPLOY, or record one locally.

The checking and hashing are in ``plugins.py`` (pure), shared with the Sentinel,
which re-checks and re-hashes what a client DEPLOYs: it never trusts client hashes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from casparian_trio.envs import SYSTEM_ENV, compute_env_hash
from casparian_trio.errors import PluginError
from casparian_trio.plugins import (
    MANIFEST_KEYS,
    PluginInfo,
    deploy_summary,
    inspect_plugin,
    python_version,
    release_of,
    sha256,
    topic_sinks,
)
from casparian_trio.protocol import Deploy, limits
from casparian_trio.store import Store

__all__ = [
    "MANIFEST_KEYS",
    "PluginInfo",
    "build_deploy",
    "inspect_plugin",
    "python_version",
    "record_deploy",
    "sha256",
    "topic_sinks",
]

logger = logging.getLogger(__name__)


def build_deploy(
    plugin: Path,
    *,
    lockfile: Path | None = None,
    version: str | None = None,
    reprocess: bool = True,
) -> Deploy:
    """Read a plugin (and its uv project) from disk into a DEPLOY message.

    ``reprocess`` False: a new version does not queue its files again.
    """
    try:
        source = plugin.read_text(encoding="utf-8")
    except OSError as exc:
        raise PluginError(f"cannot read plugin {plugin}: {exc.strerror}") from None
    lock_text, pyproject = _read_lockfile(lockfile) if lockfile else (None, None)
    _check_sizes(plugin, source, lock_text, pyproject)
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
        no_reprocess=not reprocess,
    )


def _check_sizes(plugin: Path, source: str, lock: str | None, pyproject: str | None) -> None:
    """Past these a Sentinel drops the connection (ZMQ_MAXMSGSIZE): say so here instead."""
    parts = (
        (str(plugin), source, limits.MAX_PLUGIN_SOURCE_BYTES),
        ("uv.lock", lock or "", limits.MAX_LOCKFILE_BYTES),
        ("pyproject.toml", pyproject or "", limits.MAX_PYPROJECT_BYTES),
    )
    for what, text, limit in parts:
        size = len(text.encode("utf-8"))
        if size > limit:
            raise PluginError(f"{what} is {size} bytes; a plugin's may be at most {limit}")


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
    """Record a plugin as ACTIVE (superseding older versions), with its env, topics and routing rule.

    One store transaction: a failure part-way records nothing.

    Raises:
        PluginError: the plugin does not pass the checks.
        StoreError: the store refused it (e.g. the source is another plugin's).
    """
    release = release_of(deploy)
    manifest_id, created, requeued = await store.record_deploy(release, now=now)
    return deploy_summary(release, manifest_id, created, requeued)
