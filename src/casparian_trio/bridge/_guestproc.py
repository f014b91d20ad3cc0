"""Spawning, watching and killing a guest process (Trio side, no Arrow).

Invariants:
- The guest is forked by the thread running Trio, not by a worker thread (as
  ``trio.lowlevel.open_process`` would): PR_SET_PDEATHSIG fires when the
  *thread* that forked the child exits, and Trio retires idle worker threads
  after 10 s, which would SIGKILL any guest (and every warm guest) still
  running then. ``Popen`` with vfork takes a few ms.
- The guest runs in its own session/process group (pgid == its pid), so one
  ``killpg`` reaches anything the plugin started too.
- It gets a clean environment: nothing of the worker's environment leaks into
  it except an allow-list (locale, time zone, Arrow/OpenMP tuning); HOME and
  TMPDIR point into the job's private dir.
- ``terminate_group`` is the only way a guest is stopped: SIGTERM, a grace
  period, SIGKILL to the whole group, then reap (no zombie). Callers run it
  under a shielded, bounded cancel scope.
- Guest stdout+stderr (one pipe, interleaved as written) are logged and the
  last TAIL_BYTES of each job kept for its error messages. A reused guest's
  pipe outlives its jobs: each job's ``OutputTail`` reads it while the job
  runs, and whoever discards the guest closes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from casparian_trio import _arrow_pool
from casparian_trio.bridge import _privileges

logger = logging.getLogger(__name__)

GUEST_SCRIPT = Path(__file__).with_name("guest.py")
# -I: isolated mode (no PYTHON* env vars, no user site, script dir not on sys.path);
# it keeps venv detection (pyvenv.cfg) working. -B: no .pyc writes into the env.
# -u: unbuffered, so output printed just before a crash still reaches us.
PYTHON_FLAGS = ("-I", "-B", "-u")
# Host variables a guest may see: locale, time zone, thread/pool tuning.
PASS_THROUGH = (
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "OMP_NUM_THREADS",
    "ARROW_DEFAULT_MEMORY_POOL",
    "ARROW_IO_THREADS",
)
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
# Enough output to show a traceback or the last lines before a crash.
TAIL_BYTES = 16 * 1024
# Log at most this many guest lines per job; a chatty plugin must not flood logs.
MAX_LOGGED_LINES = 200


def guest_env(job_dir: Path, python: Path) -> dict[str, str]:
    """The complete environment of a guest (no inherited secrets)."""
    env = {k: os.environ[k] for k in PASS_THROUGH if k in os.environ}
    if _arrow_pool.named_here():  # the worker's own choice, not the user's: the guest makes its own
        env.pop(_arrow_pool.ENV, None)
    env.setdefault("LANG", "C.UTF-8")
    env["PATH"] = f"{python.parent}:{SAFE_PATH}"
    env["HOME"] = str(job_dir)
    env["TMPDIR"] = str(job_dir / "tmp")
    return env


@attrs.define(eq=False)
class GuestProcess:
    """A spawned guest: the bits of ``trio.Process`` the bridge uses.

    ``returncode`` reaps the child when it has exited; ``wait()`` sleeps on a
    pidfd (polling where pidfd_open is missing).
    """

    popen: subprocess.Popen[bytes]
    stdout: trio.lowlevel.FdStream
    _pidfd: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        code = self.popen.poll()
        if code is not None:
            self.close_pidfd()
        return code

    async def wait(self) -> int:
        while (code := self.returncode) is None:
            if self._pidfd is not None:
                await trio.lowlevel.wait_readable(self._pidfd)
            else:
                await trio.sleep(0.01)
        await trio.lowlevel.checkpoint()
        return code

    def close_pidfd(self) -> None:
        if self._pidfd is not None:
            fd, self._pidfd = self._pidfd, None
            trio.lowlevel.notify_closing(fd)
            os.close(fd)


def spawn(python: Path, args: Sequence[str], home: Path) -> GuestProcess:
    """Start the guest script with ``args`` in its own process group (no await).

    ``home`` is the guest's private dir: its cwd, HOME, and TMPDIR's parent.
    """
    privileges = _privileges.current()
    argv = [str(python), *PYTHON_FLAGS, str(GUEST_SCRIPT), *args]
    if privileges is not None:  # a root worker: another user, or root without capabilities
        argv = [*privileges.prefix(), *argv]
    rfd, wfd = os.pipe()
    try:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=wfd,
            stderr=wfd,
            cwd=home,
            env=guest_env(home, python),
            start_new_session=True,
        )
    except BaseException:
        os.close(rfd)
        raise
    finally:
        os.close(wfd)
    pidfd = None
    with contextlib.suppress(AttributeError, OSError):
        pidfd = os.pidfd_open(popen.pid)
    return GuestProcess(popen, trio.lowlevel.FdStream(rfd), pidfd)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group is already gone
        os.killpg(pgid, sig)


async def terminate_group(proc: GuestProcess, grace_s: float) -> None:
    """SIGTERM the guest's group, wait ``grace_s``, SIGKILL the group, reap the guest."""
    if proc.returncode is None:
        _killpg(proc.pid, signal.SIGTERM)
        with trio.move_on_after(grace_s):
            await proc.wait()
    # Also reaches processes the plugin started, even when the guest already exited.
    _killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


@attrs.define(eq=False)
class OutputTail:
    """Reads a guest's output pipe: logs it, keeps a bounded tail."""

    job_id: int
    _chunks: deque[bytes] = attrs.field(factory=deque)
    _size: int = 0
    _lines_logged: int = 0
    _partial: bytes = b""
    done: trio.Event = attrs.field(factory=trio.Event)
    _stream: trio.lowlevel.FdStream | None = None

    async def pump(self, stream: trio.lowlevel.FdStream) -> None:
        """Read until EOF or until cancelled; the stream stays open (its guest may run on)."""
        self._stream = stream
        try:
            while chunk := await stream.receive_some(65536):
                self._keep(chunk)
                self._log(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.done.set()

    def drain_nowait(self) -> None:
        """Take whatever the pipe holds right now without waiting (the pump may lag).

        A dead guest's output is all in the pipe already; reading it here makes
        the error's tail complete however slowly the pump task is scheduled.
        """
        if self.done.is_set() or self._stream is None:
            return
        with contextlib.suppress(OSError, ValueError):  # closed meanwhile, EAGAIN
            while chunk := os.read(self._stream.fileno(), 65536):
                self._keep(chunk)
                self._log(chunk)

    def text(self) -> str:
        return b"".join(self._chunks)[-TAIL_BYTES:].decode("utf-8", "replace")

    def _keep(self, chunk: bytes | bytearray) -> None:
        self._chunks.append(bytes(chunk))
        self._size += len(chunk)
        while self._size - len(self._chunks[0]) >= TAIL_BYTES:
            self._size -= len(self._chunks.popleft())

    def _log(self, chunk: bytes | bytearray) -> None:
        if self._lines_logged > MAX_LOGGED_LINES:
            return
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        self._partial = self._partial[-TAIL_BYTES:]
        for line in lines:
            self._lines_logged += 1
            if self._lines_logged > MAX_LOGGED_LINES:
                logger.info("job %d guest: (further output not logged)", self.job_id)
                return
            logger.info("job %d guest: %s", self.job_id, line.decode("utf-8", "replace"))
