"""Frames in, Message out: exact bytes, decode errors, local errors and fuzzing of decode()."""

from __future__ import annotations

import json
import math

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casparian_trio.errors import LocalProtocolError, RemoteProtocolError
from casparian_trio.protocol import (
    Abort,
    Conclude,
    Deploy,
    Dispatch,
    Err,
    Heartbeat,
    Identify,
    JobRef,
    Message,
    OpCode,
    Reload,
    SinkConfig,
    decode,
    encode,
)
from casparian_trio.protocol._header import MAX_PAYLOAD

from ._helpers import (
    FULL,
    KNOWN_KEYS,
    MINIMAL,
    U64,
    decode_or_reject,
    frames_for,
    json_values,
    raw_header,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- exact frames: (payload, job_id, header hex, body bytes) -------------------------------------

EXACT = [
    pytest.param(
        Heartbeat(status="IDLE"),
        0,
        "0404000000000000000000000000001b",
        b'{"status":"IDLE","jobs":[]}',
        id="heartbeat-idle",
    ),
    pytest.param(
        Heartbeat(
            status="BUSY", current_job_id=42, worker_id="w1", free_slots=0, jobs=(JobRef(42, 1),)
        ),
        0,
        "04040000000000000000000000000068",
        b'{"status":"BUSY","current_job_id":42,"worker_id":"w1","free_slots":0,'
        b'"jobs":[{"job_id":42,"attempt":1}]}',
        id="heartbeat-busy",
    ),
    pytest.param(
        Abort(),
        7,
        "04030000000000000000000700000002",
        b"{}",
        id="abort-7",
    ),
    pytest.param(
        Reload(),
        U64,
        "04070000ffffffffffffffff00000002",
        b"{}",
        id="reload-max-job",
    ),
    pytest.param(
        Identify(worker_id="w"),
        0,
        "04010000000000000000000000000044",
        b'{"worker_id":"w","capabilities":["*"],"slots":1,"jobs":[],"envs":[]}',
        id="identify-0",
    ),
    pytest.param(
        Conclude(status="SUCCESS", metrics={"rows": 3}, attempt=1),
        12345,
        "04050000000000000000303900000044",
        b'{"status":"SUCCESS","metrics":{"rows":3},"artifacts":[],"attempt":1}',
        id="conclude",
    ),
    pytest.param(
        Err(message="caf\u00e9 \u2603"),
        1,
        "0406000000000000000000010000001e",
        b'{"message":"caf\\u00e9 \\u2603"}',
        id="err-non-ascii-escaped",
    ),
    pytest.param(
        Dispatch(
            plugin_name="p",
            file_path="/f",
            sinks=(SinkConfig(topic="t", uri="parquet:///o"),),
            file_version_id=9,
            env_hash="e",
            source_code="s",
            artifact_hash="a",
            timeout_s=1.5,
        ),
        2**64 - 1,
        "04020000ffffffffffffffff000000cc",
        b'{"plugin_name":"p","file_path":"/f","sinks":[{"topic":"t","uri":"parquet:///o",'
        b'"mode":"append","schema_def":null}],"file_version_id":9,"env_hash":"e",'
        b'"source_code":"s","artifact_hash":"a","timeout_s":1.5}',
        id="dispatch-max-job",
    ),
]


@pytest.mark.parametrize(("payload", "job_id", "header", "body"), EXACT)
def test_encode_exact_bytes(payload: object, job_id: int, header: str, body: bytes) -> None:
    frames = encode(payload, job_id)  # type: ignore[arg-type]
    assert frames == [bytes.fromhex(header), body]
    assert int(header[-8:], 16) == len(body)


@pytest.mark.parametrize(("payload", "job_id", "header", "body"), EXACT)
def test_decode_exact_bytes(payload: object, job_id: int, header: str, body: bytes) -> None:
    msg = decode([bytes.fromhex(header), body])
    assert msg == Message(job_id=job_id, payload=payload)  # type: ignore[arg-type]
    assert msg.opcode is payload.OPCODE  # type: ignore[attr-defined]


def test_encode_default_job_id_is_zero() -> None:
    assert encode(Abort()) == [bytes.fromhex("04030000000000000000000000000002"), b"{}"]


def test_encode_is_compact_and_ascii() -> None:
    _, body = encode(FULL["Dispatch"], 1)
    assert b": " not in body
    assert b", " not in body
    assert body.isascii()


@pytest.mark.parametrize(
    ("opcode", "payload"),
    [(OpCode.ABORT, Abort()), (OpCode.RELOAD, Reload())],
)
def test_empty_body_means_empty_payload(opcode: OpCode, payload: object) -> None:
    frames = [raw_header(opcode, 3, 0), b""]
    assert decode(frames) == Message(job_id=3, payload=payload)  # type: ignore[arg-type]


def test_empty_body_for_a_payload_with_required_fields_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode([raw_header(OpCode.IDENTIFY, 0, 0), b""])
    assert info.value.field == "worker_id"


def test_decode_accepts_frame_like_buffers() -> None:
    header, body = encode(FULL["Heartbeat"], 5)
    msg = decode((memoryview(header), bytearray(body)))
    assert msg == Message(job_id=5, payload=FULL["Heartbeat"])


def test_decode_tolerates_whitespace_and_key_order() -> None:
    body = b' {\n  "jobs" : [ ] ,\n  "status" : "DRAINING"\n}\n'
    assert decode(frames_for(OpCode.HEARTBEAT, body)).payload == Heartbeat(status="DRAINING")


# --- decode errors ------------------------------------------------------------------------------

_HB = b'{"status":"IDLE"}'
_HB_HEADER = raw_header(OpCode.HEARTBEAT, 1, len(_HB))

DECODE_ERRORS = [
    pytest.param([], "got 0", id="frames-0"),
    pytest.param([_HB_HEADER], "got 1", id="frames-1"),
    pytest.param([_HB_HEADER, _HB, b""], "got 3", id="frames-3"),
    pytest.param([b"id", _HB_HEADER, _HB], "got 3", id="frames-3-identity-left-on"),
    pytest.param([_HB_HEADER[:15], _HB], "15 bytes", id="short-header"),
    pytest.param([b"", _HB], "0 bytes", id="empty-header"),
    pytest.param([_HB_HEADER + b"\x00", _HB], "17 bytes", id="long-header"),
    pytest.param([raw_header(4, 1, len(_HB), version=3), _HB], "version", id="version-3"),
    pytest.param([raw_header(0, 1, len(_HB)), _HB], "opcode 0", id="opcode-0"),
    pytest.param([raw_header(11, 1, len(_HB)), _HB], "opcode 11", id="opcode-11"),
    pytest.param([raw_header(255, 1, len(_HB)), _HB], "opcode 255", id="opcode-255"),
    pytest.param([raw_header(4, 1, len(_HB) + 1), _HB], "declares 18", id="length-too-big"),
    pytest.param([raw_header(4, 1, len(_HB) - 1), _HB], "declares 16", id="length-too-small"),
    pytest.param([raw_header(4, 1, 0), _HB], "declares 0", id="length-zero-body-not"),
    pytest.param([raw_header(3, 1, 2), b""], "declares 2", id="length-two-body-empty"),
    pytest.param([raw_header(4, 1, MAX_PAYLOAD + 1), _HB], "exceeds", id="length-over-max"),
    pytest.param([raw_header(4, 1, 2**32 - 1), _HB], "exceeds", id="length-u32-max"),
    pytest.param(frames_for(4, b"\xff\xfe"), "UTF-8", id="utf8-garbage"),
    pytest.param(frames_for(4, b'{"status":"\xc3"}'), "UTF-8", id="utf8-truncated"),
    pytest.param(frames_for(4, b'{"status":"\xed\xa0\x80"}'), "UTF-8", id="utf8-surrogate"),
    pytest.param(frames_for(4, b"\xef\xbb\xbf" + _HB), "JSON", id="utf8-bom"),
    pytest.param(frames_for(4, b"{"), "JSON", id="json-truncated"),
    pytest.param(frames_for(4, b"{'status': 'IDLE'}"), "JSON", id="json-single-quotes"),
    pytest.param(frames_for(4, b'{"status":"IDLE",}'), "JSON", id="json-trailing-comma"),
    pytest.param(frames_for(4, _HB + b"{}"), "JSON", id="json-extra-data"),
    pytest.param(frames_for(4, b"nul"), "JSON", id="json-bad-literal"),
    pytest.param(frames_for(4, b" "), "JSON", id="json-only-whitespace"),
    pytest.param(frames_for(4, b"[]"), "got list", id="json-array"),
    pytest.param(frames_for(4, b'[{"status":"IDLE"}]'), "got list", id="json-array-of-object"),
    pytest.param(frames_for(4, b"42"), "got int", id="json-int"),
    pytest.param(frames_for(4, b"4.5"), "got float", id="json-float"),
    pytest.param(frames_for(4, b'"IDLE"'), "got str", id="json-string"),
    pytest.param(frames_for(4, b"null"), "got NoneType", id="json-null"),
    pytest.param(frames_for(4, b"true"), "got bool", id="json-true"),
    pytest.param(frames_for(3, b"[" * 100_000 + b"]" * 100_000), "JSON", id="deep-array"),
    pytest.param(
        frames_for(3, b'{"a":' * 100_000 + b"1" + b"}" * 100_000), "JSON", id="deep-object"
    ),
    pytest.param(frames_for(3, b'{"a":' + b"1" * 5000 + b"}"), "JSON", id="int-over-digit-limit"),
]


@pytest.mark.parametrize(("frames", "match"), DECODE_ERRORS)
def test_decode_rejects(frames: list[bytes], match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match) as info:
        decode(frames)
    assert info.value.field is None
    assert info.value.__cause__ is None or isinstance(info.value.__cause__, Exception)


def test_moderately_nested_json_inside_an_extension_is_fine() -> None:
    config: dict[str, object] = {}
    node = config
    for _ in range(200):
        node["n"] = {}
        node = node["n"]  # type: ignore[assignment]
    body = {**FULL["Dispatch"].to_json(), "config": config}
    assert decode(frames_for(OpCode.DISPATCH, body)).payload.config == config


# --- local errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("job_id", [-1, 2**64, -(2**64)])
@pytest.mark.parametrize("name", ["Abort", "Heartbeat", "Dispatch"])
def test_encode_refuses_job_id_out_of_u64(name: str, job_id: int) -> None:
    with pytest.raises(LocalProtocolError, match="u64"):
        encode(MINIMAL[name], job_id)


def test_encode_accepts_job_id_bounds() -> None:
    assert decode(encode(Abort(), 0)).job_id == 0
    assert decode(encode(Abort(), U64)).job_id == U64


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(
            Conclude(status="SUCCESS", metrics={"duration_s": math.nan}), id="metrics-nan"
        ),
        pytest.param(Conclude(status="SUCCESS", metrics={"x": [math.inf]}), id="metrics-inf"),
        pytest.param(Conclude(status="SUCCESS", metrics={"x": -math.inf}), id="metrics-neg-inf"),
        pytest.param(
            attrs.evolve(MINIMAL["Dispatch"], timeout_s=math.nan), id="dispatch-timeout-nan"
        ),
        pytest.param(
            attrs.evolve(MINIMAL["Dispatch"], timeout_s=math.inf), id="dispatch-timeout-inf"
        ),
        pytest.param(Conclude(status="SUCCESS", metrics={"x": object()}), id="metrics-object"),
        pytest.param(Conclude(status="SUCCESS", metrics={"x": b"bytes"}), id="metrics-bytes"),
        pytest.param(
            Deploy(plugin_name="p", version="1", source_code="s", manifest={"x": {1, 2}}),
            id="manifest-set",
        ),
        pytest.param(Conclude(status="SUCCESS", metrics={("t",): 1}), id="metrics-tuple-key"),
    ],
)
def test_encode_refuses_unencodable_payloads(payload: object) -> None:
    with pytest.raises(LocalProtocolError, match="cannot encode"):
        encode(payload)  # type: ignore[arg-type]


# --- fuzzing: decode returns a Message or raises RemoteProtocolError, never anything else --------

any_frames = st.lists(st.binary(max_size=40), max_size=4)


@st.composite
def headed_random_bytes(draw: st.DrawFn) -> list[bytes]:
    body = draw(st.binary(max_size=64) | st.sampled_from([b"", b"{}", b"[]", b"null", b'{"a":1}']))
    opcode = draw(st.integers(0, 255) | st.sampled_from(list(OpCode)))
    honest = draw(st.booleans())
    length = len(body) if honest else draw(st.integers(0, 2**32 - 1))
    version = draw(st.just(4) | st.integers(0, 255))
    return [raw_header(opcode, draw(st.integers(0, U64)), length, version=version), body]


fuzz_keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=8)
fuzz_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities too: json.dumps writes them, decode must cope
    | st.text(max_size=12),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(fuzz_keys, c, max_size=4),
    max_leaves=16,
)


@st.composite
def headed_random_json(draw: st.DrawFn) -> list[bytes]:
    opcode = draw(st.sampled_from([op for op in OpCode if op is not OpCode.UNKNOWN]))
    obj = draw(st.dictionaries(fuzz_keys, fuzz_json_values, max_size=8) | fuzz_json_values)
    return frames_for(opcode, json.dumps(obj).encode(), job_id=draw(st.integers(0, U64)))


@st.composite
def mutated_valid_json(draw: st.DrawFn) -> list[bytes]:
    """A valid payload's JSON with some fields deleted or replaced by arbitrary JSON."""
    name = draw(st.sampled_from(sorted(FULL)))
    payload = FULL[name]
    obj = payload.to_json()
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(sorted(obj)) | fuzz_keys) if obj else draw(fuzz_keys)
        if draw(st.booleans()) and key in obj:
            del obj[key]
        else:
            # ints bounded: a float field fed a >1e308 integer is a known bug, see
            # test_messages.py::test_huge_integer_for_float_field_is_a_remote_error
            obj[key] = draw(json_values)
    return frames_for(payload.OPCODE, json.dumps(obj).encode())


@FUZZ
@given(st.one_of(any_frames, headed_random_bytes(), headed_random_json()))
def test_decode_never_raises_anything_else(frames: list[bytes]) -> None:
    decode_or_reject(frames)


@FUZZ
@given(mutated_valid_json())
def test_decode_mutated_payloads_never_raise_anything_else(frames: list[bytes]) -> None:
    decode_or_reject(frames)


@FUZZ
@given(st.binary(min_size=16, max_size=16), st.binary(max_size=64))
def test_decode_random_header_bytes(header: bytes, body: bytes) -> None:
    decode_or_reject([header, body])
