"""The envs index: ``<root>/index.json`` recording each env's size and last use.

Several worker processes may share one envs root, so every read-modify-write
holds an exclusive ``flock`` on ``<root>/index.lock`` and replaces the file
atomically. Operations are tiny (a JSON document of a few entries) and run
synchronously.

Document: ``{"<env_hash>": {"size": <bytes>, "built": <epoch s>, "last_use": <epoch s>}}``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

Entries = dict[str, dict[str, Any]]


@contextlib.contextmanager
def _locked(root: Path, *, wait: bool = True) -> Iterator[None]:
    fd = os.open(root / "index.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def read(root: Path) -> Entries:
    try:
        data = json.loads((root / "index.json").read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        logger.warning("envs index %s is corrupt; starting a new one", root / "index.json")
        return {}
    return data if isinstance(data, dict) else {}


def update(root: Path, change: Callable[[Entries], None], *, wait: bool = True) -> Entries:
    """Apply ``change`` to the index under the lock and save it.

    Raises:
        BlockingIOError: ``wait`` is False and another process holds the lock.
    """
    with _locked(root, wait=wait):
        entries = read(root)
        change(entries)
        tmp = root / f".index.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
        os.replace(tmp, root / "index.json")
        return entries


def touch(root: Path, env_hash: str) -> None:
    """Record a use, best effort: it runs on the event loop at every job start,
    so it never waits for another process's lock (last use only orders eviction)."""

    def change(entries: Entries) -> None:
        entries.setdefault(env_hash, {"size": 0, "built": time.time()})["last_use"] = time.time()

    try:
        update(root, change, wait=False)
    except BlockingIOError:
        logger.debug("envs index busy; last use of %s not recorded", env_hash[:12])
