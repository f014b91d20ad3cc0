"""Encode payloads into ZeroMQ frames ``[header, json]`` and decode them back.

Sans-I/O: frames in, a ``Message`` out, or RemoteProtocolError — never any
other exception, whatever the bytes (a hypothesis test holds us to that).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs

from casparian_trio.errors import LocalProtocolError, RemoteProtocolError
from casparian_trio.protocol._header import HEADER_SIZE, OpCode, pack_header, unpack_header
from casparian_trio.protocol.messages import PAYLOAD_TYPES, Payload


@attrs.frozen
class Message:
    """A decoded message: the header's job id and the payload object."""

    job_id: int
    payload: Payload

    @property
    def opcode(self) -> OpCode:
        return self.payload.OPCODE


def encode(payload: Payload, job_id: int = 0) -> list[bytes]:
    """Return the two frames of a message (the ROUTER side prepends the identity)."""
    try:
        body = json.dumps(payload.to_json(), separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise LocalProtocolError(f"cannot encode {type(payload).__name__}: {exc}") from exc
    return [pack_header(payload.OPCODE, job_id, len(body)), body]


def decode(frames: Sequence[bytes]) -> Message:
    """Decode ``[header, payload]`` frames into a Message.

    Raises:
        RemoteProtocolError: wrong frame count, bad header, lying length,
            bad UTF-8 or JSON, or a payload that fails validation.
    """
    if len(frames) != 2:
        raise RemoteProtocolError(f"expected 2 frames [header, payload], got {len(frames)}")
    header, body = bytes(frames[0]), bytes(frames[1])
    opcode, job_id, length = unpack_header(header)
    if length != len(body):
        raise RemoteProtocolError(f"header declares {length} payload bytes, frame has {len(body)}")
    obj = _parse_json(body)
    return Message(job_id=job_id, payload=PAYLOAD_TYPES[opcode].from_json(obj))


def _refuse_constant(name: str) -> float:
    # NaN and Infinity are not JSON; accepting them would let a peer's message
    # fail to re-encode on our side (encode() uses allow_nan=False).
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _parse_json(body: bytes) -> dict[str, Any]:
    if not body:
        return {}  # an empty payload means "nothing carried" (ABORT, RELOAD)
    try:
        obj = json.loads(
            body.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float
        )
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"payload is not UTF-8: {exc.reason}") from None
    except (ValueError, RecursionError) as exc:
        raise RemoteProtocolError(f"payload is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError(f"payload must be a JSON object, got {type(obj).__name__}")
    return obj


__all__ = ["HEADER_SIZE", "Message", "decode", "encode"]
