"""What a guest may do as a process: its user and capabilities (Linux, worker as root).

A worker that runs as root must not hand root to plugin code. Its guests are
started through util-linux ``setpriv``:

- as the guest user (``--guest-user``, default ``nobody``) with no
  supplementary groups, when that user can run the interpreter (the worker
  checks once at start-up, ``worker/hardening.py``); the guest's private dir
  and socket are chowned to it, its input must be readable by it;
- otherwise, still as root but with every capability dropped (bounding,
  inheritable and ambient sets) and ``no_new_privs``: without CAP_SYS_PTRACE a
  guest cannot read the non-dumpable worker's ``/proc/<pid>/environ`` or memory.

A worker that is not root gives its guests its own user; being non-dumpable
(``prctl(PR_SET_DUMPABLE, 0)``) is what keeps them out of its ``/proc`` entries.
The setting is process-wide (one worker per process), set once by ``open_worker``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import attrs

SETPRIV = "setpriv"
_DROP_CAPS = ("--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs")


@attrs.frozen
class GuestPrivileges:
    """How guests are started: ``uid``/``gid`` None keeps the worker's user (caps dropped)."""

    setpriv: str
    uid: int | None = None
    gid: int | None = None

    def prefix(self) -> list[str]:
        """The argv before the interpreter's."""
        argv = [self.setpriv, *_DROP_CAPS]
        if self.uid is not None and self.gid is not None:
            argv += [f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]
        return [*argv, "--"]

    def give(self, paths: Sequence[Path]) -> None:
        """Make the guest's own dir (and socket) the guest user's."""
        if self.uid is None or self.gid is None:
            return
        for path in paths:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)


_current: GuestPrivileges | None = None


def configure(privileges: GuestPrivileges | None) -> None:
    """Set how this process starts guests from now on (None: as itself, unchanged)."""
    global _current
    _current = privileges


def current() -> GuestPrivileges | None:
    return _current


def find_setpriv() -> str | None:
    return shutil.which(SETPRIV)
