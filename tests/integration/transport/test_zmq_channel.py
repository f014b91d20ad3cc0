"""ZeroMQ-specific behaviour of the shim: endpoints, error mapping, FD hand-over, no busy loops."""

from __future__ import annotations

import select
import time
from collections.abc import Sequence

import pytest
import trio
import trio.testing
import zmq

from casparian_trio.errors import TransportClosed, TransportError
from casparian_trio.transport import ZmqChannel, open_dealer, open_router

# A hang guard, not a speed limit (each test takes well under a second on an idle machine).
TIMEOUT = 120
# A spinning waiter reads EVENTS thousands of times in this window, however
# loaded the machine; an idle one a handful of times.
IDLE_WINDOW_S = 0.3
IDLE_MAX_READS = 50


async def test_endpoint_is_the_real_port_and_ipc_works(tmp_path) -> None:
    with trio.fail_after(TIMEOUT):
        with open_router("tcp://127.0.0.1:*") as router:
            assert router.endpoint.startswith("tcp://127.0.0.1:")
            assert not router.endpoint.endswith(":*")
        ipc = f"ipc://{tmp_path}/sentinel.sock"
        with open_router(ipc) as router, open_dealer(ipc, identity=b"w") as dealer:
            assert router.endpoint == ipc
            assert dealer.endpoint == ipc
            await dealer.send([b"over ipc"])
            assert await router.receive() == [b"w", b"over ipc"]


async def test_bind_errors_are_transport_errors() -> None:
    with open_router("tcp://127.0.0.1:*") as router:
        with pytest.raises(TransportError, match="cannot bind") as info:
            open_router(router.endpoint)
        assert isinstance(info.value.__cause__, zmq.ZMQError)
    with pytest.raises(TransportError, match="cannot bind"):
        open_router("nonsense://here")
    with pytest.raises(TransportError, match="cannot connect"):
        open_dealer("tcp://")


async def test_caller_may_pass_its_own_context() -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        with trio.fail_after(TIMEOUT):
            with (
                open_router("tcp://127.0.0.1:*", context=context) as router,
                open_dealer(router.endpoint, identity=b"w", context=context) as dealer,
            ):
                await dealer.send([b"x"])
                assert await router.receive() == [b"w", b"x"]
    finally:
        context.destroy(linger=0)  # never term() on the Trio thread


def test_close_outside_trio_is_fine() -> None:
    router = open_router("tcp://127.0.0.1:*")
    router.close()
    assert router.closed


async def test_cancelling_the_fd_waiter_hands_the_fd_to_a_parked_receiver(zmq_net) -> None:
    with trio.fail_after(TIMEOUT):
        router = zmq_net.router()
        dealer = await zmq_net.connect(router, b"w")
        got: list[list[bytes]] = []

        async def receive_into_got() -> None:
            got.append(await router.receive())

        async with trio.open_nursery() as nursery:
            first = trio.CancelScope()

            async def first_receiver() -> None:
                with first:
                    await router.receive()

            nursery.start_soon(first_receiver)  # becomes the FD waiter
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(receive_into_got)  # parks
            await trio.testing.wait_all_tasks_blocked()
            first.cancel()
            await trio.testing.wait_all_tasks_blocked()
            await dealer.send([b"for the second"])
        assert got == [[b"w", b"for the second"]]


async def test_reply_landing_inside_another_tasks_send_is_not_missed(
    zmq_net, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The edge-trigger race of pyzmq#1177, injected deterministically.

    A receiver waits on the dealer's FD. Inside the dealer's send (no checkpoint
    in between) the router's reply is sent and lands: the FD signals, and zmq's
    send then drains that signal, so Trio's epoll never reports it. Only the
    shim's wake-up after a successful send saves the receiver.
    """
    original = ZmqChannel._send_nowait
    router = zmq_net.router()

    def reply_lands_during_send(self: ZmqChannel, frames: Sequence[bytes]) -> None:
        if self is not router:
            original(router, [b"w", b"reply"])
            assert select.select([self._fd], [], [], TIMEOUT)[0], "the reply never signalled"
            time.sleep(0.005)  # outlast zmq's ~1 ms command throttle (a sync function)
        original(self, frames)

    with trio.fail_after(TIMEOUT):
        dealer = await zmq_net.connect(router, b"w")
        monkeypatch.setattr(ZmqChannel, "_send_nowait", reply_lands_during_send)
        for _ in range(3):
            got: list[list[bytes]] = []
            async with trio.open_nursery() as nursery:

                async def receive_one() -> None:
                    got.append(await dealer.receive())  # noqa: B023

                nursery.start_soon(receive_one)
                await trio.testing.wait_all_tasks_blocked()  # it now waits on the FD
                await dealer.send([b"request"])
            assert got == [[b"reply"]]
            assert await router.receive() == [b"w", b"request"]


async def test_a_sender_leaving_the_fd_hands_it_to_a_parked_receiver(zmq_net) -> None:
    """A receiver that parked while a blocked send held the FD still gets the next message.

    The sender's last send succeeds with nothing to receive (no POLLIN), so it
    leaves the FD without a wake-up for the receivers; one of them must take the
    FD over, or the next arrival's signal is seen by nobody (the CI hang of
    test_concurrent_send_and_receive_on_one_socket).
    """
    small = zmq_net.__class__(capacity=4)
    try:
        with trio.fail_after(TIMEOUT):
            router = small.router()
            dealer = await small.connect(router, b"slow")
            stop = False
            sent = 0
            flood_done = trio.Event()
            got: list[list[bytes]] = []

            async def flood() -> None:
                nonlocal sent
                while not stop:
                    await router.send([b"slow", b"x" * 65536])
                    sent += 1
                flood_done.set()

            async def receive_one() -> None:
                got.append(await router.receive())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                await trio.testing.wait_all_tasks_blocked()  # the peer is full
                assert router._fd_scope is not None
                assert router._fd_owner_sends
                stop = True
                nursery.start_soon(receive_one)
                await trio.testing.wait_all_tasks_blocked()  # parked behind the sender
                received = 0
                while not (flood_done.is_set() and received == sent):
                    await dealer.receive()  # the blocked send completes; the sender leaves
                    received += 1
                await trio.testing.wait_all_tasks_blocked()
                await dealer.send([b"for the parked receiver"])
            assert got == [[b"slow", b"for the parked receiver"]]
    finally:
        small.close_all()


async def test_idle_waiters_do_not_spin(zmq_net, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two receivers and a ROUTER send blocked on a full peer: idle means idle."""
    calls = 0
    original = ZmqChannel._events

    def counting(self: ZmqChannel) -> int:
        nonlocal calls
        calls += 1
        return original(self)

    monkeypatch.setattr(ZmqChannel, "_events", counting)
    small = zmq_net.__class__(capacity=4)
    try:
        with trio.fail_after(TIMEOUT):
            router = small.router()
            dealer = await small.connect(router, b"slow")
            async with trio.open_nursery() as nursery:

                async def receive_forever() -> None:
                    while True:
                        await router.receive()

                nursery.start_soon(receive_forever)
                nursery.start_soon(receive_forever)

                async def flood() -> None:
                    while True:
                        await router.send([b"slow", b"x" * 65536])

                nursery.start_soon(flood)
                await trio.testing.wait_all_tasks_blocked()  # the sender waits on a full peer
                await dealer.send([b"wake a receiver"])  # a trigger for any wake-up ping-pong
                # zmq's I/O thread may still be moving the flood into the kernel's
                # buffers (each move wakes the sender once): wait for a quiet window.
                # A waiter that spins never has one, so this bound then fails the test.
                reads: list[int] = []
                with trio.move_on_after(TIMEOUT / 2):
                    while not reads or reads[-1] >= IDLE_MAX_READS:
                        before = calls
                        await trio.sleep(IDLE_WINDOW_S)
                        reads.append(calls - before)
                assert reads[-1] < IDLE_MAX_READS, (
                    f"never idle: {reads[-1]} EVENTS reads in the last {IDLE_WINDOW_S} s"
                    f" ({len(reads)} windows)"
                )
                # ... and it still wakes up when the peer drains.
                for _ in range(50):
                    await dealer.receive()
                nursery.cancel_scope.cancel()
    finally:
        small.close_all()


async def test_close_while_sending_on_full_queue_raises_transport_closed(zmq_net) -> None:
    small = zmq_net.__class__(capacity=4)
    try:
        with trio.fail_after(TIMEOUT):
            router = small.router()
            dealer = small.dealer(router.endpoint, b"w")  # the router never reads
            outcome: list[BaseException] = []

            async def flood() -> None:
                try:
                    while True:
                        await dealer.send([b"x" * 65536])
                except TransportClosed as exc:
                    outcome.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                await trio.testing.wait_all_tasks_blocked()  # the flood waits on the full queue
                dealer.close()
            assert len(outcome) == 1
    finally:
        small.close_all()
