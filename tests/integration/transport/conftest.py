"""Fixtures: build routers and dealers on either transport behind one small API.

The contract suite runs every test against both factories (``net``), which is
what keeps the in-memory twin honest. Helpers live here as fixtures rather
than an importable module so they work under any pytest import mode. Every
channel a factory makes is closed at teardown, so no socket outlives its test.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterator

import attrs
import pytest
import trio
import zmq
from zmq.utils.monitor import recv_monitor_message

from casparian_trio.transport import (
    Channel,
    MemoryNetwork,
    ZmqChannel,
    open_dealer,
    open_router,
)

_counter = itertools.count()


@attrs.define(eq=False)
class MemoryNet:
    """Factory over one MemoryNetwork (``capacity`` = messages per queue)."""

    capacity: int | None = None
    kind: str = "memory"
    network: MemoryNetwork = attrs.field(init=False)
    channels: list[Channel] = attrs.field(init=False, factory=list)

    def __attrs_post_init__(self) -> None:
        self.network = MemoryNetwork(
            **({} if self.capacity is None else {"capacity": self.capacity})
        )

    def router(self, address: str | None = None) -> Channel:
        chan = self.network.bind_router(address or f"mem://router-{next(_counter)}")
        self.channels.append(chan)
        return chan

    def dealer(self, endpoint: str, identity: bytes) -> Channel:
        chan = self.network.connect_dealer(endpoint, identity=identity)
        self.channels.append(chan)
        return chan

    async def connect(self, router: Channel, identity: bytes) -> Channel:
        """A dealer the router can already reach (it has said hello)."""
        dealer = self.dealer(endpoint_of(router), identity)
        assert await handshake(router, dealer) == identity
        return dealer

    def watch_disconnect(self, dealer: Channel) -> Callable[[], Awaitable[None]]:
        """Call before closing the router; await the result: ``dealer`` has seen it go.

        In memory a close takes effect at once, so there is nothing to wait for.
        """
        return trio.lowlevel.checkpoint

    def close_all(self) -> None:
        for chan in self.channels:
            chan.close()


@attrs.define(eq=False)
class ZmqNet:
    """Factory over real zmq sockets on tcp://127.0.0.1 (``capacity`` = SNDHWM/RCVHWM)."""

    capacity: int | None = None
    kind: str = "zmq"
    channels: list[Channel] = attrs.field(init=False, factory=list)

    def router(self, address: str | None = None) -> Channel:
        bind = address or "tcp://127.0.0.1:*"
        chan = open_router(bind) if self.capacity is None else self._small(zmq.ROUTER, bind)
        self.channels.append(chan)
        return chan

    def dealer(self, endpoint: str, identity: bytes) -> Channel:
        if self.capacity is None:
            chan = open_dealer(endpoint, identity=identity)
        else:
            chan = self._small(zmq.DEALER, endpoint, identity)
        self.channels.append(chan)
        return chan

    async def connect(self, router: Channel, identity: bytes) -> Channel:
        """A dealer the router can already reach (it has said hello)."""
        dealer = self.dealer(endpoint_of(router), identity)
        assert await handshake(router, dealer) == identity
        return dealer

    def watch_disconnect(self, dealer: Channel) -> Callable[[], Awaitable[None]]:
        """Call before closing the router; await the result: ``dealer`` has seen it go.

        zmq notices a closed peer in its I/O thread; until it has, a send may
        still go down the dead connection and be lost. A socket monitor reports
        the moment (ZMQ_EVENT_DISCONNECTED), however slow the machine.
        """
        assert isinstance(dealer, ZmqChannel)
        sock = dealer._sock
        monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)

        async def disconnected() -> None:
            try:
                while True:
                    try:
                        recv_monitor_message(monitor, zmq.NOBLOCK)
                        return  # the mask lets through only EVENT_DISCONNECTED
                    except zmq.Again:
                        # The monitor is an inproc:// PAIR, whose FD does not fire
                        # (libzmq#1434): poll it; the test's fail_after bounds this.
                        await trio.sleep(0.01)
            finally:
                sock.disable_monitor()
                monitor.close(linger=0)

        return disconnected

    def close_all(self) -> None:
        for chan in self.channels:
            chan.close()

    def _small(self, kind: int, endpoint: str, identity: bytes | None = None) -> ZmqChannel:
        # Same options as open_router/open_dealer, plus small high-water marks
        # (they must be set before bind/connect to apply).
        sock = zmq.Context.instance().socket(kind)
        assert self.capacity is not None
        for option, value in [
            (zmq.LINGER, 0),
            (zmq.SNDHWM, self.capacity),
            (zmq.RCVHWM, self.capacity),
            (zmq.SNDBUF, 65536),
            (zmq.RCVBUF, 65536),
        ]:
            sock.setsockopt(option, value)
        if kind == zmq.ROUTER:
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
            sock.bind(endpoint)
            return ZmqChannel(sock, sock.get(zmq.LAST_ENDPOINT).decode(), is_router=True)
        if identity is not None:
            sock.setsockopt(zmq.ROUTING_ID, identity)
        sock.connect(endpoint)
        return ZmqChannel(sock, endpoint, is_router=False)


def endpoint_of(chan: Channel) -> str:
    endpoint = getattr(chan, "endpoint", None)
    assert isinstance(endpoint, str)
    return endpoint


async def handshake(router: Channel, dealer: Channel) -> bytes:
    """Dealer says hello so the ROUTER learns its route (as IDENTIFY does); return its identity."""
    await dealer.send([b"hello"])
    identity, hello = await router.receive()
    assert hello == b"hello"
    return identity


@pytest.fixture(params=["memory", "zmq"])
def net(request: pytest.FixtureRequest) -> Iterator[MemoryNet | ZmqNet]:
    """A transport factory with default buffers, once per transport."""
    factory: MemoryNet | ZmqNet = MemoryNet() if request.param == "memory" else ZmqNet()
    yield factory
    factory.close_all()


@pytest.fixture(params=["memory", "zmq"])
def small_net(request: pytest.FixtureRequest) -> Iterator[MemoryNet | ZmqNet]:
    """A transport factory whose queues hold only a few messages (back-pressure tests)."""
    factory: MemoryNet | ZmqNet = MemoryNet(8) if request.param == "memory" else ZmqNet(8)
    yield factory
    factory.close_all()


@pytest.fixture
def zmq_net() -> Iterator[ZmqNet]:
    """The zmq factory alone, for zmq-specific tests."""
    factory = ZmqNet()
    yield factory
    factory.close_all()
