"""One frozen class per protocol v4 payload, named after its opcode (as h11's events).

Each class validates itself when built from JSON: unknown extra fields are
tolerated (newer peers may add extensions), missing or mistyped required fields
raise RemoteProtocolError naming the field. Extensions of the original protocol
(attempt, timeout_s, slots, jobs, ...) are always optional so an old peer that
neither sends nor reads them still works. Sans-I/O: no trio, zmq or sqlite3.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from casparian_trio.errors import LocalProtocolError
from casparian_trio.protocol import _fields as f
from casparian_trio.protocol._header import OpCode

WORKER_STATUSES = ("IDLE", "BUSY", "DRAINING")
# The status of a Sentinel's HEARTBEAT (S→W): v4 validators require one of
# WORKER_STATUSES, and the field carries no meaning in that direction.
ANSWER_STATUS = "IDLE"
RECEIPT_STATUSES = ("SUCCESS", "FAILED", "ABORTED")
SINK_MODES = ("append", "replace", "error")


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _only_if_true(flag: bool) -> bool | None:
    # A boolean extension goes on the wire only when set: an old peer's message
    # and ours stay byte-identical while it is off.
    return True if flag else None


def _worker_status(_instance: object, _attribute: object, value: str) -> None:
    if value not in WORKER_STATUSES:
        raise LocalProtocolError(
            f"HEARTBEAT status must be one of {', '.join(WORKER_STATUSES)}, got {value!r}"
        )


@attrs.frozen
class JobRef:
    """A job a worker holds, with the attempt it was dispatched as (None: unknown)."""

    job_id: int
    attempt: int | None = None

    @classmethod
    def from_json(cls, value: Any, where: str) -> JobRef:
        obj = f.as_object(value, where)
        with f.within(where):
            return cls(job_id=f.req_int(obj, "job_id"), attempt=f.opt_int(obj, "attempt"))

    def to_json(self) -> dict[str, Any]:
        return _drop_none({"job_id": self.job_id, "attempt": self.attempt})


@attrs.frozen
class SinkConfig:
    """Where one topic's rows go: ``parquet://dir`` or ``sqlite://path/table``."""

    topic: str
    uri: str
    mode: str = "append"
    schema_def: str | None = None

    @classmethod
    def from_json(cls, value: Any, where: str) -> SinkConfig:
        obj = f.as_object(value, where)
        with f.within(where):
            mode = f.opt_str(obj, "mode") or "append"
            return cls(
                topic=f.req_str(obj, "topic"),
                uri=f.req_str(obj, "uri"),
                mode=f.one_of(mode, SINK_MODES, f"{where}.mode"),
                schema_def=f.opt_str(obj, "schema_def"),
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "uri": self.uri,
            "mode": self.mode,
            "schema_def": self.schema_def,
        }


@attrs.frozen
class Artifact:
    """One output a job produced (a Parquet file, a SQLite table)."""

    topic: str
    uri: str
    rows: int | None = None

    @classmethod
    def from_json(cls, value: Any, where: str) -> Artifact:
        obj = f.as_object(value, where)
        return cls(
            topic=f.req_str(obj, "topic"), uri=f.req_str(obj, "uri"), rows=f.opt_int(obj, "rows")
        )

    def to_json(self) -> dict[str, Any]:
        return _drop_none({"topic": self.topic, "uri": self.uri, "rows": self.rows})


@attrs.frozen(kw_only=True)
class Identify:
    """W→S on connect: who the worker is, what it can run, what it already holds."""

    OPCODE: ClassVar[OpCode] = OpCode.IDENTIFY
    worker_id: str
    capabilities: tuple[str, ...] = ("*",)
    slots: int = 1  # extension: how many jobs it runs at once (dispatch credit)
    jobs: tuple[JobRef, ...] = ()  # extension: jobs still running (re-adoption after restart)
    envs: tuple[str, ...] = ()  # extension: env hashes already built on this worker
    host: str | None = None
    pid: int | None = None
    # extension: "answer my heartbeats" (an S→W HEARTBEAT, see Heartbeat). Only a
    # worker that asks gets them, so an old one never sees a message it would refuse.
    answer_heartbeats: bool = False

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Identify:
        return cls(
            worker_id=f.req_str(obj, "worker_id"),
            capabilities=f.list_of(obj, "capabilities", f.str_item) or ("*",),
            slots=max(1, f.opt_int(obj, "slots") or 1),
            jobs=f.list_of(obj, "jobs", JobRef.from_json),
            envs=f.list_of(obj, "envs", f.str_item),
            host=f.opt_str(obj, "host"),
            pid=f.opt_int(obj, "pid"),
            answer_heartbeats=f.opt_bool(obj, "answer_heartbeats", False),
        )

    def to_json(self) -> dict[str, Any]:
        return _drop_none(
            {
                "worker_id": self.worker_id,
                "capabilities": list(self.capabilities),
                "slots": self.slots,
                "jobs": [j.to_json() for j in self.jobs],
                "envs": list(self.envs),
                "host": self.host,
                "pid": self.pid,
                "answer_heartbeats": _only_if_true(self.answer_heartbeats),
            }
        )


@attrs.frozen(kw_only=True)
class Dispatch:
    """S→W: run this plugin on this file (the job id is in the header)."""

    OPCODE: ClassVar[OpCode] = OpCode.DISPATCH
    plugin_name: str
    file_path: str
    sinks: tuple[SinkConfig, ...]
    file_version_id: int
    env_hash: str
    source_code: str
    artifact_hash: str
    attempt: int | None = None  # extension: echoed in HEARTBEAT and CONCLUDE
    timeout_s: float | None = None  # extension: the worker enforces it
    memory_limit_mb: int | None = None  # extension: RLIMIT_AS for the guest
    config: Mapping[str, Any] = attrs.field(factory=dict)  # extension: plugin config

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Dispatch:
        return cls(
            plugin_name=f.req_str(obj, "plugin_name"),
            file_path=f.req_str(obj, "file_path"),
            sinks=f.list_of(obj, "sinks", SinkConfig.from_json, required=True),
            file_version_id=f.req_int(obj, "file_version_id"),
            env_hash=f.req_str(obj, "env_hash"),
            source_code=f.req_str(obj, "source_code"),
            artifact_hash=f.req_str(obj, "artifact_hash"),
            attempt=f.opt_int(obj, "attempt"),
            timeout_s=f.opt_float(obj, "timeout_s"),
            memory_limit_mb=f.opt_int(obj, "memory_limit_mb"),
            config=f.opt_dict(obj, "config"),
        )

    def to_json(self) -> dict[str, Any]:
        return _drop_none(
            {
                "plugin_name": self.plugin_name,
                "file_path": self.file_path,
                "sinks": [s.to_json() for s in self.sinks],
                "file_version_id": self.file_version_id,
                "env_hash": self.env_hash,
                "source_code": self.source_code,
                "artifact_hash": self.artifact_hash,
                "attempt": self.attempt,
                "timeout_s": self.timeout_s,
                "memory_limit_mb": self.memory_limit_mb,
                "config": dict(self.config) or None,
            }
        )


@attrs.frozen
class Abort:
    """S→W: stop the job named in the header (v4 carries nothing).

    Extension: ``attempt`` names the attempt to stop, so a worker running a
    newer attempt of the job ignores an ABORT meant for an older one.
    """

    OPCODE: ClassVar[OpCode] = OpCode.ABORT
    attempt: int | None = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Abort:
        return cls(attempt=f.opt_int(obj, "attempt"))

    def to_json(self) -> dict[str, Any]:
        return _drop_none({"attempt": self.attempt})


@attrs.frozen
class Reload:
    """S→W: plugins changed; drop cached plugin state. Carries nothing."""

    OPCODE: ClassVar[OpCode] = OpCode.RELOAD

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Reload:
        return cls()

    def to_json(self) -> dict[str, Any]:
        return {}


@attrs.frozen(kw_only=True)
class Heartbeat:
    """HEARTBEAT, both ways (v4 defines only W→S).

    W→S every interval: liveness, state, and the jobs it holds (dispatch credit).
    A worker that stops on purpose sends one more, with ``stopping`` set, after
    its last receipts and before its socket closes: the Sentinel then forgets it
    at once (STOPPED) instead of declaring it lost a liveness period later. Its
    status stays a v4 one (DRAINING), so an old Sentinel takes it as a heartbeat.

    S→W (extension): the Sentinel answers a worker's IDENTIFY and each of its
    HEARTBEATs with one of its own (``Heartbeat.answer``), so the worker can tell
    a Sentinel that is down from one with nothing to say; with ``stopping`` set it
    acknowledges a goodbye, and the worker may close its socket. ``status`` is
    ANSWER_STATUS, ``worker_id`` names the worker answered. Only a worker whose
    IDENTIFY set ``answer_heartbeats`` gets answers.

    Why a HEARTBEAT back rather than something new: an opcode past 10 fails every
    v4 peer's header check (a protocol error, logged per message); ERR or RELOAD
    already mean something else to an old worker; HEARTBEAT is decoded by both
    sides already, and heartbeats both ways are how the ZeroMQ guide's Paranoid
    Pirate and Majordomo (RFC 7) patterns detect a dead broker.
    """

    OPCODE: ClassVar[OpCode] = OpCode.HEARTBEAT
    status: str = attrs.field(validator=_worker_status)
    current_job_id: int | None = None
    worker_id: str | None = None  # extension
    free_slots: int | None = None  # extension: None means 1 if IDLE else 0
    jobs: tuple[JobRef, ...] = ()  # extension: every job held, with its attempt
    # extension: env hashes built on the worker now (None: not reported); keeps the
    # Sentinel's view right when an env is evicted, so it sends PREPARE_ENV again
    envs: tuple[str, ...] | None = None
    stopping: bool = False  # extension: W→S the last one before a clean stop; S→W its ack

    @classmethod
    def answer(cls, worker_id: str, *, stopping: bool = False) -> Heartbeat:
        """The Sentinel's answer to ``worker_id`` (``stopping``: to its goodbye)."""
        return cls(status=ANSWER_STATUS, worker_id=worker_id, stopping=stopping)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Heartbeat:
        return cls(
            status=f.one_of(f.req_str(obj, "status"), WORKER_STATUSES, "status"),
            current_job_id=f.opt_int(obj, "current_job_id"),
            worker_id=f.opt_str(obj, "worker_id"),
            free_slots=f.opt_int(obj, "free_slots"),
            jobs=f.list_of(obj, "jobs", JobRef.from_json),
            envs=f.list_of(obj, "envs", f.str_item) if obj.get("envs") is not None else None,
            stopping=f.opt_bool(obj, "stopping", False),
        )

    def to_json(self) -> dict[str, Any]:
        return _drop_none(
            {
                "status": self.status,
                "current_job_id": self.current_job_id,
                "worker_id": self.worker_id,
                "free_slots": self.free_slots,
                "jobs": [j.to_json() for j in self.jobs],
                "envs": None if self.envs is None else list(self.envs),
                "stopping": _only_if_true(self.stopping),
            }
        )

    def held_jobs(self) -> tuple[JobRef, ...]:
        """Every job this heartbeat names, old peers (current_job_id only) included."""
        if self.jobs:
            return self.jobs
        if self.current_job_id is not None:
            return (JobRef(self.current_job_id),)
        return ()


@attrs.frozen(kw_only=True)
class Conclude:
    """W→S: the job's receipt. Exactly one per dispatched attempt."""

    OPCODE: ClassVar[OpCode] = OpCode.CONCLUDE
    status: str
    metrics: Mapping[str, Any] = attrs.field(factory=dict)  # rows, bytes, duration_s
    artifacts: tuple[Artifact, ...] = ()
    error_message: str | None = None
    attempt: int | None = None  # extension: the attempt this receipt answers

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Conclude:
        return cls(
            status=f.one_of(f.req_str(obj, "status"), RECEIPT_STATUSES, "status"),
            metrics=f.opt_dict(obj, "metrics"),
            artifacts=f.list_of(obj, "artifacts", Artifact.from_json),
            error_message=f.opt_str(obj, "error_message"),
            attempt=f.opt_int(obj, "attempt"),
        )

    def to_json(self) -> dict[str, Any]:
        return _drop_none(
            {
                "status": self.status,
                "metrics": dict(self.metrics),
                "artifacts": [a.to_json() for a in self.artifacts],
                "error_message": self.error_message,
                "attempt": self.attempt,
            }
        )


@attrs.frozen(kw_only=True)
class Err:
    """Either way: something failed that is not a job receipt (e.g. an env build)."""

    OPCODE: ClassVar[OpCode] = OpCode.ERR
    message: str
    traceback: str | None = None
    env_hash: str | None = None  # extension: which PREPARE_ENV failed
    code: str | None = None  # extension: machine-readable reason, see ERR_* below

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Err:
        return cls(
            message=f.req_str(obj, "message"),
            traceback=f.opt_str(obj, "traceback"),
            env_hash=f.opt_str(obj, "env_hash"),
            code=f.opt_str(obj, "code"),
        )

    def to_json(self) -> dict[str, Any]:
        return _drop_none(
            {
                "message": self.message,
                "traceback": self.traceback,
                "env_hash": self.env_hash,
                "code": self.code,
            }
        )


# Err.code values. UNKNOWN_WORKER asks a worker to IDENTIFY again: the Sentinel
# restarted (or dropped it as silent) and no longer knows its identity.
ERR_UNKNOWN_WORKER = "UNKNOWN_WORKER"
ERR_ENV_BUILD = "ENV_BUILD_FAILED"
ERR_DEPLOY = "DEPLOY_REJECTED"


@attrs.frozen(kw_only=True)
class PrepareEnv:
    """S→W: build (or find) the environment for this lockfile before a DISPATCH."""

    OPCODE: ClassVar[OpCode] = OpCode.PREPARE_ENV
    env_hash: str
    lockfile: str  # uv.lock content
    python_version: str | None = None
    pyproject: str | None = None  # extension: the pyproject.toml the lock belongs to

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PrepareEnv:
        return cls(
            env_hash=f.req_str(obj, "env_hash"),
            lockfile=f.req_str(obj, "lockfile"),
            python_version=f.opt_str(obj, "python_version"),
            pyproject=f.opt_str(obj, "pyproject"),
        )

    def to_json(self) -> dict[str, Any]:
        return _drop_none(
            {
                "env_hash": self.env_hash,
                "lockfile": self.lockfile,
                "python_version": self.python_version,
                "pyproject": self.pyproject,
            }
        )


@attrs.frozen(kw_only=True)
class EnvReady:
    """W→S: the environment exists (cached: it was there already)."""

    OPCODE: ClassVar[OpCode] = OpCode.ENV_READY
    env_hash: str
    interpreter_path: str
    cached: bool = False

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> EnvReady:
        return cls(
            env_hash=f.req_str(obj, "env_hash"),
            interpreter_path=f.req_str(obj, "interpreter_path"),
            cached=f.opt_bool(obj, "cached", False),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "env_hash": self.env_hash,
            "interpreter_path": self.interpreter_path,
            "cached": self.cached,
        }


@attrs.frozen(kw_only=True)
class Deploy:
    """client→S: publish a plugin artifact; answered by CONCLUDE or ERR."""

    OPCODE: ClassVar[OpCode] = OpCode.DEPLOY
    plugin_name: str
    version: str
    source_code: str
    lockfile: str | None = None
    pyproject: str | None = None
    env_hash: str | None = None
    artifact_hash: str | None = None
    manifest: Mapping[str, Any] = attrs.field(factory=dict)  # pattern, topic, priority, timeout

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Deploy:
        return cls(
            plugin_name=f.req_str(obj, "plugin_name"),
            version=f.req_str(obj, "version"),
            source_code=f.req_str(obj, "source_code"),
            lockfile=f.opt_str(obj, "lockfile"),
            pyproject=f.opt_str(obj, "pyproject"),
            env_hash=f.opt_str(obj, "env_hash"),
            artifact_hash=f.opt_str(obj, "artifact_hash"),
            manifest=f.opt_dict(obj, "manifest"),
        )

    def to_json(self) -> dict[str, Any]:
        return _drop_none(
            {
                "plugin_name": self.plugin_name,
                "version": self.version,
                "source_code": self.source_code,
                "lockfile": self.lockfile,
                "pyproject": self.pyproject,
                "env_hash": self.env_hash,
                "artifact_hash": self.artifact_hash,
                "manifest": dict(self.manifest),
            }
        )


Payload = (
    Identify
    | Dispatch
    | Abort
    | Heartbeat
    | Conclude
    | Err
    | Reload
    | PrepareEnv
    | EnvReady
    | Deploy
)

PAYLOAD_TYPES: dict[OpCode, type[Payload]] = {
    cls.OPCODE: cls
    for cls in (
        Identify,
        Dispatch,
        Abort,
        Heartbeat,
        Conclude,
        Err,
        Reload,
        PrepareEnv,
        EnvReady,
        Deploy,
    )
}
