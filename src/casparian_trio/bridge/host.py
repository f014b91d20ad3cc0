"""BridgeExecutor: run one job's plugin in a guest process and write its output.

Theory of operation (one ``run()``):

1. Make a private job dir (0700) holding ``plugin.py``, ``job.json``, ``tmp/``
   and the AF_UNIX socket ``s`` (in a short 0700 dir under /tmp instead when
   the path would exceed the 108-byte ``sun_path``).
2. Validate the sinks (a bad URI or mode=error conflict fails before anything
   runs) and resolve the env's interpreter, holding the env against eviction.
3. Spawn ``<python> -I -B -u guest.py job.json`` in its own process group with
   a clean environment; the guest dies with this process (PR_SET_PDEATHSIG).
4. Accept one connection, racing the guest's death and CONNECT deadline; then
   unlink the socket so nobody else can connect.
5. Stream: frames → bounded channel → writer thread → sinks (see ``_stream``).
6. After END: let the guest exit (``kill_grace``), kill its group anyway (to
   reach anything the plugin left running), reap it, commit the sinks.

Every exit path (FAILED, the caller's cancellation, a bug) goes through the
same ``finally`` blocks: kill+reap the group, abort staged output, remove the
job dir and the socket, each under a shielded ``move_on_after``. A job that
fails is a FAILED Conclude; only the caller's cancellation (re-raised as
``trio.Cancelled``) and bugs leave ``run()`` as exceptions.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from casparian_trio.bridge import _failures, _guestproc, _stream
from casparian_trio.bridge._framing import MAX_FRAME_BYTES
from casparian_trio.envs import EnvManager
from casparian_trio.errors import BridgeError, CasparianError, GuestCrashed
from casparian_trio.protocol.messages import Artifact, Conclude, Dispatch
from casparian_trio.sinks import Sink, open_sinks

logger = logging.getLogger(__name__)

# A guest imports pyarrow (~0.1 s) before connecting; 30 s covers a loaded host.
CONNECT_TIMEOUT_S = 30.0
# How long we wait for the guest's output pipe to drain once it is dead.
OUTPUT_DRAIN_S = 1.0
# Bound on cleanup that is not killing (abort staged files, remove the job dir).
CLEANUP_GRACE_S = 10.0
# sun_path is 108 bytes including the NUL; keep a margin.
SOCKET_PATH_MAX = 100


@attrs.define(eq=False)
class _Job:
    """Per-run state, so every cleanup step can see what exists."""

    job_id: int
    dispatch: Dispatch
    dir: Path
    socket_path: Path
    socket_dir: Path | None
    sinks: dict[str, Sink] = attrs.field(factory=dict)
    proc: trio.Process | None = None
    output: _guestproc.OutputTail = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.output = _guestproc.OutputTail(self.job_id)


@attrs.define(eq=False)
class BridgeExecutor:
    """Runs jobs' plugins in guest processes (see the module docstring).

    Args:
        output_root: sink URIs resolve under this directory.
        envs: where interpreters come from.
        work_root: parent of the per-job private dirs (default: the temp dir).
        kill_grace: seconds between SIGTERM and SIGKILL.
        connect_timeout: how long a guest may take to connect.
        max_frame_bytes: larger DATA frames fail the job ("oversized frame").
        spawn_hook: called with the guest's pid (= its process group id) once
            spawned; for monitoring and tests.
    """

    output_root: Path
    envs: EnvManager
    work_root: Path | None = None
    kill_grace: float = 2.0
    connect_timeout: float = CONNECT_TIMEOUT_S
    max_frame_bytes: int = MAX_FRAME_BYTES
    spawn_hook: Callable[[int], None] | None = None

    async def run(self, job_id: int, dispatch: Dispatch) -> Conclude:
        """Run ``dispatch`` as job ``job_id``; return its receipt (no ``attempt``).

        Raises:
            trio.Cancelled: the caller's scope was cancelled; the guest was
                killed and reaped and nothing staged remains.
        """
        started = time.monotonic()
        job = self._new_job(job_id, dispatch)
        try:
            artifacts = await self._run_job(job)
        except BaseException as raised:
            exc = _stream.collapse(raised)
            if isinstance(exc, CasparianError):
                return self._failed(job, exc, started)
            if exc is raised:
                raise
            raise exc from None  # a bare trio.Cancelled rather than a group of them
        finally:
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
            with self.envs.using(job.dispatch.env_hash) as python:
                await self._session(job, python)
            return await trio.to_thread.run_sync(_commit_sinks, job.sinks)
        except BaseException:
            await _shielded(_abort_sinks, job)
            raise

    async def _session(self, job: _Job, python: Path) -> None:
        job_file = self._write_job_files(job)
        listener = await _listen(job.socket_path)
        with listener:
            async with trio.open_nursery() as nursery:
                job.proc = await _guestproc.spawn(python, job_file, job.dir)
                if self.spawn_hook is not None:
                    self.spawn_hook(job.proc.pid)
                assert job.proc.stdout is not None
                nursery.start_soon(job.output.pump, job.proc.stdout, name="bridge.guest_output")
                try:
                    await self._converse(job, listener)
                finally:
                    with trio.move_on_after(self.kill_grace + OUTPUT_DRAIN_S + 5.0) as scope:
                        scope.shield = True
                        await _guestproc.terminate_group(job.proc, self.kill_grace)
                        with trio.move_on_after(OUTPUT_DRAIN_S):
                            await job.output.done.wait()
                    nursery.cancel_scope.cancel(reason="guest reaped")

    async def _converse(self, job: _Job, listener: trio.socket.SocketType) -> None:
        conn = await self._accept(job, listener)
        with conn:
            try:
                guest_metrics = await _stream.stream(conn, job.sinks, self.max_frame_bytes)
            except _stream.StreamClosed as exc:
                await self._settle(job)
                assert job.proc is not None
                if job.proc.returncode == 0:
                    raise BridgeError(
                        f"guest exited with status 0 without an end frame ({exc})"
                    ) from exc
                raise GuestCrashed(job.proc.returncode, job.output.text()) from exc
        logger.debug("job %d guest finished: %s", job.job_id, guest_metrics)
        await self._settle(job)

    async def _accept(self, job: _Job, listener: trio.socket.SocketType) -> trio.socket.SocketType:
        assert job.proc is not None
        proc = job.proc
        conn: trio.socket.SocketType | None = None
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                await proc.wait()
                nursery.cancel_scope.cancel(reason="guest exited before connecting")

            nursery.start_soon(watch, name="bridge.watch_guest")
            with trio.move_on_after(self.connect_timeout):
                conn, _ = await listener.accept()
            nursery.cancel_scope.cancel(reason="accepted")
        job.socket_path.unlink(missing_ok=True)  # nobody else may connect
        if conn is not None:
            return conn
        if proc.returncode is None:
            raise BridgeError(f"guest did not connect within {self.connect_timeout:g} s")
        await self._settle(job)
        raise BridgeError(
            f"guest {_failures.status_text(proc.returncode)} before connecting to the bridge socket"
        )

    async def _settle(self, job: _Job) -> None:
        """Give the guest ``kill_grace`` to exit on its own, and drain its output."""
        assert job.proc is not None
        with trio.move_on_after(self.kill_grace):
            await job.proc.wait()
        if job.proc.returncode is not None:
            with trio.move_on_after(OUTPUT_DRAIN_S):
                await job.output.done.wait()

    # --- helpers -----------------------------------------------------------------

    def _new_job(self, job_id: int, dispatch: Dispatch) -> _Job:
        root = self.work_root or Path(tempfile.gettempdir())
        root.mkdir(parents=True, exist_ok=True)
        job_dir = Path(tempfile.mkdtemp(prefix=f"job-{job_id}-", dir=root))  # mode 0700
        socket_path, socket_dir = job_dir / "s", None
        if len(os.fsencode(socket_path)) > SOCKET_PATH_MAX:
            socket_dir = Path(tempfile.mkdtemp(prefix="cf-"))
            socket_path = socket_dir / "s"
        return _Job(job_id, dispatch, job_dir, socket_path, socket_dir)

    def _write_job_files(self, job: _Job) -> Path:
        (job.dir / "tmp").mkdir(mode=0o700)
        plugin = job.dir / "plugin.py"
        plugin.write_text(job.dispatch.source_code, encoding="utf-8")
        spec: dict[str, Any] = {
            "socket": str(job.socket_path),
            "plugin": str(plugin),
            "input": job.dispatch.file_path,
            "job_id": job.job_id,
            "file_version_id": job.dispatch.file_version_id,
            "topics": sorted(job.sinks),
            "config": dict(job.dispatch.config),
            "memory_limit_mb": job.dispatch.memory_limit_mb,
            "parent_pid": os.getpid(),
            "scratch_dir": str(job.dir / "tmp"),
        }
        job_file = job.dir / "job.json"
        job_file.write_text(json.dumps(spec), encoding="utf-8")
        return job_file

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


async def _listen(path: Path) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(str(path))
        sock.listen(1)
    except BaseException:
        sock.close()
        raise
    return sock


async def _shielded(fn: Callable[[_Job], None], job: _Job) -> None:
    """Run blocking cleanup in a thread, shielded but bounded."""
    with trio.move_on_after(CLEANUP_GRACE_S) as scope:
        scope.shield = True
        await trio.to_thread.run_sync(fn, job, abandon_on_cancel=True)
    if scope.cancelled_caught:
        logger.warning("job %d: cleanup (%s) did not finish in time", job.job_id, fn.__name__)


def _check_sinks(sinks: dict[str, Sink]) -> None:
    for sink in sinks.values():
        sink.check()


def _commit_sinks(sinks: dict[str, Sink]) -> list[Artifact]:
    artifacts = [sink.commit() for sink in sinks.values()]
    return [a for a in artifacts if a is not None]


def _abort_sinks(job: _Job) -> None:
    for sink in job.sinks.values():
        sink.abort()


def _remove_dirs(job: _Job) -> None:
    shutil.rmtree(job.dir, ignore_errors=True)
    if job.socket_dir is not None:
        shutil.rmtree(job.socket_dir, ignore_errors=True)
