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
5. After END: let the guest exit (``kill_grace_s``), kill its group anyway (to
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

Warm guests (``async with executor:`` only) are step 2 done ahead of time:
see ``_warm``. The guest's dir, socket and removal live in ``_guestdir``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import attrs
import trio

from casparian_trio import failure_text
from casparian_trio.bridge import _failures, _guestproc, _input_check, _stream
from casparian_trio.bridge._framing import HEADER, MAX_FRAME_BYTES
from casparian_trio.bridge._guestdir import (
    CLEANUP_GRACE_S,
    Guest,
    close_listener,
    remove_guest_dirs,
    start_guest,
    sweep_dead_guest_dirs,
)
from casparian_trio.bridge._warm import MAX_WARM, WarmPool
from casparian_trio.envs import EnvManager
from casparian_trio.errors import (
    BridgeError,
    CasparianError,
    GuestCrashed,
    OutputSuperseded,
    first_cause,
    one_line,
)
from casparian_trio.protocol.messages import Artifact, Conclude, Dispatch
from casparian_trio.sinks import Sink, open_sinks, sink_errors

logger = logging.getLogger(__name__)

# How long the output pump may take to reach EOF once the guest is dead; a child
# it started may hold the pipe open forever. Whatever is still buffered after
# this is read without waiting (``OutputTail.drain_nowait``), so only output a
# surviving child writes later is missed, never the guest's own.
OUTPUT_DRAIN_S = 1.0

T = TypeVar("T")


@attrs.define(eq=False)
class _Job:
    """Per-run state, so every cleanup step can see what exists."""

    job_id: int
    dispatch: Dispatch
    sinks: dict[str, Sink] = attrs.field(factory=dict)
    guest: Guest | None = None
    retracted: int | None = None  # a retraction job: files or rows removed
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
        kill_grace_s: seconds between SIGTERM and SIGKILL.
        connect_timeout_s: how long a guest may take to connect (None: as long as
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
    kill_grace_s: float = 2.0
    connect_timeout_s: float | None = None
    max_frame_bytes: int = MAX_FRAME_BYTES
    spawn_hook: Callable[[int], None] | None = None
    max_warm: int = MAX_WARM
    _warm: WarmPool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._warm = WarmPool(self.envs, self.work_root, self.max_warm)

    async def __aenter__(self) -> BridgeExecutor:
        self._warm.open()
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
        await self._warm.aclose()

    def prewarm(self, env_hash: str) -> None:
        """Start a warm guest for ``env_hash`` now (no-op outside ``async with``).

        Raises:
            EnvError: the env is not available here.
        """
        self._warm.prewarm(env_hash)

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
                close_listener(job.guest)  # on the Trio thread (trio sockets)
            await _shielded(_remove_dirs, job)
        rows = sum(s.rows for s in job.sinks.values())
        size = sum(s.bytes_written for s in job.sinks.values())
        quarantined = sum(s.rows_quarantined for s in job.sinks.values())
        metrics = {
            "rows": rows,
            "rows_quarantined": quarantined,
            "bytes": size,
            "duration_s": round(time.monotonic() - started, 3),
        }
        if job.retracted is not None:
            metrics["retracted"] = job.retracted
        logger.info(
            "job %d succeeded: %d rows",
            job_id,
            rows,
            extra={"event": "job.succeeded", "job_id": job_id},
        )
        return Conclude(
            status="SUCCESS",
            metrics=metrics,
            artifacts=tuple(artifacts),
            log_tail=failure_text.log_tail(job.output.text()),
        )

    # --- phases ------------------------------------------------------------------

    def _open_sinks(self, job: _Job) -> None:
        d = job.dispatch
        job.sinks = open_sinks(
            d.sinks,
            output_root=self.output_root,
            job_id=job.job_id,
            file_version_id=d.file_version_id,
            source_hash=d.source_hash,
            parser_version=d.parser_version,
            source_file_id=d.source_file_id,
            plugin=d.plugin_name,
            replaces_jobs=d.replaces_jobs,
        )

    async def _retract(self, job: _Job) -> list[Artifact]:
        """A retraction job: the file was deleted; remove its output from every topic."""
        self._open_sinks(job)
        with trio.CancelScope(shield=True):  # a deletion is a few unlinks or one transaction
            job.retracted = await trio.to_thread.run_sync(_retract_sinks, job.sinks)
        return []

    async def _run_job(self, job: _Job) -> list[Artifact]:
        if job.dispatch.retract:
            return await self._retract(job)
        await _check_input(job.dispatch, content=True)
        try:
            self._open_sinks(job)
            await trio.to_thread.run_sync(_prepare_sinks, job.sinks)
            env_hash = job.dispatch.env_hash
            with self.envs.using(env_hash) as python:
                job.guest = self._warm.take(env_hash, python)
                if job.guest is None:
                    job.guest = start_guest(env_hash, python, self.work_root)
                await self._session(job)
            # The END frame is in: the job has succeeded, and a deadline that
            # passes during the promote must not turn promoted output into a
            # failed or aborted receipt. A promote is a rename or one SQLite
            # transaction; the thread is never abandoned, so this shield adds no
            # wait a cancellation would not already have.
            # The file must still be the version parsed: a rewrite during the run
            # would label new content with the old version (SUPERSEDED instead).
            await _check_input(job.dispatch)
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
            with trio.move_on_after(self.kill_grace_s + 5.0) as scope:
                scope.shield = True
                await _guestproc.terminate_group(job.proc, self.kill_grace_s)
            raise
        async with trio.open_nursery() as nursery:
            nursery.start_soon(job.output.pump, job.proc.stdout, name="bridge.guest_output")
            try:
                await self._converse(job)
            finally:
                with trio.move_on_after(self.kill_grace_s + OUTPUT_DRAIN_S + 5.0) as scope:
                    scope.shield = True
                    await _guestproc.terminate_group(job.proc, self.kill_grace_s)
                    await _drain_output(job)
                nursery.cancel_scope.cancel(reason="guest reaped")

    async def _converse(self, job: _Job) -> None:
        conn = await self._accept(job)
        with conn:
            try:
                await _send_all(conn, _job_spec(job))
                self._warm.replace(job.dispatch.env_hash)
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
        metrics = await _while_guest_runs(
            job.proc,
            lambda: _stream.stream(guest_conn, job.sinks, self.max_frame_bytes),
            on_exit=lambda _scope: guest_conn.guest_exited(),
        )
        assert metrics is not None  # on_exit does not cancel: the stream ends by itself
        return metrics

    async def _accept(self, job: _Job) -> trio.socket.SocketType:
        guest, proc = job.guest, job.proc
        assert guest is not None
        listener = guest.listener
        assert listener is not None

        async def accept() -> trio.socket.SocketType | None:
            with trio.move_on_after(_or_inf(self.connect_timeout_s)):
                conn, _ = await listener.accept()
                return conn
            return None

        conn = await _while_guest_runs(
            proc,
            accept,
            on_exit=lambda scope: scope.cancel(reason="guest exited before connecting"),
        )
        close_listener(guest)  # nobody else may connect
        if conn is not None:
            return conn
        if proc.returncode is None:
            raise BridgeError(f"guest did not connect within {self.connect_timeout_s} s")
        await self._settle(job)
        raise BridgeError(
            f"guest {_failures.status_text(proc.returncode)} before connecting to the bridge socket"
        )

    async def _settle(self, job: _Job) -> None:
        """Give the guest ``kill_grace_s`` to exit on its own, and drain its output."""
        with trio.move_on_after(self.kill_grace_s):
            await job.proc.wait()
        if job.proc.returncode is not None:
            await _drain_output(job)

    def _failed(self, job: _Job, exc: CasparianError, started: float) -> Conclude:
        head, body = _failures.describe_parts(
            exc,
            plugin=job.dispatch.plugin_name,
            output_tail=job.output.text(),
            memory_limit_mb=job.dispatch.memory_limit_mb,
        )
        logger.info(
            "job %d failed: %s",
            job.job_id,
            head,
            extra={"event": "job.failed", "job_id": job.job_id},
        )
        metrics = {"rows": 0, "bytes": 0, "duration_s": round(time.monotonic() - started, 3)}
        refusal = exc.refusal if isinstance(exc, _input_check.InputRefused) else None
        if isinstance(exc, OutputSuperseded):
            refusal = _input_check.Refusal(str(exc), _input_check.SKIP_SUPERSEDED, False)
        return Conclude(
            status="FAILED",
            metrics=metrics,
            # the whole text still, for a Sentinel that does not read `traceback`
            error_message=_failures.join(head, body),
            traceback=body or None,
            deterministic=(
                refusal.deterministic if refusal is not None else _failures.is_deterministic(exc)
            ),
            skip_reason=None if refusal is None else refusal.skip_reason,
        )


async def _check_input(dispatch: Dispatch, *, content: bool = False) -> None:
    """Refuse an input that is not the queued version (``_input_check``).

    ``content``: also its sha256 when the DISPATCH asks for ``verify_hash``
    (before the guest; the check after it compares size and mtime only).
    """
    if dispatch.source_root is None:
        return  # an old Sentinel: nothing to compare with
    seen = await trio.to_thread.run_sync(
        _input_check.observe, dispatch.file_path, dispatch.source_root
    )
    refusal = _input_check.judge(
        dispatch.file_path, seen, file_size=dispatch.file_size, file_mtime=dispatch.file_mtime
    )
    if refusal is None and content and dispatch.verify_hash and dispatch.source_hash:
        actual = await trio.to_thread.run_sync(_input_check.digest, dispatch.file_path)
        refusal = _input_check.judge_hash(dispatch.file_path, actual, dispatch.source_hash)
    if refusal is not None:
        raise _input_check.InputRefused(refusal)


async def _while_guest_runs(
    proc: _guestproc.GuestProcess,
    body: Callable[[], Awaitable[T]],
    *,
    on_exit: Callable[[trio.CancelScope], None],
) -> T | None:
    """Run ``body`` while a watch calls ``on_exit(body's scope)`` once the guest has exited.

    Returns ``body``'s result, or None when ``on_exit`` cancelled it. An
    exception from ``body`` is re-raised bare (not in a nursery's group).
    """
    result: T | None = None
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            await proc.wait()
            on_exit(nursery.cancel_scope)

        nursery.start_soon(watch, name="bridge.watch_guest_exit")
        try:
            result = await body()
        except Exception as exc:
            failure = exc
        nursery.cancel_scope.cancel(reason="done while the guest ran")
    if failure is not None:
        raise failure
    return result


async def _drain_output(job: _Job) -> None:
    """Let the output pump reach EOF (bounded), then take what is buffered without waiting."""
    with trio.move_on_after(OUTPUT_DRAIN_S):
        await job.output.done.wait()
    job.output.drain_nowait()


def openable_input(path: str, folder: Path) -> str:
    """``path``, or for a name that is not valid UTF-8 a symlink to it in ``folder``.

    Such a name reaches Python as surrogate escapes, which ``open`` accepts but
    libraries that encode paths as UTF-8 (pyarrow, polars) refuse. The alias
    ``folder/input<suffix>`` keeps the extension when that is valid UTF-8.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        suffix = os.path.splitext(path)[1]
        try:
            suffix.encode("utf-8")
        except UnicodeEncodeError:
            suffix = ""
        alias = folder / f"input{suffix}"
        alias.unlink(missing_ok=True)
        alias.symlink_to(path)
        return str(alias)
    return path


def _or_inf(seconds: float | None) -> float:
    return math.inf if seconds is None else seconds


def _job_spec(job: _Job) -> bytes:
    assert job.guest is not None
    spec: dict[str, Any] = {
        "plugin": str(job.guest.dir / "plugin.py"),
        "input": openable_input(job.dispatch.file_path, job.guest.dir),
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


async def _shielded(fn: Callable[[_Job], None], job: _Job) -> None:
    """Run blocking cleanup in a thread, shielded but bounded."""
    with trio.move_on_after(CLEANUP_GRACE_S) as scope:
        scope.shield = True
        await trio.to_thread.run_sync(fn, job, abandon_on_cancel=True)
    if scope.cancelled_caught:
        logger.warning("job %d: cleanup (%s) did not finish in time", job.job_id, fn.__name__)


def _prepare_sinks(sinks: dict[str, Sink]) -> None:
    for sink in sinks.values():
        with sink_errors(sink, "preparing"):
            sink.prepare()


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
        artifacts.extend(a for a in (artifact, sink.quarantine_artifact) if a is not None)
    return artifacts


def _retract_sinks(sinks: dict[str, Sink]) -> int:
    removed = 0
    for sink in sinks.values():
        with sink_errors(sink, "retracting"):
            removed += sink.retract()
    return removed


def _abort_sinks(job: _Job) -> None:
    for sink in job.sinks.values():
        sink.abort()


def _remove_dirs(job: _Job) -> None:
    if job.guest is not None:
        remove_guest_dirs(job.guest)
