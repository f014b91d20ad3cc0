"""EnvManager: provision uv environments keyed by env hash, and find interpreters.

Theory of operation:

- ``<root>/<hash>/`` is a *ready* venv iff it contains ``READY_MARKER``. The
  marker is written before the venv is renamed into place, and builds happen in
  ``<root>/.build-<hash>-<random>/``, so a half-built env is never used and a
  crashed build leaves only a scratch dir (deleted on failure or cancel).
- ``<root>/<hash>.build.lock`` makes processes sharing the root build an env
  once: the builder holds ``LOCK_EX``, the others wait and then find it ready.
- ``<root>/<hash>.lock`` guards use against eviction: an evictor holds
  ``LOCK_EX``; a running job or a warm guest holds ``LOCK_SH``
  (``EnvManager.using``), so an env in use is never evicted, by this process or
  another. (One lock for both would let a warm guest's long ``LOCK_SH`` starve
  another process's build wait forever.) Locks are
  taken with ``LOCK_NB`` and polled with ``trio.sleep``: no thread is left
  blocked in ``flock`` when a cancel arrives.
- Within one process a ``trio.Lock`` per hash makes concurrent ``prepare`` calls
  queue instead of polling; the second caller finds the env ready (cached=True).
- ``index.json`` (see ``_index.py``) records size and last use; after a build,
  least-recently-used envs are evicted until the total is within ``max_bytes``.
- ``SYSTEM_ENV`` ("system") is the worker's own interpreter, always available.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import trio

from casparian_trio.envs import _index, _uv
from casparian_trio.envs._hash import SYSTEM_ENV, compute_env_hash, is_env_hash
from casparian_trio.errors import EnvError
from casparian_trio.protocol.messages import EnvReady, PrepareEnv

logger = logging.getLogger(__name__)

READY_MARKER = ".casparian-ready"
# Polling interval for another process's build lock: builds take seconds.
LOCK_POLL_S = 0.05
# Bound on deleting a failed build's scratch dir during cancellation.
CLEANUP_GRACE_S = 10.0


@attrs.define(eq=False)
class EnvManager:
    """Builds, caches, finds and evicts plugin environments under ``root``.

    Args:
        root: directory holding the envs (created if missing).
        max_bytes: evict least-recently-used envs beyond this total size.
        allow_system_fallback: run an unprovisioned env hash in ``sys.executable``
            (with a warning) instead of failing the job.
    """

    root: Path
    max_bytes: int | None = None
    allow_system_fallback: bool = False
    builds: int = 0  # how many envs this manager built (not found cached)
    _local_locks: dict[str, trio.Lock] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    async def prepare(self, spec: PrepareEnv) -> EnvReady:
        """Build the env of ``spec`` unless it is ready; return where its interpreter is.

        Raises:
            EnvError: hash mismatch, or uv failed (the message carries uv's stderr tail).
        """
        if spec.env_hash == SYSTEM_ENV:
            return EnvReady(env_hash=SYSTEM_ENV, interpreter_path=sys.executable, cached=True)
        self._verify(spec)
        h = spec.env_hash
        lock = self._local_locks.setdefault(h, trio.Lock())
        async with lock:
            if not self._is_ready(h):
                async with self._file_lock(h, fcntl.LOCK_EX, suffix=".build.lock"):
                    if not self._is_ready(h):  # another process may have built it
                        try:
                            await self._build(spec)
                        except OSError as exc:  # disk full, uv missing, permissions
                            raise EnvError(
                                f"building environment {h[:12]} failed: {exc}", env_hash=h
                            ) from exc
                        await trio.to_thread.run_sync(self._evict, h)
                        return EnvReady(
                            env_hash=h, interpreter_path=str(self._python(h)), cached=False
                        )
        _index.touch(self.root, h)
        return EnvReady(env_hash=h, interpreter_path=str(self._python(h)), cached=True)

    def interpreter(self, env_hash: str) -> Path:
        """The interpreter for ``env_hash`` (and mark the env used).

        Raises:
            EnvError: the env is not built here and system fallback is off.
        """
        if env_hash == SYSTEM_ENV:
            return Path(sys.executable)
        if is_env_hash(env_hash) and self._is_ready(env_hash):
            _index.touch(self.root, env_hash)
            return self._python(env_hash)
        if self.allow_system_fallback:
            logger.warning(
                "environment %s is not provisioned; running in the system interpreter", env_hash
            )
            return Path(sys.executable)
        raise EnvError(
            f"environment {env_hash} is not provisioned on this worker; publish the plugin with "
            "--lockfile so the Sentinel sends PREPARE_ENV, or start the worker with --allow-system-env",
            env_hash=env_hash,
        )

    @contextlib.contextmanager
    def using(self, env_hash: str) -> Iterator[Path]:
        """``interpreter()``, holding the env against eviction until the block exits."""
        python = self.interpreter(env_hash)
        if env_hash == SYSTEM_ENV or not self._is_ready(env_hash):
            yield python  # system (or fallback): nothing to protect
            return
        fd = os.open(self.root / f"{env_hash}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise EnvError(
                    f"environment {env_hash} is being evicted", env_hash=env_hash
                ) from exc
            if not self._is_ready(env_hash):
                raise EnvError(f"environment {env_hash} was evicted", env_hash=env_hash)
            yield python
        finally:
            os.close(fd)

    def ready_envs(self) -> list[str]:
        """Hashes of the envs built and ready here (``system`` is implied, not listed)."""
        return sorted(
            p.name for p in self.root.iterdir() if is_env_hash(p.name) and self._is_ready(p.name)
        )

    # --- internals -------------------------------------------------------------

    def _verify(self, spec: PrepareEnv) -> None:
        expected = compute_env_hash(spec.lockfile, spec.pyproject, spec.python_version)
        if spec.env_hash != expected:
            raise EnvError(
                f"env_hash {spec.env_hash} does not match its content (computed {expected}); refusing to build",
                env_hash=spec.env_hash,
            )

    def _python(self, env_hash: str) -> Path:
        return self.root / env_hash / "bin" / "python"

    def _is_ready(self, env_hash: str) -> bool:
        return (self.root / env_hash / READY_MARKER).exists()

    @contextlib.asynccontextmanager
    async def _file_lock(
        self, env_hash: str, kind: int, *, suffix: str = ".lock"
    ) -> AsyncIterator[None]:
        fd = os.open(self.root / f"{env_hash}{suffix}", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, kind | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await trio.sleep(LOCK_POLL_S)
            yield
        finally:
            os.close(fd)

    async def _build(self, spec: PrepareEnv) -> None:
        h = spec.env_hash
        work = self.root / f".build-{h[:16]}-{secrets.token_hex(4)}"
        work.mkdir()
        started = time.monotonic()
        try:
            venv = await _uv.build(spec, work)
            (venv / READY_MARKER).write_text(f"{h}\n")
            size = await trio.to_thread.run_sync(_uv.tree_size, venv)
            os.replace(venv, self.root / h)  # same filesystem: atomic
            self.builds += 1
        finally:
            with trio.move_on_after(CLEANUP_GRACE_S) as scope:
                scope.shield = True
                await trio.to_thread.run_sync(shutil.rmtree, work, True, abandon_on_cancel=True)
        now = time.time()
        _index.update(
            self.root, lambda e: e.__setitem__(h, {"size": size, "built": now, "last_use": now})
        )
        logger.info(
            "built environment %s (%.1f MB) in %.1f s",
            h[:12],
            size / 1e6,
            time.monotonic() - started,
        )

    def _evict(self, keep: str) -> None:
        """Delete least-recently-used envs until within max_bytes (runs in a thread)."""
        if self.max_bytes is None:
            return
        entries = _index.read(self.root)
        total = sum(int(e.get("size", 0)) for e in entries.values())
        for h, entry in sorted(entries.items(), key=lambda kv: kv[1].get("last_use", 0)):
            if total <= self.max_bytes:
                break
            if h != keep and self._evict_one(h):
                total -= int(entry.get("size", 0))

    def _evict_one(self, env_hash: str) -> bool:
        trash = self.root / f".trash-{env_hash[:16]}-{secrets.token_hex(4)}"
        fd = os.open(self.root / f"{env_hash}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.debug("not evicting %s: in use", env_hash[:12])
                return False
            if (self.root / env_hash).exists():
                os.replace(self.root / env_hash, trash)
            _index.update(self.root, lambda e: _forget(e, env_hash))
        finally:
            os.close(fd)
        shutil.rmtree(trash, ignore_errors=True)
        logger.info("evicted environment %s (least recently used)", env_hash[:12])
        return True


def _forget(entries: dict[str, dict[str, object]], env_hash: str) -> None:
    entries.pop(env_hash, None)
