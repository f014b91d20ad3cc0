"""One frozen class per protocol v4 payload, named after its opcode (as h11's events).

Each class is its attrs fields and nothing else: every field's metadata
(``_wire.wire``) says how it is read from JSON and written to it, and
``to_json``/``from_json`` walk ``attrs.fields`` (``_wire.py``). Built from JSON,
a class validates itself: unknown extra fields are tolerated (newer peers may
add extensions), missing or mistyped required fields raise RemoteProtocolError
naming the field. Built by us, it checks its invariants (status values, sink
modes, slots) on construction and raises LocalProtocolError, as h11's events
do. Extensions of the original protocol (attempt, timeout_s, slots, jobs, ...)
are always optional so an old peer that neither sends nor reads them still
works. Sans-I/O: no trio, zmq or sqlite3.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

import attrs

from casparian_trio.protocol import _fields as f
from casparian_trio.protocol._header import OpCode
from casparian_trio.protocol._wire import (
    as_is,
    at_least,
    choice,
    count_out,
    flag,
    flag_out,
    from_json,
    integer,
    integers,
    integers_or_omit,
    mapping,
    mapping_or_omit,
    mapping_out,
    name,
    named,
    number,
    objects,
    objects_out,
    one_of,
    positive,
    shown_text,
    strings,
    strings_out,
    text,
    to_json,
    wire,
)

WORKER_STATUSES = ("IDLE", "BUSY", "DRAINING")
# The status of a Sentinel's HEARTBEAT (S→W): v4 validators require one of
# WORKER_STATUSES, and the field carries no meaning in that direction.
ANSWER_STATUS = "IDLE"
RECEIPT_STATUSES = ("SUCCESS", "FAILED", "ABORTED")
SINK_MODES = ("append", "replace", "error")


class _Payload:
    """A top-level payload: a JSON object that is the whole message body."""

    OPCODE: ClassVar[OpCode]

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Self:
        return from_json(cls, obj)

    def to_json(self) -> dict[str, Any]:
        return to_json(self)


class _Nested:
    """An object inside a payload (``sinks[1]``): errors name the path to the field."""

    @classmethod
    def from_json(cls, value: Any, where: str) -> Self:
        obj = f.as_object(value, where)
        with f.within(where):
            return from_json(cls, obj)

    def to_json(self) -> dict[str, Any]:
        return to_json(self)


@attrs.frozen
class JobRef(_Nested):
    """A job a worker holds, with the attempt it was dispatched as (None: unknown)."""

    job_id: int = attrs.field(metadata=wire(integer()))
    attempt: int | None = attrs.field(default=None, metadata=wire(integer(required=False)))
    # extension: held ready in a prefetch slot, not started yet (omitted: running)
    held: bool = attrs.field(default=False, metadata=wire(flag(), flag_out))


@attrs.frozen
class SinkConfig(_Nested):
    """Where one topic's rows go: ``parquet://dir`` or ``sqlite://path/table``."""

    topic: str = attrs.field(metadata=wire(text(), as_is))
    uri: str = attrs.field(metadata=wire(text(), as_is))
    mode: str = attrs.field(
        default="append",
        validator=one_of("sink mode", SINK_MODES),
        metadata=wire(choice(SINK_MODES, default="append"), as_is),
    )
    schema_def: str | None = attrs.field(default=None, metadata=wire(text(required=False), as_is))
    # extension: the topic's contract options (evolve, on_invalid, max_invalid_fraction);
    # left off the wire when empty
    options: Mapping[str, Any] = attrs.field(
        factory=dict, metadata=wire(mapping(), mapping_or_omit)
    )


@attrs.frozen
class Artifact(_Nested):
    """One output a job produced (a Parquet file, a SQLite table)."""

    topic: str = attrs.field(metadata=wire(text()))
    uri: str = attrs.field(metadata=wire(text()))
    rows: int | None = attrs.field(default=None, metadata=wire(integer(required=False)))
    # extension: the topic's schema contract after this job ({"version": n, "columns":
    # [{"name", "type"}]}), for the Sentinel to record; left off when empty
    contract: Mapping[str, Any] = attrs.field(
        factory=dict, metadata=wire(mapping(), mapping_or_omit)
    )


@attrs.frozen(kw_only=True)
class Identify(_Payload):
    """W→S on connect: who the worker is, what it can run, what it already holds."""

    OPCODE: ClassVar[OpCode] = OpCode.IDENTIFY
    # 1-200 bytes, as --worker-id: an empty name would register a worker nobody can name
    worker_id: str = attrs.field(validator=named("IDENTIFY worker_id"), metadata=wire(name()))
    capabilities: tuple[str, ...] = attrs.field(
        default=("*",), metadata=wire(strings(when_empty=("*",)), strings_out)
    )
    # extension: how many jobs it runs at once (dispatch credit)
    slots: int = attrs.field(
        default=1, validator=positive("IDENTIFY slots"), metadata=wire(at_least(1))
    )
    # extension: DISPATCHes it holds beyond its slots while its jobs are short (prefetch)
    prefetch: int = attrs.field(
        default=0, validator=attrs.validators.ge(0), metadata=wire(at_least(0), count_out)
    )
    # extension: jobs still running or held (re-adoption after restart)
    jobs: tuple[JobRef, ...] = attrs.field(default=(), metadata=wire(objects(JobRef), objects_out))
    # extension: env hashes already built on this worker
    envs: tuple[str, ...] = attrs.field(default=(), metadata=wire(strings(), strings_out))
    host: str | None = attrs.field(default=None, metadata=wire(shown_text()))
    pid: int | None = attrs.field(default=None, metadata=wire(integer(required=False)))
    # extension: "answer my heartbeats" (an S→W HEARTBEAT, see Heartbeat). Only a
    # worker that asks gets them, so an old one never sees a message it would refuse.
    answer_heartbeats: bool = attrs.field(default=False, metadata=wire(flag(), flag_out))


@attrs.frozen(kw_only=True)
class Dispatch(_Payload):
    """S→W: run this plugin on this file (the job id is in the header)."""

    OPCODE: ClassVar[OpCode] = OpCode.DISPATCH
    plugin_name: str = attrs.field(metadata=wire(text()))
    file_path: str = attrs.field(metadata=wire(text()))
    sinks: tuple[SinkConfig, ...] = attrs.field(
        metadata=wire(objects(SinkConfig, required=True), objects_out)
    )
    file_version_id: int = attrs.field(metadata=wire(integer()))
    env_hash: str = attrs.field(metadata=wire(text()))
    source_code: str = attrs.field(metadata=wire(text()))
    artifact_hash: str = attrs.field(metadata=wire(text()))
    # extension: echoed in HEARTBEAT and CONCLUDE
    attempt: int | None = attrs.field(default=None, metadata=wire(integer(required=False)))
    # extension: the worker enforces it
    timeout_s: float | None = attrs.field(default=None, metadata=wire(number()))
    # extension: RLIMIT_AS for the guest
    memory_limit_mb: int | None = attrs.field(default=None, metadata=wire(integer(required=False)))
    # extension: plugin config (left off the wire when empty)
    config: Mapping[str, Any] = attrs.field(factory=dict, metadata=wire(mapping(), mapping_or_omit))
    # extension: lineage values: the file version's content hash and "plugin version"
    source_hash: str | None = attrs.field(default=None, metadata=wire(text(required=False)))
    parser_version: str | None = attrs.field(default=None, metadata=wire(text(required=False)))
    # extension: the queued version as scanned, for the worker's input check
    # (bridge/_input_check.py): the file's source root (absolute), its size and its
    # mtime in seconds. None (an old Sentinel): the worker checks nothing.
    source_root: str | None = attrs.field(default=None, metadata=wire(text(required=False)))
    file_size: int | None = attrs.field(default=None, metadata=wire(integer(required=False)))
    file_mtime: float | None = attrs.field(default=None, metadata=wire(number()))
    # extension: output identity (README "One current version per source file").
    # ``source_file_id`` is the file's location id: a Parquet topic's output for it is
    # one file named by (topic, source file, plugin), which a newer version's
    # promotion replaces by one rename. ``replaces_jobs`` lists this plugin's jobs
    # for earlier versions of the same file (their SQLite rows and job-named
    # Parquet files are replaced in the same promotion).
    source_file_id: int | None = attrs.field(default=None, metadata=wire(integer(required=False)))
    replaces_jobs: tuple[int, ...] = attrs.field(
        default=(), metadata=wire(integers(), integers_or_omit)
    )
    # extension: a retraction job (the file was deleted): no guest runs; the
    # worker removes the file's output from every topic of the plugin.
    retract: bool = attrs.field(default=False, metadata=wire(flag(), flag_out))
    # extension: also compare the file's sha256 with ``source_hash`` before the
    # guest starts (MANIFEST or topic ``verify: hash``).
    verify_hash: bool = attrs.field(default=False, metadata=wire(flag(), flag_out))
    # extension: MANIFEST ``reuse_guest: false``: a new guest process for every job
    # (on the wire only when set; an old worker ignores it and uses one per job anyway)
    single_use_guest: bool = attrs.field(default=False, metadata=wire(flag(), flag_out))


@attrs.frozen
class Abort(_Payload):
    """S→W: stop the job named in the header (v4 carries nothing).

    Extension: ``attempt`` names the attempt to stop, so a worker running a
    newer attempt of the job ignores an ABORT meant for an older one.
    """

    OPCODE: ClassVar[OpCode] = OpCode.ABORT
    attempt: int | None = attrs.field(default=None, metadata=wire(integer(required=False)))


@attrs.frozen
class Reload(_Payload):
    """S→W: plugins changed; drop cached plugin state. Carries nothing."""

    OPCODE: ClassVar[OpCode] = OpCode.RELOAD


@attrs.frozen(kw_only=True)
class Heartbeat(_Payload):
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
    status: str = attrs.field(
        validator=one_of("HEARTBEAT status", WORKER_STATUSES),
        metadata=wire(choice(WORKER_STATUSES)),
    )
    current_job_id: int | None = attrs.field(default=None, metadata=wire(integer(required=False)))
    worker_id: str | None = attrs.field(default=None, metadata=wire(text(required=False)))  # ext.
    # extension: None means 1 if IDLE else 0
    free_slots: int | None = attrs.field(default=None, metadata=wire(integer(required=False)))
    # extension: every job held, with its attempt
    jobs: tuple[JobRef, ...] = attrs.field(default=(), metadata=wire(objects(JobRef), objects_out))
    # extension: env hashes built on the worker now (None: not reported); keeps the
    # Sentinel's view right when an env is evicted, so it sends PREPARE_ENV again
    envs: tuple[str, ...] | None = attrs.field(
        default=None, metadata=wire(strings(nullable=True), strings_out)
    )
    # extension: W→S the last one before a clean stop; S→W its ack
    stopping: bool = attrs.field(default=False, metadata=wire(flag(), flag_out))
    # extension, S→W: the source roots inputs come from (absolute), so a worker
    # without its own --source-root refuses a DISPATCH of a file outside them
    source_roots: tuple[str, ...] | None = attrs.field(
        default=None, metadata=wire(strings(nullable=True), strings_out)
    )

    @classmethod
    def answer(
        cls,
        worker_id: str,
        *,
        stopping: bool = False,
        source_roots: tuple[str, ...] | None = None,
    ) -> Heartbeat:
        """The Sentinel's answer to ``worker_id`` (``stopping``: to its goodbye)."""
        return cls(
            status=ANSWER_STATUS,
            worker_id=worker_id,
            stopping=stopping,
            source_roots=source_roots,
        )

    def held_jobs(self) -> tuple[JobRef, ...]:
        """Every job this heartbeat names, old peers (current_job_id only) included."""
        if self.jobs:
            return self.jobs
        if self.current_job_id is not None:
            return (JobRef(self.current_job_id),)
        return ()


@attrs.frozen(kw_only=True)
class Conclude(_Payload):
    """W→S: the job's receipt. Exactly one per dispatched attempt."""

    OPCODE: ClassVar[OpCode] = OpCode.CONCLUDE
    status: str = attrs.field(
        validator=one_of("CONCLUDE status", RECEIPT_STATUSES),
        metadata=wire(choice(RECEIPT_STATUSES)),
    )
    # rows, bytes, duration_s
    metrics: Mapping[str, Any] = attrs.field(factory=dict, metadata=wire(mapping(), mapping_out))
    artifacts: tuple[Artifact, ...] = attrs.field(
        default=(), metadata=wire(objects(Artifact), objects_out)
    )
    error_message: str | None = attrs.field(default=None, metadata=wire(text(required=False)))
    # extension: the attempt this receipt answers
    attempt: int | None = attrs.field(default=None, metadata=wire(integer(required=False)))
    # extension: a FAILED receipt whose cause would recur on a retry (the plugin
    # raised, a contract violation, a parse error): the Sentinel fails the job at once
    deterministic: bool = attrs.field(default=False, metadata=wire(flag(), flag_out))
    # extension: a FAILED receipt's traceback and/or guest output tail, apart from its
    # one-line error. error_message still holds the whole text for an old Sentinel; a
    # receipt without it (an old worker) is split at error_message's first newline.
    traceback: str | None = attrs.field(default=None, metadata=wire(text(required=False)))
    # extension: a SUCCESS receipt's tail of the plugin's log (its stdout and stderr,
    # bounded by the worker), kept with the job's result for `logs ID`
    log_tail: str | None = attrs.field(default=None, metadata=wire(text(required=False)))
    # extension: a FAILED receipt for a job the worker did not start because its
    # input is no longer the queued version: "superseded" (changed since the scan)
    # or "gone" (deleted). The Sentinel ends such a job without counting or retrying.
    skip_reason: str | None = attrs.field(default=None, metadata=wire(text(required=False)))


@attrs.frozen(kw_only=True)
class Err(_Payload):
    """Either way: something failed that is not a job receipt (e.g. an env build)."""

    OPCODE: ClassVar[OpCode] = OpCode.ERR
    message: str = attrs.field(metadata=wire(text()))
    traceback: str | None = attrs.field(default=None, metadata=wire(text(required=False)))
    # extension: which PREPARE_ENV failed
    env_hash: str | None = attrs.field(default=None, metadata=wire(text(required=False)))
    # extension: machine-readable reason, see ERR_* below
    code: str | None = attrs.field(default=None, metadata=wire(text(required=False)))


# Err.code values. UNKNOWN_WORKER asks a worker to IDENTIFY again: the Sentinel
# restarted (or dropped it as silent) and no longer knows its identity.
ERR_UNKNOWN_WORKER = "UNKNOWN_WORKER"
ERR_ENV_BUILD = "ENV_BUILD_FAILED"
ERR_DEPLOY = "DEPLOY_REJECTED"


@attrs.frozen(kw_only=True)
class PrepareEnv(_Payload):
    """S→W: build (or find) the environment for this lockfile before a DISPATCH."""

    OPCODE: ClassVar[OpCode] = OpCode.PREPARE_ENV
    env_hash: str = attrs.field(metadata=wire(text()))
    lockfile: str = attrs.field(metadata=wire(text()))  # uv.lock content
    python_version: str | None = attrs.field(default=None, metadata=wire(text(required=False)))
    # extension: the pyproject.toml the lock belongs to
    pyproject: str | None = attrs.field(default=None, metadata=wire(text(required=False)))


@attrs.frozen(kw_only=True)
class EnvReady(_Payload):
    """W→S: the environment exists (cached: it was there already)."""

    OPCODE: ClassVar[OpCode] = OpCode.ENV_READY
    env_hash: str = attrs.field(metadata=wire(text()))
    interpreter_path: str = attrs.field(metadata=wire(text()))
    cached: bool = attrs.field(default=False, metadata=wire(flag(), as_is))


@attrs.frozen(kw_only=True)
class Deploy(_Payload):
    """client→S: publish a plugin artifact; answered by CONCLUDE or ERR."""

    OPCODE: ClassVar[OpCode] = OpCode.DEPLOY
    plugin_name: str = attrs.field(metadata=wire(text()))
    version: str = attrs.field(metadata=wire(text()))
    source_code: str = attrs.field(metadata=wire(text()))
    lockfile: str | None = attrs.field(default=None, metadata=wire(text(required=False)))
    pyproject: str | None = attrs.field(default=None, metadata=wire(text(required=False)))
    env_hash: str | None = attrs.field(default=None, metadata=wire(text(required=False)))
    artifact_hash: str | None = attrs.field(default=None, metadata=wire(text(required=False)))
    # pattern, topic, priority, timeout
    manifest: Mapping[str, Any] = attrs.field(factory=dict, metadata=wire(mapping(), mapping_out))
    # extension: a new version does not queue the files it matches again
    # (``publish --no-reprocess``); off the wire when unset
    no_reprocess: bool = attrs.field(default=False, metadata=wire(flag(), flag_out))


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
