"""The host's half of a guest conversation: read frames (Trio), write them (threads).

Pipeline: ``read_frames`` (on the Trio thread) pulls whole frames off the
socket into fresh buffers and puts them on a bounded memory channel;
``write_frames`` takes them off and, in a worker thread, decodes the Arrow IPC
and hands the batches to the topic's sink (Parquet encoding happens there).
The guest parses while the host encodes, on separate cores, and the channel's
capacity bounds what the host holds: when the writer falls behind the reader
stops reading, the socket buffer fills and the guest blocks in ``sendall``.
The Trio thread only ever copies bytes from the socket, so heartbeats keep
flowing however large the job.
"""

from __future__ import annotations

import struct
from typing import Any

import pyarrow as pa
import trio

from casparian_trio.bridge import _framing as fr
from casparian_trio.errors import BridgeError, CasparianError, SinkError
from casparian_trio.sinks import Sink

# Frames in flight between reader and writer (each is at most a few MiB as the
# guest frames them, MAX_FRAME_BYTES as a hard bound).
PIPELINE_DEPTH = 2


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


async def recv_exactly(
    conn: trio.socket.SocketType, n: int, *, mid_frame: bool = True
) -> bytearray:
    """Receive exactly ``n`` bytes into a new buffer (one copy, straight from the kernel)."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = await conn.recv_into(view[got:])
        if k == 0:
            where = "in the middle of a frame" if (mid_frame or got) else "without an end frame"
            raise StreamClosed(f"guest closed the stream {where}")
        got += k
    return buf


async def _recv_u32(conn: trio.socket.SocketType, *, mid_frame: bool) -> int:
    (value,) = struct.unpack("!I", await recv_exactly(conn, 4, mid_frame=mid_frame))
    return int(value)


async def _recv_control(conn: trio.socket.SocketType) -> dict[str, Any]:
    length = fr.check_control_length(await _recv_u32(conn, mid_frame=True))
    return fr.parse_control(bytes(await recv_exactly(conn, length)))


async def read_frames(
    conn: trio.socket.SocketType,
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
            body = await recv_exactly(conn, fr.check_data_length(tag, max_frame_bytes))
            frame = fr.parse_data(body)
            if frame.topic not in sinks:
                raise fr.InvalidFrame(
                    f"guest sent data for topic {frame.topic!r}, which has no sink"
                )
            await send.send(frame)


async def write_frames(
    recv: trio.MemoryReceiveChannel[fr.DataFrame], sinks: dict[str, Sink]
) -> None:
    """Decode and write every frame from ``recv``, one worker-thread call per frame."""
    async with recv:
        async for frame in recv:
            await trio.to_thread.run_sync(write_frame, sinks[frame.topic], frame)


def write_frame(sink: Sink, frame: fr.DataFrame) -> None:
    """Decode one frame's IPC stream (zero-copy) and write its batches (blocking)."""
    try:
        batches = list(pa.ipc.open_stream(pa.py_buffer(frame.ipc)))
    except pa.ArrowException as exc:
        raise fr.InvalidFrame(f"invalid frame from guest: not an Arrow IPC stream ({exc})") from exc
    for batch in batches:
        try:
            sink.write(batch)
        except SinkError:
            raise
        except (OSError, pa.ArrowException, OverflowError, ValueError) as exc:
            # disk full, a uint64 SQLite cannot hold, ... (sinks map their own errors)
            raise SinkError(f"writing topic {frame.topic!r} failed: {exc}") from exc


async def stream(
    conn: trio.socket.SocketType, sinks: dict[str, Sink], max_frame_bytes: int
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
