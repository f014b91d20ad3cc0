"""The text of a job's failure and of its plugin's log, and how to read it (pure).

A FAILED receipt's message (``bridge/_failures.py``, ``describe``) is one
actionable head line, then a body: the guest's Python traceback and/or its
output's tail after ``OUTPUT_MARKER``. The store keeps the head as the job's
``error_message`` and the body as its ``error_traceback``; ``job ID`` and
``logs ID`` read the body back with ``last_frame`` and ``output_tail``.

A successful job keeps a bounded tail of its plugin's log (``log_tail``), in
its result summary.
"""

from __future__ import annotations

import re

# The line between a failure's traceback and the guest output's tail.
OUTPUT_MARKER = "--- guest output (tail) ---"
# How much of a successful plugin's log (stdout and stderr) a receipt carries.
LOG_TAIL_BYTES = 8 * 1024
# Lines of output `job ID` shows: enough to see what led up to the failure.
OUTPUT_TAIL_LINES = 20

_FRAME = re.compile(r'^\s*File ".*", line \d+, in ')


def split_message(message: str) -> tuple[str, str | None]:
    """(head line, body or None): an error message cut at its first newline."""
    head, _, body = message.strip().partition("\n")
    return head.strip(), (body.strip() or None)


def traceback_part(body: str | None) -> str:
    """The Python traceback of a failure's body ('' when it has only output)."""
    return (body or "").partition(OUTPUT_MARKER)[0].strip()


def output_tail(body: str | None, max_lines: int | None = OUTPUT_TAIL_LINES) -> str | None:
    """The guest output's tail of a failure's body (last ``max_lines`` lines), or None."""
    _, marker, output = (body or "").partition(OUTPUT_MARKER)
    if not marker or not output.strip():
        return None
    return tail_lines(output.strip("\n"), max_lines)


def last_frame(body: str | None) -> list[str]:
    """The last ``File "...", line N, in f`` line, its source line, and the exception line.

    Looks in the traceback part first, then in the output (a guest that died
    printing a traceback of its own). Empty when neither has a frame.
    """
    for text in (traceback_part(body), (body or "").partition(OUTPUT_MARKER)[2]):
        frame = _last_frame_in(text.splitlines())
        if frame:
            return frame
    return []


def _last_frame_in(lines: list[str]) -> list[str]:
    at = next((i for i in range(len(lines) - 1, -1, -1) if _FRAME.match(lines[i])), None)
    if at is None:
        return []
    frame = [lines[at].strip()]
    indent = len(lines[at]) - len(lines[at].lstrip())
    rest = lines[at + 1 :]
    if rest and len(rest[0]) - len(rest[0].lstrip()) > indent and rest[0].strip():
        frame.append(rest[0].strip())  # the source line Python printed under the frame
    exception = next((line for line in rest if line.strip() and not line[0].isspace()), None)
    if exception is not None:
        frame.append(exception.strip())
    return frame


def tail_lines(text: str, max_lines: int | None) -> str:
    """The last ``max_lines`` lines of ``text`` (all of them for None)."""
    lines = text.rstrip("\n").splitlines()
    return "\n".join(lines if max_lines is None else lines[-max_lines:])


def log_tail(output: str, max_bytes: int = LOG_TAIL_BYTES) -> str | None:
    """A successful plugin's log, its last ``max_bytes`` bytes from a line start (None: empty)."""
    data = output.encode("utf-8")
    if len(data) > max_bytes:
        cut = data[-max_bytes:]
        newline = cut.find(b"\n")
        data = cut[newline + 1 :] if 0 <= newline < len(cut) - 1 else cut
    text = data.decode("utf-8", "replace").strip("\n")
    return text or None
