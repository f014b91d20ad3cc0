"""The guest's Channel: frames sent ahead by its sender thread (real sockets, no Trio)."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import struct
import threading
from collections.abc import Iterator
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


def test_a_refilled_dictionary_is_sent_as_it_was_published() -> None:
    """The IPC writer compares each dictionary with the last one it kept: that one must be ours."""
    guest = load_guest()
    ours, theirs = socket.socketpair()
    channel = guest.Channel(ours, ["output"])
    indices, dictionary = np.zeros(1_000, dtype="int32"), np.zeros(4, dtype="int64")
    for k in range(3):
        indices[:] = k % 4
        dictionary[:] = [10 * k, 10 * k + 1, 10 * k + 2, 10 * k + 3]
        column = pa.DictionaryArray.from_arrays(pa.array(indices), pa.array(dictionary))
        channel.publish("output", pa.record_batch({"d": column}))
    dictionary[:] = 99
    channel.flush_all()
    ours.close()
    frames = read_all_frames(theirs)
    theirs.close()
    (table,) = [t for _, t in frames]
    assert table.column("d").to_pylist() == [0] * 1_000 + [11] * 1_000 + [22] * 1_000


def publish_batches(channel: Any, first: int, last: int, rows: int = 8_192) -> None:
    for k in range(first, last):
        channel.publish("output", pa.record_batch({"v": pa.array(np.full(rows, k, "<i8"))}))


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Writes past ``limit`` bytes fail with EFBIG: a memfd that cannot grow (ENOSPC, ENOMEM)."""
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_a_memfd_that_cannot_grow_sends_the_frame_through_the_socket() -> None:
    guest = load_guest()
    ours, theirs = socket.socketpair()
    received: list[list[tuple[str, pa.Table]]] = []
    reader = threading.Thread(target=lambda: received.append(read_all_frames(theirs)))
    reader.start()  # socket frames of 4 MiB: more than the socket buffer holds
    channel = guest.Channel(ours, ["output"], shared=True)
    publish_batches(channel, 0, 1)  # 64 KiB: the frame starts in a memfd
    with file_size_limit(100_000):
        publish_batches(channel, 1, 3)  # the second fails part way through its body
    publish_batches(channel, 3, 40)
    channel.flush_all()
    ours.close()
    reader.join(60)
    theirs.close()
    (frames,) = received
    assert {m for m, _ in frames} == {"socket"}
    values = [v for _, t in frames for v in t.column("v").to_pylist()]
    assert values == [k for k in range(40) for _ in range(8_192)]
    assert channel.rows == 40 * 8_192
    assert not channel.shared


def test_a_batch_that_could_not_be_written_fails_the_job_even_if_caught() -> None:
    """Half a message is never sent on, and no END follows a lost batch."""
    guest = load_guest()
    ours, theirs = socket.socketpair()
    channel = guest.Channel(ours, ["output"])
    publish_batches(channel, 0, 1)
    original = channel.open["output"].writer.write_batch
    calls = []

    def fail_once(batch: pa.RecordBatch) -> None:
        calls.append(batch.num_rows)
        if len(calls) == 1:
            raise MemoryError("no room for this batch")
        original(batch)

    channel.open["output"].writer.write_batch = fail_once
    with pytest.raises(MemoryError):
        publish_batches(channel, 1, 2)
    with pytest.raises(MemoryError):  # a plugin that caught it and went on
        publish_batches(channel, 2, 3)
    with pytest.raises(MemoryError):
        channel.flush_all()  # so the guest sends ERROR, never END
    ours.close()
    assert read_all_frames(theirs) == []
    theirs.close()


def test_an_open_memfd_frame_is_not_inherited_by_the_plugins_children() -> None:
    guest = load_guest()
    ours, theirs = socket.socketpair()
    channel = guest.Channel(ours, ["output"], shared=True)
    try:
        before = frame_memfds()
        publish_batches(channel, 0, 1)
        frame = channel.open["output"]
        assert frame.shared
        (fds,) = [v for k, v in frame_memfds().items() if k not in before]
        assert len(fds) == 2  # the memfd and the writer's descriptor of it
        assert not any(os.get_inheritable(fd) for fd in fds)
        frame.discard()
        assert set(frame_memfds()) == set(before)
    finally:
        ours.close()
        theirs.close()


def test_small_batches_that_add_up_move_their_frame_to_a_memfd() -> None:
    guest = load_guest()
    ours, theirs = socket.socketpair()
    received: list[list[tuple[str, pa.Table]]] = []
    reader = threading.Thread(target=lambda: received.append(read_all_frames(theirs)))
    reader.start()  # were it sent through the socket, it would not fit its buffer
    channel = guest.Channel(ours, ["output"], shared=True)
    publish_batches(channel, 0, 200, rows=256)  # 2 KiB each: the frame starts in memory
    channel.flush_all()
    ours.close()
    reader.join(60)
    theirs.close()
    (frames,) = received
    assert [m for m, _ in frames] == ["shared"]
    assert frames[0][1].column("v").to_pylist() == [k for k in range(200) for _ in range(256)]
    assert (channel.rows, channel.batches) == (200 * 256, 200)


def threaded_frames(shared: bool, publish: Any) -> tuple[Any, list[tuple[str, pa.Table]]]:
    """The channel after ``publish(channel)`` and ``flush_all()``, and every frame the host got."""
    guest = load_guest()
    ours, theirs = socket.socketpair()
    received: list[list[tuple[str, pa.Table]]] = []
    reader = threading.Thread(target=lambda: received.append(read_all_frames(theirs)))
    reader.start()
    channel = guest.Channel(ours, ["output"], shared=shared)
    try:
        publish(channel)
        channel.flush_all()
    finally:
        ours.close()
        reader.join(60)
        theirs.close()
    (frames,) = received
    return channel, frames


def test_a_memfd_that_cannot_take_a_moving_frame_leaves_it_in_memory() -> None:
    """Small batches add up, the frame moves to a memfd, the memfd is full: memory, the socket."""

    def publish(channel: Any) -> None:
        with file_size_limit(100_000):
            publish_batches(channel, 0, 14, rows=2_600)  # 20 KiB each: starts in memory

    with no_memfd_left():
        channel, frames = threaded_frames(True, publish)
    assert {m for m, _ in frames} == {"socket"}
    values = [v for _, t in frames for v in t.column("v").to_pylist()]
    assert values == [k for k in range(14) for _ in range(2_600)]
    assert (channel.rows, channel.batches, channel.shared) == (14 * 2_600, 14, False)


def test_a_memfd_that_cannot_take_the_end_of_its_stream_sends_it_from_memory() -> None:
    def publish(channel: Any) -> None:
        publish_batches(channel, 0, 7)  # 7 x 64 KiB in one memfd frame
        size = os.fstat(channel.open["output"].fd).st_size
        with file_size_limit(size):  # full: not even the end-of-stream marker fits
            publish_batches(channel, 100, 101, rows=500_000)  # 4 MB: the open frame goes first
        publish_batches(channel, 200, 203)

    with no_memfd_left():
        channel, frames = threaded_frames(True, publish)
    values = [v for _, t in frames for v in t.column("v").to_pylist()]
    expected = [k for k in range(7) for _ in range(8_192)] + [100] * 500_000
    assert values == expected + [k for k in range(200, 203) for _ in range(8_192)]
    assert channel.rows == len(values)


class _Wrapped(pa.ExtensionType):
    def __init__(self, storage: pa.DataType) -> None:
        super().__init__(storage, "casparian-test.wrapped")

    def __arrow_ext_serialize__(self) -> bytes:
        return b""

    @classmethod
    def __arrow_ext_deserialize__(cls, storage: pa.DataType, serialized: bytes) -> _Wrapped:
        return cls(storage)


@pytest.mark.parametrize("nesting", ["struct", "list", "extension"])
def test_a_refilled_nested_dictionary_is_sent_as_it_was_published(nesting: str) -> None:
    indices, dictionary = np.zeros(100, dtype="int32"), np.zeros(2, dtype="int64")

    def column() -> pa.Array:
        plain = pa.DictionaryArray.from_arrays(pa.array(indices), pa.array(dictionary))
        if nesting == "struct":
            return pa.StructArray.from_arrays([plain], names=["d"])
        if nesting == "list":
            return pa.ListArray.from_arrays(pa.array(range(0, 101, 10), pa.int32()), plain)
        return pa.ExtensionArray.from_storage(_Wrapped(plain.type), plain)

    def publish(channel: Any) -> None:
        for k in range(3):
            dictionary[:] = [10 * k, 10 * k + 1]
            channel.publish("output", pa.record_batch({"c": column()}))
        dictionary[:] = 99

    _, frames = threaded_frames(False, publish)
    (table,) = [t for _, t in frames]
    got = table.column("c").combine_chunks()
    if nesting == "struct":
        got = got.field("d")
    elif nesting == "list":
        got = got.flatten()
    elif isinstance(got, pa.ExtensionArray):  # else read back as its storage (not registered)
        got = got.storage
    assert got.to_pylist() == [0] * 100 + [10] * 100 + [20] * 100


def test_a_failed_send_closes_the_frames_still_open() -> None:
    guest = load_guest()
    ours, theirs = socket.socketpair()
    theirs.close()
    try:
        with no_memfd_left():
            channel = guest.Channel(ours, ["output", "other"], shared=True)
            channel.publish("other", pa.record_batch({"v": pa.array(np.zeros(8_192, "<i8"))}))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                publish_batches(channel, 0, 70)  # full frames: the sender thread's send fails
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                channel.flush_all()
            assert channel.open == {}
    finally:
        ours.close()


def frame_memfds() -> dict[int, list[int]]:
    """This process's frame memfds: inode -> its descriptors (other tests' may be open too)."""
    found: dict[int, list[int]] = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, gone by now
            if "casparian-frame" in os.readlink(f"/proc/self/fd/{name}"):
                found.setdefault(os.stat(f"/proc/self/fd/{name}").st_ino, []).append(int(name))
    return found


@contextlib.contextmanager
def no_memfd_left() -> Iterator[None]:
    before = set(frame_memfds())
    yield
    assert set(frame_memfds()) - before == set()
