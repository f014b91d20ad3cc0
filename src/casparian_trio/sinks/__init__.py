"""Sinks: where a job's topics go (Parquet datasets, SQLite tables).

Role: turn a Dispatch's SinkConfigs into Sink objects that stage a job's output
and promote it atomically on success (see ``parquet.py`` / ``sqlite.py`` for
each format's staging and mode semantics, ``_uri.py`` for URI rules and
``_schema.py`` for schema_def enforcement and lineage columns).

Invariants: sink methods block (file and database I/O, Parquet encoding), so
the bridge calls them from a worker thread, one call at a time per sink.
Nothing a sink writes is visible to readers before commit(); abort() removes
everything staged and never raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from casparian_trio.errors import CasparianError, SinkError, one_line
from casparian_trio.protocol.messages import Artifact, SinkConfig
from casparian_trio.sinks._contract import EVOLVE_MODES
from casparian_trio.sinks._schema import (
    DEFAULT_MAX_INVALID_FRACTION,
    LINEAGE,
    ON_INVALID,
    Conformer,
    parse_schema_def,
)
from casparian_trio.sinks._uri import SinkTarget, parse_sink_uri
from casparian_trio.sinks.parquet import ParquetSink
from casparian_trio.sinks.sqlite import SqliteSink

__all__ = [
    "LINEAGE",
    "ParquetSink",
    "Sink",
    "SinkTarget",
    "SqliteSink",
    "open_sinks",
    "parse_sink_uri",
]


class Sink(Protocol):
    """One topic of one job. All methods block; call them from a thread."""

    topic: str
    rows: int
    # Rows of this job that went to ``<topic>_quarantine``, and that topic's artifact.
    rows_quarantined: int
    bytes_written: int
    quarantine_artifact: Artifact | None
    # The file version this job parsed, and the plugin's jobs for earlier versions
    # of the same source file (whose output this job's promotion replaces).
    file_version_id: int
    replaces_jobs: tuple[int, ...]

    @property
    def location(self) -> str:
        """Where the output goes (a directory, a table in a file), for error messages."""

    def prepare(self) -> None:
        """Before the guest starts (blocking): the mode check, the topic's contract."""

    def check(self) -> None:
        """Raise SinkError if the sink's mode forbids this job writing (before it runs)."""

    def write(self, batch: pa.RecordBatch) -> None:
        """Conform ``batch`` to the topic schema, add lineage, stage it."""

    def commit(self) -> Artifact | None:
        """Promote the staged output; None when the topic produced nothing."""

    def retract(self) -> int:
        """Remove this source file's output of the topic (and its quarantine): files or rows."""

    def abort(self) -> None:
        """Delete whatever was staged. Idempotent; never raises."""


@contextlib.contextmanager
def sink_errors(sink: Sink, action: str) -> Iterator[None]:
    """Make whatever a sink call raises a ``SinkError`` naming the topic and its location.

    Sinks map the errors they expect; this catches the rest (an ``sqlite3``
    error while creating a staging table, a full disk, a bad cast), so a
    receipt always says which topic, which table or directory, and why.

    Raises:
        SinkError: in place of any other ``Exception`` raised inside.
    """
    try:
        yield
    except CasparianError:
        raise
    except Exception as exc:
        raise SinkError(
            f"topic {sink.topic!r} ({sink.location}): {action} failed: {one_line(exc)}"
        ) from exc


def open_sinks(
    configs: Iterable[SinkConfig],
    *,
    output_root: Path,
    job_id: int,
    file_version_id: int,
    source_hash: str | None = None,
    parser_version: str | None = None,
    source_file_id: int | None = None,
    plugin: str = "",
    replaces_jobs: tuple[int, ...] = (),
) -> dict[str, Sink]:
    """Validate every sink of a job and build its Sink objects (no I/O yet).

    ``source_hash`` and ``parser_version`` fill the lineage columns of the
    same names. ``source_file_id``, ``plugin`` and ``replaces_jobs`` give the
    output its identity (topic, source file): see ``parquet.py`` and
    ``sqlite.py`` for how a promotion replaces the file's earlier output. Each config's ``options`` set the topic's contract policy:
    ``evolve`` (none | add_columns), ``on_invalid`` (quarantine | fail),
    ``max_invalid_fraction`` (0 to 1, default 0.1).

    Raises:
        SinkError: a bad URI, a bad schema_def or option, or a topic listed twice.
    """
    sinks: dict[str, Sink] = {}
    for cfg in configs:
        if cfg.topic in sinks:
            raise SinkError(f"topic {cfg.topic!r} has more than one sink")
        target = parse_sink_uri(cfg.uri, output_root, cfg.topic)
        evolve, on_invalid, fraction = _options(cfg)
        conformer = Conformer(
            topic=cfg.topic,
            job_id=job_id,
            file_version_id=file_version_id,
            declared=parse_schema_def(cfg.schema_def, cfg.topic),
            on_invalid=on_invalid,
            max_invalid_fraction=fraction,
            source_hash=source_hash,
            parser_version=parser_version,
        )
        sink = _build(cfg, target, job_id, conformer)
        if isinstance(sink, ParquetSink):
            sink.evolve = evolve
            sink.source_file_id = source_file_id
            sink.plugin = plugin
        sink.file_version_id = file_version_id
        sink.replaces_jobs = tuple(replaces_jobs)
        sinks[cfg.topic] = sink
    return sinks


def _options(cfg: SinkConfig) -> tuple[str, str, float]:
    options = dict(cfg.options)
    evolve = str(options.get("evolve", "none"))
    on_invalid = str(options.get("on_invalid", "quarantine"))
    fraction = options.get("max_invalid_fraction", DEFAULT_MAX_INVALID_FRACTION)
    if evolve not in EVOLVE_MODES:
        raise SinkError(f"topic {cfg.topic!r}: evolve {evolve!r} must be one of {EVOLVE_MODES}")
    if on_invalid not in ON_INVALID:
        raise SinkError(
            f"topic {cfg.topic!r}: on_invalid {on_invalid!r} must be one of {ON_INVALID}"
        )
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, int | float)
        or not 0 <= fraction <= 1
    ):
        raise SinkError(f"topic {cfg.topic!r}: max_invalid_fraction {fraction!r} must be 0 to 1")
    return evolve, on_invalid, float(fraction)


def _build(cfg: SinkConfig, target: SinkTarget, job_id: int, conformer: Conformer) -> Sink:
    if target.scheme == "parquet":
        return ParquetSink(cfg.topic, target.path, job_id, cfg.mode, conformer)
    assert target.table is not None
    return SqliteSink(cfg.topic, target.path, target.table, job_id, cfg.mode, conformer)
