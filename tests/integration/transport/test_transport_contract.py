"""The Channel contract, run against BOTH the in-memory and the ZeroMQ transport.

Every test is wrapped in ``trio.fail_after(TIMEOUT)`` so a broken shim fails
instead of hanging; that deadline is a hang guard, never a speed limit, and no
test waits a fixed time for something to happen. The zmq side uses tcp://127.0.0.1 ephemeral ports (never inproc://,
whose FD does not fire: libzmq#1434).
"""

from __future__ import annotations

import random

import pytest
import trio
import trio.lowlevel
import trio.testing

from casparian_trio.errors import PeerUnreachable, TransportClosed
from casparian_trio.transport import Channel

# A hang guard, not a speed limit: an idle machine runs each test in under 2 s,
# a loaded one (tools/under_load.sh) several times slower.
TIMEOUT = 120


async def test_round_trip(net) -> None:
    with trio.fail_after(TIMEOUT):
        router = net.router()
        dealer = net.dealer(router.endpoint, b"worker-1")
        await dealer.send([b"header", b"payload"])
        identity, *frames = await router.receive()
        assert identity == b"worker-1"
        assert frames == [b"header", b"payload"]
        await router.send([identity, b"reply-header", b""])
        assert await dealer.receive() == [b"reply-header", b""]


async def test_frames_are_copied_bytes(net) -> None:
    with trio.fail_after(TIMEOUT):
        router = net.router()
        dealer = await net.connect(router, b"w")
        big = bytes(range(256)) * 4096  # 1 MiB
        await dealer.send([bytearray(b"x"), memoryview(big), b""])
        message = await router.receive()
        assert message == [b"w", b"x", big, b""]
        assert all(type(frame) is bytes for frame in message)


async def test_channels_satisfy_the_protocol(net) -> None:
    router = net.router()
    dealer = net.dealer(router.endpoint, b"w")
    assert isinstance(router, Channel)
    assert isinstance(dealer, Channel)


async def test_send_to_unknown_identity_raises_peer_unreachable(net) -> None:
    with trio.fail_after(TIMEOUT):
        router = net.router()
        await net.connect(router, b"known")
        with pytest.raises(PeerUnreachable) as info:
            await router.send([b"stranger", b"x"])
        assert info.value.identity == b"stranger"
        await router.send([b"known", b"still fine"])


async def test_closed_dealer_becomes_unreachable(net) -> None:
    with trio.fail_after(TIMEOUT):
        router = net.router()
        dealer = await net.connect(router, b"leaver")
        dealer.close()
        # zmq notices the disconnect in its I/O thread: keep trying until it has.
        unreachable: list[PeerUnreachable] = []
        while not unreachable:
            try:
                await router.send([b"leaver", b"x"])
            except PeerUnreachable as exc:
                unreachable.append(exc)
            await trio.sleep(0.01)
        assert unreachable[0].identity == b"leaver"


async def test_too_few_frames_is_a_value_error(net) -> None:
    router = net.router()
    dealer = net.dealer(router.endpoint, b"w")
    with pytest.raises(ValueError, match="frame"):
        await dealer.send([])
    with pytest.raises(ValueError, match="identity"):
        await router.send([b"w"])


async def test_many_concurrent_dealers(net) -> None:
    """20 dealers x 200 messages; each reply is routed back to the dealer that asked."""
    n_dealers, n_messages = 20, 200
    with trio.fail_after(TIMEOUT):
        router = net.router()
        dealers = [net.dealer(router.endpoint, b"d%02d" % i) for i in range(n_dealers)]

        async def echo() -> None:
            for _ in range(n_dealers * n_messages):
                identity, body = await router.receive()
                await router.send([identity, identity + b":" + body])

        async def client(dealer: Channel, identity: bytes) -> None:
            async with trio.open_nursery() as nursery:

                async def sender() -> None:
                    for i in range(n_messages):
                        await dealer.send([b"%d" % i])

                nursery.start_soon(sender)
                for i in range(n_messages):
                    assert await dealer.receive() == [identity + b":%d" % i]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            for i, dealer in enumerate(dealers):
                nursery.start_soon(client, dealer, b"d%02d" % i)


async def test_cancelled_receives_lose_no_message(net) -> None:
    """Receives cancelled at random points, while 1,000 messages arrive, drop nothing."""
    total = 1000
    rng = random.Random(1177)
    with trio.fail_after(TIMEOUT):
        router = net.router()
        dealer = await net.connect(router, b"w")
        received: list[int] = []
        cancelled = 0

        async def produce() -> None:
            for i in range(total):
                await dealer.send([b"%d" % i])
                if i % 50 == 0:
                    await trio.sleep(0.001)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            while len(received) < total:
                with trio.move_on_after(rng.choice([0, 0, 1e-6, 1e-5, 1e-4, 1e-3])) as scope:
                    _, body = await router.receive()
                    received.append(int(body))
                cancelled += scope.cancelled_caught
        assert received == list(range(total))
        assert cancelled > 0


async def test_cancelled_receives_by_another_task_lose_no_message(net) -> None:
    """A second task cancels the receiver's scope at arbitrary moments (replies direction)."""
    total = 1000
    with trio.fail_after(TIMEOUT):
        router = net.router()
        dealer = await net.connect(router, b"w")
        received: list[int] = []
        scope_box: list[trio.CancelScope] = []

        async def produce() -> None:
            for i in range(total):
                await router.send([b"w", b"%d" % i])
                if scope_box and i % 3 == 0:
                    scope_box[-1].cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            while len(received) < total:
                with trio.CancelScope() as scope:
                    scope_box.append(scope)
                    received.append(int((await dealer.receive())[0]))
        assert received == list(range(total))


@pytest.mark.parametrize("payload", [10, 20000])
async def test_concurrent_send_and_receive_on_one_socket(small_net, payload: int) -> None:
    """One task waits in receive while another keeps sending: no reply is missed.

    Small queues make both sides block often, so the task woken by the FD is
    sometimes a sender that must pass the wake-up on to the parked receiver.
    (test_zmq_channel.py injects the "reply lands inside send" race directly.)
    """
    rounds = 300
    pad = b"." * payload
    with trio.fail_after(TIMEOUT):
        router = small_net.router()
        dealer = await small_net.connect(router, b"w")

        async def echo() -> None:
            async with trio.open_nursery() as nursery:
                replies_out, replies_in = trio.open_memory_channel[list[bytes]](rounds)

                async def reply_all() -> None:
                    async for message in replies_in:
                        await router.send(message)  # sends from one task, receives from another

                nursery.start_soon(reply_all)
                async with replies_out:
                    for _ in range(rounds * 2):
                        await replies_out.send(await router.receive())

        async def receive_all() -> None:
            for i in range(rounds * 2):
                assert await dealer.receive() == [b"%d" % i, pad]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            nursery.start_soon(receive_all)
            for i in range(rounds):  # a burst
                await dealer.send([b"%d" % i, pad])
            for i in range(rounds, rounds * 2):  # lock-step-ish: a receiver waits each time
                await trio.lowlevel.checkpoint()
                await dealer.send([b"%d" % i, pad])


async def test_close_wakes_a_waiting_receiver(net) -> None:
    with trio.fail_after(TIMEOUT):
        router = net.router()
        dealer = net.dealer(router.endpoint, b"w")
        outcomes: list[BaseException] = []

        async def wait_forever(chan: Channel) -> None:
            try:
                await chan.receive()
            except TransportClosed as exc:
                outcomes.append(exc)

        async with trio.open_nursery() as nursery:
            for chan in (router, router, dealer, dealer):  # FD waiter and parked waiter
                nursery.start_soon(wait_forever, chan)
            await trio.testing.wait_all_tasks_blocked()
            router.close()
            dealer.close()
            # close() itself wakes them: they are done before anything else blocks
            # (a waiter left to notice on a timer or poll would still be waiting).
            await trio.testing.wait_all_tasks_blocked()
            assert len(outcomes) == 4


async def test_closed_channel_refuses_and_close_is_idempotent(net) -> None:
    router = net.router()
    with net.dealer(router.endpoint, b"w") as dealer:
        assert not dealer.closed
    assert dealer.closed
    dealer.close()
    with pytest.raises(TransportClosed):
        await dealer.send([b"x"])
    with pytest.raises(TransportClosed):
        await dealer.receive()
    router.close()
    router.close()
    with pytest.raises(TransportClosed):
        await router.send([b"w", b"x"])


async def test_send_waits_when_the_peer_is_full_and_drops_nothing(small_net) -> None:
    """Router -> a dealer that is not reading: sends wait (ROUTER_MANDATORY), then all arrive."""
    total, size = 400, 65536
    with trio.fail_after(TIMEOUT):
        router = small_net.router()
        dealer = await small_net.connect(router, b"slow")
        sent = 0

        async def flood() -> None:
            nonlocal sent
            for i in range(total):
                await router.send([b"slow", i.to_bytes(4, "big") * (size // 4)])
                sent += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            await trio.testing.wait_all_tasks_blocked()  # the flood has stopped or waits
            assert sent < total, "the sender never felt back-pressure"
            for i in range(total):
                (body,) = await dealer.receive()
                assert body[:4] == i.to_bytes(4, "big")
        assert sent == total


async def test_dealer_send_waits_when_router_is_not_reading(small_net) -> None:
    total = 400
    with trio.fail_after(TIMEOUT):
        router = small_net.router()
        dealer = small_net.dealer(router.endpoint, b"eager")
        sent = 0

        async def flood() -> None:
            nonlocal sent
            for i in range(total):
                await dealer.send([i.to_bytes(4, "big") * 16384])
                sent += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            await trio.testing.wait_all_tasks_blocked()  # the flood has stopped or waits
            assert sent < total, "the sender never felt back-pressure"
            for i in range(total):
                identity, body = await router.receive()
                assert (identity, body[:4]) == (b"eager", i.to_bytes(4, "big"))


async def test_router_restart_at_same_address(net) -> None:
    """A new router bound where the old one was serves the existing dealer (Sentinel restart)."""
    with trio.fail_after(TIMEOUT):
        first = net.router()
        address = first.endpoint
        dealer = await net.connect(first, b"survivor")
        disconnected = net.watch_disconnect(dealer)
        first.close()
        await disconnected()
        # Sent while no router is bound: queued by the dealer, delivered to the next one.
        for i in range(5):
            await dealer.send([b"%d" % i])
        second = net.router(address)
        for i in range(5):
            assert await second.receive() == [b"survivor", b"%d" % i]
        await second.send([b"survivor", b"welcome back"])
        assert await dealer.receive() == [b"welcome back"]


async def test_many_receivers_on_one_socket_share_without_loss(net) -> None:
    total = 1000
    with trio.fail_after(TIMEOUT):
        router = net.router()
        dealer = await net.connect(router, b"w")
        seen: list[int] = []
        all_seen = trio.Event()

        async def consume() -> None:
            while True:
                _, body = await router.receive()
                seen.append(int(body))
                if len(seen) == total:
                    all_seen.set()

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(consume)
            for i in range(total):
                await dealer.send([b"%d" % i])
            await all_seen.wait()
            nursery.cancel_scope.cancel()
        assert sorted(seen) == list(range(total))


async def test_receive_nowait_drains_what_arrived_without_waiting(net) -> None:
    with trio.fail_after(TIMEOUT):
        router = net.router()
        dealers = [await net.connect(router, b"w%d" % i) for i in range(3)]
        assert router.receive_nowait_authenticated() is None  # nothing yet: no wait
        for i, dealer in enumerate(dealers):
            for n in range(4):
                await dealer.send([b"h", b"%d-%d" % (i, n)])
        # the first waits (zmq moves messages in its I/O thread), the rest are there
        got = [await router.receive_authenticated()]
        while len(got) < 12:
            more = router.receive_nowait_authenticated()
            if more is None:
                await trio.sleep(0.01)  # still on its way through the I/O thread
                continue
            got.append(more)
        assert all(user_id is None for _, user_id in got)
        per_peer: dict[bytes, list[bytes]] = {}
        for frames, _ in got:
            assert frames[1] == b"h"
            per_peer.setdefault(frames[0], []).append(frames[2])
        assert per_peer == {b"w%d" % i: [b"%d-%d" % (i, n) for n in range(4)] for i in range(3)}
        assert router.receive_nowait_authenticated() is None
        # a receiver parked while others drain still gets the next message
        async with trio.open_nursery() as nursery:
            late: list[list[bytes]] = []

            async def wait_one() -> None:
                late.append((await router.receive_authenticated())[0])

            nursery.start_soon(wait_one)
            await trio.testing.wait_all_tasks_blocked()
            assert router.receive_nowait_authenticated() is None
            await dealers[0].send([b"h", b"last"])
        assert late == [[b"w0", b"h", b"last"]]
        router.close()
        with pytest.raises(TransportClosed):
            router.receive_nowait_authenticated()
