"""``job ID``: every known fact about one job, its error and its attempts; ``logs ID``.

The command reads (``cmd_job``), then formats with pure functions
(``describe_job``: ``now`` is passed in so output is testable). A failed job
shows its one-line error, its traceback's last frame and the tail of the
guest's output (``--full``: the whole traceback); ``failure_text`` reads them
out of the stored traceback. ``logs ID`` prints a job's plugin log: a
completed job's kept tail (``log_tail`` in its result summary), else the output
tail of its last failure.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from typing import Any

from casparian_trio import failure_text
from casparian_trio.cli import _render
from casparian_trio.cli._common import command, json_flag
from casparian_trio.cli._db import session
from casparian_trio.errors import StoreError
from casparian_trio.filenames import shown
from casparian_trio.store import JobRow, JobStatus, queue, reports, topics
from casparian_trio.store.rows import JobView


def add_commands(sub: Any) -> None:
    """``job ID``, ``logs ID``."""
    p = command(sub, "job", cmd_job, "everything known about one job")
    p.add_argument("id", type=int, metavar="ID", help="the job's id (see `jobs`)")
    p.add_argument(
        "--full",
        action="store_true",
        help="a failed job's whole traceback and output tail (default: the last frame, "
        f"the last {failure_text.OUTPUT_TAIL_LINES} lines of output)",
    )
    json_flag(p)
    p = command(
        sub,
        "logs",
        cmd_logs,
        "a job's plugin log: what it printed (stdout and stderr, the last "
        f"{failure_text.LOG_TAIL_BYTES // 1024} KiB), or a failed job's output tail",
    )
    p.add_argument("id", type=int, metavar="ID", help="the job's id (see `jobs`)")


def cmd_logs(args: argparse.Namespace) -> int:
    with session(args) as db:
        view = db.run_sync(partial(reports.job_view, job_id=args.id), readonly=True)
    log = job_log(view.job)
    if log is None:
        raise StoreError(no_log_reason(view.job))
    print(log)
    return 0


def job_log(job: JobRow) -> str | None:
    """The plugin log `logs ID` prints: a completed job's kept tail, else its last failure's."""
    kept = (job.result_summary or {}).get("log_tail")
    if isinstance(kept, str) and kept.strip():
        return kept.rstrip("\n")
    return failure_text.output_tail(job.error_traceback, max_lines=None)


def no_log_reason(job: JobRow) -> str:
    """The one line `logs ID` exits with when there is nothing to print."""
    if job.status == JobStatus.QUEUED and not job.attempt:
        return f"job {job.id} has no log: it has not run yet"
    if job.status == JobStatus.RUNNING:
        return f"job {job.id} has no log yet: it is running (its log is kept when it ends)"
    return f"job {job.id} has no log: its plugin printed nothing ({status_text(job)})"


def failure_doc(job: JobRow) -> dict[str, Any]:
    """The failure fields of ``job ID --json``: the error line, last frame, stderr tail, log."""
    body = job.error_traceback
    return {
        "error": _render.first_line(job.error_message) or None,
        "traceback_last_frame": failure_text.last_frame(body) or None,
        # the guest's one pipe: its stdout and stderr as written
        "stderr_tail": failure_text.output_tail(body),
        "log_tail": job_log(job),
    }


def cmd_job(args: argparse.Namespace) -> int:
    with session(args) as db:
        view = db.run_sync(partial(reports.job_view, job_id=args.id), readonly=True)
        history = db.run_sync(partial(queue.attempts, job_id=args.id), readonly=True)
        manifest = db.run_sync(
            partial(reports.active_manifest, plugin_name=view.job.plugin_name), readonly=True
        )
        outputs = db.run_sync(partial(topics.job_outputs, job_id=args.id), readonly=True)
    written = [topic_output_doc(o) for o in outputs]
    if args.json:
        doc = {
            **view.to_json(),
            **failure_doc(view.job),
            "attempt_history": history,
            "active_manifest": manifest,
            "topics": written,
        }
        print(_render.dumps(doc))
        return 0
    lines = describe_job(view, history, manifest, now=time.time(), full=args.full)
    print("\n".join([*lines, *_render.job_topic_lines(written)]))
    return 0


def topic_output_doc(row: dict[str, Any]) -> dict[str, Any]:
    """One topic of ``job ID``: rows written and quarantined, named as ``topics`` names them."""
    return {"topic": row["topic_name"], **{k: v for k, v in row.items() if k != "topic_name"}}


# --- formatting (pure) -------------------------------------------------------------------


def status_text(job: JobRow) -> str:
    """The status, with RUNNING jobs whose cancel was requested shown as CANCELLING."""
    if job.status == JobStatus.RUNNING and job.cancel_requested:
        return "CANCELLING"
    return str(job.status)


def describe_job(
    view: JobView,
    history: list[dict[str, Any]],
    manifest: dict[str, Any] | None,
    *,
    now: float,
    full: bool = False,
) -> list[str]:
    """The lines of ``job ID``: everything known about one job (``full``: whole traceback)."""
    job = view.job
    lines = [f"job {job.id}  {status_text(job)}"]

    def field(name: str, value: str) -> None:
        lines.append(f"  {name:<10} {value}")

    field("file", _file_text(view))
    field("plugin", _plugin_text(job.plugin_name, manifest))
    field("priority", str(job.priority))
    field(
        "attempts",
        f"{job.attempt} run(s); {job.retry_count} of {job.max_attempts} allowed failures used",
    )
    if job.status == JobStatus.QUEUED and job.not_before and job.not_before > now:
        field(
            "next try", f"{_render.time_text(job.not_before)} ({_render.ago(job.not_before, now)})"
        )
    for name, value in (
        ("created", job.created_at),
        ("started", job.started_at),
        ("updated", job.updated_at),
    ):
        if value is not None:
            field(name, f"{_render.time_text(value)} ({_render.ago(value, now)})")
    if job.end_time:
        field("ended", _render.time_text(job.end_time))
    if job.worker_id or job.worker_host:
        field("worker", _worker_text(job))
    if job.timeout_s:
        field("timeout", f"{job.timeout_s:g} s")
    lines += error_lines(job, full=full)
    lines += _result_lines(job.result_summary, job.id)
    lines += _history_lines(history, now)
    return lines


def _file_text(view: JobView) -> str:
    path = (
        shown(view.file_path)
        if view.file_path
        else f"(file version {view.job.file_version_id}: location unknown)"
    )
    extras = [f"version {view.job.file_version_id}"]
    if view.content_hash:
        extras.append(f"sha256 {view.content_hash[:12]}…")
    if view.size is not None:
        extras.append(_render.human_bytes(view.size))
    return f"{path} ({', '.join(extras)})"


def _plugin_text(name: str, manifest: dict[str, Any] | None) -> str:
    if manifest is None:
        return f"{name} (not published: no ACTIVE manifest)"
    artifact = (manifest["artifact_hash"] or manifest["source_hash"] or "")[:12]
    return f"{name} {manifest['version']} (artifact {artifact}…, env {manifest['env_hash'] or 'system'})"


def _worker_text(job: JobRow) -> str:
    where = ", ".join(
        p for p in (job.worker_host, f"pid {job.worker_pid}" if job.worker_pid else None) if p
    )
    return f"{job.worker_id or '?'}" + (f" ({where})" if where else "")


def error_lines(job: JobRow, *, full: bool = False) -> list[str]:
    """The error line, then the traceback's last frame and the output tail (``full``: all)."""
    if not job.error_message:
        return []
    lines = [f"  {'error':<10} {_render.first_line(job.error_message)}"]
    body = job.error_traceback
    if not body:
        return lines
    if full:
        return [*lines, "  traceback:", *(f"    {line}" for line in body.splitlines())]
    frame = failure_text.last_frame(body)
    if frame:
        lines.append(f"  {'at':<10} {frame[0]}")
        lines += [f"  {'':<10} {line}" for line in frame[1:]]
    tail = failure_text.output_tail(body)
    if tail:
        count = len(tail.splitlines())
        lines.append(f"  stderr tail (stdout and stderr, last {_render.plural(count, 'line')}):")
        lines += [f"    {line}" for line in tail.splitlines()]
    total = len(body.splitlines())
    if total > len(frame) + (len(tail.splitlines()) if tail else 0):
        lines.append(
            f"  traceback  {_render.plural(total, 'line')}: `job {job.id} --full` prints it"
        )
    return lines


def _result_lines(summary: dict[str, Any] | None, job_id: int) -> list[str]:
    if not summary:
        return []
    metrics = summary.get("metrics") or {}
    parts = []
    rows = summary.get("rows", metrics.get("rows"))
    if rows is not None:
        parts.append(f"{rows} rows")
    if isinstance(metrics.get("bytes"), int | float):
        parts.append(_render.human_bytes(metrics["bytes"]))
    duration = metrics.get("duration_s", metrics.get("duration"))
    if isinstance(duration, int | float):
        parts.append(f"in {duration:.2f} s")
    lines = [f"  {'result':<10} {', '.join(parts) or _render.truncate_end(str(summary), 80)}"]
    for artifact in summary.get("artifacts") or []:
        if isinstance(artifact, dict):
            count = f" ({artifact['rows']} rows)" if artifact.get("rows") is not None else ""
            lines.append(f"    {artifact.get('topic')} → {artifact.get('uri')}{count}")
    log = summary.get("log_tail")
    if isinstance(log, str) and log.strip():
        kept = _render.plural(len(log.splitlines()), "line")
        lines.append(f"  {'log':<10} {kept}: `logs {job_id}` prints it")
    return lines


def _history_lines(history: list[dict[str, Any]], now: float) -> list[str]:
    if not history:
        return []
    columns = [
        _render.Column("#", align_right=True, min_width=1),
        _render.Column("worker", shrink="end"),
        _render.Column("started"),
        _render.Column("took", align_right=True),
        _render.Column("outcome"),
        _render.Column("error", shrink="end", min_width=10),
    ]
    rows = []
    for h in history:
        took = (h["ended_at"] or now) - h["started_at"] if h["started_at"] else None
        rows.append(
            [
                str(h["attempt"]),
                h["worker_id"] or "-",
                _render.time_text(h["started_at"]),
                "-" if took is None else _render.short_duration(took),
                h["outcome"] or "running",
                _render.first_line(h["error_message"]),
            ]
        )
    table = _render.table(columns, rows, max_width=_render.TABLE_WIDTH - 4)
    return ["  history:"] + [f"    {line}" for line in table.splitlines()]
