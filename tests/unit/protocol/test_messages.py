"""Payload classes: round trips, old peers, tolerated extensions, and field-naming validation."""

from __future__ import annotations

import json
import re
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casparian_trio.errors import LocalProtocolError, RemoteProtocolError
from casparian_trio.protocol import (
    Artifact,
    Conclude,
    EnvReady,
    Heartbeat,
    Identify,
    JobRef,
    Message,
    OpCode,
    SinkConfig,
    decode,
    encode,
)
from casparian_trio.protocol.messages import PAYLOAD_TYPES

from ._helpers import CLASSES, FULL, MINIMAL, REQUIRED, U64, frames_for, payloads

SAMPLES = [pytest.param(p, id=f"{n}-minimal") for n, p in MINIMAL.items()] + [
    pytest.param(p, id=f"{n}-full") for n, p in FULL.items()
]


def decode_json(name: str, obj: Any) -> Any:
    """Decode a JSON value sent as the payload of ``name``'s opcode; return the payload."""
    return decode(frames_for(CLASSES[name].OPCODE, obj)).payload


def full_json(name: str) -> dict[str, Any]:
    return json.loads(json.dumps(FULL[name].to_json()))


# --- the registry ---------------------------------------------------------------------------------


def test_one_class_per_opcode() -> None:
    assert set(PAYLOAD_TYPES) == set(OpCode) - {OpCode.UNKNOWN}
    for opcode, cls in PAYLOAD_TYPES.items():
        assert cls.OPCODE is opcode
        assert re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).upper() == opcode.name


@pytest.mark.parametrize("payload", SAMPLES)
def test_payloads_are_frozen(payload: Any) -> None:
    fields = attrs.fields(type(payload))
    if fields:
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(payload, fields[0].name, None)


# --- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", SAMPLES)
@pytest.mark.parametrize("job_id", [0, 1, 12345, U64])
def test_round_trip_through_frames(payload: Any, job_id: int) -> None:
    assert decode(encode(payload, job_id)) == Message(job_id=job_id, payload=payload)


@pytest.mark.parametrize("payload", SAMPLES)
def test_round_trip_through_json(payload: Any) -> None:
    assert type(payload).from_json(payload.to_json()) == payload


@pytest.mark.parametrize("payload", SAMPLES)
def test_unknown_extra_fields_are_tolerated(payload: Any) -> None:
    obj = {
        **payload.to_json(),
        "x_future_field": {"nested": [1, 2, {"deep": None}]},
        "another": "value",
        "": 0,
    }
    assert decode_json(type(payload).__name__, obj) == payload


def test_unknown_extra_fields_in_nested_objects_are_tolerated() -> None:
    obj = full_json("Dispatch")
    obj["sinks"][0]["compression"] = "zstd"
    obj_hb = full_json("Heartbeat")
    obj_hb["jobs"][0]["progress"] = 0.5
    obj_c = full_json("Conclude")
    obj_c["artifacts"][0]["size_bytes"] = 123
    assert decode_json("Dispatch", obj) == FULL["Dispatch"]
    assert decode_json("Heartbeat", obj_hb) == FULL["Heartbeat"]
    assert decode_json("Conclude", obj_c) == FULL["Conclude"]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(MINIMAL["Heartbeat"], {"status": "IDLE", "jobs": []}, id="Heartbeat"),
        pytest.param(
            MINIMAL["Identify"],
            {"worker_id": "w-1", "capabilities": ["*"], "slots": 1, "jobs": [], "envs": []},
            id="Identify",
        ),
        pytest.param(
            MINIMAL["Conclude"],
            {"status": "SUCCESS", "metrics": {}, "artifacts": []},
            id="Conclude",
        ),
        pytest.param(MINIMAL["Err"], {"message": "boom"}, id="Err"),
        pytest.param(MINIMAL["Abort"], {}, id="Abort"),
        pytest.param(MINIMAL["Reload"], {}, id="Reload"),
        pytest.param(
            MINIMAL["EnvReady"],
            {"env_hash": "e" * 64, "interpreter_path": "/envs/e/bin/python", "cached": False},
            id="EnvReady",
        ),
        pytest.param(
            MINIMAL["Deploy"],
            {
                "plugin_name": "p",
                "version": "1.0.0",
                "source_code": "class Handler: ...",
                "manifest": {},
            },
            id="Deploy",
        ),
        pytest.param(
            MINIMAL["Dispatch"],
            {
                "plugin_name": "csv_to_rows",
                "file_path": "/data/in.csv",
                "sinks": [],
                "file_version_id": 1,
                "env_hash": "e" * 64,
                "source_code": "class Handler: ...",
                "artifact_hash": "a" * 64,
            },
            id="Dispatch-no-extensions-on-the-wire",
        ),
    ],
)
def test_minimal_to_json(payload: Any, expected: dict[str, Any]) -> None:
    assert payload.to_json() == expected


# --- old peers: extensions absent -----------------------------------------------------------------


def test_old_heartbeat_current_job_only() -> None:
    hb = decode_json("Heartbeat", {"status": "BUSY", "current_job_id": 9})
    assert hb == Heartbeat(status="BUSY", current_job_id=9)
    assert (hb.worker_id, hb.free_slots, hb.jobs) == (None, None, ())
    assert hb.held_jobs() == (JobRef(9),)
    assert hb.held_jobs()[0].attempt is None


def test_old_heartbeat_idle_holds_nothing() -> None:
    for obj in ({"status": "IDLE"}, {"status": "IDLE", "current_job_id": None}):
        assert decode_json("Heartbeat", obj).held_jobs() == ()


def test_heartbeat_current_job_zero_is_held() -> None:
    assert Heartbeat(status="BUSY", current_job_id=0).held_jobs() == (JobRef(0),)


def test_new_heartbeat_jobs_win_over_current_job_id() -> None:
    hb = decode_json(
        "Heartbeat",
        {
            "status": "BUSY",
            "current_job_id": 1,
            "jobs": [{"job_id": 2, "attempt": 3}, {"job_id": 4}],
        },
    )
    assert hb.held_jobs() == (JobRef(2, 3), JobRef(4))


def test_stopping_and_answers_are_off_unless_sent() -> None:
    assert decode_json("Heartbeat", {"status": "DRAINING"}).stopping is False
    assert decode_json("Identify", {"worker_id": "w"}).answer_heartbeats is False
    # off, they stay off the wire: an old peer sees exactly the v4 payload
    assert "stopping" not in Heartbeat(status="DRAINING").to_json()
    assert "answer_heartbeats" not in Identify(worker_id="w").to_json()


def test_a_goodbye_is_a_v4_heartbeat_with_one_more_field() -> None:
    goodbye = Heartbeat(status="DRAINING", worker_id="w", stopping=True)
    assert goodbye.to_json() == {
        "status": "DRAINING",
        "worker_id": "w",
        "jobs": [],
        "stopping": True,
    }
    assert decode_json("Heartbeat", goodbye.to_json()) == goodbye


def test_the_sentinels_answer_is_a_valid_v4_heartbeat() -> None:
    answer = Heartbeat.answer("w-1")
    assert answer.to_json() == {"status": "IDLE", "worker_id": "w-1", "jobs": []}
    ack = Heartbeat.answer("w-1", stopping=True)
    assert (ack.status, ack.worker_id, ack.stopping) == ("IDLE", "w-1", True)
    assert decode(encode(ack)).payload == ack


@pytest.mark.parametrize("status", ["idle", "", "STOPPED", "LOST"])
def test_a_heartbeat_with_a_status_v4_does_not_know_cannot_be_built(status: str) -> None:
    with pytest.raises(LocalProtocolError, match="HEARTBEAT status"):
        Heartbeat(status=status)


def test_old_identify_defaults() -> None:
    ident = decode_json("Identify", {"worker_id": "w"})
    assert ident == Identify(worker_id="w")
    assert ident.capabilities == ("*",)
    assert (ident.slots, ident.jobs, ident.envs, ident.host, ident.pid) == (1, (), (), None, None)


@pytest.mark.parametrize(
    ("extra", "slots", "capabilities"),
    [
        ({"slots": 0}, 1, ("*",)),
        ({"slots": -5}, 1, ("*",)),
        ({"slots": None}, 1, ("*",)),
        ({"slots": 8}, 8, ("*",)),
        ({"capabilities": []}, 1, ("*",)),
        ({"capabilities": None}, 1, ("*",)),
        ({"capabilities": ["csv"]}, 1, ("csv",)),
    ],
)
def test_identify_normalises_slots_and_capabilities(
    extra: dict[str, Any], slots: int, capabilities: tuple[str, ...]
) -> None:
    ident = decode_json("Identify", {"worker_id": "w", **extra})
    assert (ident.slots, ident.capabilities) == (slots, capabilities)


def test_old_dispatch_defaults() -> None:
    obj = MINIMAL["Dispatch"].to_json()
    obj["sinks"] = [{"topic": "t", "uri": "parquet:///o"}]  # no mode, no schema_def
    d = decode_json("Dispatch", obj)
    assert d.sinks == (SinkConfig(topic="t", uri="parquet:///o", mode="append", schema_def=None),)
    assert (d.attempt, d.timeout_s, d.memory_limit_mb, d.config) == (None, None, None, {})


def test_single_use_guest_is_on_the_wire_only_when_set() -> None:
    plain = MINIMAL["Dispatch"]
    assert "single_use_guest" not in plain.to_json()  # byte-identical to before by default
    assert decode_json("Dispatch", plain.to_json()).single_use_guest is False
    single = attrs.evolve(plain, single_use_guest=True)
    assert single.to_json()["single_use_guest"] is True
    assert decode_json("Dispatch", single.to_json()).single_use_guest is True


def test_dispatch_integer_timeout_becomes_float() -> None:
    obj = {**MINIMAL["Dispatch"].to_json(), "timeout_s": 30}
    timeout = decode_json("Dispatch", obj).timeout_s
    assert timeout == 30.0
    assert type(timeout) is float


def test_old_conclude_defaults() -> None:
    c = decode_json("Conclude", {"status": "ABORTED"})
    assert c == Conclude(status="ABORTED")
    assert (c.metrics, c.artifacts, c.error_message, c.attempt) == ({}, (), None, None)
    art = decode_json("Conclude", {"status": "SUCCESS", "artifacts": [{"topic": "t", "uri": "u"}]})
    assert art.artifacts == (Artifact(topic="t", uri="u", rows=None),)


def test_conclude_traceback_and_log_tail_round_trip() -> None:
    failed = Conclude(
        status="FAILED",
        error_message="plugin 'p' raised ValueError: x\nTraceback ...\nValueError: x",
        traceback="Traceback ...\nValueError: x",
    )
    succeeded = Conclude(status="SUCCESS", log_tail="line 1\nline 2")
    for receipt in (failed, succeeded):
        assert decode(encode(receipt, 7)) == Message(job_id=7, payload=receipt)
    assert failed.to_json()["traceback"] == "Traceback ...\nValueError: x"
    assert succeeded.to_json()["log_tail"] == "line 1\nline 2"
    # None stays off the wire: an old Sentinel sees exactly the receipt it knows
    assert not {"traceback", "log_tail"} & set(Conclude(status="SUCCESS").to_json())
    old = decode_json("Conclude", {"status": "FAILED", "error_message": "boom\nTraceback"})
    assert (old.traceback, old.log_tail) == (None, None)


def test_old_env_ready_is_not_cached() -> None:
    assert decode_json("EnvReady", {"env_hash": "h", "interpreter_path": "/p"}) == EnvReady(
        env_hash="h", interpreter_path="/p", cached=False
    )


@pytest.mark.parametrize(
    ("name", "key"),
    [(n, k) for n in sorted(FULL) for k in sorted(FULL[n].to_json()) if k not in REQUIRED[n]],
)
def test_every_non_required_field_may_be_absent_or_null(name: str, key: str) -> None:
    obj = full_json(name)
    del obj[key]
    decode_json(name, obj)
    decode_json(name, {**obj, key: None})


# --- required fields ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "key"), [(n, k) for n in sorted(REQUIRED) for k in REQUIRED[n]])
@pytest.mark.parametrize("how", ["absent", "null"])
def test_missing_required_field_is_named(name: str, key: str, how: str) -> None:
    obj = full_json(name)
    if how == "absent":
        del obj[key]
    else:
        obj[key] = None
    with pytest.raises(RemoteProtocolError, match="missing required field") as info:
        decode_json(name, obj)
    assert info.value.field == key


# (class, patch applied to the full JSON, field the error must name)
MISTYPED = [
    ("Dispatch", {"sinks": "parquet://x"}, "sinks"),
    ("Dispatch", {"sinks": {"topic": "t", "uri": "u"}}, "sinks"),
    ("Dispatch", {"sinks": [5]}, "sinks[0]"),
    ("Dispatch", {"sinks": [{"topic": "t", "uri": "u"}, "x"]}, "sinks[1]"),
    ("Dispatch", {"sinks": [{"topic": "t", "uri": "u", "mode": "upsert"}]}, "sinks[0].mode"),
    ("Dispatch", {"sinks": [{"topic": "t", "uri": "u", "mode": "APPEND"}]}, "sinks[0].mode"),
    ("Dispatch", {"plugin_name": 5}, "plugin_name"),
    ("Dispatch", {"file_path": ["a"]}, "file_path"),
    ("Dispatch", {"file_version_id": True}, "file_version_id"),
    ("Dispatch", {"file_version_id": False}, "file_version_id"),
    ("Dispatch", {"file_version_id": 1.0}, "file_version_id"),
    ("Dispatch", {"file_version_id": "1"}, "file_version_id"),
    ("Dispatch", {"env_hash": {}}, "env_hash"),
    ("Dispatch", {"source_code": 1}, "source_code"),
    ("Dispatch", {"artifact_hash": False}, "artifact_hash"),
    ("Dispatch", {"attempt": True}, "attempt"),
    ("Dispatch", {"attempt": 2.5}, "attempt"),
    ("Dispatch", {"timeout_s": "10"}, "timeout_s"),
    ("Dispatch", {"timeout_s": True}, "timeout_s"),
    ("Dispatch", {"memory_limit_mb": 1.5}, "memory_limit_mb"),
    ("Dispatch", {"config": []}, "config"),
    ("Dispatch", {"config": "k=v"}, "config"),
    ("Identify", {"worker_id": 1}, "worker_id"),
    ("Identify", {"worker_id": ""}, "worker_id"),  # not a name --worker-id accepts
    ("Identify", {"worker_id": "w" * 201}, "worker_id"),
    ("Identify", {"worker_id": "é" * 101}, "worker_id"),  # 202 bytes
    # a lone surrogate (JSON's "\ud800" escape): no name, and no text SQLite can hold
    ("Identify", {"worker_id": "\ud800"}, "worker_id"),
    ("Identify", {"capabilities": "csv"}, "capabilities"),
    ("Identify", {"capabilities": ["csv", 1]}, "capabilities[1]"),
    ("Identify", {"slots": "2"}, "slots"),
    ("Identify", {"slots": True}, "slots"),
    ("Identify", {"jobs": {"job_id": 1}}, "jobs"),
    ("Identify", {"jobs": [7]}, "jobs[0]"),
    ("Identify", {"envs": ["e", None]}, "envs[1]"),
    ("Identify", {"host": 1}, "host"),
    ("Identify", {"pid": True}, "pid"),
    ("Identify", {"answer_heartbeats": "yes"}, "answer_heartbeats"),
    ("Identify", {"answer_heartbeats": 1}, "answer_heartbeats"),
    ("Heartbeat", {"status": 5}, "status"),
    ("Heartbeat", {"status": True}, "status"),
    ("Heartbeat", {"status": "idle"}, "status"),
    ("Heartbeat", {"status": "WHATEVER"}, "status"),
    ("Heartbeat", {"status": ""}, "status"),
    ("Heartbeat", {"current_job_id": "3"}, "current_job_id"),
    ("Heartbeat", {"current_job_id": True}, "current_job_id"),
    ("Heartbeat", {"free_slots": False}, "free_slots"),
    ("Heartbeat", {"worker_id": ["w"]}, "worker_id"),
    ("Heartbeat", {"jobs": "7"}, "jobs"),
    ("Heartbeat", {"jobs": [None]}, "jobs[0]"),
    ("Heartbeat", {"stopping": 1}, "stopping"),
    ("Heartbeat", {"stopping": "true"}, "stopping"),
    ("Conclude", {"status": "WHATEVER"}, "status"),
    ("Conclude", {"status": "success"}, "status"),
    ("Conclude", {"status": 0}, "status"),
    ("Conclude", {"metrics": []}, "metrics"),
    ("Conclude", {"metrics": 3}, "metrics"),
    ("Conclude", {"artifacts": {}}, "artifacts"),
    ("Conclude", {"artifacts": ["a"]}, "artifacts[0]"),
    ("Conclude", {"error_message": 5}, "error_message"),
    ("Conclude", {"attempt": 1.5}, "attempt"),
    ("Conclude", {"attempt": False}, "attempt"),
    ("Conclude", {"traceback": ["x"]}, "traceback"),
    ("Conclude", {"log_tail": 3}, "log_tail"),
    ("Err", {"message": 1}, "message"),
    ("Err", {"traceback": []}, "traceback"),
    ("Err", {"code": 404}, "code"),
    ("Err", {"env_hash": True}, "env_hash"),
    ("PrepareEnv", {"lockfile": {}}, "lockfile"),
    ("PrepareEnv", {"env_hash": 1}, "env_hash"),
    ("PrepareEnv", {"python_version": 3.11}, "python_version"),
    ("PrepareEnv", {"pyproject": True}, "pyproject"),
    ("EnvReady", {"cached": "yes"}, "cached"),
    ("EnvReady", {"cached": 1}, "cached"),
    ("EnvReady", {"interpreter_path": None}, "interpreter_path"),
    ("Deploy", {"version": 1}, "version"),
    ("Deploy", {"manifest": "x"}, "manifest"),
    ("Deploy", {"lockfile": 0}, "lockfile"),
    ("Deploy", {"artifact_hash": []}, "artifact_hash"),
]


@pytest.mark.parametrize(
    ("name", "patch", "field"),
    [pytest.param(n, p, f, id=f"{n}-{f}-{json.dumps(p)[:40]}") for n, p, f in MISTYPED],
)
def test_mistyped_field_is_named(name: str, patch: dict[str, Any], field: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_json(name, {**full_json(name), **patch})
    assert info.value.field == field
    assert field.split("[")[0].split(".")[0] in str(info.value)


# Nested objects (sinks[i], jobs[i], artifacts[i]) missing or mistyping a field: the error
# names the field; today only its leaf name (see the xfail below for the qualified path).
NESTED = [
    ("Dispatch", "sinks", {"topic": "t"}, "uri"),
    ("Dispatch", "sinks", {"uri": "u"}, "topic"),
    ("Dispatch", "sinks", {"topic": "t", "uri": 5}, "uri"),
    ("Dispatch", "sinks", {"topic": "t", "uri": "u", "schema_def": 1}, "schema_def"),
    ("Heartbeat", "jobs", {"attempt": 1}, "job_id"),
    ("Heartbeat", "jobs", {"job_id": "1"}, "job_id"),
    ("Heartbeat", "jobs", {"job_id": 1, "attempt": "2"}, "attempt"),
    ("Identify", "jobs", {"job_id": True}, "job_id"),
    ("Conclude", "artifacts", {"topic": "t"}, "uri"),
    ("Conclude", "artifacts", {"topic": "t", "uri": "u", "rows": "1"}, "rows"),
]


@pytest.mark.parametrize(("name", "key", "item", "leaf"), NESTED)
def test_nested_field_error_names_the_field(
    name: str, key: str, item: dict[str, Any], leaf: str
) -> None:
    obj = full_json(name)
    obj[key] = [obj[key][0], item]
    with pytest.raises(RemoteProtocolError) as info:
        decode_json(name, obj)
    assert info.value.field is not None
    assert info.value.field.rsplit(".", 1)[-1] == leaf


@pytest.mark.parametrize(("name", "key", "item", "leaf"), [NESTED[0], NESTED[4]])
def test_nested_field_error_names_the_qualified_path(
    name: str, key: str, item: dict[str, Any], leaf: str
) -> None:
    obj = full_json(name)
    obj[key] = [obj[key][0], item]
    with pytest.raises(RemoteProtocolError) as info:
        decode_json(name, obj)
    assert info.value.field == f"{key}[1].{leaf}"


# --- decoder edge cases (bugs found and fixed) -----------------------------------------------------------------------------


def test_huge_integer_for_float_field_is_a_remote_error() -> None:
    obj = {**MINIMAL["Dispatch"].to_json(), "timeout_s": 10**400}
    with pytest.raises(RemoteProtocolError) as info:
        decode_json("Dispatch", obj)
    assert info.value.field == "timeout_s"


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("Conclude", b'{"status":"SUCCESS","metrics":{"duration_s":NaN}}'),
        ("Conclude", b'{"status":"SUCCESS","metrics":{"rows":-Infinity}}'),
        ("Conclude", b'{"status":"SUCCESS","metrics":{"x":1e400}}'),
        (
            "Dispatch",
            b'{"plugin_name":"p","file_path":"f","sinks":[],"file_version_id":1,'
            b'"env_hash":"e","source_code":"s","artifact_hash":"a","timeout_s":Infinity}',
        ),
    ],
)
def test_non_finite_numbers_are_rejected_on_decode(name: str, body: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_json(name, body)


# --- property: every generated payload survives encode -> decode ----------------------------------


@settings(max_examples=300, deadline=None)
@given(payload=payloads, job_id=st.integers(0, U64))
def test_round_trip_property(payload: Any, job_id: int) -> None:
    frames = encode(payload, job_id)
    assert decode(frames) == Message(job_id=job_id, payload=payload)
    assert encode(decode(frames).payload, job_id) == frames


def test_an_identify_host_with_a_lone_surrogate_is_kept_escaped() -> None:
    """A host name is for people: text SQLite cannot store comes out escaped, not refused."""
    ident = decode_json("Identify", {"worker_id": "w", "host": "h\udfff"})
    assert ident.host == "h\\udfff"
