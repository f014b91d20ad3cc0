"""Trio over pyzmq: async send/receive on a plain (non-asyncio) ``zmq.Socket``.

This module and ``memory.py`` are the only code that knows about sockets; zmq
errors are mapped into ``casparian_trio.errors`` here and nowhere else.

Theory of operation
-------------------
ZeroMQ exposes one file descriptor per socket (``ZMQ_FD``). It is *not* a
readiness level: it becomes readable when the socket's command mailbox gets
something, and *any* call into the socket (send, recv, reading ``EVENTS``)
may drain the mailbox and so consume that edge (pyzmq#1177). The algorithm
(measured in ``/work/shared/notes/trio-libraries.md``):

1. Every operation first tries ``zmq.NOBLOCK``. Only on ``zmq.Again`` does the
   task read ``EVENTS`` (which processes all pending commands) and, if its own
   bit is set, retries once at once.
2. Otherwise it waits. Exactly one task at a time sits in
   ``trio.lowlevel.wait_readable(fd)``, inside its own cancel scope (a second
   task there would raise BusyResourceError); others park on a ParkingLot.
3. Because any call may consume the edge, a task that touched the socket
   wakes whoever might now proceed:
   - after every successful receive: everybody; after a successful send:
     the receivers, when ``EVENTS`` (read right after) shows ``POLLIN`` or
     when nobody waits on the FD (the sender may have just left it, with
     receivers parked behind it);
   - a sender that saw ``POLLIN``: the receivers;
   - a receiver: the sender, if it saw ``POLLOUT`` -- or always on a ROUTER,
     where ``POLLOUT`` means "some peer has room", not "*this* peer has room",
     so a ROUTER sender cannot trust it and must retry after every drain.
   - the FD waiter, when it leaves ``wait_readable`` for good (cancelled,
     closed): everybody parked, so that someone else takes over the FD.
   Every wake chain either ends in a successful operation or stops after two
   steps, so there is no busy loop; none of it sleeps or uses threads.
4. Sends are serialised by a lock: at most one sender waits at a time, which
   keeps rule 3 free of ping-pong between senders. (One task per socket owns
   it anyway: the sender tasks in ``sentinel/service.py`` and ``worker/service.py``.) The cost: on a ROUTER, a send blocked by one
   peer's full queue delays sends to other peers until the caller's deadline.
5. Once a message has been taken from the socket it is returned through a
   cancel-shielded checkpoint, so a cancelled ``receive`` never loses it.
6. ``close()``: ``trio.lowlevel.notify_closing(fd)`` first (the FD waiter gets
   ClosedResourceError rather than hanging), then ``close(linger=0)``; waiters
   get TransportClosed. The context is never terminated here: ``ctx.term()``
   can block the Trio thread for seconds.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import attrs
import trio
import zmq

from casparian_trio.errors import PeerUnreachable, TransportClosed, TransportError
from casparian_trio.transport import _auth
from casparian_trio.transport import keys as _keys
from casparian_trio.transport._base import check_frame_count

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# errnos meaning "this socket (or its whole context) is gone": report as closed.
_CLOSED_ERRNOS = frozenset({zmq.ENOTSOCK, zmq.ETERM})


@attrs.define(eq=False)
class ZmqChannel:
    """A Channel over one pyzmq DEALER or ROUTER socket.

    Build one with :func:`open_router` / :func:`open_dealer`; the constructor
    takes ownership of an already configured socket (tests use it to set
    small high-water marks).
    """

    _sock: zmq.Socket[bytes]
    _endpoint: str
    _is_router: bool = attrs.field(kw_only=True)
    # A CURVE server: each message carries its connection's ZAP User-Id.
    _authenticated: bool = attrs.field(kw_only=True, default=False)
    # Run once by close() (a keyed ROUTER: stop its authenticator, destroy its context).
    _on_close: Callable[[], None] | None = attrs.field(kw_only=True, default=None)
    _fd: int = attrs.field(init=False)
    _closed: bool = attrs.field(init=False, default=False)
    _send_lock: trio.Lock = attrs.field(init=False, factory=trio.Lock)
    _recv_lot: trio.lowlevel.ParkingLot = attrs.field(init=False, factory=trio.lowlevel.ParkingLot)
    _send_lot: trio.lowlevel.ParkingLot = attrs.field(init=False, factory=trio.lowlevel.ParkingLot)
    # The cancel scope of the one task in wait_readable, and whether it is the sender.
    _fd_scope: trio.CancelScope | None = attrs.field(init=False, default=None)
    _fd_owner_sends: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        self._fd = int(self._sock.get(zmq.FD))

    # --- public API -------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The bound/connected endpoint (the real port after binding to ``:*``)."""
        return self._endpoint

    @property
    def closed(self) -> bool:
        return self._closed

    async def send(self, frames: Sequence[bytes]) -> None:
        """Send one multipart message, waiting while the peer's queue is full.

        Raises:
            PeerUnreachable: ROUTER only; ``frames[0]`` is not a connected peer.
            TransportClosed: the channel is (or gets) closed.
            TransportError: any other zmq failure.
            ValueError: too few frames.
        """
        check_frame_count(frames, is_router=self._is_router)
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            # Fast path without a schedule point: the op's own checkpoint follows.
            self._send_lock.acquire_nowait()
        except trio.WouldBlock:
            await self._send_lock.acquire()
        try:
            await self._retry(lambda: self._send_nowait(frames), zmq.POLLOUT, sends=True)
        finally:
            self._send_lock.release()

    async def receive(self) -> list[bytes]:
        """Receive one multipart message; cancellation never loses one.

        Raises:
            TransportClosed: the channel is (or gets) closed.
            TransportError: any other zmq failure.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        return await self._retry(self._recv_nowait, zmq.POLLIN, sends=False)

    async def receive_authenticated(self) -> tuple[list[bytes], str | None]:
        """``receive``, plus the ZAP User-Id libzmq attached to the message (CURVE servers).

        The User-Id is read from the frame metadata of every message (a
        zero-copy receive), never from anything the peer sent: it names the
        key that completed this connection's handshake.

        Raises:
            TransportClosed: the channel is (or gets) closed.
            TransportError: any other zmq failure.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._authenticated:
            return await self._retry(self._recv_nowait, zmq.POLLIN, sends=False), None
        return await self._retry(self._recv_meta_nowait, zmq.POLLIN, sends=False)

    def receive_nowait_authenticated(self) -> tuple[list[bytes], str | None] | None:
        """A message already in the socket, with its User-Id (None: no CURVE), or None.

        Never waits and is no checkpoint. Follows the wake rules of a receive
        (module docstring, rule 3): this call may have consumed the FD's edge.

        Raises:
            TransportClosed: the channel is closed.
            TransportError: any other zmq failure.
        """
        for retry in (False, True):
            self._raise_if_closed()
            try:
                if self._authenticated:
                    result = self._recv_meta_nowait()
                else:
                    result = self._recv_nowait(), None
            except zmq.Again:
                events = self._events()
                self._wake_others(events, sends=False)
                if events & zmq.POLLIN and not retry:
                    continue  # reading EVENTS processed the commands: once more, as rule 1
                return None
            self._wake_all()
            return result
        return None

    def close(self) -> None:
        """Close the socket (linger 0) and wake every waiter with TransportClosed."""
        if self._closed:
            return
        self._closed = True
        # Outside trio.run (e.g. a sync teardown) there is nothing to notify.
        with contextlib.suppress(RuntimeError):
            trio.lowlevel.notify_closing(self._fd)
        self._sock.close(linger=0)
        self._wake_all()
        if self._on_close is not None:
            self._on_close()
        logger.debug("transport.closed %s", self._endpoint, extra={"event": "transport.closed"})

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- the retry loop -----------------------------------------------------------

    async def _retry(self, op: Callable[[], _T], wanted: int, *, sends: bool) -> _T:
        retried = False
        while True:
            self._raise_if_closed()
            try:
                result = op()
            except zmq.Again:
                pass
            else:
                if sends:
                    self._after_send()
                else:
                    self._wake_all()
                # Taken from / handed to the socket: the caller must see the outcome.
                await trio.lowlevel.cancel_shielded_checkpoint()
                return result
            events = self._events()
            self._wake_others(events, sends=sends)
            if events & wanted and not retried:
                retried = True  # once only: a ROUTER's POLLOUT may not concern our peer
                continue
            retried = False
            await self._wait(sends=sends)

    async def _wait(self, *, sends: bool) -> None:
        if self._fd_scope is not None:
            await (self._send_lot if sends else self._recv_lot).park()
            return
        woke = False
        try:
            with trio.CancelScope() as scope:
                self._fd_scope, self._fd_owner_sends = scope, sends
                await trio.lowlevel.wait_readable(self._fd)
            woke = True  # the FD fired or we were woken: we loop and keep the FD role
        except trio.ClosedResourceError as exc:
            raise TransportClosed(f"{self._endpoint} closed while waiting") from exc
        finally:
            self._fd_scope = None
            if not woke:
                # Leaving for good (cancelled, closed): hand the FD to a parked task.
                # Not on a normal wake-up, or two receivers could ping-pong the sender.
                self._wake_all()

    def _after_send(self) -> None:
        """Rule 3 after a successful send: wake the receivers only if a message is there.

        The send may have drained the FD's signal, but reading EVENTS processes
        what it announced: POLLIN now means a receiver must look; otherwise the
        next arrival signals the FD afresh. (No other sender can be waiting:
        the send lock admits one.) Waking the FD waiter after every send cost
        the Sentinel a spurious wake-up of its pump per DISPATCH. Parked
        receivers are woken all the same when no task waits on the FD: they
        parked behind this sender while it waited there, and one of them must
        take the FD over now that the sender is gone from it.
        """
        try:
            events = self._events()
        except TransportError:
            self._wake_all()  # the send went out; whoever waits finds out what happened
            return
        if events & zmq.POLLIN:
            self._wake_receivers()
        elif self._fd_scope is None:
            # Nobody waits on the FD (this sender may just have left it): a parked
            # receiver must take it over, or the next arrival's signal goes unseen.
            self._recv_lot.unpark_all()

    def _wake_others(self, events: int, *, sends: bool) -> None:
        if sends:
            if events & zmq.POLLIN:
                self._wake_receivers()
        elif self._is_router or events & zmq.POLLOUT:
            self._wake_sender()

    def _wake_receivers(self) -> None:
        self._recv_lot.unpark_all()
        if self._fd_scope is not None and not self._fd_owner_sends:
            self._fd_scope.cancel()

    def _wake_sender(self) -> None:
        self._send_lot.unpark_all()
        if self._fd_scope is not None and self._fd_owner_sends:
            self._fd_scope.cancel()

    def _wake_all(self) -> None:
        self._recv_lot.unpark_all()
        self._send_lot.unpark_all()
        if self._fd_scope is not None:
            self._fd_scope.cancel()

    # --- synchronous socket calls, with the error map ------------------------------

    def _raise_if_closed(self) -> None:
        if self._closed:
            raise TransportClosed(f"{self._endpoint} is closed")

    def _send_nowait(self, frames: Sequence[bytes]) -> None:
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            raise
        except zmq.ZMQError as exc:
            if self._is_router and exc.errno == zmq.EHOSTUNREACH:
                raise PeerUnreachable(bytes(frames[0])) from exc
            raise self._map_error(exc, "send") from exc

    def _recv_nowait(self) -> list[bytes]:
        try:
            return self._sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            raise
        except zmq.ZMQError as exc:
            raise self._map_error(exc, "receive") from exc

    def _recv_meta_nowait(self) -> tuple[list[bytes], str | None]:
        try:
            frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            # The ROUTER's own identity frame carries no metadata: ask the last one.
            user_id = frames[-1].get("User-Id")
        except zmq.Again:
            raise
        except zmq.ZMQError as exc:
            raise self._map_error(exc, "receive") from exc
        return [frame.bytes for frame in frames], str(user_id) if user_id else None

    def _events(self) -> int:
        try:
            return int(self._sock.get(zmq.EVENTS))
        except zmq.ZMQError as exc:
            raise self._map_error(exc, "poll") from exc

    def _map_error(self, exc: zmq.ZMQError, what: str) -> TransportError:
        if exc.errno in _CLOSED_ERRNOS:
            return TransportClosed(f"{self._endpoint}: {what} on a closed socket: {exc}")
        return TransportError(f"{self._endpoint}: {what} failed: {exc}")


def open_router(
    bind: str,
    *,
    context: zmq.Context[zmq.Socket[bytes]] | None = None,
    keys: Path | None = None,
    max_message_bytes: int | None = None,
) -> ZmqChannel:
    """Bind a ROUTER socket (``ROUTER_MANDATORY=1``, ``LINGER=0``).

    Without ``keys``: no security, ``ROUTER_HANDOVER=1`` (a worker restarted
    under the same identity takes over its route). With ``keys``: a CURVE
    server with the Sentinel's pair from that folder, a ZAP authenticator on a
    context of its own admitting the keys in ``keys/authorized`` (see
    ``_auth``), ``receive_authenticated`` reporting each message's User-Id, and
    no handover: a connection can never take over another one's route.

    Args:
        bind: endpoint such as ``tcp://127.0.0.1:5555``, ``tcp://127.0.0.1:*``
            or ``ipc:///path``; read the real one back from ``.endpoint``.
        context: defaults to the process-wide ``zmq.Context.instance()``
            (ignored with ``keys``).
        keys: the keys folder (``keys init``), or None for no security.
        max_message_bytes: ``ZMQ_MAXMSGSIZE``: libzmq drops a peer that sends a
            larger message before it is assembled (None: unbounded).

    Raises:
        TransportError: the address is invalid or in use.
        ConfigError: ``keys`` holds no Sentinel key.
    """
    on_close: Callable[[], None] | None = None
    if keys is not None:
        server = _keys.server_keys(keys)  # ConfigError before anything starts
        context = zmq.Context()
        auth = _auth.start_authenticator(context, keys)

        def on_close() -> None:
            auth.stop()
            context.destroy(linger=0)

    sock = (context or zmq.Context.instance()).socket(zmq.ROUTER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        # Without MANDATORY a ROUTER silently drops messages to unknown peers and at HWM.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if keys is None:
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        else:
            _auth.make_server(sock, server)
        if max_message_bytes is not None:
            sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        sock.bind(bind)
        endpoint = sock.get_string(zmq.LAST_ENDPOINT)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        if on_close is not None:
            on_close()
        raise TransportError(f"cannot bind ROUTER to {bind!r}: {exc}") from exc
    logger.debug("transport.bound %s", endpoint, extra={"event": "transport.bound"})
    return ZmqChannel(
        sock, endpoint, is_router=True, authenticated=keys is not None, on_close=on_close
    )


def open_dealer(
    connect: str,
    *,
    identity: bytes | None = None,
    context: zmq.Context[zmq.Socket[bytes]] | None = None,
    keys: _keys.ClientKeys | None = None,
    max_message_bytes: int | None = None,
) -> ZmqChannel:
    """Connect a DEALER socket (``LINGER=0``; ``ROUTING_ID`` if given).

    zmq connects in the background and reconnects by itself, so this never
    waits; messages sent before the connection is up are queued.

    Args:
        connect: the ROUTER's endpoint.
        identity: routing identity the ROUTER will see (random if None).
        context: defaults to the process-wide ``zmq.Context.instance()``.
        keys: this peer's CURVE pair and the Sentinel's public key: only the
            holder of that Sentinel's secret completes the handshake (None: no CURVE).
        max_message_bytes: ``ZMQ_MAXMSGSIZE`` (None: unbounded).

    Raises:
        TransportError: the endpoint is malformed.
    """
    sock = (context or zmq.Context.instance()).socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        if identity is not None:
            sock.setsockopt(zmq.ROUTING_ID, identity)
        if keys is not None:
            _auth.make_client(sock, keys)
        if max_message_bytes is not None:
            sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        sock.connect(connect)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise TransportError(f"cannot connect DEALER to {connect!r}: {exc}") from exc
    logger.debug("transport.connected %s", connect, extra={"event": "transport.connected"})
    return ZmqChannel(sock, connect, is_router=False)
