"""BridgeExecutor: run one job's plugin in a guest process and write its output.

Theory of operation (one ``run()``):

1. Validate the sinks (a bad URI or mode=error conflict fails before anything
   runs) and resolve the env's interpreter, holding the env against eviction.
2. Get a guest: an idle one of this plugin version from the pool (see below),
   else start one: a private dir (0700) holding ``tmp/`` and the AF_UNIX
   socket ``s`` (in a short 0700 dir under /tmp instead when the path would
   exceed the 108-byte ``sun_path``), a listening socket, and
   ``<python> -I -B -u guest.py <socket> <our pid>`` in its own process group
   with a clean environment; the guest dies with this process
   (PR_SET_PDEATHSIG). It imports pyarrow, connects, and waits for its job.
3. A new guest: write ``plugin.py`` into its dir; accept its connection
   (racing the guest's death and the CONNECT deadline), unlink the socket so
   nobody else can connect. Then send the job spec on the connection.
4. Stream: frames → bounded channel → writer thread → sinks (see ``_stream``).
5. After END: a reusable guest goes back to the pool, idle (``_pool`` decides
   whether to keep it); any other guest gets ``kill_grace_s`` to exit, then its
   group is killed anyway (to reach anything the plugin left running) and it
   is reaped. Then the sinks are committed. The
   outcome is fixed by the bytes: an END frame read is a success however late
   the guest exits; a guest that exits without one fails once its queued bytes
   are read (``_stream.GuestConnection``). No timer races the stream: the only
   time bounds on a job are its caller's (timeout, abort, shutdown grace).

Every exit path other than END (FAILED, the caller's cancellation, a bug)
goes through the same ``finally`` blocks: kill+reap the group, abort staged
output, remove the guest's dir and socket, each under a shielded
``move_on_after``. So a timeout, an abort, a crash or an ERROR frame kills
that job's guest only, and the next job of that plugin gets a new one. A job that
fails is a FAILED Conclude; only the caller's cancellation (re-raised as
``trio.Cancelled``) and bugs leave ``run()`` as exceptions.

Reused guests (``async with executor:`` only; outside it every job gets its
own process): see ``_pool``. The guest's dir, socket and removal live in
``_guestdir``.
"""

from __future__ import annotations

import contextlib
import hashlib
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
from casparian_trio.bridge import (
    _failures,
    _guestproc,
    _input_check,
    _pool,
    _shared_frames,
    _stream,
)
from casparian_trio.bridge._framing import HEADER, MAX_FRAME_BYTES
from casparian_trio.bridge._guestdir import (
    CLEANUP_GRACE_S,
    Guest,
    PluginKey,
    close_listener,
    close_sockets,
    discard,
    remove_guest_dirs,
    start_guest,
    sweep_dead_guest_dirs,
)
from casparian_trio.bridge._memory_pool import prefer_jemalloc
from casparian_trio.bridge._pool import GuestPool
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
# A job whose guest sent at most this many bytes is prepared and committed on
# the Trio thread: its sinks hold little to encode, and two hops to a worker
# thread and back cost more than the work (the small-file case).
INLINE_JOB_BYTES = 1024 * 1024
# Idle guests kept by default: one per slot and plugin version for a worker
# with one slot and two plugins (the worker passes 2 x its slots).
MAX_IDLE = 2

T = TypeVar("T")


@attrs.define(eq=False)
class _Job:
    """Per-run state, so every cleanup step can see what exists."""

    job_id: int
    dispatch: Dispatch
    sinks: dict[str, Sink] = attrs.field(factory=dict)
    guest: Guest | None = None  # None again once handed back to the pool
    guest_job: int = 0  # which job of its guest this is (1: a new guest)
    received: int = 0  # bytes the guest sent
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
        spawn_hook: called with the guest's pid (= its process group id) each
            time a guest is given a job; for monitoring and tests.
        max_idle: idle guests kept while inside ``async with`` (0: none, a
            new process for every job).
        guest_max_jobs: a guest is replaced after this many jobs.
        guest_max_rss_mb: ... or once its RSS is above this after a job.
        guest_idle_s: idle guests are killed after this long without a job.
        shared_memory: let guests hand big DATA frames over as sealed memfds
            (Linux; see ``_shared_frames``); False: every byte through the socket.
    """

    output_root: Path
    envs: EnvManager
    work_root: Path | None = None
    kill_grace_s: float = 2.0
    connect_timeout_s: float | None = None
    max_frame_bytes: int = MAX_FRAME_BYTES
    spawn_hook: Callable[[int], None] | None = None
    max_idle: int = MAX_IDLE
    guest_max_jobs: int = _pool.MAX_JOBS
    guest_max_rss_mb: int = _pool.MAX_RSS_MB
    guest_idle_s: float = _pool.IDLE_S
    shared_memory: bool = True
    _pool: GuestPool = attrs.field(init=False)
    _stack: contextlib.AsyncExitStack | None = None
    _nursery: trio.Nursery | None = None

    def __attrs_post_init__(self) -> None:
        prefer_jemalloc()  # process-wide: the worker's receive buffers and row groups
        self._pool = GuestPool(
            self.envs,
            self.work_root,
            max_idle=self.max_idle,
            max_jobs=self.guest_max_jobs,
            max_rss_mb=self.guest_max_rss_mb,
            idle_s=self.guest_idle_s,
        )

    async def __aenter__(self) -> BridgeExecutor:
        root = self.work_root or Path(tempfile.gettempdir())
        await trio.to_thread.run_sync(sweep_dead_guest_dirs, root)
        self._pool.open()
        self._stack = contextlib.AsyncExitStack()
        self._nursery = await self._stack.enter_async_context(trio.open_nursery())
        self._nursery.start_soon(self._reap_task, name="bridge.reap_idle_guests")
        return self

    async def _reap_task(self) -> None:
        """Kill guests idle for longer than ``guest_idle_s`` (checked a few times per period)."""
        while True:
            await trio.sleep(max(0.05, self.guest_idle_s / 4))
            self._pool.reap(trio.current_time())
            await self._pool.reap_leaving()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Kill, reap and remove every idle guest; keep none from now on. Idempotent."""
        stack, self._stack = self._stack, None
        if stack is not None and self._nursery is not None:
            self._nursery.cancel_scope.cancel(
                reason="executor closed"
            )  # only the reaper runs there
            self._nursery = None
            await stack.aclose()
        await self._pool.aclose()

    def prewarm(self, env_hash: str) -> None:
        """Start a blank guest for ``env_hash`` now (no-op outside ``async with``).

        Raises:
            EnvError: the env is not available here.
        """
        self._pool.prewarm(env_hash)

    def idle_guests(self) -> list[Guest]:
        """The pool's idle guests, longest idle first (for monitoring and tests)."""
        return self._pool.idle()

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
            if job.guest is not None:  # not handed back to the pool: it goes
                close_sockets(job.guest)  # on the Trio thread (trio sockets)
                proc = job.guest.proc
                if proc is not None and proc.returncode is None:
                    # e.g. cancelled between its END frame and the hand-back
                    await discard(job.guest)  # killed, reaped (shielded, bounded)
                await _shielded(_remove_dirs, job)
        rows = sum(s.rows for s in job.sinks.values())
        size = sum(s.bytes_written for s in job.sinks.values())
        quarantined = sum(s.rows_quarantined for s in job.sinks.values())
        metrics = {
            "rows": rows,
            "rows_quarantined": quarantined,
            "bytes": size,
            "duration_s": round(time.monotonic() - started, 3),
            "guest_job": job.guest_job,
        }
        if job.retracted is not None:
            metrics["retracted"] = job.retracted
        logger.debug(  # the runner's "job N SUCCESS" line says it at INFO, with the rows
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
            _prepare_sinks(job.sinks)  # a mode check, a contract read: small, no thread hop
            env_hash = job.dispatch.env_hash
            with self.envs.using(env_hash) as python:
                key = plugin_key(job.dispatch, python)
                job.guest = self._pool.take(key, python)
                if job.guest is None:
                    job.guest = start_guest(env_hash, python, self.work_root)
                job.guest.jobs += 1
                job.guest_job = job.guest.jobs
                await self._session(job, key)
            # The END frame is in: the job has succeeded, and a deadline that
            # passes during the promote must not turn promoted output into a
            # failed or aborted receipt. A promote is a rename or one SQLite
            # transaction; the thread is never abandoned, so this shield adds no
            # wait a cancellation would not already have.
            # The file must still be the version parsed: a rewrite during the run
            # would label new content with the old version (SUPERSEDED instead).
            await _check_input(job.dispatch)
            if job.received <= INLINE_JOB_BYTES:
                return _commit_sinks(job.sinks)  # little to encode: no thread hop
            with trio.CancelScope(shield=True):
                artifacts = await trio.to_thread.run_sync(_commit_sinks, job.sinks)
            return artifacts
        except BaseException:
            await _shielded(_abort_sinks, job)
            raise

    async def _session(self, job: _Job, key: PluginKey) -> None:
        guest = job.guest
        assert guest is not None
        reusable = self._pool.is_open and not job.dispatch.single_use_guest
        try:
            if self.spawn_hook is not None:
                self.spawn_hook(job.proc.pid)
            if guest.key is None:  # its first job: it loads this plugin version, for good
                guest.key = key
                (guest.dir / "plugin.py").write_text(job.dispatch.source_code, encoding="utf-8")
        except BaseException:
            job.proc.stdout.close()  # nobody will pump it
            with trio.move_on_after(self.kill_grace_s + 5.0) as scope:
                scope.shield = True
                await _guestproc.terminate_group(job.proc, self.kill_grace_s)
            raise
        ended = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(job.output.pump, job.proc.stdout, name="bridge.guest_output")
            try:
                await self._converse(job, reusable=reusable)
                ended = reusable and job.proc.returncode is None
            finally:
                if ended:  # idle and healthy: take what it printed, leave the pipe open
                    job.output.drain_nowait()
                else:
                    with trio.move_on_after(self.kill_grace_s + OUTPUT_DRAIN_S + 5.0) as scope:
                        scope.shield = True
                        await _guestproc.terminate_group(job.proc, self.kill_grace_s)
                        await _drain_output(job)
                nursery.cancel_scope.cancel(reason="job over")
        if not ended:
            job.proc.stdout.close()
            return
        reason = self._pool.give_back(guest, reusable=reusable, now=trio.current_time())
        if reason is not None:
            logger.debug("job %d: guest %d retired: %s", job.job_id, job.proc.pid, reason)
            await discard(guest)  # killed, reaped, removed
        job.guest = None  # the pool's now, or gone

    async def _converse(self, job: _Job, *, reusable: bool) -> None:
        guest = job.guest
        assert guest is not None
        if guest.conn is None:
            guest.conn = await self._accept(job)
        conn = guest.conn
        try:
            shared = self.shared_memory and _shared_frames.supported()
            await _send_all(conn, _job_spec(job, reusable=reusable, shm=shared))
            if not reusable:
                self._pool.replace(job.dispatch.env_hash)  # the next job's guest, started now
            guest_metrics = await self._stream_while_alive(job, conn, shared=shared)
        except _stream.StreamClosed as exc:
            await self._settle(job)
            if job.proc.returncode == 0:
                raise BridgeError(
                    f"guest exited with status 0 without an end frame ({exc})"
                ) from exc
            raise GuestCrashed(job.proc.returncode, job.output.text()) from exc
        logger.debug("job %d guest finished: %s", job.job_id, guest_metrics)
        if not reusable:
            await self._settle(job)

    async def _stream_while_alive(
        self, job: _Job, conn: trio.socket.SocketType, *, shared: bool
    ) -> dict[str, Any]:
        """Stream the guest's frames; a guest that exits without closing its socket ends it too.

        EOF is the usual sign of a dead guest, but a child it forked keeps the
        socket open. The watch tells the connection when the guest has exited;
        from then on the stream ends as soon as its queued bytes are read (no
        timer: see ``_stream.GuestConnection``).
        """
        guest_conn = _stream.GuestConnection(conn, shared=shared)  # as the job spec offered
        try:
            metrics = await _while_guest_runs(
                job.proc,
                lambda: _stream.stream(guest_conn, job.sinks, self.max_frame_bytes),
                on_exit=lambda _scope: guest_conn.guest_exited(),
            )
        finally:
            job.received = guest_conn.received
            guest_conn.close_descriptors()
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
    # A small file's job is checked on the Trio thread, as its output is promoted
    # (an lstat and two realpaths cost less than the hop to a thread and back).
    small = dispatch.file_size is not None and dispatch.file_size <= INLINE_JOB_BYTES
    if small:
        seen = _input_check.observe(dispatch.file_path, dispatch.source_root)
    else:
        seen = await trio.to_thread.run_sync(
            _input_check.observe, dispatch.file_path, dispatch.source_root
        )
    refusal = _input_check.judge(
        dispatch.file_path, seen, file_size=dispatch.file_size, file_mtime=dispatch.file_mtime
    )
    if refusal is None and content and dispatch.verify_hash and dispatch.source_hash:
        if small:
            actual = _input_check.digest(dispatch.file_path, limit=dispatch.file_size)
        else:
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


def plugin_key(dispatch: Dispatch, python: Path) -> PluginKey:
    """The plugin version ``dispatch`` runs: guests are reused within one key only."""
    return PluginKey(
        env_hash=dispatch.env_hash,
        python=python,
        artifact_hash=dispatch.artifact_hash,
        source_sha256=hashlib.sha256(dispatch.source_code.encode("utf-8")).hexdigest(),
        memory_limit_mb=dispatch.memory_limit_mb,
    )


def _job_spec(job: _Job, *, reusable: bool, shm: bool = False) -> bytes:
    guest = job.guest
    assert guest is not None
    assert guest.key is not None
    key = guest.key
    spec: dict[str, Any] = {
        "plugin": str(guest.dir / "plugin.py"),
        "plugin_key": f"{key.artifact_hash}/{key.source_sha256}",
        "reuse": reusable,
        "input": openable_input(job.dispatch.file_path, guest.dir),
        "job_id": job.job_id,
        "file_version_id": job.dispatch.file_version_id,
        "topics": sorted(job.sinks),
        "config": dict(job.dispatch.config),
        "memory_limit_mb": job.dispatch.memory_limit_mb,
        "scratch_dir": str(guest.dir / "tmp"),
        "shm": shm,  # big DATA frames as sealed memfds (``_shared_frames``)
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
