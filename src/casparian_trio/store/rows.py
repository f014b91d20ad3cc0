"""Values the store hands out: job rows, environment specs, dispatch plans.

Pure: no SQL runs here. ``from_row`` accepts a ``sqlite3.Row`` (or any mapping)
and decodes the JSON columns leniently, since a seed database may hold text
written by the original system.
"""

from __future__ import annotations

import enum
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import attrs

from casparian_trio.filenames import from_db, shown
from casparian_trio.protocol.messages import Dispatch

logger = logging.getLogger(__name__)

# 2**BACKOFF_MAX_EXPONENT already exceeds any sensible cap; keeps floats finite.
BACKOFF_MAX_EXPONENT = 62


class JobStatus(enum.StrEnum):
    """Job states: QUEUED → RUNNING → COMPLETED | FAILED | CANCELLED (retry: → QUEUED).

    SUPERSEDED and SKIPPED end a job whose input is no longer the queued version
    (changed since the scan, or gone), uncounted and never retried.
    """

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    SUPERSEDED = "SUPERSEDED"
    SKIPPED = "SKIPPED"


TERMINAL_STATUSES = frozenset(
    {
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.SUPERSEDED,
        JobStatus.SKIPPED,
    }
)


class Outcome(enum.StrEnum):
    """How one attempt (one claim) ended, as recorded in cf_job_attempt."""

    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    WORKER_LOST = "WORKER_LOST"
    ABORTED = "ABORTED"
    HANDED_BACK = "HANDED_BACK"
    CANCELLED = "CANCELLED"
    SUPERSEDED = "SUPERSEDED"
    SKIPPED = "SKIPPED"


def backoff_delay(failures: int, *, base_s: float = 2.0, cap_s: float = 300.0) -> float:
    """Seconds to wait before the next try after ``failures`` counted failures.

    ``base_s * 2**(failures-1)`` capped at ``cap_s``: 2, 4, 8, ... ; 0 for no failure.
    """
    if failures <= 0:
        return 0.0
    exponent = min(failures - 1, BACKOFF_MAX_EXPONENT)
    return float(min(cap_s, base_s * 2**exponent))


def decode_json(raw: str | None, *, column: str) -> dict[str, Any] | None:
    """Decode a JSON object column; non-JSON legacy text is kept as {"text": raw}."""
    if raw is None or raw == "":
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        logger.warning("column %s holds non-JSON text; keeping it as text", column)
        return {"text": raw}
    return value if isinstance(value, dict) else {"value": value}


def _status(raw: str) -> str:
    try:
        return JobStatus(raw)
    except ValueError:
        return raw  # unknown legacy status: shown as is, never claimed


@attrs.frozen(kw_only=True)
class JobRow:
    """One row of cf_processing_queue."""

    id: int
    file_version_id: int
    plugin_name: str
    status: str  # a JobStatus when recognised
    priority: int
    attempt: int
    retry_count: int
    max_attempts: int
    worker_id: str | None
    worker_host: str | None
    worker_pid: int | None
    cancel_requested: bool
    timeout_s: float | None
    not_before: float | None
    error_message: str | None
    error_traceback: str | None
    result_summary: dict[str, Any] | None
    config_overrides: dict[str, Any] | None
    created_at: float | None
    started_at: float | None
    updated_at: float | None
    claim_time: str | None
    end_time: str | None
    # 'parse' (run the plugin) or 'retract' (remove a deleted file's output)
    kind: str = "parse"

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> JobRow:
        return cls(
            id=row["id"],
            file_version_id=row["file_version_id"],
            plugin_name=row["plugin_name"],
            status=_status(row["status"]),
            priority=row["priority"] or 0,
            attempt=row["attempt"],
            retry_count=row["retry_count"] or 0,
            max_attempts=row["max_attempts"],
            worker_id=row["worker_id"],
            worker_host=row["worker_host"],
            worker_pid=row["worker_pid"],
            cancel_requested=bool(row["cancel_requested"]),
            timeout_s=row["timeout_s"],
            not_before=row["not_before"],
            error_message=row["error_message"],
            error_traceback=row["error_traceback"],
            result_summary=decode_json(row["result_summary"], column="result_summary"),
            config_overrides=decode_json(row["config_overrides"], column="config_overrides"),
            created_at=row["created_at"],
            started_at=row["started_at"],
            updated_at=row["updated_at"],
            claim_time=row["claim_time"],
            end_time=row["end_time"],
            kind=_kind(row),
        )


def _kind(row: Mapping[str, Any]) -> str:
    try:
        return str(row["kind"] or JOB_PARSE)
    except (IndexError, KeyError):  # a row from before migration 006
        return JOB_PARSE


JOB_PARSE = "parse"
JOB_RETRACT = "retract"


@attrs.frozen(kw_only=True)
class EnvSpec:
    """A plugin environment: env_hash = SHA-256 of the lockfile (uv.lock content)."""

    env_hash: str
    lockfile: str
    pyproject: str | None = None
    python_version: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EnvSpec:
        return cls(
            env_hash=row["env_hash"],
            lockfile=row["lockfile"],
            pyproject=row["pyproject"],
            python_version=row["python_version"],
        )


@attrs.frozen
class TopicSink:
    """Where one of a plugin's topics goes: a sink URI, a write mode, an optional schema."""

    topic: str
    uri: str
    mode: str = "append"
    schema_json: str | None = None


@attrs.frozen(kw_only=True)
class PluginRelease:
    """Everything one DEPLOY records, checked and hashed: written in one transaction.

    Attributes:
        env: the uv environment to record first; None for the 'system' env.
        topics: the sinks of the plugin's topics (upserted).
        pattern: the routing rule's glob; None adds no rule.
    """

    plugin_name: str
    version: str
    source_code: str
    source_hash: str
    env_hash: str
    artifact_hash: str
    manifest: dict[str, Any]
    env: EnvSpec | None = None
    topics: tuple[TopicSink, ...] = ()
    pattern: str | None = None
    priority: int = 0
    # A new version queues the current version of every file the plugin's rules
    # match (or that it parsed before) again; False: ``publish --no-reprocess``.
    reprocess: bool = True


@attrs.frozen(kw_only=True)
class DispatchPlan:
    """A claimed job resolved into what to send: the Dispatch and the env to prepare.

    Attributes:
        job: the job as claimed (RUNNING, with its attempt).
        dispatch: ready to send; ``dispatch.attempt == job.attempt``.
        env: the environment to PREPARE_ENV first; None for 'system' or unknown envs.
    """

    job: JobRow
    dispatch: Dispatch
    env: EnvSpec | None
    # MANIFEST ``retries``: how many times a failure the worker calls deterministic
    # is retried (still within the job's max_attempts); None: it fails at once.
    retries: int | None = None


@attrs.frozen(kw_only=True)
class SentinelRecord:
    """The row of cf_sentinel: the Sentinel that last started on this database.

    Attributes:
        pid, host, bind: which process, where, on which address.
        started_at, last_seen_at, stopped_at: unix times; stopped_at is set on a clean exit.
        heartbeat_interval_s: how often it refreshes last_seen_at.
        liveness_s: silence after which it counts as down (its own liveness timeout).
    """

    pid: int
    host: str | None
    bind: str
    started_at: float
    last_seen_at: float
    stopped_at: float | None = None
    heartbeat_interval_s: float
    liveness_s: float

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SentinelRecord:
        return cls(**{field.name: row[field.name] for field in attrs.fields(cls)})

    def is_running(self, now: float) -> bool:
        """Not stopped, and seen within its liveness timeout (a killed one stops being seen)."""
        return self.stopped_at is None and now - self.last_seen_at <= self.liveness_s


@attrs.frozen
class JobView:
    """A job row with the file it is about (what the command line shows of a job)."""

    job: JobRow
    rel_path: str | None
    root_path: str | None
    content_hash: str | None = None
    size: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> JobView:
        return cls(
            job=JobRow.from_row(row),
            rel_path=None if row["file_rel_path"] is None else from_db(row["file_rel_path"]),
            root_path=row["file_root_path"],
            content_hash=row["file_content_hash"],
            size=row["file_size"],
        )

    @property
    def file_path(self) -> str | None:
        if self.rel_path is None or self.root_path is None:
            return None
        return os.path.join(self.root_path, self.rel_path)

    def to_json(self) -> dict[str, Any]:
        doc = attrs.asdict(self.job)
        path = self.file_path
        doc.update(
            file_rel_path=None if self.rel_path is None else shown(self.rel_path),
            file_path=None if path is None else shown(path),
            file_content_hash=self.content_hash,
            file_size=self.size,
        )
        return doc
