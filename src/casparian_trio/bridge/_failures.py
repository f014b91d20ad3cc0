"""Turn whatever ended a job badly into one receipt error message (pure).

Format: one actionable line, then the traceback and/or the tail of the guest's
output (after ``failure_text.OUTPUT_MARKER``). The message is bounded
(MAX_MESSAGE_CHARS), keeping the end, where the interesting part of a
traceback is. ``describe_parts`` gives the head line and the body apart: the
receipt carries the body as its ``traceback`` too (``bridge/host.py``).
"""

from __future__ import annotations

import signal

from casparian_trio.bridge._framing import InvalidFrame
from casparian_trio.bridge._stream import GuestReportedError
from casparian_trio.errors import CasparianError, GuestCrashed, SinkError
from casparian_trio.failure_text import OUTPUT_MARKER

# Receipts travel in a JSON payload and end up in the queue table.
MAX_MESSAGE_CHARS = 8000
# Signs, in a dead guest's output, that it died allocating memory.
_OOM_SIGNS = ("MemoryError", "bad_alloc", "Cannot allocate memory", "out of memory")


def describe(
    exc: CasparianError, *, plugin: str, output_tail: str, memory_limit_mb: int | None
) -> str:
    """The receipt's error_message for ``exc``: the head line, then the body."""
    head, body = describe_parts(
        exc, plugin=plugin, output_tail=output_tail, memory_limit_mb=memory_limit_mb
    )
    return join(head, body)


def join(head: str, body: str) -> str:
    """One error message of a head line and a body (bounded)."""
    return _bound(f"{head}\n{body}".strip())


def describe_parts(
    exc: CasparianError, *, plugin: str, output_tail: str, memory_limit_mb: int | None
) -> tuple[str, str]:
    """(one head line, the body: traceback and/or output tail, bounded; '' for none)."""
    tail = output_tail.strip()
    if isinstance(exc, GuestReportedError):
        head = _reported_head(exc, plugin, memory_limit_mb)
        body = exc.traceback.strip()
        if tail and tail not in body:
            body = f"{body}\n{OUTPUT_MARKER}\n{tail}"
    elif isinstance(exc, GuestCrashed):
        head = f"guest {status_text(exc.returncode)} before sending its end frame"
        if memory_limit_mb and looks_oom(exc.returncode, exc.stderr_tail):
            head = f"memory limit exceeded ({memory_limit_mb} MB): {head}"
        body = f"{OUTPUT_MARKER}\n{exc.stderr_tail.strip()}" if exc.stderr_tail.strip() else ""
    else:
        head = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        body = f"{OUTPUT_MARKER}\n{tail}" if tail else ""
    head = head.partition("\n")[0]  # a multi-line exception message: the rest is in body
    return head, _bound_body(body.strip())


def _reported_head(exc: GuestReportedError, plugin: str, memory_limit_mb: int | None) -> str:
    if exc.kind == "memory" and memory_limit_mb:
        return (
            f"memory limit exceeded ({memory_limit_mb} MB): plugin {plugin!r} raised {exc.message}"
        )
    if exc.kind == "load":
        return f"plugin {plugin!r} failed to load: {exc.message}"
    if exc.kind == "topic":
        return f"plugin {plugin!r}: {exc.message}"
    return f"plugin {plugin!r} raised {exc.message}"


def is_deterministic(exc: CasparianError) -> bool:
    """Would a retry of the same file with the same plugin fail the same way?

    Yes for what the plugin and the data decide: the plugin raised or failed to
    load, exited with a status of its own, sent bad frames, or the data broke the
    topic's contract (a SinkError not caused by the machine). No for what the
    machine decides: a signal (the OOM killer, an operator), I/O errors (a full
    disk), a missing environment; those are retried with backoff.
    """
    if isinstance(exc, GuestReportedError):
        return exc.kind != "memory"
    if isinstance(exc, GuestCrashed):
        return exc.returncode is not None and exc.returncode > 0
    if isinstance(exc, InvalidFrame):
        return True
    if isinstance(exc, SinkError):
        return not isinstance(exc.__cause__, OSError)
    return False


def status_text(returncode: int | None) -> str:
    if returncode is None:
        return "did not exit"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"was killed by signal {name}"
    return f"exited with status {returncode}"


def looks_oom(returncode: int | None, tail: str) -> bool:
    if returncode in (-signal.SIGABRT, -signal.SIGSEGV, -signal.SIGKILL):
        return True
    return any(sign in tail for sign in _OOM_SIGNS)


def _bound_body(body: str) -> str:
    """``body`` within MAX_MESSAGE_CHARS, the end of each part kept: both the
    traceback's last frame and the output's last lines survive a long output."""
    if len(body) <= MAX_MESSAGE_CHARS:
        return body
    trace, marker, output = body.partition(OUTPUT_MARKER)
    room = MAX_MESSAGE_CHARS - len(marker) - 10
    if not marker:
        return _keep_end(trace, room)
    kept = _keep_end(output, max(room - len(trace), room // 2) if trace.strip() else room)
    return f"{_keep_end(trace, room - len(kept))}{marker}{kept}".strip()


def _keep_end(text: str, room: int) -> str:
    return text if len(text) <= room else f"...\n{text[-max(room - 4, 0) :]}"


def _bound(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    head, _, rest = message.partition("\n")
    return f"{head}\n...\n{rest[-(MAX_MESSAGE_CHARS - len(head) - 5) :]}"
