"""BridgeExecutor: run one job's plugin in a guest process and write its output.

Theory of operation (one ``run()``):

1. Validate the sinks (a bad URI or mode=error conflict fails before anything
   runs) and resolve the env's interpreter, holding the env against eviction.
2. Get a guest: a *warm* one for this env if the executor has one (see below),
   else start one: a private dir (0700) holding ``tmp/`` and the AF_UNIX
   socket ``s`` (in a short 0700 dir under /tmp instead when the path would
   exceed the 108-byte ``sun_path``), a listening socket, and
   ``<python> -I -B -u guest.py <socket> <our pid>`` in its own process group
   with a clean environment; the guest dies with this process
   (PR_SET_PDEATHSIG). It imports pyarrow, connects, and waits for its job.
3. Write ``plugin.py`` into the guest's dir; accept its connection (racing the
   guest's death and the CONNECT deadline), unlink the socket so nobody else
   can connect, and send the job spec on it.
4. Stream: frames → bounded channel → writer thread → sinks (see ``_stream``).
5. After END: let the guest exit (``kill_grace``), kill its group anyway (to
   reach anything the plugin left running), reap it, commit the sinks. The
   outcome is fixed by the bytes: an END frame read is a success however late
   the guest exits; a guest that exits without one fails once its queued bytes
   are read (``_stream.GuestConnection``). No timer races the stream: the only
   time bounds on a job are its caller's (timeout, abort, shutdown grace).

Every exit path (FAILED, the caller's cancellation, a bug) goes through the
same ``finally`` blocks: kill+reap the group, abort staged output, remove the
guest's dir and socket, each under a shielded ``move_on_after``. A job that
fails is a FAILED Conclude; only the caller's cancellation (re-raised as
``trio.Cancelled``) and bugs leave ``run()`` as exceptions.

Warm guests (``async with executor:`` only): once a job has handed its spec to
its guest, the executor starts the next guest for the same env, so that a
later job only pays for the hand-over, not for an interpreter start and the
pyarrow import. A warm guest is step 2 done ahead of time: still one fresh
process per job, same environment, process group and PDEATHSIG, and it holds
its env against eviction while it waits. At most ``max_warm`` wait at a time
(least recently used envs lose theirs); a dead one is discarded at take time;
leaving the ``async with`` (or ``aclose()``) kills and reaps every one and
removes its dir. Used without ``async with``, the executor keeps none.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs
import trio

from casparian_trio.bridge import _failures, _guestproc, _stream
from casparian_trio.bridge._framing import HEADER, MAX_FRAME_BYTES
from casparian_trio.envs import EnvManager
from casparian_trio.errors import BridgeError, CasparianError, GuestCrashed, first_cause, one_line
from casparian_trio.protocol.messages import Artifact, Conclude, Dispatch
from casparian_trio.sinks import Sink, open_sinks, sink_errors

logger = logging.getLogger(__name__)

# Warm guests kept at most (each is an idle interpreter with pyarrow, ~60 MB).
MAX_WARM = 2
# How long the output pump may take to reach EOF once the guest is dead; a child
# it started may hold the pipe open forever. Whatever is still buffered after
# this is read without waiting (``OutputTail.drain_nowait``), so only output a
# surviving child writes later is missed, never the guest's own.
OUTPUT_DRAIN_S = 1.0
# Per-guest private dirs are named PREFIX<worker pid>-<random>: distinctive, so
# the start-up sweep of dead workers' dirs never touches anyone else's.
GUEST_DIR_PREFIX = "casparian-guest-"
# Bound on cleanup that is not killing (abort staged files, remove the job dir).
CLEANUP_GRACE_S = 10.0
# sun_path is 108 bytes including the NUL; keep a margin.
SOCKET_PATH_MAX = 100


@attrs.define(eq=False)
class _Guest:
    """A started guest process and its private dir, with or without a job yet."""

    env_hash: str
    python: Path
    dir: Path
    socket_path: Path
    socket_dir: Path | None
    listener: trio.socket.SocketType | None = None
    proc: _guestproc.GuestProcess | None = None
    # Holds the env against eviction while the guest waits warm.
    env_hold: contextlib.ExitStack = attrs.field(factory=contextlib.ExitStack)


@attrs.define(eq=False)
class _Job:
    """Per-run state, so every cleanup step can see what exists."""

    job_id: int
    dispatch: Dispatch
    sinks: dict[str, Sink] = attrs.field(factory=dict)
    guest: _Guest | None = None
    output: _guestproc.OutputTail = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.output = _guestproc.OutputTail(self.job_id)

    @property
    def proc(self) -> _guestproc.GuestProcess:
        assert self.guest is not None
        assert self.guest.proc is not None
        return self.guest.proc


@attrs.define(eq=False)
class BridgeExecutor:
    """Runs jobs' plugins in guest processes (see the module docstring).

    Args:
        output_root: sink URIs resolve under this directory.
        envs: where interpreters come from.
        work_root: parent of the per-job private dirs (default: the temp dir).
        kill_grace: seconds between SIGTERM and SIGKILL.
        connect_timeout: how long a guest may take to connect (None: as long as
            the job's own timeout allows; a guest that dies first fails at once).
        max_frame_bytes: larger DATA frames fail the job ("oversized frame").
        spawn_hook: called with the guest's pid (= its process group id) when
            a guest is given a job (warm guests: when taken); for monitoring
            and tests.
        max_warm: warm guests kept while inside ``async with`` (0: none).
    """

    output_root: Path
    envs: EnvManager
    work_root: Path | None = None
    kill_grace: float = 2.0
    connect_timeout: float | None = None
    max_frame_bytes: int = MAX_FRAME_BYTES
    spawn_hook: Callable[[int], None] | None = None
    max_warm: int = MAX_WARM
    _warm: dict[str, _Guest] = attrs.field(factory=dict, init=False)
    _open: bool = attrs.field(default=False, init=False)

    async def __aenter__(self) -> BridgeExecutor:
        self._open = True
        root = self.work_root or Path(tempfile.gettempdir())
        await trio.to_thread.run_sync(sweep_dead_guest_dirs, root)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Kill, reap and remove every warm guest; keep none from now on. Idempotent."""
        self._open = False
        while self._warm:
            _, guest = self._warm.popitem()
            await _discard(guest)

    def prewarm(self, env_hash: str) -> None:
        """Start a warm guest for ``env_hash`` now (no-op outside ``async with``).

        Raises:
            EnvError: the env is not available here.
        """
        if self._open and self.max_warm > 0 and env_hash not in self._warm:
            self._start_warm(env_hash)

    async def run(self, job_id: int, dispatch: Dispatch) -> Conclude:
        """Run ``dispatch`` as job ``job_id``; return its receipt (no ``attempt``).

        Raises:
            trio.Cancelled: the caller's scope was cancelled; the guest was
                killed and reaped and nothing staged remains.
        """
        started = time.monotonic()
        job = _Job(job_id, dispatch)
        try:
            artifacts = await self._run_job(job)
        except BaseException as raised:
            exc = _stream.collapse(raised)
            if isinstance(exc, CasparianError):
                return self._failed(job, exc, started)
            if isinstance(exc, trio.Cancelled) and exc is not raised:
                raise exc from None  # a bare trio.Cancelled rather than a group of them
            if isinstance(raised, Exception):  # a bug of ours: still one named receipt
                logger.error("job %d: bridge error", job_id, exc_info=first_cause(raised)[0])
                return self._failed(job, BridgeError(f"worker error: {one_line(raised)}"), started)
            raise
        finally:
            if job.guest is not None:
                _close_listener(job.guest)  # on the Trio thread (trio sockets)
            await _shielded(_remove_dirs, job)
        rows = sum(s.rows for s in job.sinks.values())
        size = sum(s.bytes_written for s in job.sinks.values())
        metrics = {"rows": rows, "bytes": size, "duration_s": round(time.monotonic() - started, 3)}
        logger.info(
            "job %d succeeded: %d rows",
            job_id,
            rows,
            extra={"event": "job.succeeded", "job_id": job_id},
        )
        return Conclude(status="SUCCESS", metrics=metrics, artifacts=tuple(artifacts))

    # --- phases ------------------------------------------------------------------

    async def _run_job(self, job: _Job) -> list[Artifact]:
        try:
            job.sinks = open_sinks(
                job.dispatch.sinks,
                output_root=self.output_root,
                job_id=job.job_id,
                file_version_id=job.dispatch.file_version_id,
            )
            await trio.to_thread.run_sync(_check_sinks, job.sinks)
            env_hash = job.dispatch.env_hash
            with self.envs.using(env_hash) as python:
                job.guest = self._take_warm(env_hash, python)
                if job.guest is None:
                    job.guest = _start_guest(env_hash, python, self.work_root)
                await self._session(job)
            # The END frame is in: the job has succeeded, and a deadline that
            # passes during the promote must not turn promoted output into a
            # failed or aborted receipt. A promote is a rename or one SQLite
            # transaction; the thread is never abandoned, so this shield adds no
            # wait a cancellation would not already have.
            with trio.CancelScope(shield=True):
                artifacts = await trio.to_thread.run_sync(_commit_sinks, job.sinks)
            return artifacts
        except BaseException:
            await _shielded(_abort_sinks, job)
            raise

    async def _session(self, job: _Job) -> None:
        assert job.guest is not None
        try:
            if self.spawn_hook is not None:
                self.spawn_hook(job.proc.pid)
            (job.guest.dir / "plugin.py").write_text(job.dispatch.source_code, encoding="utf-8")
        except BaseException:
            job.proc.stdout.close()  # nobody will pump it
            with trio.move_on_after(self.kill_grace + 5.0) as scope:
                scope.shield = True
                await _guestproc.terminate_group(job.proc, self.kill_grace)
            raise
        async with trio.open_nursery() as nursery:
            nursery.start_soon(job.output.pump, job.proc.stdout, name="bridge.guest_output")
            try:
                await self._converse(job)
            finally:
                with trio.move_on_after(self.kill_grace + OUTPUT_DRAIN_S + 5.0) as scope:
                    scope.shield = True
                    await _guestproc.terminate_group(job.proc, self.kill_grace)
                    await _drain_output(job)
                nursery.cancel_scope.cancel(reason="guest reaped")

    async def _converse(self, job: _Job) -> None:
        conn = await self._accept(job)
        with conn:
            try:
                await _send_all(conn, _job_spec(job))
                self._replace_warm(job)
                guest_metrics = await self._stream_while_alive(job, conn)
            except _stream.StreamClosed as exc:
                await self._settle(job)
                if job.proc.returncode == 0:
                    raise BridgeError(
                        f"guest exited with status 0 without an end frame ({exc})"
                    ) from exc
                raise GuestCrashed(job.proc.returncode, job.output.text()) from exc
        logger.debug("job %d guest finished: %s", job.job_id, guest_metrics)
        await self._settle(job)

    async def _stream_while_alive(self, job: _Job, conn: trio.socket.SocketType) -> dict[str, Any]:
        """Stream the guest's frames; a guest that exits without closing its socket ends it too.

        EOF is the usual sign of a dead guest, but a child it forked keeps the
        socket open. The watch tells the connection when the guest has exited;
        from then on the stream ends as soon as its queued bytes are read (no
        timer: see ``_stream.GuestConnection``).
        """
        guest_conn = _stream.GuestConnection(conn)
        metrics: dict[str, Any] | None = None
        failure: Exception | None = None
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                await job.proc.wait()
                guest_conn.guest_exited()

            nursery.start_soon(watch, name="bridge.watch_guest_exit")
            try:
                metrics = await _stream.stream(guest_conn, job.sinks, self.max_frame_bytes)
            except Exception as exc:  # re-raised outside the nursery, bare, for run() to map
                failure = exc
            nursery.cancel_scope.cancel(reason="stream ended")
        if failure is not None:
            raise failure
        assert metrics is not None
        return metrics

    async def _accept(self, job: _Job) -> trio.socket.SocketType:
        guest, proc = job.guest, job.proc
        assert guest is not None
        assert guest.listener is not None
        conn: trio.socket.SocketType | None = None
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                await proc.wait()
                nursery.cancel_scope.cancel(reason="guest exited before connecting")

            nursery.start_soon(watch, name="bridge.watch_guest")
            with trio.move_on_after(_or_inf(self.connect_timeout)):
                conn, _ = await guest.listener.accept()
            nursery.cancel_scope.cancel(reason="accepted")
        _close_listener(guest)  # nobody else may connect
        if conn is not None:
            return conn
        if proc.returncode is None:
            raise BridgeError(f"guest did not connect within {self.connect_timeout} s")
        await self._settle(job)
        raise BridgeError(
            f"guest {_failures.status_text(proc.returncode)} before connecting to the bridge socket"
        )

    async def _settle(self, job: _Job) -> None:
        """Give the guest ``kill_grace`` to exit on its own, and drain its output."""
        with trio.move_on_after(self.kill_grace):
            await job.proc.wait()
        if job.proc.returncode is not None:
            await _drain_output(job)

    # --- warm guests -------------------------------------------------------------

    def _take_warm(self, env_hash: str, python: Path) -> _Guest | None:
        guest = self._warm.pop(env_hash, None)
        if guest is None:
            return None
        assert guest.proc is not None
        if guest.python != python or guest.proc.returncode is not None:
            _discard_now(guest)  # died while waiting: start a fresh one
            return None
        guest.env_hold.close()  # the job's own ``envs.using`` holds the env now
        return guest

    def _replace_warm(self, job: _Job) -> None:
        """After a hand-over: start the next guest for this env (best effort)."""
        env_hash = job.dispatch.env_hash
        if not self._open or self.max_warm <= 0 or env_hash in self._warm:
            return
        try:
            self._start_warm(env_hash)
        except Exception:
            logger.warning("could not start a warm guest for %s", env_hash, exc_info=True)

    def _start_warm(self, env_hash: str) -> None:
        hold = contextlib.ExitStack()
        with hold:
            python = hold.enter_context(self.envs.using(env_hash))
            guest = _start_guest(env_hash, python, self.work_root)
            guest.env_hold = hold.pop_all()
        self._warm[env_hash] = guest
        while len(self._warm) > self.max_warm:
            _discard_now(self._warm.pop(next(iter(self._warm))))

    def _failed(self, job: _Job, exc: CasparianError, started: float) -> Conclude:
        message = _failures.describe(
            exc,
            plugin=job.dispatch.plugin_name,
            output_tail=job.output.text(),
            memory_limit_mb=job.dispatch.memory_limit_mb,
        )
        logger.info(
            "job %d failed: %s",
            job.job_id,
            message.splitlines()[0],
            extra={"event": "job.failed", "job_id": job.job_id},
        )
        metrics = {"rows": 0, "bytes": 0, "duration_s": round(time.monotonic() - started, 3)}
        return Conclude(status="FAILED", metrics=metrics, error_message=message)


async def _drain_output(job: _Job) -> None:
    """Let the output pump reach EOF (bounded), then take what is buffered without waiting."""
    with trio.move_on_after(OUTPUT_DRAIN_S):
        await job.output.done.wait()
    job.output.drain_nowait()


def _or_inf(seconds: float | None) -> float:
    return math.inf if seconds is None else seconds


def sweep_dead_guest_dirs(root: Path) -> int:
    """Remove guest dirs left by workers that were killed (SIGKILL skips all cleanup)."""
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


def _start_guest(env_hash: str, python: Path, work_root: Path | None) -> _Guest:
    """Make a guest's private dir and listening socket and spawn it (no await)."""
    root = work_root or Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    # the worker's pid in the name lets a later worker sweep what a killed one left
    guest_dir = Path(tempfile.mkdtemp(prefix=f"{GUEST_DIR_PREFIX}{os.getpid()}-", dir=root))  # 0700
    socket_path, socket_dir = guest_dir / "s", None
    if len(os.fsencode(socket_path)) > SOCKET_PATH_MAX:
        socket_dir = Path(tempfile.mkdtemp(prefix="cf-"))
        socket_path = socket_dir / "s"
    guest = _Guest(env_hash, python, guest_dir, socket_path, socket_dir)
    try:
        (guest_dir / "tmp").mkdir(mode=0o700)
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        guest.listener = trio.socket.from_stdlib_socket(raw)
        raw.bind(str(socket_path))
        raw.listen(1)
        guest.proc = _guestproc.spawn(python, [str(socket_path), str(os.getpid())], guest_dir)
    except BaseException:
        _discard_now(guest)
        raise
    return guest


def _job_spec(job: _Job) -> bytes:
    assert job.guest is not None
    spec: dict[str, Any] = {
        "plugin": str(job.guest.dir / "plugin.py"),
        "input": job.dispatch.file_path,
        "job_id": job.job_id,
        "file_version_id": job.dispatch.file_version_id,
        "topics": sorted(job.sinks),
        "config": dict(job.dispatch.config),
        "memory_limit_mb": job.dispatch.memory_limit_mb,
        "scratch_dir": str(job.guest.dir / "tmp"),
    }
    body = json.dumps(spec).encode("utf-8")
    return HEADER.pack(len(body)) + body


async def _send_all(conn: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[await conn.send(view) :]
    except OSError as exc:  # EPIPE/ECONNRESET: the guest is gone
        raise _stream.StreamClosed(
            f"guest closed the stream before its job was sent ({exc})"
        ) from exc


def _close_listener(guest: _Guest) -> None:
    if guest.listener is not None:
        guest.listener.close()
        guest.listener = None
    guest.socket_path.unlink(missing_ok=True)


def _discard_now(guest: _Guest) -> None:
    """SIGKILL a guest that has no job (it runs only our code) and remove its files.

    Reaps it if it is already gone; otherwise ``_discard`` waits for it, or,
    when nobody does, ``subprocess`` reaps the dropped Popen at a later spawn.
    """
    _close_listener(guest)
    if guest.proc is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(guest.proc.pid, signal.SIGKILL)
        guest.proc.stdout.close()
        guest.proc.returncode  # noqa: B018  (reaps it if it is gone already)
        guest.proc.close_pidfd()
    guest.env_hold.close()
    _remove_guest_dirs(guest)


async def _discard(guest: _Guest) -> None:
    _discard_now(guest)
    if guest.proc is not None:
        with trio.move_on_after(CLEANUP_GRACE_S) as scope:
            scope.shield = True
            await guest.proc.wait()


async def _shielded(fn: Callable[[_Job], None], job: _Job) -> None:
    """Run blocking cleanup in a thread, shielded but bounded."""
    with trio.move_on_after(CLEANUP_GRACE_S) as scope:
        scope.shield = True
        await trio.to_thread.run_sync(fn, job, abandon_on_cancel=True)
    if scope.cancelled_caught:
        logger.warning("job %d: cleanup (%s) did not finish in time", job.job_id, fn.__name__)


def _check_sinks(sinks: dict[str, Sink]) -> None:
    for sink in sinks.values():
        with sink_errors(sink, "checking"):
            sink.check()


def _commit_sinks(sinks: dict[str, Sink]) -> list[Artifact]:
    # Every sink's conflict check first, so a refusal (mode 'error') cannot come
    # after another topic's output has already been promoted.
    _check_sinks(sinks)
    artifacts: list[Artifact] = []
    for sink in sinks.values():
        with sink_errors(sink, "promoting"):
            artifact = sink.commit()
        if artifact is not None:
            artifacts.append(artifact)
    return artifacts


def _abort_sinks(job: _Job) -> None:
    for sink in job.sinks.values():
        sink.abort()


def _remove_dirs(job: _Job) -> None:
    if job.guest is not None:
        _remove_guest_dirs(job.guest)


def _remove_guest_dirs(guest: _Guest) -> None:
    shutil.rmtree(guest.dir, ignore_errors=True)
    if guest.socket_dir is not None:
        shutil.rmtree(guest.socket_dir, ignore_errors=True)
