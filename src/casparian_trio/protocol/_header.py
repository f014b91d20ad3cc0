"""The 16-byte protocol v4 header: ``!BBHQI`` = version, opcode, reserved, job_id, length.

Sans-I/O: bytes in, values out. Never imports trio, zmq or sqlite3.
"""

from __future__ import annotations

import enum
import struct

from casparian_trio.errors import LocalProtocolError, RemoteProtocolError

# Network byte order, no padding: the original (Rust) system's exact layout.
HEADER = struct.Struct("!BBHQI")
HEADER_SIZE = HEADER.size  # 16
VERSION = 0x04
# Bigger payloads than this are refused before decoding: a DISPATCH carries
# plugin source, a PREPARE_ENV a lockfile; 64 MiB is far above both.
MAX_PAYLOAD = 64 * 1024 * 1024
MAX_JOB_ID = 2**64 - 1


class OpCode(enum.IntEnum):
    UNKNOWN = 0
    IDENTIFY = 1
    DISPATCH = 2
    ABORT = 3
    HEARTBEAT = 4
    CONCLUDE = 5
    ERR = 6
    RELOAD = 7
    PREPARE_ENV = 8
    ENV_READY = 9
    DEPLOY = 10


def pack_header(opcode: OpCode, job_id: int, length: int) -> bytes:
    """Build a header; refuses values that do not fit their fields."""
    if not 0 <= job_id <= MAX_JOB_ID:
        raise LocalProtocolError(f"job_id {job_id} does not fit in u64")
    if not 0 <= length <= MAX_PAYLOAD:
        raise LocalProtocolError(f"payload of {length} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(VERSION, int(opcode), 0, job_id, length)


def unpack_header(data: bytes) -> tuple[OpCode, int, int]:
    """Return (opcode, job_id, length) or raise RemoteProtocolError."""
    if len(data) != HEADER_SIZE:
        raise RemoteProtocolError(f"header is {len(data)} bytes, expected {HEADER_SIZE}")
    version, opcode, _reserved, job_id, length = HEADER.unpack(data)
    if version != VERSION:
        raise RemoteProtocolError(f"unsupported protocol version {version:#04x}")
    try:
        op = OpCode(opcode)
    except ValueError:
        raise RemoteProtocolError(f"unknown opcode {opcode}") from None
    if op is OpCode.UNKNOWN:
        raise RemoteProtocolError("opcode 0 (UNKNOWN) carries no message")
    if length > MAX_PAYLOAD:
        raise RemoteProtocolError(f"declared payload of {length} bytes exceeds {MAX_PAYLOAD}")
    return op, job_id, length
