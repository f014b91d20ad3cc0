"""The host's half of a guest conversation: read frames (Trio), write them (threads).

Pipeline: ``read_frames`` (on the Trio thread) pulls whole frames off the
socket into fresh buffers and puts them on a bounded memory channel;
``write_frames`` takes them off and, in a worker thread, decodes the Arrow IPC
and hands the batches to the topic's sink (Parquet encoding happens there).
The guest parses while the host encodes, on separate cores, and the channel's
capacity bounds what the host holds: when the writer falls behind the reader
stops reading, the socket buffer fills and the guest blocks in ``sendall``.
The Trio thread copies bytes from the socket and writes only small frames
itself (``INLINE_FRAME_BYTES``), so heartbeats keep flowing however large the
job.

End of stream without a clock: the reader learns of the guest's exit from
``GuestConnection.guest_exited()``. Once the guest process has exited, every
byte it wrote is already in our socket's receive queue (an AF_UNIX send copies
into the peer's queue before it returns), so the stream is judged on those
bytes alone: the reader keeps reading while any are queued, however long the
host takes to drain and write them, and only when the queue is empty and the
socket is still open (a process the plugin started holds it) does the stream
end without an END frame. No timer decides a job's outcome.
"""

from __future__ import annotations

import collections
import mmap
import os
import socket
import struct
import threading
import weakref
from typing import Any

import attrs
import pyarrow as pa
import trio

from casparian_trio.bridge import _framing as fr
from casparian_trio.bridge import _shared_frames
from casparian_trio.errors import BridgeError, CasparianError
from casparian_trio.sinks import Sink, sink_errors

# Frames in flight between reader and writer (each is at most a few MiB as the
# guest frames them, MAX_FRAME_BYTES as a hard bound).
PIPELINE_DEPTH = 2
# Frames up to this size are decoded and handed to their sink on the Trio
# thread: well under a millisecond of work, less than the hop to a worker
# thread and back costs (a small file's job is one such frame).
INLINE_FRAME_BYTES = 256 * 1024
# Descriptors a guest may have sent ahead of their frames (it sends one per
# SHARED frame, with the frame): more is a misbehaving guest.
MAX_PENDING_DESCRIPTORS = 8
# Shared-memory frames mapped at once per guest connection (each mapping holds a
# descriptor until its batches are written): past this, a frame is copied into
# Arrow memory and unmapped at once, so a guest sending many frames cannot
# exhaust the worker's descriptors or mappings.
MAX_LIVE_MAPPINGS = 64


class StreamClosed(BridgeError):
    """The guest's socket reached EOF before an END or ERROR frame."""


class GuestReportedError(BridgeError):
    """The guest sent an ERROR frame (the plugin raised, failed to load, ...)."""

    def __init__(self, kind: str, message: str, traceback: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.traceback = traceback

    @classmethod
    def from_frame(cls, obj: dict[str, Any]) -> GuestReportedError:
        return cls(
            str(obj.get("kind", "plugin")),
            str(obj.get("message", "")),
            str(obj.get("traceback", "")),
        )


@attrs.define(eq=False)
class GuestConnection:
    """The host's end of a guest's socket, told when the guest process exits.

    ``fill`` reads like a socket's ``recv_into`` in a loop, except that once
    ``guest_exited()`` has been called a read that would block raises
    ``StreamClosed`` instead of waiting: nothing the guest wrote can still be
    on its way (see the module docstring). Socket errors (ECONNRESET when a killed guest left unread data
    behind) are ``StreamClosed`` too, so the caller names the guest's exit
    status rather than the errno.
    """

    sock: trio.socket.SocketType
    # Read with recvmsg, keeping the descriptors SHARED frames carry (see
    # ``_shared_frames``); else plain reads, which drop any (the kernel closes them).
    shared: bool = False
    received: int = 0  # bytes read so far (a SHARED frame's mapped bytes too)
    _exited: bool = False
    _waiting: trio.CancelScope | None = None
    _raw: socket.socket | None = None  # a dup of ``sock`` for recvmsg_into
    _descriptors: collections.deque[int] = attrs.field(factory=collections.deque)
    # Mappings alive: decremented by finalizers, which may run on any thread.
    _live_mappings: int = 0
    _live_lock: threading.Lock = attrs.field(factory=threading.Lock)

    def map_shared(self, fd: int, max_bytes: int) -> memoryview:
        """A SHARED frame's IPC stream: mapped, or copied once MAX_LIVE_MAPPINGS are alive."""
        view = _shared_frames.map_frame(fd, max_bytes)
        self.received += len(view)
        mapping = view.obj
        assert isinstance(mapping, mmap.mmap)
        with self._live_lock:
            keep = self._live_mappings < MAX_LIVE_MAPPINGS
            if keep:
                self._live_mappings += 1
        if keep:
            weakref.finalize(mapping, self._unmapped)
            return view
        copy = pa.allocate_buffer(len(view))
        memoryview(copy).cast("B")[:] = view.cast("B")
        view.release()
        mapping.close()
        return memoryview(copy)

    def _unmapped(self) -> None:
        with self._live_lock:
            self._live_mappings -= 1

    def take_descriptor(self) -> int:
        """The next descriptor the guest sent (a SHARED frame's memfd).

        Raises InvalidFrame: none came with the frame.
        """
        if not self._descriptors:
            raise fr.InvalidFrame(
                "invalid frame from guest: a shared-memory frame without its descriptor"
            )
        return self._descriptors.popleft()

    def close_descriptors(self) -> None:
        """Close descriptors received and not used, and the recvmsg socket (idempotent)."""
        while self._descriptors:
            os.close(self._descriptors.popleft())
        raw, self._raw = self._raw, None
        if raw is not None:
            raw.close()

    def _read(self, fd: int, view: memoryview) -> int:
        if not self.shared:
            return os.readv(fd, [view])
        if self._raw is None:
            dup = os.dup(fd)
            try:
                raw = socket.socket(fileno=dup)
            except BaseException:
                os.close(dup)
                raise
            raw.setblocking(False)  # whatever socket.setdefaulttimeout says
            self._raw = raw
        k, ancillary, flags, _ = self._raw.recvmsg_into(
            [view], _shared_frames.ANCILLARY_BYTES, socket.MSG_CMSG_CLOEXEC
        )
        self._descriptors.extend(_shared_frames.descriptors(ancillary))
        if flags & socket.MSG_CTRUNC or len(self._descriptors) > MAX_PENDING_DESCRIPTORS:
            raise fr.InvalidFrame("invalid frame from guest: too many file descriptors")
        return k

    def guest_exited(self) -> None:
        """Record that the guest process is gone (call once its exit is reaped)."""
        self._exited = True
        if self._waiting is not None:
            self._waiting.cancel(reason="guest exited")

    async def fill(self, view: memoryview) -> int:
        """Read until ``view`` is full or EOF; the number of bytes read (short only at EOF).

        Reads back to back while the kernel has data, with one checkpoint at the
        end rather than one per read: a frame of several MiB arrives in ~100 KiB
        reads (the socket buffer), and a trip through the scheduler per read
        cost the host more than the reads.

        Raises:
            StreamClosed: the guest exited and nothing is left to read while the
                socket stays open, or the socket failed.
        """
        fd = self.sock.fileno()
        got, n = 0, len(view)
        await trio.lowlevel.checkpoint_if_cancelled()
        while got < n:
            try:
                k = self._read(fd, view[got:])
            except BlockingIOError:
                if self._exited:
                    raise StreamClosed(
                        "guest exited while a process it started kept the socket open"
                    ) from None
                # No await between the check above and this wait: guest_exited()
                # either ran before the check or will cancel this scope.
                with trio.CancelScope() as self._waiting:
                    await trio.lowlevel.wait_readable(fd)
                self._waiting = None
                continue
            except OSError as exc:
                raise StreamClosed(f"the guest's socket failed: {exc.strerror or exc}") from exc
            if k == 0:
                break
            got += k
            self.received += k
        await trio.lowlevel.cancel_shielded_checkpoint()
        return got


async def recv_exactly(conn: GuestConnection, n: int, *, mid_frame: bool = True) -> bytearray:
    """Receive exactly ``n`` bytes into a new buffer (one copy, straight from the kernel)."""
    buf = bytearray(n)
    await _fill_exactly(conn, memoryview(buf), mid_frame=mid_frame)
    return buf


async def recv_body(conn: GuestConnection, n: int) -> memoryview:
    """Receive a DATA frame's ``n`` bytes into memory from Arrow's pool.

    The batches decoded from it point into this memory (zero-copy), and Arrow's
    allocator neither zero-fills it nor gives it back to the kernel between
    frames, as a ``bytearray`` of several MiB does (each one a memset, or fresh
    pages to fault in).
    """
    view = memoryview(pa.allocate_buffer(n))
    await _fill_exactly(conn, view, mid_frame=True)
    return view


async def _fill_exactly(conn: GuestConnection, view: memoryview, *, mid_frame: bool) -> None:
    got = await conn.fill(view)
    if got < len(view):
        where = "in the middle of a frame" if (mid_frame or got) else "without an end frame"
        raise StreamClosed(f"guest closed the stream {where}")


async def _recv_u32(conn: GuestConnection, *, mid_frame: bool) -> int:
    (value,) = struct.unpack("!I", await recv_exactly(conn, 4, mid_frame=mid_frame))
    return int(value)


async def _recv_control(conn: GuestConnection) -> dict[str, Any]:
    length = fr.check_control_length(await _recv_u32(conn, mid_frame=True))
    return fr.parse_control(bytes(await recv_exactly(conn, length)))


async def read_frames(
    conn: GuestConnection,
    sinks: dict[str, Sink],
    send: trio.MemorySendChannel[fr.DataFrame],
    max_frame_bytes: int,
) -> dict[str, Any]:
    """Forward DATA frames to ``send`` until END (returns its metrics) or ERROR (raises)."""
    async with send:
        while True:
            tag = await _recv_u32(conn, mid_frame=False)
            if tag == fr.END_TAG:
                return await _recv_control(conn)
            if tag == fr.ERROR_TAG:
                raise GuestReportedError.from_frame(await _recv_control(conn))
            if tag == fr.SHARED_TAG and conn.shared:
                frame = await _recv_shared(conn, max_frame_bytes)
            else:
                body = await recv_body(conn, fr.check_data_length(tag, max_frame_bytes))
                frame = fr.parse_data(body)
            if frame.topic not in sinks:
                raise fr.InvalidFrame(
                    f"guest sent data for topic {frame.topic!r}, which has no sink"
                )
            await send.send(frame)


async def _recv_shared(conn: GuestConnection, max_frame_bytes: int) -> fr.DataFrame:
    """A SHARED frame: its topic from the socket, its IPC stream mapped from its memfd."""
    length = fr.check_topic_length(await _recv_u32(conn, mid_frame=True))
    topic = fr.parse_topic(bytes(await recv_exactly(conn, length)))
    ipc = conn.map_shared(conn.take_descriptor(), max_frame_bytes)
    return fr.DataFrame(topic=topic, ipc=ipc)


async def write_frames(
    recv: trio.MemoryReceiveChannel[fr.DataFrame], sinks: dict[str, Sink]
) -> None:
    """Decode and write every frame from ``recv``: a small one inline, else in a worker thread."""
    async with recv:
        async for frame in recv:
            if len(frame.ipc) <= INLINE_FRAME_BYTES:
                write_frame(sinks[frame.topic], frame)
            else:
                await trio.to_thread.run_sync(write_frame, sinks[frame.topic], frame)


def write_frame(sink: Sink, frame: fr.DataFrame) -> None:
    """Decode one frame's IPC stream (zero-copy) and write its batches (blocking)."""
    try:
        batches = list(pa.ipc.open_stream(pa.py_buffer(frame.ipc)))
    except (pa.ArrowException, OSError) as exc:  # a cut-short body is an OSError (no disk here)
        raise fr.InvalidFrame(f"invalid frame from guest: not an Arrow IPC stream ({exc})") from exc
    for batch in batches:
        with sink_errors(sink, "writing"):  # disk full, a uint64 SQLite cannot hold, ...
            sink.write(batch)


async def stream(
    conn: GuestConnection, sinks: dict[str, Sink], max_frame_bytes: int
) -> dict[str, Any]:
    """Run the reader/writer pipeline until the guest's END frame; return its metrics."""
    send, recv = trio.open_memory_channel[fr.DataFrame](PIPELINE_DEPTH)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_frames, recv, sinks, name="bridge.writer")
            metrics = await read_frames(conn, sinks, send, max_frame_bytes)
    except BaseExceptionGroup as group:
        leaf = collapse(group)
        if leaf is group:
            raise
        raise leaf from None  # callers handle StreamClosed & co. without except*
    return metrics


def collapse(exc: BaseException) -> BaseException:
    """Reduce a nursery's ExceptionGroup to one leaf: a Cancelled wins, then our errors."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    cancelled, rest = exc.split(trio.Cancelled)
    if cancelled is not None:
        return _first_leaf(cancelled)
    assert rest is not None
    ours, other = rest.split(CasparianError)
    if ours is not None and other is None:
        return _first_leaf(ours)
    return exc


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
