"""The guest's Channel: frames sent ahead by its sender thread (real sockets, no Trio)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

import numpy as np
import pyarrow as pa
import pytest
from test_bridge_framing import load_guest


def read_frames(sock: socket.socket) -> list[pa.Table]:
    """Every DATA frame until EOF, decoded."""
    data = bytearray()
    while chunk := sock.recv(1 << 20):
        data += chunk
    tables, at = [], 0
    while at < len(data):
        (length,) = struct.unpack_from("!I", data, at)
        (name_len,) = struct.unpack_from("!H", data, at + 4)
        body = bytes(data[at + 6 + name_len : at + 4 + length])
        tables.append(pa.ipc.open_stream(body).read_all())
        at += 4 + length
    return tables


def test_a_reused_buffer_is_sent_as_it_was_published() -> None:
    """The plugin may refill its buffer once publish() returns: queued frames hold the old values."""
    guest = load_guest()
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    channel = guest.Channel(ours, ["output"])
    buffer = np.zeros(guest.FRAME_TARGET_BYTES // 8, dtype="<i8")  # one full frame
    for k in range(3):  # the first blocks in sendall (nobody reads yet), two wait
        buffer[:] = k
        channel.publish("output", pa.record_batch({"v": pa.array(buffer)}))
    buffer[:] = 99
    reader_result: list[list[pa.Table]] = []
    reader = threading.Thread(target=lambda: reader_result.append(read_frames(theirs)))
    reader.start()
    channel.flush_all()
    ours.close()
    reader.join(60)
    theirs.close()
    (tables,) = reader_result
    assert [set(t.column("v").to_pylist()) for t in tables] == [{0}, {1}, {2}]


def test_a_failed_send_fails_the_job_even_if_the_plugin_caught_it() -> None:
    guest = load_guest()
    ours, theirs = socket.socketpair()
    theirs.close()  # the host is gone: every send fails
    channel = guest.Channel(ours, ["output"])
    batch = pa.record_batch({"v": pa.array(np.zeros(guest.FRAME_TARGET_BYTES // 8, "<i8"))})
    for _ in range(4):  # a plugin that skips what it cannot publish
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            channel.publish("output", batch)
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        channel.flush_all()  # so the job ends with ERROR, never with END
    ours.close()
