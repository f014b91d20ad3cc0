"""Is the file a DISPATCH names still the version the Sentinel queued? (pure, plus one probe)

Before a guest starts, the worker looks at the input (``observe``: one
``os.lstat`` and two ``realpath`` calls, in a thread, or on the Trio thread for a file of at most 1 MiB) and ``judge`` decides:

- missing → ``gone`` (deleted since the scan): not the plugin's fault, not retried;
- a symlink, not a regular file, or resolving outside its source root → a
  deterministic failure (a security refusal: the scan never follows links, so
  neither does the worker);
- size or mtime differ from the queued version's → ``superseded``: the next scan
  queues the new version.

With ``verify_hash`` (MANIFEST or topic ``verify: hash``) the file's sha256
must also equal the queued version's (``digest``, then ``judge_hash``): a
rewrite that kept size and mtime is caught too, at the cost of reading the file.

A DISPATCH without ``source_root`` (an old Sentinel) is not checked at all. The
mtime matches when equal, or, when the recorded one is whole seconds (the
version's TEXT column), when the file's mtime truncated to seconds equals it.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat

import attrs

from casparian_trio._realpath import real_path
from casparian_trio.errors import CasparianError

SKIP_GONE = "gone"
SKIP_SUPERSEDED = "superseded"


@attrs.frozen
class Observed:
    """What ``os.lstat`` and ``realpath`` said about the input (``exists`` False: no file)."""

    exists: bool
    mode: int = 0
    size: int = 0
    mtime: float = 0.0
    real_path: str = ""
    real_root: str = ""


@attrs.frozen
class Refusal:
    """Why the guest must not start: the receipt's error, and how the Sentinel treats it."""

    message: str
    skip_reason: str | None = None  # SKIP_GONE / SKIP_SUPERSEDED; None: a FAILED refusal
    deterministic: bool = True


class InputRefused(CasparianError):
    """The input check refused the file (see ``Refusal``)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def observe(path: str, source_root: str) -> Observed:
    """The I/O half: lstat the path, resolve it and its root (blocking: a thread, or inline for a small file)."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return Observed(exists=False)
    return Observed(
        exists=True,
        mode=st.st_mode,
        size=st.st_size,
        mtime=st.st_mtime,
        real_path=real_path(path),
        real_root=real_path(source_root),
    )


def judge(
    path: str, seen: Observed, *, file_size: int | None, file_mtime: float | None
) -> Refusal | None:
    """None when the guest may start; else why not."""
    if not seen.exists:
        return Refusal(f"file gone: {path} (deleted since scan)", SKIP_GONE, deterministic=False)
    if stat.S_ISLNK(seen.mode):
        return Refusal(f"refusing {path}: a symlink (the worker does not follow links)")
    if not stat.S_ISREG(seen.mode):
        return Refusal(f"refusing {path}: not a regular file")
    if not _inside(seen.real_path, seen.real_root):
        return Refusal(
            f"refusing {path}: it resolves to {seen.real_path}, outside its source root "
            f"{seen.real_root}"
        )
    size_changed = file_size is not None and seen.size != file_size
    if size_changed or (file_mtime is not None and not _same_mtime(seen.mtime, file_mtime)):
        return Refusal(
            f"file changed since scan: {path}; the next scan queues the new version",
            SKIP_SUPERSEDED,
            deterministic=False,
        )
    return None


# Bytes read per step while hashing: memory stays flat for any file size.
HASH_CHUNK = 1024 * 1024


def digest(path: str, *, limit: int | None = None) -> str | None:
    """The file's sha256 (hex), None when it vanished (blocking: a thread, or inline
    for a small file).

    ``limit``: read at most this many bytes and one more (a file longer than the
    queued version cannot have its hash, so a file swapped in since the ``lstat``
    costs no more than the small one would). Opened without following a link and
    without blocking, and only a regular file is read: a FIFO swapped in ends the
    job as changed instead of hanging it.
    """
    sha = hashlib.sha256()
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:  # a symlink now (ELOOP), unreadable: not the queued version
        return ""
    with open(fd, "rb", closefd=True) as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        left = None if limit is None else limit + 1
        while left is None or left > 0:
            chunk = handle.read(HASH_CHUNK if left is None else min(HASH_CHUNK, left))
            if not chunk:
                break
            sha.update(chunk)
            if left is not None:
                left -= len(chunk)
    return sha.hexdigest()


def judge_hash(path: str, actual: str | None, expected: str) -> Refusal | None:
    """None when the content is the queued version's (sha256 equal); else SUPERSEDED/SKIPPED."""
    if actual is None:
        return Refusal(f"file gone: {path} (deleted since scan)", SKIP_GONE, deterministic=False)
    if actual != expected:
        return Refusal(
            f"file changed since scan: {path} (its sha256 is not the queued version's); "
            "the next scan queues the new version",
            SKIP_SUPERSEDED,
            deterministic=False,
        )
    return None


def _inside(real_path: str, real_root: str) -> bool:
    try:
        return os.path.commonpath([real_path, real_root]) == real_root and real_path != real_root
    except ValueError:  # one relative, one absolute
        return False


def _same_mtime(actual: float, recorded: float) -> bool:
    if actual == recorded:
        return True
    return recorded == math.floor(recorded) and math.floor(actual) == recorded
