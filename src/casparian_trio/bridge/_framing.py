"""Host side of the guest→host frame format (sans-I/O parsing helpers).

The original bridge framed Arrow IPC as a 4-byte big-endian length, with
0 = end of stream and 0xFFFFFFFF = error. We keep those two tags and give every
frame a topic and the terminal frames a JSON body::

    frame  := tag:u32be body
    tag == 0            END    body = n:u32be + n bytes JSON {"rows", "batches", ...}
    tag == 0xFFFFFFFF   ERROR  body = n:u32be + n bytes JSON {"kind", "message", "traceback"}
    tag == 0xFFFFFFFE   SHARED body = n:u32be + n bytes topic (UTF-8); the IPC stream is
                               in a sealed memfd passed with SCM_RIGHTS on the
                               tag's bytes (only when the job spec says "shm")
    otherwise           DATA   body = tag bytes:
                                   topic_len:u16be + topic (UTF-8) + an Arrow IPC *stream*
                                   (schema, one or more record batches, end-of-stream)

Each DATA frame is a self-contained IPC stream so the host can decode frames
independently, in any thread, and never has to keep per-topic decoder state.
The guest (``guest.py``, which cannot import this module) repeats the constants;
``tests/unit/bridge/test_bridge_framing.py`` checks they agree.

Invariants: no I/O here; sizes are checked before anything is allocated.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import attrs

from casparian_trio.errors import BridgeError

HEADER = struct.Struct("!I")
TOPIC_LEN = struct.Struct("!H")
END_TAG = 0
ERROR_TAG = 0xFFFFFFFF
SHARED_TAG = 0xFFFFFFFE
# A SHARED frame's topic is a name, not data.
MAX_TOPIC_BYTES = 64 * 1024
# The host refuses bigger DATA frames: it must allocate the whole frame before
# decoding it, and a garbage header must not make the worker allocate GiBs.
MAX_FRAME_BYTES = 256 * 1024 * 1024
# END/ERROR bodies are small JSON documents (a traceback at most).
MAX_CONTROL_BYTES = 1024 * 1024


class OversizedFrame(BridgeError):
    """The guest announced a frame larger than the host accepts."""


class InvalidFrame(BridgeError):
    """The guest sent bytes that are not a valid frame."""


@attrs.frozen
class DataFrame:
    """One DATA frame: an Arrow IPC stream for ``topic``, not yet decoded."""

    topic: str
    ipc: memoryview


def check_data_length(tag: int, max_bytes: int = MAX_FRAME_BYTES) -> int:
    """Validate a DATA frame's length before it is allocated; return it."""
    if tag > max_bytes:
        raise OversizedFrame(f"oversized frame from guest: {tag} bytes (max {max_bytes})")
    if tag < TOPIC_LEN.size + 1:
        raise InvalidFrame(f"invalid frame from guest: a {tag}-byte data frame is too short")
    return tag


def check_control_length(length: int) -> int:
    if length > MAX_CONTROL_BYTES:
        raise OversizedFrame(
            f"oversized frame from guest: {length}-byte control frame (max {MAX_CONTROL_BYTES})"
        )
    return length


def parse_data(body: bytearray | memoryview) -> DataFrame:
    """Split a DATA body into its topic and its (undecoded) IPC stream."""
    view = memoryview(body)
    (n,) = TOPIC_LEN.unpack_from(view, 0)
    start = TOPIC_LEN.size + n
    if start >= len(view):
        raise InvalidFrame("invalid frame from guest: topic length exceeds the frame")
    try:
        topic = bytes(view[TOPIC_LEN.size : start]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidFrame("invalid frame from guest: topic is not UTF-8") from exc
    return DataFrame(topic=topic, ipc=view[start:])


def parse_control(body: bytes) -> dict[str, Any]:
    """Decode an END/ERROR body (a JSON object)."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidFrame("invalid frame from guest: control frame is not JSON") from exc
    if not isinstance(obj, dict):
        raise InvalidFrame("invalid frame from guest: control frame is not a JSON object")
    return obj


def check_topic_length(length: int) -> int:
    if not 0 < length <= MAX_TOPIC_BYTES:
        raise InvalidFrame(f"invalid frame from guest: a {length}-byte topic name")
    return length


def parse_topic(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidFrame("invalid frame from guest: topic is not UTF-8") from exc
