"""The guest's Channel: frames sent ahead by its sender thread (real sockets, no Trio)."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from typing import Any

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


def read_all_frames(sock: socket.socket) -> list[tuple[str, pa.Table]]:
    """Every DATA frame until EOF, socket or shared-memory ones, as (medium, table)."""
    guest = load_guest()
    data, fds = bytearray(), []
    while True:
        chunk, ancillary, _flags, _addr = sock.recvmsg(1 << 20, socket.CMSG_SPACE(64))
        for level, kind, raw in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(struct.unpack(f"{len(raw) // 4}i", raw[: len(raw) - len(raw) % 4]))
        if not chunk:
            break
        data += chunk
    frames, at = [], 0
    while at < len(data):
        (word,) = struct.unpack_from("!I", data, at)
        if word == guest.SHARED_TAG:
            (name_len,) = struct.unpack_from("!I", data, at + 4)
            at += 8 + name_len
            fd = fds.pop(0)
            body = os.pread(fd, os.fstat(fd).st_size, 0)
            os.close(fd)
            frames.append(("shared", pa.ipc.open_stream(body).read_all()))
            continue
        (name_len,) = struct.unpack_from("!H", data, at + 4)
        body = bytes(data[at + 6 + name_len : at + 4 + word])
        frames.append(("socket", pa.ipc.open_stream(body).read_all()))
        at += 4 + word
    assert not fds
    return frames


def publish_refilled(channel: Any, rows: int, times: int) -> None:
    """Publish one numpy buffer ``times`` times, refilled with k before each and 99 after."""
    buffer = np.zeros(rows, dtype="<i8")
    for k in range(times):
        buffer[:] = k
        channel.publish("output", pa.record_batch({"v": pa.array(buffer)}))  # no copy
    buffer[:] = 99


@pytest.mark.parametrize(
    ("rows", "shared", "medium"),
    [
        (1_000, False, "socket"),  # 8 KB batches, coalesced into one frame
        (1_000, True, "socket"),  # too small to start a memfd
        (20_000, True, "shared"),  # 160 KB batches: one memfd frame of three
    ],
)
def test_a_reused_small_buffer_is_sent_as_it_was_published(
    rows: int, shared: bool, medium: str
) -> None:
    """Batches held for coalescing keep their values too (they were all 99 before)."""
    guest = load_guest()
    ours, theirs = socket.socketpair()
    channel = guest.Channel(ours, ["output"], shared=shared)
    publish_refilled(channel, rows, 3)
    channel.flush_all()
    ours.close()
    frames = read_all_frames(theirs)
    theirs.close()
    assert [m for m, _ in frames] == [medium]
    values = frames[0][1].column("v").to_pylist()
    assert values == [0] * rows + [1] * rows + [2] * rows
    assert channel.rows == 3 * rows
    assert channel.batches == 3


def test_a_reused_pandas_frame_is_sent_as_it_was_published() -> None:
    pd = pytest.importorskip("pandas")
    guest = load_guest()
    ours, theirs = socket.socketpair()
    channel = guest.Channel(ours, ["output"])
    values = np.zeros(1_000)
    frame = pd.DataFrame({"v": values}, copy=False)  # over the buffer, as pyarrow's table is
    for k in range(2):
        values[:] = k
        channel.publish("output", frame)
    values[:] = 99
    channel.flush_all()
    ours.close()
    frames = read_all_frames(theirs)
    theirs.close()
    assert [t.column("v").to_pylist() for _, t in frames] == [[0.0] * 1_000 + [1.0] * 1_000]


def test_a_memfd_frame_under_the_shared_minimum_goes_through_the_socket() -> None:
    """Started in a memfd (its first batch big enough), ended small: the host refuses those."""
    guest = load_guest()
    ours, theirs = socket.socketpair()
    channel = guest.Channel(ours, ["output"], shared=True)
    rows = guest.SHARED_START_BYTES // 8 + 1
    publish_refilled(channel, rows, 1)
    channel.flush_all()
    ours.close()
    frames = read_all_frames(theirs)
    theirs.close()
    assert [(m, t.num_rows) for m, t in frames] == [("socket", rows)]
    assert channel.shared_frames == 0
