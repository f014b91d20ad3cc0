"""Shared samples, frame builders and hypothesis strategies for the protocol tests."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from casparian_trio.errors import RemoteProtocolError
from casparian_trio.protocol import (
    Abort,
    Artifact,
    Conclude,
    Deploy,
    Dispatch,
    EnvReady,
    Err,
    Heartbeat,
    Identify,
    JobRef,
    Message,
    OpCode,
    PrepareEnv,
    Reload,
    SinkConfig,
    decode,
)
from casparian_trio.protocol._header import HEADER
from casparian_trio.protocol.messages import (
    PAYLOAD_TYPES,
    RECEIPT_STATUSES,
    SINK_MODES,
    WORKER_STATUSES,
)

U64 = 2**64 - 1


def raw_header(
    opcode: int, job_id: int, length: int, *, version: int = 4, reserved: int = 0
) -> bytes:
    """A header built by hand, bypassing pack_header's checks."""
    return HEADER.pack(version, opcode, reserved, job_id, length)


def frames_for(
    opcode: int, body: bytes | dict[str, Any] | list[Any], job_id: int = 1
) -> list[bytes]:
    """Frames with an honest length for ``body`` (a dict or list is JSON-encoded)."""
    if not isinstance(body, bytes):
        body = json.dumps(body).encode("utf-8")
    return [raw_header(opcode, job_id, len(body)), body]


def decode_or_reject(frames: list[bytes]) -> Message | None:
    """The decode contract: a Message, or RemoteProtocolError (returns None) -- nothing else."""
    try:
        msg = decode(frames)
    except RemoteProtocolError:
        return None
    assert isinstance(msg, Message)
    assert isinstance(msg.payload, PAYLOAD_TYPES[msg.opcode])
    assert 0 <= msg.job_id <= U64
    return msg


# --- samples: the smallest and the fullest instance of every payload class -----------------

MINIMAL: dict[str, Any] = {
    "Identify": Identify(worker_id="w-1"),
    "Dispatch": Dispatch(
        plugin_name="csv_to_rows",
        file_path="/data/in.csv",
        sinks=(),
        file_version_id=1,
        env_hash="e" * 64,
        source_code="class Handler: ...",
        artifact_hash="a" * 64,
    ),
    "Abort": Abort(),
    "Heartbeat": Heartbeat(status="IDLE"),
    "Conclude": Conclude(status="SUCCESS"),
    "Err": Err(message="boom"),
    "Reload": Reload(),
    "PrepareEnv": PrepareEnv(env_hash="e" * 64, lockfile="version = 1\n"),
    "EnvReady": EnvReady(env_hash="e" * 64, interpreter_path="/envs/e/bin/python"),
    "Deploy": Deploy(plugin_name="p", version="1.0.0", source_code="class Handler: ..."),
}

FULL: dict[str, Any] = {
    "Identify": Identify(
        worker_id="w-1",
        capabilities=("csv", "parquet"),
        slots=4,
        prefetch=1,
        jobs=(JobRef(7, attempt=2), JobRef(U64), JobRef(8, attempt=1, held=True)),
        envs=("e1", "e2"),
        host="node-a",
        pid=4242,
        answer_heartbeats=True,
    ),
    "Dispatch": Dispatch(
        plugin_name="csv_to_rows",
        file_path="/data/in.csv",
        sinks=(
            SinkConfig(topic="rows", uri="parquet:///out/rows"),
            SinkConfig(
                topic="errs", uri="sqlite:///out/db.sqlite/errs", mode="replace", schema_def="{}"
            ),
        ),
        file_version_id=U64,
        env_hash="e" * 64,
        source_code="class Handler:\n    pass\n",
        artifact_hash="a" * 64,
        attempt=3,
        timeout_s=12.5,
        memory_limit_mb=512,
        config={"delimiter": ";", "nested": {"a": [1, 2.5, None, True]}},
    ),
    "Abort": Abort(),
    "Heartbeat": Heartbeat(
        status="BUSY",
        current_job_id=7,
        worker_id="w-1",
        free_slots=0,
        jobs=(JobRef(7, attempt=1), JobRef(8)),
        stopping=True,
    ),
    "Conclude": Conclude(
        status="FAILED",
        metrics={"rows": 10, "bytes": 2048, "duration_s": 0.25},
        artifacts=(Artifact(topic="rows", uri="parquet:///out/rows/0.parquet", rows=10),),
        error_message="ValueError: bad row 11\nTraceback (most recent call last): ...",
        attempt=2,
        traceback="Traceback (most recent call last): ...",
        log_tail="reading rows\nrow 11 looks odd",
    ),
    "Err": Err(
        message="boom", traceback="Traceback...", env_hash="e" * 64, code="ENV_BUILD_FAILED"
    ),
    "Reload": Reload(),
    "PrepareEnv": PrepareEnv(
        env_hash="e" * 64,
        lockfile="version = 1\n",
        python_version="3.11",
        pyproject="[project]\nname = 'x'\n",
    ),
    "EnvReady": EnvReady(env_hash="e" * 64, interpreter_path="/envs/e/bin/python", cached=True),
    "Deploy": Deploy(
        plugin_name="p",
        version="1.0.0",
        source_code="class Handler: ...",
        lockfile="version = 1\n",
        pyproject="[project]\n",
        env_hash="e" * 64,
        artifact_hash="a" * 64,
        manifest={"pattern": "*.csv", "topic": "rows", "priority": 5, "timeout": 30},
    ),
}

# Top-level required fields of each class, as the wire names them.
REQUIRED: dict[str, tuple[str, ...]] = {
    "Identify": ("worker_id",),
    "Dispatch": (
        "plugin_name",
        "file_path",
        "sinks",
        "file_version_id",
        "env_hash",
        "source_code",
        "artifact_hash",
    ),
    "Abort": (),
    "Heartbeat": ("status",),
    "Conclude": ("status",),
    "Err": ("message",),
    "Reload": (),
    "PrepareEnv": ("env_hash", "lockfile"),
    "EnvReady": ("env_hash", "interpreter_path"),
    "Deploy": ("plugin_name", "version", "source_code"),
}

CLASSES = {name: type(p) for name, p in MINIMAL.items()}
assert set(MINIMAL) == set(FULL) == set(REQUIRED) == {c.__name__ for c in PAYLOAD_TYPES.values()}

KNOWN_KEYS = sorted({k for p in FULL.values() for k in p.to_json()} | {"mode", "topic", "uri"})


# --- hypothesis strategies ---------------------------------------------------------------------

u64 = st.integers(min_value=0, max_value=U64)
small_int = st.integers(min_value=-(2**63), max_value=2**63 - 1)
opt_int = st.none() | small_int
opt_text = st.none() | st.text(max_size=20)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)

job_refs = st.builds(JobRef, job_id=u64, attempt=st.none() | st.integers(0, 2**31))
sink_configs = st.builds(
    SinkConfig,
    topic=st.text(max_size=12),
    uri=st.text(max_size=30),
    mode=st.sampled_from(SINK_MODES),
    schema_def=opt_text,
)
artifacts = st.builds(
    Artifact, topic=st.text(max_size=12), uri=st.text(max_size=30), rows=st.none() | u64
)

dispatches = st.builds(
    Dispatch,
    plugin_name=st.text(max_size=20),
    file_path=st.text(max_size=40),
    sinks=st.lists(sink_configs, max_size=3).map(tuple),
    file_version_id=u64,
    env_hash=st.text(max_size=64),
    source_code=st.text(max_size=200),
    artifact_hash=st.text(max_size=64),
    attempt=opt_int,
    timeout_s=st.none() | st.floats(min_value=0, allow_nan=False, allow_infinity=False),
    memory_limit_mb=opt_int,
    config=json_objects,
)
heartbeats = st.builds(
    Heartbeat,
    status=st.sampled_from(WORKER_STATUSES),
    current_job_id=st.none() | u64,
    worker_id=opt_text,
    free_slots=st.none() | st.integers(0, 2**31),
    jobs=st.lists(job_refs, max_size=4).map(tuple),
    stopping=st.booleans(),
)
concludes = st.builds(
    Conclude,
    status=st.sampled_from(RECEIPT_STATUSES),
    metrics=json_objects,
    artifacts=st.lists(artifacts, max_size=3).map(tuple),
    error_message=opt_text,
    attempt=opt_int,
)
identifies = st.builds(
    Identify,
    worker_id=st.text(min_size=1, max_size=20),  # 1-200 bytes, as --worker-id
    # an empty list means "anything" on the wire and decodes as ("*",); slots clamp to >= 1
    capabilities=st.lists(st.text(max_size=10), min_size=1, max_size=4).map(tuple),
    slots=st.integers(1, 2**31),
    jobs=st.lists(job_refs, max_size=4).map(tuple),
    envs=st.lists(st.text(max_size=10), max_size=4).map(tuple),
    host=opt_text,
    pid=st.none() | st.integers(0, 2**31),
    answer_heartbeats=st.booleans(),
)
errs = st.builds(Err, message=st.text(), traceback=opt_text, env_hash=opt_text, code=opt_text)
prepare_envs = st.builds(
    PrepareEnv,
    env_hash=st.text(max_size=64),
    lockfile=st.text(),
    python_version=opt_text,
    pyproject=opt_text,
)
env_readies = st.builds(
    EnvReady, env_hash=st.text(max_size=64), interpreter_path=st.text(), cached=st.booleans()
)
deploys = st.builds(
    Deploy,
    plugin_name=st.text(max_size=20),
    version=st.text(max_size=10),
    source_code=st.text(),
    lockfile=opt_text,
    pyproject=opt_text,
    env_hash=opt_text,
    artifact_hash=opt_text,
    manifest=json_objects,
)
payloads = st.one_of(
    dispatches,
    heartbeats,
    concludes,
    identifies,
    errs,
    prepare_envs,
    env_readies,
    deploys,
    st.just(Abort()),
    st.just(Reload()),
)

__all__ = [
    "CLASSES",
    "FULL",
    "KNOWN_KEYS",
    "MINIMAL",
    "REQUIRED",
    "U64",
    "OpCode",
    "decode_or_reject",
    "frames_for",
    "json_objects",
    "json_values",
    "payloads",
    "raw_header",
]
