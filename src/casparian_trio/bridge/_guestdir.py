"""A guest before and after its job: private dir, listening socket, process; and their removal.

A guest's dir (0700) holds ``tmp/`` (its TMPDIR and the plugin's scratch dir),
``plugin.py`` once it has a job, and the AF_UNIX socket ``s`` (in a short 0700
dir under /tmp instead when the path would exceed the 108-byte ``sun_path``).
Dirs are named ``GUEST_DIR_PREFIX<worker pid>-<random>`` so a later worker can
sweep what a SIGKILLed one left (``sweep_dead_guest_dirs``). Nothing here awaits
except ``discard``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path

import attrs
import trio

from casparian_trio.bridge import _guestproc, _privileges

logger = logging.getLogger(__name__)

# Distinctive, so the start-up sweep of dead workers' dirs never touches anyone else's.
GUEST_DIR_PREFIX = "casparian-guest-"
# sun_path is 108 bytes including the NUL; keep a margin.
SOCKET_PATH_MAX = 100
# Bound on cleanup that is not killing (abort staged files, remove the job dir, reap).
CLEANUP_GRACE_S = 10.0


@attrs.frozen
class PluginKey:
    """One plugin version in one environment: a guest only ever runs one (see ``_pool``)."""

    env_hash: str
    python: Path
    artifact_hash: str
    source_sha256: str
    memory_limit_mb: int | None


@attrs.define(eq=False)
class Guest:
    """A started guest process and its private dir, with or without a job yet.

    ``key`` is the plugin version it loaded (None until its first job),
    ``conn`` its connected socket once accepted, ``jobs`` how many jobs it was given.
    """

    env_hash: str
    python: Path
    dir: Path
    socket_path: Path
    socket_dir: Path | None
    listener: trio.socket.SocketType | None = None
    proc: _guestproc.GuestProcess | None = None
    # Holds the env against eviction while the guest waits idle.
    env_hold: contextlib.ExitStack = attrs.field(factory=contextlib.ExitStack)
    key: PluginKey | None = None
    conn: trio.socket.SocketType | None = None
    jobs: int = 0
    idle_since: float = 0.0


def start_guest(env_hash: str, python: Path, work_root: Path | None) -> Guest:
    """Make a guest's private dir and listening socket and spawn it (no await).

    Raises:
        OSError: the dir, socket or process could not be made (nothing is left).
    """
    # Absolute: the guest runs in its own dir, where a relative socket path would not resolve.
    root = (work_root or Path(tempfile.gettempdir())).absolute()
    root.mkdir(parents=True, exist_ok=True)
    # the worker's pid in the name lets a later worker sweep what a killed one left
    guest_dir = Path(tempfile.mkdtemp(prefix=f"{GUEST_DIR_PREFIX}{os.getpid()}-", dir=root))  # 0700
    socket_path, socket_dir = guest_dir / "s", None
    if len(os.fsencode(socket_path)) > SOCKET_PATH_MAX:
        socket_dir = Path(tempfile.mkdtemp(prefix="cf-"))
        socket_path = socket_dir / "s"
    guest = Guest(env_hash, python, guest_dir, socket_path, socket_dir)
    try:
        (guest_dir / "tmp").mkdir(mode=0o700)
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        guest.listener = trio.socket.from_stdlib_socket(raw)
        raw.bind(str(socket_path))
        raw.listen(1)
        privileges = _privileges.current()
        if privileges is not None:  # a root worker's guest runs as another user
            owned = [guest_dir, guest_dir / "tmp", socket_path]
            privileges.give([*owned, *([socket_dir] if socket_dir is not None else [])])
        guest.proc = _guestproc.spawn(python, [str(socket_path), str(os.getpid())], guest_dir)
    except BaseException:
        discard_now(guest)
        raise
    return guest


def close_listener(guest: Guest) -> None:
    """Stop accepting connections and unlink the socket file (on the Trio thread)."""
    if guest.listener is not None:
        guest.listener.close()
        guest.listener = None
        guest.socket_path.unlink(missing_ok=True)


def close_sockets(guest: Guest) -> None:
    """``close_listener`` and close the connection to the guest (on the Trio thread)."""
    close_listener(guest)
    if guest.conn is not None:
        guest.conn.close()
        guest.conn = None


def discard_now(guest: Guest) -> None:
    """SIGKILL a guest that has no job (it runs only our code) and remove its files.

    Reaps it if it is already gone; otherwise ``discard`` waits for it, or,
    when nobody does, ``subprocess`` reaps the dropped Popen at a later spawn.
    """
    close_sockets(guest)
    if guest.proc is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(guest.proc.pid, signal.SIGKILL)
        guest.proc.stdout.close()
        guest.proc.returncode  # noqa: B018  (reaps it if it is gone already)
        guest.proc.close_pidfd()
    guest.env_hold.close()
    remove_guest_dirs(guest)


async def discard(guest: Guest) -> None:
    """``discard_now``, then reap the guest (shielded, bounded by CLEANUP_GRACE_S)."""
    discard_now(guest)
    if guest.proc is not None:
        with trio.move_on_after(CLEANUP_GRACE_S) as scope:
            scope.shield = True
            await guest.proc.wait()


def remove_guest_dirs(guest: Guest) -> None:
    shutil.rmtree(guest.dir, ignore_errors=True)
    if guest.socket_dir is not None:
        shutil.rmtree(guest.socket_dir, ignore_errors=True)


def sweep_dead_guest_dirs(root: Path) -> int:
    """Remove guest dirs left by workers that were killed (SIGKILL skips all cleanup).

    Returns:
        How many dirs were removed.
    """
    removed = 0
    for path in root.glob(f"{GUEST_DIR_PREFIX}*-*"):
        pid = path.name.removeprefix(GUEST_DIR_PREFIX).split("-")[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    if removed:
        logger.info("removed %d guest dir(s) left by stopped workers in %s", removed, root)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
