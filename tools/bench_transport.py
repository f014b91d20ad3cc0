"""Print round trips per second of the Trio/pyzmq shim over tcp://127.0.0.1.

A printer, not a test: ``python tools/bench_transport.py [seconds]``. One DEALER
sends a request, one ROUTER echoes it, the DEALER waits for the reply; repeat.
The notes (``/work/shared/notes/trio-libraries.md``) measured about 5,400/s for
the shim's algorithm on this machine kind. Also prints the in-memory transport
for comparison. Never imported by ``src/``.
"""

from __future__ import annotations

import sys
import time

import trio

from casparian_trio.transport import Channel, MemoryNetwork, open_dealer, open_router


async def _echo(router: Channel) -> None:
    while True:
        message = await router.receive()
        await router.send(message)


async def _round_trips(router: Channel, dealer: Channel, seconds: float) -> float:
    payload = [b"\x04" + b"\x00" * 15, b"{}"]  # the shape of a protocol v4 message
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_echo, router)
        for _ in range(200):  # warm up: connect, handshake, caches
            await dealer.send(payload)
            await dealer.receive()
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            await dealer.send(payload)
            await dealer.receive()
            count += 1
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    return count / elapsed


async def main(seconds: float) -> None:
    with (
        open_router("tcp://127.0.0.1:*") as router,
        open_dealer(router.endpoint, identity=b"bench") as dealer,
    ):
        rate = await _round_trips(router, dealer, seconds)
    print(f"zmq tcp://127.0.0.1  {rate:10,.0f} round trips/s")
    network = MemoryNetwork()
    with (
        network.bind_router("mem://bench") as router,
        network.connect_dealer("mem://bench", identity=b"bench") as dealer,
    ):
        rate = await _round_trips(router, dealer, seconds)
    print(f"memory               {rate:10,.0f} round trips/s")


if __name__ == "__main__":
    trio.run(main, float(sys.argv[1]) if len(sys.argv) > 1 else 3.0)
