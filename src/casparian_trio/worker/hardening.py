"""What a worker does to itself before any guest starts: nothing of it for plugins to read.

- ``make_undumpable``: ``prctl(PR_SET_DUMPABLE, 0)``. The kernel then lets no
  process without CAP_SYS_PTRACE (a guest of the same user included) read this
  process's ``/proc/<pid>/environ``, ``mem`` or ``maps``, or ptrace it; its
  secrets (keys, tokens in its environment) stay its own.
- ``guest_privileges``: when the worker runs as root, guests get another user
  or no capabilities (``bridge/_privileges.py``); which one is decided here,
  once, by checking that the guest user can run the interpreter.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pwd
import subprocess
import sys

from casparian_trio.bridge._privileges import GuestPrivileges, find_setpriv
from casparian_trio.errors import ConfigError

logger = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4
# Starting an interpreter and importing pyarrow as the guest user; generous for a loaded host.
PROBE_TIMEOUT_S = 30.0


def make_undumpable() -> bool:
    """Mark this process non-dumpable (Linux); returns False where prctl is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_DUMPABLE, 0) failed: errno %d", ctypes.get_errno())
        return False
    return True


def guest_privileges(guest_user: str, python: str = sys.executable) -> GuestPrivileges | None:
    """How a root worker starts guests (None: not root, guests run as the worker's user).

    Raises:
        ConfigError: ``guest_user`` does not exist, or ``setpriv`` is missing.
    """
    if os.geteuid() != 0:
        return None
    setpriv = find_setpriv()
    if setpriv is None:
        raise ConfigError(
            "the worker runs as root and needs util-linux `setpriv` to start guests "
            "unprivileged; install it, or run the worker as an ordinary user"
        )
    if guest_user == "root":
        return GuestPrivileges(setpriv)
    try:
        entry = pwd.getpwnam(guest_user)
    except KeyError:
        raise ConfigError(f"--guest-user {guest_user}: no such user") from None
    privileges = GuestPrivileges(setpriv, entry.pw_uid, entry.pw_gid)
    problem = _probe(privileges, python)
    if problem is None:
        return privileges
    logger.warning(
        "guests run as root without capabilities, not as %s: %s cannot run %s (%s); make the "
        "interpreter and envs readable by %s, or pass --guest-user root to accept this",
        guest_user,
        guest_user,
        python,
        problem,
        guest_user,
        extra={"event": "worker.guest_user"},
    )
    return GuestPrivileges(setpriv)


def _probe(privileges: GuestPrivileges, python: str) -> str | None:
    """None when the guest user can start ``python`` and import pyarrow; else why not."""
    argv = [*privileges.prefix(), python, "-I", "-c", "import pyarrow"]
    try:
        done = subprocess.run(
            argv, capture_output=True, timeout=PROBE_TIMEOUT_S, env={}, cwd="/", check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else f"exit {done.returncode}"
