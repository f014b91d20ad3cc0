"""The Worker: a nursery of named tasks around one DEALER socket.

Theory of operation
-------------------
``run()`` opens the service nursery (``worker.sender``, ``worker.pump``,
``worker.heartbeat``, env builds) and, inside it, the jobs nursery, where each
job runs in its own cancel scope (``runner.JobRun``). It returns after shutdown.

A job's scope is cancelled for exactly three reasons, and in each case the job
task still sends exactly one receipt (the runner turns the reason into it):

- its timeout (a ``move_on_after`` inside the scope) → FAILED "timed out";
- ABORT from the Sentinel → ABORTED;
- shutdown → ABORTED once the grace period is over (SUCCESS if it finished).

Shutdown follows hypercorn's shape: the first ``request_shutdown()`` stops
intake (status DRAINING, new dispatches are handed straight back) and sets a
deadline of now + grace on every job scope; the jobs nursery then unwinds as
jobs finish. A second request cancels the remaining jobs at once. Receipts go
out through the outbox, then one last HEARTBEAT with ``stopping`` set (the
Sentinel records the worker STOPPED instead of waiting to declare it lost); the
outbox is flushed (bounded) and the Sentinel's acknowledgement awaited (bounded)
before the socket closes, since a socket closed with LINGER 0 drops what it has
not sent yet.

Prefetch (``--prefetch``, IDENTIFY ``prefetch``): beyond its slots the worker
holds up to that many more DISPATCHes, started in arrival order as slots free,
so a small file's next job is already here when the last one ends (the
Sentinel's round trip is off the critical path). The Sentinel only fills a
prefetch slot while the worker's jobs are short (``registry.py``). A held job
that has not started within ``PREFETCH_HOLD_S`` -- the running job turned out
long -- is handed back (ABORTED "handed back", requeued uncounted), as are
held jobs when the worker drains; an ABORT of a held job ends it at once. Its
timeout counts from its start, not its arrival.

Is the Sentinel there? ``worker.watch`` asks an ``AnswerWatch`` (pure state,
``protocol/liveness.py``) a few times per liveness period; the pump feeds it
every message the Sentinel sends, its answers to our heartbeats included. So the
worker logs "connected" on the first answer, not when zmq merely queued our
IDENTIFY, and warns while the Sentinel is silent.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Protocol

import attrs
import trio

from casparian_trio.config import WorkerConfig
from casparian_trio.errors import EnvError, RemoteProtocolError, TransportClosed
from casparian_trio.protocol import (
    ERR_ENV_BUILD,
    ERR_UNKNOWN_WORKER,
    Abort,
    AnswerWatch,
    Conclude,
    Dispatch,
    EnvReady,
    Err,
    Heartbeat,
    Identify,
    JobRef,
    Payload,
    PeerEvent,
    PeerEventKind,
    PrepareEnv,
    Reload,
    decode,
    encode,
)
from casparian_trio.protocol.limits import PREFETCH_HOLD_S
from casparian_trio.transport import Channel
from casparian_trio.worker import confine
from casparian_trio.worker.runner import JobExecutor, JobRun, StopReason

logger = logging.getLogger(__name__)

# Receipts and heartbeats queue here; far more than concurrency x a few messages.
OUTBOX_CAPACITY = 1_000
# Bound on flushing the last receipts at shutdown: a Sentinel that is gone must
# not keep a stopping worker alive.
FLUSH_TIMEOUT_S = 5.0
# Far above a loopback or LAN round trip, short enough not to delay a stop.
HANDBACK_LINGER_S = 0.2
# How long a stopping worker waits for the Sentinel to acknowledge its goodbye:
# several round trips and a busy Sentinel's SQLite write; a gone Sentinel costs this.
GOODBYE_TIMEOUT_S = 1.0
# The watch looks at the Sentinel's silence this often (at most; a third of the
# liveness period when that is shorter): warnings come within half a second.
WATCH_TICK_S = 0.5


# What the worker logs on each PeerEvent. "worker ID connected to ADDR" is the
# line scripts (and the end-to-end tests) wait for.
_SENTINEL_NEWS = {
    PeerEventKind.CONNECTED: (
        logging.INFO,
        "worker %(worker)s connected to %(address)s: the sentinel answered",
    ),
    PeerEventKind.WAITING: (
        logging.WARNING,
        "waiting for the sentinel at %(address)s: no answer for %(quiet)s s",
    ),
    PeerEventKind.SILENT: (
        logging.WARNING,
        "no answer from the sentinel at %(address)s for %(quiet)s s",
    ),
    PeerEventKind.RESUMED: (
        logging.INFO,
        "the sentinel at %(address)s answers again after %(quiet)s s of silence",
    ),
    PeerEventKind.NO_ANSWERS: (
        logging.INFO,
        "the sentinel at %(address)s does not answer heartbeats (an older version?); "
        "its silence will not be reported",
    ),
}


class EnvProvider(Protocol):
    async def prepare(self, spec: PrepareEnv) -> EnvReady: ...

    def ready_envs(self) -> list[str]: ...


@attrs.define(eq=False)
class Worker:
    config: WorkerConfig
    channel: Channel
    executor: JobExecutor
    envs: EnvProvider
    jobs: dict[int, JobRun] = attrs.field(factory=dict)
    # Prefetched DISPATCHes waiting for a slot (arrival order), and the scope of each one's hold.
    held: dict[int, tuple[Dispatch, trio.CancelScope]] = attrs.field(factory=dict)
    draining: bool = False
    # The source roots the Sentinel announced (used when --source-root is not given).
    announced_roots: tuple[str, ...] = ()
    _stop: trio.Event = attrs.field(factory=trio.Event)
    _jobs_nursery: trio.Nursery | None = None
    _service_nursery: trio.Nursery | None = None
    _watch: AnswerWatch | None = None
    _said_goodbye: bool = False  # the stopping heartbeat is queued: nothing more goes out
    _goodbye_acked: trio.Event = attrs.field(factory=trio.Event)
    _out_send: trio.MemorySendChannel[list[bytes]] = attrs.field(init=False)
    _out_recv: trio.MemoryReceiveChannel[list[bytes]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._out_send, self._out_recv = trio.open_memory_channel[list[bytes]](OUTBOX_CAPACITY)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``request_shutdown()`` and every job has ended; then return."""
        sender_done = trio.Event()
        async with trio.open_nursery() as service:
            self._service_nursery = service
            self._watch = AnswerWatch(
                liveness=self.config.liveness_s, started_at=trio.current_time()
            )
            service.start_soon(self._sender_task, sender_done, name="worker.sender")
            self.send(self._identify())
            self.send(self._heartbeat())  # our state at once: IDENTIFY carries no status
            service.start_soon(self._pump_task, name="worker.pump")
            service.start_soon(self._heartbeat_task, name="worker.heartbeat")
            service.start_soon(self._watch_task, name="worker.watch")
            logger.info(
                "worker %s connecting to %s with %d slot(s)",
                self.config.worker_id,
                self.config.connect,
                self.config.concurrency,
                extra={"event": "worker.started"},
            )
            async with trio.open_nursery() as jobs:
                self._jobs_nursery = jobs
                task_status.started()
                await self._stop.wait()
                self._begin_drain()
            # Dispatches the Sentinel sent before it saw our DRAINING heartbeat
            # may still be in flight: stay one round trip longer to hand them back.
            await trio.sleep(HANDBACK_LINGER_S)
            self.send(self._heartbeat(stopping=True))  # after every receipt: FIFO outbox
            self._said_goodbye = True
            self._out_send.close()
            with trio.move_on_after(FLUSH_TIMEOUT_S):
                await sender_done.wait()
            await self._await_goodbye_ack(flushed=sender_done.is_set())
            service.cancel_scope.cancel(reason="worker stopped")
        logger.info("worker %s stopped", self.config.worker_id, extra={"event": "worker.stopped"})

    def request_shutdown(self) -> None:
        """First call: drain within the grace period. Second call: stop jobs now."""
        if not self._stop.is_set():
            self._stop.set()
            return
        logger.warning("second shutdown request: aborting %d job(s) now", len(self.jobs))
        for run in self.jobs.values():
            run.stop(StopReason.SHUTDOWN)

    async def _await_goodbye_ack(self, *, flushed: bool) -> None:
        """Keep the socket open until the Sentinel has our goodbye (bounded)."""
        watch = self._watch
        if not flushed or watch is None or not (watch.connected and watch.answers_heartbeats):
            return  # it is gone, silent, or never acknowledges (an older Sentinel)
        with trio.move_on_after(GOODBYE_TIMEOUT_S) as waited:
            await self._goodbye_acked.wait()
        if waited.cancelled_caught:
            logger.debug(
                "the sentinel did not acknowledge our goodbye within %g s", GOODBYE_TIMEOUT_S
            )

    def _begin_drain(self) -> None:
        self.draining = True
        logger.info(
            "draining: %d job(s) get %g s to finish",
            len(self.jobs),
            self.config.grace_s,
            extra={"event": "worker.draining"},
        )
        for job_id in list(self.held):
            self._hand_back_held(job_id, "worker is draining")
        self.send(self._heartbeat())
        deadline = trio.current_time() + self.config.grace_s
        for run in self.jobs.values():
            run.stop_at(deadline, StopReason.SHUTDOWN)

    # --- socket owner tasks ----------------------------------------------------

    def send(self, payload: Payload, job_id: int = 0) -> None:
        try:
            self._out_send.send_nowait(encode(payload, job_id))
        except (trio.WouldBlock, trio.ClosedResourceError):
            logger.error(
                "outbox unavailable; dropped %s for job %d", type(payload).__name__, job_id
            )

    async def _sender_task(self, done: trio.Event) -> None:
        try:
            async for frames in self._out_recv:
                await self.channel.send(frames)
        except TransportClosed:
            logger.debug("worker socket closed; sender stops")
        finally:
            done.set()

    async def _pump_task(self) -> None:
        while True:
            try:
                frames = await self.channel.receive()
            except TransportClosed:
                return
            try:
                message = decode(frames)
            except RemoteProtocolError as exc:
                self._heard(heartbeat=False)  # garbled, but the Sentinel is there
                logger.warning(
                    "dropping bad message from the Sentinel: %s",
                    exc,
                    extra={"event": "protocol.error"},
                )
                continue
            self._heard(heartbeat=isinstance(message.payload, Heartbeat))
            self._react(message.job_id, message.payload)

    async def _heartbeat_task(self) -> None:
        while True:
            await trio.sleep(self.config.heartbeat_interval_s)
            # A heartbeat is only our latest state: while the Sentinel is
            # unreachable and the outbox backs up, skip it rather than queue
            # stale ones ahead of (and eventually instead of) receipts.
            if self._out_send.statistics().current_buffer_used == 0 and not self._said_goodbye:
                self.send(self._heartbeat())

    async def _watch_task(self) -> None:
        assert self._watch is not None
        tick = min(WATCH_TICK_S, self.config.liveness_s / 3)
        while True:
            await trio.sleep(tick)
            self._tell(self._watch.check(trio.current_time()))

    def _heard(self, *, heartbeat: bool) -> None:
        if self._watch is not None:
            self._tell(self._watch.heard(trio.current_time(), heartbeat=heartbeat))

    def _tell(self, event: PeerEvent | None) -> None:
        """Log what the watch found out about the Sentinel (see protocol/liveness.py)."""
        if event is None:
            return
        level, text = _SENTINEL_NEWS[event.kind]
        facts = {
            "worker": self.config.worker_id,
            "address": self.config.connect,
            "quiet": f"{event.quiet_s:.0f}",
        }
        logger.log(level, text, facts, extra={"event": f"sentinel.{event.kind.value}"})

    # --- reactions ---------------------------------------------------------------

    def _react(self, job_id: int, payload: Payload) -> None:
        if isinstance(payload, Dispatch):
            self._accept(job_id, payload)
        elif isinstance(payload, Abort):
            run = self.jobs.get(job_id)
            if run is None and job_id in self.held:
                self._abort_held(job_id, payload)
            elif run is None:
                logger.info("ABORT for job %d, which is not running here", job_id)
            elif payload.attempt not in (None, run.dispatch.attempt):
                logger.info(
                    "ABORT for job %d attempt %s ignored: running attempt %s",
                    job_id,
                    payload.attempt,
                    run.dispatch.attempt,
                )
            else:
                logger.info(
                    "job %d: ABORT received", job_id, extra={"event": "job.abort", "job_id": job_id}
                )
                run.stop(StopReason.ABORT)
        elif isinstance(payload, PrepareEnv):
            assert self._service_nursery is not None
            self._service_nursery.start_soon(
                self._env_task, payload, name=f"worker.env:{payload.env_hash[:12]}"
            )
        elif isinstance(payload, Err) and payload.code == ERR_UNKNOWN_WORKER:
            logger.info("the Sentinel does not know us (it restarted?); identifying again")
            self.send(self._identify())
            self.send(self._heartbeat())
        elif isinstance(payload, Heartbeat):
            if payload.source_roots is not None:
                self.announced_roots = payload.source_roots
            if payload.stopping:  # our goodbye is recorded: the socket may close
                self._goodbye_acked.set()
        elif isinstance(payload, Reload):
            logger.info("RELOAD: plugins changed; the next jobs use the new versions")
        elif isinstance(payload, Err):
            logger.warning("ERR from the Sentinel: %s", payload.message)
        else:
            logger.warning("dropping %s: not a message a worker accepts", type(payload).__name__)

    def _accept(self, job_id: int, dispatch: Dispatch) -> None:
        if self._said_goodbye:  # it crossed our goodbye; the Sentinel requeues it uncounted
            logger.info("job %d not taken: this worker has said goodbye", job_id)
            return
        running = self.jobs.get(job_id)
        waiting = self.held.get(job_id)
        if (running is not None and running.dispatch.attempt == dispatch.attempt) or (
            waiting is not None and waiting[0].attempt == dispatch.attempt
        ):
            logger.warning("duplicate DISPATCH of job %d ignored", job_id)
            return
        full = len(self.jobs) >= self.config.concurrency
        can_hold = full and len(self.held) < self.config.prefetch and waiting is None
        busy = (full and not can_hold) or running is not None
        if self.draining or busy or self._jobs_nursery is None:
            why = "worker is draining" if self.draining else "no free slot"
            if running is not None:
                why = f"still stopping attempt {running.dispatch.attempt} of this job"
            self._hand_back(job_id, dispatch.attempt, why)
            return
        refused = confine.refusal(
            dispatch,
            roots=self.config.source_roots or self.announced_roots,
            keyed=self.config.keys is not None,
            allow_system=self.config.allow_system_env,
        )
        if refused is not None:
            logger.warning(
                "job %d refused: %s",
                job_id,
                refused.message,
                extra={"event": "job.refused", "job_id": job_id},
            )
            self.send(confine.refused_receipt(refused, dispatch.attempt), job_id)
            return
        if full:
            self._hold(job_id, dispatch)
            return
        self._start(job_id, dispatch)

    def _start(self, job_id: int, dispatch: Dispatch) -> None:
        assert self._jobs_nursery is not None
        run = JobRun(job_id=job_id, dispatch=dispatch)
        self.jobs[job_id] = run
        self._jobs_nursery.start_soon(self._job_task, run, name=f"worker.job:{job_id}")

    async def _job_task(self, run: JobRun) -> None:
        try:
            receipt = await run.execute(self.executor)
        finally:
            del self.jobs[run.job_id]
        self.send(receipt, run.job_id)
        self._start_held()

    # --- prefetched jobs ------------------------------------------------------------

    def _hold(self, job_id: int, dispatch: Dispatch) -> None:
        """Keep a DISPATCH for the next free slot; hand it back after PREFETCH_HOLD_S."""
        assert self._service_nursery is not None
        scope = trio.CancelScope(deadline=trio.current_time() + PREFETCH_HOLD_S)
        self.held[job_id] = (dispatch, scope)
        self._service_nursery.start_soon(
            self._hold_task, job_id, scope, name=f"worker.held:{job_id}"
        )

    async def _hold_task(self, job_id: int, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep_forever()
        entry = self.held.get(job_id)
        if entry is not None and entry[1] is scope:  # still waiting: its hold is over
            self._hand_back_held(job_id, f"no slot within {PREFETCH_HOLD_S:g} s")

    def _start_held(self) -> None:
        """Start held jobs, oldest first, while slots are free."""
        stopping = self.draining or self._stop.is_set()  # the drain hands them back
        while self.held and len(self.jobs) < self.config.concurrency and not stopping:
            job_id = next(iter(self.held))
            self._start(job_id, self._unhold(job_id))

    def _unhold(self, job_id: int) -> Dispatch:
        """Take a held job out of its prefetch slot (its hold timer stops)."""
        dispatch, scope = self.held.pop(job_id)
        scope.cancel()
        return dispatch

    def _hand_back_held(self, job_id: int, why: str) -> None:
        self._hand_back(job_id, self._unhold(job_id).attempt, why)

    def _hand_back(self, job_id: int, attempt: int | None, why: str) -> None:
        """Return a job we will not run: the Sentinel requeues it, uncounted."""
        logger.info(
            "job %d handed back: %s",
            job_id,
            why,
            extra={"event": "job.handed_back", "job_id": job_id},
        )
        self.send(
            Conclude(status="ABORTED", error_message=f"handed back: {why}", attempt=attempt),
            job_id,
        )

    def _abort_held(self, job_id: int, abort: Abort) -> None:
        dispatch = self.held[job_id][0]
        if abort.attempt not in (None, dispatch.attempt):
            logger.info(
                "ABORT for job %d attempt %s ignored: holding attempt %s",
                job_id,
                abort.attempt,
                dispatch.attempt,
            )
            return
        self._unhold(job_id)
        logger.info(
            "job %d: ABORT received before it started",
            job_id,
            extra={"event": "job.abort", "job_id": job_id},
        )
        self.send(
            Conclude(
                status="ABORTED", error_message=StopReason.ABORT.value, attempt=dispatch.attempt
            ),
            job_id,
        )

    async def _env_task(self, spec: PrepareEnv) -> None:
        try:
            ready = await self.envs.prepare(spec)
        except Exception as exc:  # whatever it is, it is this env's failure, not the worker's
            if isinstance(exc, EnvError):
                logger.warning(
                    "env %s failed to build: %s",
                    spec.env_hash[:12],
                    exc,
                    extra={"event": "env.failed"},
                )
            else:
                logger.exception("env %s: unexpected error while preparing", spec.env_hash[:12])
            self.send(Err(message=str(exc), env_hash=spec.env_hash, code=ERR_ENV_BUILD))
            return
        self.send(ready)

    # --- what we tell the Sentinel -------------------------------------------------------

    def _held(self) -> tuple[JobRef, ...]:
        running = [JobRef(job_id, run.dispatch.attempt) for job_id, run in self.jobs.items()]
        waiting = [
            JobRef(job_id, dispatch.attempt, held=True)
            for job_id, (dispatch, _) in self.held.items()
        ]
        return (*running, *waiting)

    def _identify(self) -> Identify:
        return Identify(
            worker_id=self.config.worker_id,
            capabilities=self.config.capabilities,
            slots=self.config.concurrency,
            prefetch=self.config.prefetch,
            jobs=self._held(),
            envs=tuple(self.envs.ready_envs()),
            host=socket.gethostname(),
            pid=os.getpid(),
            answer_heartbeats=True,
        )

    def _heartbeat(self, *, stopping: bool = False) -> Heartbeat:
        held = self._held()
        free = 0 if self.draining else max(0, self.config.concurrency - len(held))
        status = "DRAINING" if self.draining else ("BUSY" if free == 0 else "IDLE")
        return Heartbeat(
            status=status,
            current_job_id=held[0].job_id if held else None,
            worker_id=self.config.worker_id,
            free_slots=free,
            jobs=held,
            envs=tuple(self.envs.ready_envs()),
            stopping=stopping,
        )
