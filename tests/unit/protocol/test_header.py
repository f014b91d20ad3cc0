"""The 16-byte v4 header ``!BBHQI``: byte-exact vectors, limits and every way to break it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casparian_trio.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from casparian_trio.protocol import HEADER_SIZE, VERSION, OpCode, pack_header, unpack_header
from casparian_trio.protocol._header import MAX_JOB_ID, MAX_PAYLOAD

from ._helpers import U64, raw_header

# (opcode, job_id, payload length, the 16 bytes on the wire: version op reserved job_id length)
VECTORS = [
    (OpCode.DISPATCH, 12345, 1024, "04020000000000000000303900000400"),
    (OpCode.ABORT, 7, 2, "04030000000000000000000700000002"),
    (OpCode.IDENTIFY, 0, 0, "04010000000000000000000000000000"),
    (OpCode.HEARTBEAT, 2**64 - 1, 27, "04040000ffffffffffffffff0000001b"),
    (OpCode.CONCLUDE, 2**32, 0xABCDEF, "04050000000000010000000000abcdef"),
    (OpCode.ERR, 0x0102030405060708, 1, "04060000010203040506070800000001"),
    (OpCode.RELOAD, 1, 2, "04070000000000000000000100000002"),
    (OpCode.PREPARE_ENV, 99, 256, "04080000000000000000006300000100"),
    (OpCode.ENV_READY, 2**63, 65536, "04090000800000000000000000010000"),
    (OpCode.DEPLOY, 1, 64 * 1024 * 1024, "040a0000000000000000000104000000"),
]


def test_constants() -> None:
    assert HEADER_SIZE == 16
    assert VERSION == 0x04
    assert MAX_PAYLOAD == 64 * 1024 * 1024
    assert MAX_JOB_ID == U64


@pytest.mark.parametrize(
    ("opcode", "value"),
    [
        (OpCode.UNKNOWN, 0),
        (OpCode.IDENTIFY, 1),
        (OpCode.DISPATCH, 2),
        (OpCode.ABORT, 3),
        (OpCode.HEARTBEAT, 4),
        (OpCode.CONCLUDE, 5),
        (OpCode.ERR, 6),
        (OpCode.RELOAD, 7),
        (OpCode.PREPARE_ENV, 8),
        (OpCode.ENV_READY, 9),
        (OpCode.DEPLOY, 10),
    ],
)
def test_opcode_wire_values(opcode: OpCode, value: int) -> None:
    assert int(opcode) == value


def test_no_other_opcodes() -> None:
    assert len(OpCode) == 11


@pytest.mark.parametrize(("opcode", "job_id", "length", "wire"), VECTORS)
def test_pack_header_vectors(opcode: OpCode, job_id: int, length: int, wire: str) -> None:
    packed = pack_header(opcode, job_id, length)
    assert packed == bytes.fromhex(wire)
    assert len(packed) == HEADER_SIZE


@pytest.mark.parametrize(("opcode", "job_id", "length", "wire"), VECTORS)
def test_unpack_header_vectors(opcode: OpCode, job_id: int, length: int, wire: str) -> None:
    got = unpack_header(bytes.fromhex(wire))
    assert got == (opcode, job_id, length)
    assert type(got[0]) is OpCode


def test_unpack_accepts_bytearray_and_memoryview() -> None:
    wire = bytes.fromhex(VECTORS[0][3])
    assert unpack_header(bytearray(wire)) == (OpCode.DISPATCH, 12345, 1024)
    assert unpack_header(memoryview(wire)) == (OpCode.DISPATCH, 12345, 1024)


def test_reserved_field_is_ignored_on_receipt() -> None:
    # Pins current behaviour: the reserved u16 is written as 0 and not checked when read.
    assert unpack_header(raw_header(2, 5, 10, reserved=0xFFFF)) == (OpCode.DISPATCH, 5, 10)


@pytest.mark.parametrize(
    ("job_id", "length"),
    [(-1, 0), (2**64, 0), (2**70, 0), (0, -1), (0, MAX_PAYLOAD + 1), (0, 2**32)],
)
def test_pack_header_refuses_values_that_do_not_fit(job_id: int, length: int) -> None:
    with pytest.raises(LocalProtocolError) as info:
        pack_header(OpCode.DISPATCH, job_id, length)
    assert not isinstance(info.value, RemoteProtocolError)
    assert isinstance(info.value, ProtocolError)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        pytest.param(b"", "0 bytes", id="empty"),
        pytest.param(bytes.fromhex(VECTORS[0][3])[:15], "15 bytes", id="short-15"),
        pytest.param(bytes.fromhex(VECTORS[0][3])[:1], "1 bytes", id="short-1"),
        pytest.param(bytes.fromhex(VECTORS[0][3]) + b"\x00", "17 bytes", id="long-17"),
        pytest.param(bytes.fromhex(VECTORS[0][3]) * 2, "32 bytes", id="long-32"),
        pytest.param(raw_header(2, 1, 0, version=0x00), "version", id="version-0"),
        pytest.param(raw_header(2, 1, 0, version=0x03), "version", id="version-3"),
        pytest.param(raw_header(2, 1, 0, version=0x05), "version", id="version-5"),
        pytest.param(raw_header(2, 1, 0, version=0xFF), "version", id="version-255"),
        pytest.param(raw_header(0, 1, 0), "opcode 0", id="opcode-0"),
        pytest.param(raw_header(11, 1, 0), "unknown opcode 11", id="opcode-11"),
        pytest.param(raw_header(255, 1, 0), "unknown opcode 255", id="opcode-255"),
        pytest.param(raw_header(2, 1, MAX_PAYLOAD + 1), "exceeds", id="length-max+1"),
        pytest.param(raw_header(2, 1, 2**32 - 1), "exceeds", id="length-u32-max"),
    ],
)
def test_unpack_header_rejects(data: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match) as info:
        unpack_header(data)
    assert info.value.field is None


def test_unpack_header_accepts_exactly_max_payload() -> None:
    assert unpack_header(raw_header(10, 1, MAX_PAYLOAD)) == (OpCode.DEPLOY, 1, MAX_PAYLOAD)


@given(
    opcode=st.sampled_from([op for op in OpCode if op is not OpCode.UNKNOWN]),
    job_id=st.integers(0, U64),
    length=st.integers(0, MAX_PAYLOAD),
)
def test_pack_unpack_round_trip(opcode: OpCode, job_id: int, length: int) -> None:
    packed = pack_header(opcode, job_id, length)
    assert len(packed) == HEADER_SIZE
    assert packed[:4] == bytes([VERSION, opcode, 0, 0])
    assert unpack_header(packed) == (opcode, job_id, length)


@given(st.binary(max_size=40))
def test_unpack_header_arbitrary_bytes(data: bytes) -> None:
    try:
        opcode, job_id, length = unpack_header(data)
    except RemoteProtocolError:
        return
    assert len(data) == HEADER_SIZE
    assert opcode is not OpCode.UNKNOWN
    assert pack_header(opcode, job_id, length)[4:] == data[4:]
