"""The Sentinel: a nursery of named tasks around one ROUTER socket and one SQLite store.

Theory of operation
-------------------
``run()`` records the Sentinel in the database (``presence.py``), starts
seven tasks (eight with ``--http``) and returns only when cancelled:

- ``sentinel.pump`` is the only task that receives from the socket. It takes
  every message that has arrived (up to ``PUMP_BATCH``), decodes each (a bad
  one is logged with the peer identity and dropped) and reacts to them in order
  (``reactions.py``): registry updates and one SQLite transaction each, except
  that CONCLUDEs in a row are recorded in one transaction together.
- ``sentinel.sender`` is the only task that sends. Everyone else puts
  ``Outgoing`` items on a bounded channel. With ROUTER_MANDATORY a send to a
  departed worker raises PeerUnreachable here, and the jobs that worker held go
  back to the queue.
- ``sentinel.dispatcher`` claims jobs for workers with free slots
  (``dispatch.py``), all free slots' in one transaction. It sleeps
  until woken (a slot freed, a worker joined, an env became ready, work
  committed by another process) or until the earliest backoff expires.
- ``sentinel.liveness`` drops workers silent for longer than the liveness
  timeout and requeues their jobs as counted attempts, and requeues jobs left
  RUNNING by a previous Sentinel that no worker re-adopted in time
  (``recovery.py`` holds these decisions).
- ``sentinel.watchdog`` aborts jobs past their timeout plus a grace, and gives
  up on them (failure, worker marked unhealthy) one more grace later.
- ``sentinel.db_watch`` notices commits by other processes (``PRAGMA
  data_version``) and operator cancel requests, twice a second.
- ``sentinel.presence`` refreshes the Sentinel's own row every heartbeat
  interval, so ``status`` in another process can tell it is running.
- ``sentinel.http`` (only with ``--http``) serves the dashboard and
  ``/metrics`` (``casparian_trio.http``) from a connection of its own.

On the way out (cancelled), shielded and bounded: jobs claimed but never sent
go back to the queue, then the row is marked stopped.

Every queue transition is in one store call, i.e. one SQLite transaction that a
cancellation cannot tear (a dispatch round's claims, or a batch of receipts,
share one). Times for decisions come from ``trio.current_time()``;
times written to the database come from ``wall()``, so tests on a MockClock can
pass a virtual wall clock.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

import attrs
import trio

from casparian_trio.config import SentinelConfig
from casparian_trio.errors import PeerUnreachable, RemoteProtocolError, TransportClosed
from casparian_trio.protocol import ERR_DEPLOY, Abort, Conclude, Err, Identify, Message, decode
from casparian_trio.sentinel._context import SentinelContext
from casparian_trio.sentinel._outbox import Outgoing
from casparian_trio.sentinel.authz import admit
from casparian_trio.sentinel.dispatch import Dispatcher
from casparian_trio.sentinel.presence import Presence
from casparian_trio.sentinel.reactions import Reactions
from casparian_trio.sentinel.recovery import Recovery
from casparian_trio.sentinel.registry import AbortReason, WorkerState
from casparian_trio.store import Store
from casparian_trio.transport import Channel
from casparian_trio.transport.keys import KeyWatch, Peer

logger = logging.getLogger(__name__)

# The watchdog and liveness checks tick at this rate; finer than any grace or
# heartbeat a user would configure, coarse enough to cost nothing when idle.
TICK_S = 0.5
# Bound on the last store writes at shutdown (one small transaction per unsent job).
SHUTDOWN_GRACE_S = 5.0
# The most messages the pump takes from the socket before reacting to them: the
# CONCLUDEs among them are recorded in one transaction.
PUMP_BATCH = 64
# Old LOST/GONE/STOPPED worker rows are deleted this often (one small DELETE).
PRUNE_INTERVAL_S = 60.0


@attrs.define(eq=False)
class Sentinel:
    config: SentinelConfig
    store: Store
    channel: Channel
    wall: Callable[[], float] = time.time
    # Keyed: which keys are authorized now (a revoke cuts open connections off too);
    # None trusts the authenticator's decision at connect time.
    key_watch: KeyWatch | None = None
    ctx: SentinelContext = attrs.field(init=False)
    dispatcher: Dispatcher = attrs.field(init=False)
    recovery: Recovery = attrs.field(init=False)
    reactions: Reactions = attrs.field(init=False)
    presence: Presence = attrs.field(init=False)
    _data_version: int | None = None
    # The dashboard's address once it listens (``--http``; None: off).
    http_url: str | None = attrs.field(init=False, default=None)
    _pruned_at: float = -math.inf

    def __attrs_post_init__(self) -> None:
        self.ctx = ctx = SentinelContext(config=self.config, store=self.store, wall=self.wall)
        self.dispatcher = Dispatcher(ctx=ctx)
        self.recovery = Recovery(ctx=ctx)
        self.reactions = Reactions(ctx=ctx, dispatcher=self.dispatcher, recovery=self.recovery)
        # ZmqChannel and MemoryChannel know their endpoint (e.g. the port a
        # "tcp://127.0.0.1:*" bind got); the Channel protocol does not promise one.
        endpoint = getattr(self.channel, "endpoint", None)
        self.presence = Presence(ctx=ctx, endpoint=str(endpoint or self.config.bind))

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        await self.presence.announce()
        await self._refresh_source_roots()
        try:
            await self.recovery.adopt_previous_running()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sender_task, name="sentinel.sender")
                nursery.start_soon(self._pump_task, name="sentinel.pump")
                nursery.start_soon(self._dispatcher_task, name="sentinel.dispatcher")
                nursery.start_soon(self._liveness_task, name="sentinel.liveness")
                nursery.start_soon(self._watchdog_task, name="sentinel.watchdog")
                nursery.start_soon(self._db_watch_task, name="sentinel.db_watch")
                nursery.start_soon(self.presence.serve, name="sentinel.presence")
                if self.config.http is not None:
                    self.http_url = await nursery.start(self._http_task, name="sentinel.http")
                logger.info("sentinel serving", extra={"event": "sentinel.started"})
                task_status.started()
                await trio.sleep_forever()
        finally:
            # Jobs claimed but never sent (waiting for an env) go straight back:
            # otherwise the next Sentinel would count them as lost attempts.
            with trio.move_on_after(SHUTDOWN_GRACE_S, shield=True):
                await self.recovery.hand_back_unsent()
            with trio.move_on_after(SHUTDOWN_GRACE_S, shield=True):
                await self.presence.withdraw()
        raise AssertionError("unreachable")

    async def _http_task(self, *, task_status: trio.TaskStatus[str]) -> None:
        # Imported here: hypercorn and starlette load only when --http asks for them.
        from casparian_trio.http import parse_http_address
        from casparian_trio.http.server import serve_http

        assert self.config.http is not None
        await serve_http(
            parse_http_address(self.config.http),
            db_path=self.store.db.path,
            token=self.config.http_token,
            registry=self.ctx.registry,
            wall=self.wall,
            task_status=task_status,
        )

    # --- socket owner tasks ----------------------------------------------------

    async def _pump_task(self) -> None:
        while True:
            try:
                batch = [await self.channel.receive_authenticated()]
            except TransportClosed:
                logger.debug("sentinel socket closed; pump stops")
                return
            closed = False
            try:
                while len(batch) < PUMP_BATCH:
                    more = self.channel.receive_nowait_authenticated()
                    if more is None:
                        break
                    batch.append(more)
            except TransportClosed:
                closed = True  # react to what was taken, then stop
            await self.handle_batch(batch)
            if closed:
                logger.debug("sentinel socket closed; pump stops")
                return

    async def handle_batch(self, batch: Sequence[tuple[list[bytes], str | None]]) -> None:
        """React to messages that arrived together, in order; CONCLUDEs in a row share one transaction.

        Args:
            batch: ``(frames, user_id)`` pairs as ``receive_authenticated`` returns them.
        """
        receipts: list[tuple[bytes, int, Conclude]] = []
        for frames, user_id in batch:
            admitted = self._admitted(frames, user_id)
            if admitted is None:
                continue
            identity, message = admitted
            if isinstance(message.payload, Conclude):
                receipts.append((identity, message.job_id, message.payload))
                continue
            if receipts:
                await self.reactions.conclude_many(receipts)
                receipts = []
            await self.reactions.react(identity, message)
        if receipts:
            await self.reactions.conclude_many(receipts)

    async def handle_frames(self, frames: list[bytes], user_id: str | None = None) -> None:
        """Decode and react to one routed message; a bad or unauthorized one is logged and dropped.

        Args:
            frames: ``[routing id, header, payload]``.
            user_id: the ZAP User-Id of the connection (keyed Sentinels: the key).
        """
        admitted = self._admitted(frames, user_id)
        if admitted is not None:
            await self.reactions.react(*admitted)

    def _admitted(self, frames: list[bytes], user_id: str | None) -> tuple[bytes, Message] | None:
        """(identity, message) decoded and authorized, or None (logged and dropped)."""
        if len(frames) < 2:
            logger.warning("dropping an empty message from %r", frames[0] if frames else None)
            return None
        identity, body = frames[0], frames[1:]
        try:
            message = decode(body)
        except RemoteProtocolError as exc:
            logger.warning(
                "dropping bad message from %r: %s", identity, exc, extra={"event": "protocol.error"}
            )
            return None
        if self.config.keys is not None:
            allowed = self._authorized(identity, user_id, message)
            if allowed is None:
                return None
            message = allowed
        return identity, message

    def _authorized(self, identity: bytes, user_id: str | None, message: Message) -> Message | None:
        """The message as the key may send it (IDENTIFY named after the key), or None."""
        peer = None if user_id is None else Peer.from_user_id(user_id)
        if peer is not None and self.key_watch is not None and not self.key_watch.allows(peer):
            peer = None  # revoked since this connection's handshake
        refusal = admit(peer, identity, message.payload)
        if refusal is not None:
            logger.warning(
                "refused: %s", refusal.reason, extra={"event": "auth.refused", "user_id": user_id}
            )
            if refusal.answer:
                self.ctx.outbox.put(
                    Outgoing(identity, Err(message=refusal.reason, code=ERR_DEPLOY))
                )
            return None
        payload = message.payload
        if isinstance(payload, Identify) and peer is not None and payload.worker_id != peer.name:
            # The key is the identity: what the worker calls itself is not.
            message = attrs.evolve(message, payload=attrs.evolve(payload, worker_id=peer.name))
        return message

    async def _sender_task(self) -> None:
        async for item in self.ctx.outbox.receiver:
            try:
                await self.channel.send(item.frames())
            except PeerUnreachable:
                await self.recovery.unroutable(item)
            except TransportClosed:
                return

    # --- scheduling tasks ------------------------------------------------------

    async def _dispatcher_task(self) -> None:
        while True:
            wake = self.ctx.waker.arm()
            await self._dispatch_round()
            delay = await self._next_delay()
            with trio.move_on_after(delay):
                await wake.wait()

    async def _dispatch_round(self) -> None:
        """Fill every advertised free slot, one claim per slot, until the queue runs dry."""
        while await self.dispatcher.dispatch_round():
            pass

    async def _next_delay(self) -> float:
        if self.ctx.registry.total_free_slots() == 0:
            return math.inf
        wake_at = await self.store.next_wakeup(now=self.wall())
        return math.inf if wake_at is None else max(0.0, wake_at - self.wall())

    async def _liveness_task(self) -> None:
        period = min(TICK_S, self.config.liveness_s / 3)
        while True:
            await trio.sleep(period)
            now = trio.current_time()
            self.recovery.forget_unknown(now)
            for worker in self.ctx.registry.expired(now, self.config.liveness_s):
                await self.recovery.worker_lost(
                    worker, f"silent for more than {self.config.liveness_s:g} s"
                )
            await self.recovery.expire_orphans(now)
            if now - self._pruned_at >= PRUNE_INTERVAL_S:
                self._pruned_at = now
                await self._prune_workers()

    async def _prune_workers(self) -> None:
        before = self.wall() - self.config.worker_retention_s
        pruned = await self.store.prune_workers(before=before)
        if pruned:
            logger.info(
                "forgot %d worker(s) gone for more than %g s",
                pruned,
                self.config.worker_retention_s,
                extra={"event": "worker.pruned"},
            )

    async def _watchdog_task(self) -> None:
        grace_s = self.config.abort_grace_s
        while True:
            await trio.sleep(TICK_S)
            now = trio.current_time()
            for worker in list(self.ctx.registry.workers.values()):
                await self._police(worker, now, grace_s)

    async def _police(self, worker: WorkerState, now: float, grace_s: float) -> None:
        for held in list(worker.jobs.values()):
            # Each await below lets the pump run: skip what a receipt or a drop settled.
            if (
                worker.jobs.get(held.job_id) is not held
                or self.ctx.registry.get(worker.identity) is not worker
            ):
                continue
            deadline = held.deadline(grace_s)
            if held.abort_sent_at is not None and now >= held.abort_sent_at + grace_s:
                await self.recovery.give_up(worker, held)
            elif held.abort_reason is None and deadline is not None and now >= deadline:
                logger.warning(
                    "job %d on %s passed its %g s timeout; sending ABORT",
                    held.job_id,
                    worker.worker_id,
                    held.timeout_s,
                    extra={"event": "job.overdue", "job_id": held.job_id},
                )
                self.abort(worker, held.job_id, AbortReason.TIMEOUT, now)
            elif held.dispatched_at is None and held.env_hash in worker.envs_preparing:
                started = worker.envs_preparing[held.env_hash]
                if now >= started + self.config.env_prepare_timeout_s:
                    await self.recovery.env_failed(
                        worker, held.env_hash, "environment build timed out"
                    )

    def abort(self, worker: WorkerState, job_id: int, reason: AbortReason, now: float) -> None:
        held = worker.jobs.get(job_id)
        if held is None:
            return
        held.abort_reason = reason
        held.abort_sent_at = now
        self.ctx.outbox.put(Outgoing(worker.identity, Abort(attempt=held.attempt), job_id))

    async def _db_watch_task(self) -> None:
        while True:
            version = await self.store.data_version()
            if version != self._data_version:
                if self._data_version is not None:
                    self.ctx.waker.wake()
                    await self._refresh_source_roots()
                self._data_version = version
            await self._abort_cancelled()
            await self.store.cancel_queued_requests(now=self.wall())
            await trio.sleep(self.config.db_poll_interval_s)

    async def _refresh_source_roots(self) -> None:
        roots = await self.store.source_roots()
        self.ctx.source_roots = tuple(str(r["path"]) for r in roots if r.get("active", 1))

    async def _abort_cancelled(self) -> None:
        now = trio.current_time()
        for job in await self.store.cancel_requested_jobs():
            found = self.ctx.registry.holder_of(job.id)
            if found is not None and found[1].dispatched_at is None:
                await self.recovery.cancel_unsent(*found)
            elif found is not None:
                worker, held = found
                if held.abort_reason is not AbortReason.CANCEL:
                    logger.info(
                        "job %d cancel requested; aborting it on %s", job.id, worker.worker_id
                    )
                    self.abort(worker, job.id, AbortReason.CANCEL, now)
            else:
                await self.recovery.cancel_unheld(job)
