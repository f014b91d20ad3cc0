"""The in-memory transport's own behaviour: partitions, restarts, virtual time.

These run under pytest-trio's ``autojump_clock`` (MockClock), with a guard that
makes any thread or fd wait fail: the memory transport must never touch either,
or virtual time could jump past real I/O (trio#456).
"""

from __future__ import annotations

import time

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from casparian_trio.errors import PeerUnreachable, TransportClosed, TransportError
from casparian_trio.transport import Channel, MemoryNetwork

ADDRESS = "mem://sentinel"


@pytest.fixture(autouse=True)
def no_threads_or_fds(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the memory transport must not use threads or fds")

    monkeypatch.setattr(trio.to_thread, "run_sync", forbidden)
    monkeypatch.setattr(trio.lowlevel, "wait_readable", forbidden)
    monkeypatch.setattr(trio.lowlevel, "wait_writable", forbidden)


@pytest.fixture
def network() -> MemoryNetwork:
    return MemoryNetwork()


async def test_dealer_may_send_before_the_router_binds(network, autojump_clock) -> None:
    dealer = network.connect_dealer(ADDRESS, identity=b"early")
    for i in range(3):
        await dealer.send([b"%d" % i])
    await trio.sleep(60)  # nobody listening; nothing lost
    router = network.bind_router(ADDRESS)
    assert [await router.receive() for _ in range(3)] == [[b"early", b"%d" % i] for i in range(3)]


async def test_binding_an_address_twice_fails_until_closed(network) -> None:
    first = network.bind_router(ADDRESS)
    with pytest.raises(TransportError, match="already bound"):
        network.bind_router(ADDRESS)
    first.close()
    network.bind_router(ADDRESS).close()


async def test_restart_keeps_dealers_and_queued_messages(network, autojump_clock) -> None:
    with trio.fail_after(5):
        router = network.bind_router(ADDRESS)
        dealer = network.connect_dealer(ADDRESS, identity=b"w1")
        await dealer.send([b"before"])
        router.close()
        await dealer.send([b"during"])
        restarted = network.bind_router(ADDRESS)
        assert await restarted.receive() == [b"w1", b"before"]  # unread by the old router
        assert await restarted.receive() == [b"w1", b"during"]
        await restarted.send([b"w1", b"hi"])  # the dealer is reachable at once
        assert await dealer.receive() == [b"hi"]


async def test_closing_the_router_wakes_its_receiver_only(network, autojump_clock) -> None:
    with trio.fail_after(5):
        router = network.bind_router(ADDRESS)
        dealer = network.connect_dealer(ADDRESS, identity=b"w1")
        async with trio.open_nursery() as nursery:

            async def receiver() -> None:
                with pytest.raises(TransportClosed):
                    await router.receive()

            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            router.close()
        assert not dealer.closed
        await dealer.send([b"still works"])


async def test_partition_makes_dealer_unreachable_and_drops_its_sends(
    network, autojump_clock
) -> None:
    with trio.fail_after(60):
        router = network.bind_router(ADDRESS)
        dealer = network.connect_dealer(ADDRESS, identity=b"w1")
        network.disconnect(b"w1")
        with pytest.raises(PeerUnreachable):
            await router.send([b"w1", b"x"])
        await dealer.send([b"lost"])
        assert network.dropped == 1
        with trio.move_on_after(30):
            await router.receive()
            pytest.fail("a partitioned dealer's message arrived")
        network.reconnect(b"w1")
        await dealer.send([b"found"])
        assert await router.receive() == [b"w1", b"found"]
        await router.send([b"w1", b"ack"])
        assert await dealer.receive() == [b"ack"]


async def test_partition_wakes_a_send_waiting_on_a_full_queue(autojump_clock) -> None:
    network = MemoryNetwork(capacity=2)
    router = network.bind_router(ADDRESS)
    network.connect_dealer(ADDRESS, identity=b"w1")
    with trio.fail_after(60):
        await router.send([b"w1", b"1"])
        await router.send([b"w1", b"2"])
        async with trio.open_nursery() as nursery:

            async def blocked_send() -> None:
                with pytest.raises(PeerUnreachable):
                    await router.send([b"w1", b"3"])

            nursery.start_soon(blocked_send)
            await trio.sleep(10)
            network.disconnect(b"w1")


async def test_closing_a_dealer_wakes_a_router_send_waiting_on_it(autojump_clock) -> None:
    network = MemoryNetwork(capacity=1)
    router = network.bind_router(ADDRESS)
    dealer = network.connect_dealer(ADDRESS, identity=b"w1")
    with trio.fail_after(60):
        await router.send([b"w1", b"1"])
        async with trio.open_nursery() as nursery:

            async def blocked_send() -> None:
                with pytest.raises(PeerUnreachable):
                    await router.send([b"w1", b"2"])

            nursery.start_soon(blocked_send)
            await trio.sleep(10)
            dealer.close()


async def test_back_pressure_in_virtual_time(autojump_clock) -> None:
    network = MemoryNetwork(capacity=5)
    router = network.bind_router(ADDRESS)
    dealer = network.connect_dealer(ADDRESS, identity=b"w1")
    sent: list[float] = []
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:

            async def producer() -> None:
                for _ in range(10):
                    await dealer.send([b"m"])
                    sent.append(trio.current_time())

            nursery.start_soon(producer)
            await trio.sleep(100)  # the 6th send waits for the router
            assert len(sent) == 5
            for _ in range(10):
                await router.receive()
    assert len(sent) == 10


async def test_same_identity_takes_over_the_route(network) -> None:
    router = network.bind_router(ADDRESS)
    old = network.connect_dealer(ADDRESS, identity=b"w1")
    new = network.connect_dealer(ADDRESS, identity=b"w1")
    await router.send([b"w1", b"to the new one"])
    assert await new.receive() == [b"to the new one"]
    old.close()  # closing the superseded dealer must not unroute the new one
    await router.send([b"w1", b"again"])
    assert await new.receive() == [b"again"]


async def test_heartbeats_take_no_real_time(network, autojump_clock) -> None:
    router = network.bind_router(ADDRESS)
    dealer = network.connect_dealer(ADDRESS, identity=b"w1")
    started = time.perf_counter()
    with trio.fail_after(2000):
        async with trio.open_nursery() as nursery:

            async def heartbeat() -> None:
                for _ in range(200):
                    await dealer.send([b"beat"])
                    await trio.sleep(5)

            nursery.start_soon(heartbeat)
            arrivals = [(await router.receive(), trio.current_time())[1] for _ in range(200)]
    assert arrivals[-1] - arrivals[0] == pytest.approx(995)
    assert time.perf_counter() - started < 2


async def test_receive_timeout_is_virtual(network, autojump_clock) -> None:
    router = network.bind_router(ADDRESS)
    with trio.move_on_after(3600) as scope:
        await router.receive()
    assert scope.cancelled_caught


async def test_channel_protocol_and_endpoint(network) -> None:
    with (
        network.bind_router(ADDRESS) as router,
        network.connect_dealer(ADDRESS, identity=b"w") as dealer,
    ):
        assert isinstance(router, Channel)
        assert isinstance(dealer, Channel)
        assert router.endpoint == dealer.endpoint == ADDRESS
    assert router.closed
    assert dealer.closed


@settings(max_examples=50, deadline=None)
@given(
    request=st.lists(st.binary(max_size=64), min_size=1, max_size=6),
    reply=st.lists(st.binary(max_size=64), min_size=1, max_size=6),
    identity=st.binary(min_size=1, max_size=16),
)
def test_any_frames_round_trip(request: list[bytes], reply: list[bytes], identity: bytes) -> None:
    async def main() -> None:
        network = MemoryNetwork()
        router = network.bind_router(ADDRESS)
        dealer = network.connect_dealer(ADDRESS, identity=identity)
        await dealer.send(request)
        assert await router.receive() == [identity, *request]
        await router.send([identity, *reply])
        assert await dealer.receive() == reply

    trio.run(main)
