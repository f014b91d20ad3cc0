"""An in-memory twin of ``zmq_channel`` for deterministic (MockClock) tests.

Same API and semantics as the ZeroMQ transport, checked by the shared
contract suite, but it never touches threads, sockets or file descriptors, so
virtual time under ``trio.testing.MockClock`` only advances when every task is
blocked on *this* network.

Model (one ``MemoryNetwork`` per test):

* An *address* (any string, e.g. ``"mem://sentinel"``) holds an inbound queue
  (dealers → router), the currently bound router (or none) and the dealers
  connected to it, by identity.
* The inbound queue belongs to the address, not to the router: dealers may
  connect and send before a router binds, and when a router is closed and a
  new one bound at the same address (a Sentinel restart), messages still
  queued are delivered to the new router and existing dealers keep working.
  (Real zmq would lose what the old router had already received but not read.)
* Each dealer has its own inbound queue (router → dealer). Every queue holds
  at most ``capacity`` messages; a send to a full queue waits, like zmq at its
  high-water mark.
* A ROUTER can reach an identity only while a dealer with that identity is
  connected, open and not partitioned; otherwise ``send`` raises
  PeerUnreachable (also to a send already waiting on a full queue).
* Connecting a second dealer with an identity already in use takes over the
  route (zmq ``ROUTER_HANDOVER=1``, which ``open_router`` sets).
* ``disconnect(identity)`` simulates a partition: the router can no longer
  reach that dealer, and the dealer's sends are **dropped silently** (counted
  in ``dropped``), as if lost on the wire -- the Sentinel just stops hearing
  from it. ``reconnect(identity)`` heals it.

All waiting goes through one ParkingLot per network: every state change wakes
every waiter, which re-checks its own condition. Simple and obviously free of
lost wake-ups; the cost (O(waiters) per change) is irrelevant at test sizes.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import attrs
import trio

from casparian_trio.errors import PeerUnreachable, TransportClosed, TransportError
from casparian_trio.transport._base import check_frame_count

logger = logging.getLogger(__name__)

# zmq's default SNDHWM/RCVHWM is 1000 messages; keep the same order of magnitude.
DEFAULT_CAPACITY = 1000


@attrs.define(eq=False)
class _Queue:
    capacity: int
    # Each message with the User-Id of the dealer that sent it (None: no key).
    items: collections.deque[tuple[list[bytes], str | None]] = attrs.field(
        factory=collections.deque
    )

    @property
    def full(self) -> bool:
        return len(self.items) >= self.capacity


@attrs.define(eq=False)
class _Address:
    name: str
    inbound: _Queue  # dealers -> router; outlives any one router
    router: MemoryChannel | None = None
    dealers: dict[bytes, MemoryChannel] = attrs.field(factory=dict)


@attrs.define(eq=False)
class MemoryNetwork:
    """A set of in-memory addresses; create one per test.

    Args:
        capacity: messages each queue holds before a send waits.
    """

    capacity: int = DEFAULT_CAPACITY
    dropped: int = attrs.field(init=False, default=0)
    _addresses: dict[str, _Address] = attrs.field(init=False, factory=dict)
    _partitioned: set[bytes] = attrs.field(init=False, factory=set)
    _changed: trio.lowlevel.ParkingLot = attrs.field(init=False, factory=trio.lowlevel.ParkingLot)

    def bind_router(self, address: str) -> MemoryChannel:
        """Bind a ROUTER at ``address``; queued dealer messages become receivable.

        Raises:
            TransportError: an open router is already bound there.
        """
        where = self._address(address)
        if where.router is not None:
            raise TransportError(f"address {address!r} is already bound")
        where.router = MemoryChannel(self, where, None, where.inbound)
        self._notify()
        return where.router

    def connect_dealer(
        self, address: str, *, identity: bytes, user_id: str | None = None
    ) -> MemoryChannel:
        """Connect a DEALER to ``address`` (a router need not be bound yet).

        ``user_id`` plays the ZAP User-Id of a CURVE connection: the router's
        ``receive_authenticated`` reports it with each message from this dealer.
        """
        where = self._address(address)
        identity = bytes(identity)
        dealer = MemoryChannel(self, where, identity, _Queue(self.capacity), user_id=user_id)
        where.dealers[identity] = dealer  # a duplicate identity takes over the route
        self._notify()
        return dealer

    def disconnect(self, identity: bytes) -> None:
        """Partition ``identity`` away: unreachable from routers, its sends dropped."""
        self._partitioned.add(identity)
        self._notify()

    def reconnect(self, identity: bytes) -> None:
        """Heal a partition made by :meth:`disconnect`."""
        self._partitioned.discard(identity)
        self._notify()

    def is_partitioned(self, identity: bytes) -> bool:
        return identity in self._partitioned

    def _address(self, name: str) -> _Address:
        if name not in self._addresses:
            self._addresses[name] = _Address(name, _Queue(self.capacity))
        return self._addresses[name]

    def _notify(self) -> None:
        self._changed.unpark_all()

    async def _wait_for_change(self) -> None:
        await self._changed.park()


@attrs.define(eq=False)
class MemoryChannel:
    """One end (ROUTER or DEALER) on a :class:`MemoryNetwork`; see the module docstring."""

    _network: MemoryNetwork
    _address: _Address
    # None for a ROUTER; the routing identity for a DEALER.
    identity: bytes | None
    _inbox: _Queue
    user_id: str | None = attrs.field(default=None, kw_only=True)
    _closed: bool = attrs.field(init=False, default=False)

    @property
    def endpoint(self) -> str:
        return self._address.name

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def is_router(self) -> bool:
        return self.identity is None

    async def send(self, frames: Sequence[bytes]) -> None:
        """Send one multipart message (see ``Channel.send``)."""
        check_frame_count(frames, is_router=self.is_router)
        message = [bytes(frame) for frame in frames]  # copy: the caller may reuse buffers
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            self._raise_if_closed()
            queue = self._route(message)
            if queue is None or not queue.full:
                break
            await self._network._wait_for_change()
        if queue is not None:
            routed = message[1:] if self.identity is None else [self.identity, *message]
            queue.items.append((routed, self.user_id))
            self._network._notify()
        # Delivered (or dropped by a partition): the caller must not think otherwise.
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def receive(self) -> list[bytes]:
        """Receive one multipart message (see ``Channel.receive``)."""
        frames, _ = await self.receive_authenticated()
        return frames

    async def receive_authenticated(self) -> tuple[list[bytes], str | None]:
        """``receive``, plus the sending dealer's ``user_id`` (see ``connect_dealer``)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            self._raise_if_closed()
            if self._inbox.items:
                break
            await self._network._wait_for_change()
        message = self._inbox.items.popleft()
        self._network._notify()  # room in the queue for a waiting sender
        await trio.lowlevel.cancel_shielded_checkpoint()
        return message

    def receive_nowait_authenticated(self) -> tuple[list[bytes], str | None] | None:
        """A message already waiting, with its ``user_id``, or None (see ``Channel``)."""
        self._raise_if_closed()
        if not self._inbox.items:
            return None
        message = self._inbox.items.popleft()
        self._network._notify()  # room in the queue for a waiting sender
        return message

    def close(self) -> None:
        """Close; idempotent. A closed dealer is unreachable; the address stays usable."""
        if self._closed:
            return
        self._closed = True
        if self.identity is None:
            self._address.router = None
        elif self._address.dealers.get(self.identity) is self:
            del self._address.dealers[self.identity]
        self._network._notify()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _raise_if_closed(self) -> None:
        if self._closed:
            raise TransportClosed(f"{self.endpoint} is closed")

    def _route(self, message: list[bytes]) -> _Queue | None:
        """The queue ``message`` goes to; None means "drop it" (partitioned dealer)."""
        if self.identity is not None:
            if self._network.is_partitioned(self.identity):
                self._network.dropped += 1
                logger.debug("transport.dropped %r (partitioned)", self.identity)
                return None
            return self._address.inbound
        peer = self._address.dealers.get(message[0])
        if peer is None or peer.closed or self._network.is_partitioned(message[0]):
            raise PeerUnreachable(message[0])
        return peer._inbox
