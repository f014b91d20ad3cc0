"""GuestConnection: after the guest's exit, the queued bytes decide, not a clock."""

from __future__ import annotations

import pytest
import trio
import trio.socket

from casparian_trio.bridge._stream import GuestConnection, StreamClosed, recv_exactly

HANG_GUARD_S = 60


async def test_reads_everything_queued_after_exit_then_ends_while_socket_stays_open() -> None:
    host, guest = trio.socket.socketpair()
    with host, guest, trio.fail_after(HANG_GUARD_S):
        await guest.send(b"abcdef")
        conn = GuestConnection(host)
        conn.guest_exited()  # the guest is gone; a child of it still holds `guest`
        assert bytes(await recv_exactly(conn, 4)) == b"abcd"
        assert bytes(await recv_exactly(conn, 2)) == b"ef"
        with pytest.raises(StreamClosed, match="kept the socket open"):
            await recv_exactly(conn, 1, mid_frame=False)


async def test_a_waiting_read_ends_when_the_guest_exits() -> None:
    host, guest = trio.socket.socketpair()
    with host, guest, trio.fail_after(HANG_GUARD_S):
        conn = GuestConnection(host)
        async with trio.open_nursery() as nursery:

            async def exit_later() -> None:
                await trio.testing.wait_all_tasks_blocked()
                conn.guest_exited()

            nursery.start_soon(exit_later)
            with pytest.raises(StreamClosed):
                await recv_exactly(conn, 4, mid_frame=False)


async def test_eof_is_zero_and_the_frame_reader_names_it() -> None:
    host, guest = trio.socket.socketpair()
    with host, trio.fail_after(HANG_GUARD_S):
        await guest.send(b"ab")
        guest.close()
        conn = GuestConnection(host)
        with pytest.raises(StreamClosed, match="in the middle of a frame"):
            await recv_exactly(conn, 4)


async def test_connection_reset_is_stream_closed_not_an_oserror() -> None:
    # A peer that closes with our bytes unread leaves ECONNRESET on our side.
    host, guest = trio.socket.socketpair()
    with host, trio.fail_after(HANG_GUARD_S):
        await host.send(b"job spec the guest never read")
        guest.close()
        conn = GuestConnection(host)
        with pytest.raises(StreamClosed, match="socket failed"):
            await recv_exactly(conn, 4)


async def test_cancelled_wait_leaves_the_bytes_for_the_next_read() -> None:
    host, guest = trio.socket.socketpair()
    with host, guest, trio.fail_after(HANG_GUARD_S):
        conn = GuestConnection(host)
        with trio.move_on_after(0.05):
            await recv_exactly(conn, 1)
        await guest.send(b"z")
        assert bytes(await recv_exactly(conn, 1)) == b"z"
