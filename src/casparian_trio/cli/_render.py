"""Terminal output for the operator commands: tables, times, ages, sizes, a progress line.

Pure formatting with no dependencies: every function returns a string, except
``Progress``, which writes ``\\r`` updates to a stream only when it is a TTY (so
pipes and logs get only the final summary line the caller prints).

Times have one convention, in text and in ``--json`` alike: ISO 8601 in UTC
with a ``Z`` (``2026-03-01T14:03:07Z``), made by ``iso_time`` only. The store
keeps unix floats and SQLite's zone-less UTC TEXT; both become this form here.
``dumps`` converts every time field of a document on the way out (``TIME_KEYS``
and any key ending in ``_at``), so no JSON shows an epoch float beside a string.
Durations stay numbers of seconds, their keys ending in ``_s``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import attrs

# The width the brief fixes for tables: readable on a laptop's split terminal.
TABLE_WIDTH = 100
# Two spaces between columns: wide enough to separate, narrow enough to fit.
GAP = "  "
ELLIPSIS = "…"
# Redraw the progress line at most 10 times a second: smooth, yet cheap on slow terminals.
PROGRESS_INTERVAL = 0.1
PROGRESS_BAR_WIDTH = 24
# Time fields whose names do not end in "_at" (the worker table's and the queue's
# older columns); ``dumps`` writes each as ``iso_time`` does.
TIME_KEYS = frozenset(
    {"first_seen", "last_seen", "status_since", "not_before", "claim_time", "end_time"}
)


def plural(count: int, word: str) -> str:
    """'1 file', '3 files'."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def truncate_end(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, ending with an ellipsis when cut."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    return text[: width - 1] + ELLIPSIS


def truncate_middle(text: str, width: int) -> str:
    """``text`` cut in the middle (keeps a path's start and its file name)."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    tail = (width - 1) // 2 + (width - 1) % 2
    head = width - 1 - tail
    return text[:head] + ELLIPSIS + text[len(text) - tail :]


def truncate_path(path: str, width: int) -> str:
    """A path cut in the middle that keeps its whole file name when that fits."""
    if len(path) <= width:
        return path
    name = path.rsplit("/", 1)[-1]
    head = width - 1 - len(name) - 1  # the ellipsis and the '/' before the name
    if head < 1:  # the name alone is too long: keep its end (the extension)
        return ELLIPSIS + path[len(path) - width + 1 :] if width > 1 else path[:width]
    return f"{path[:head]}{ELLIPSIS}/{name}"


def first_line(text: str | None) -> str:
    """The first non-blank line of an error message ('' for None)."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def ago(then: float | None, now: float) -> str:
    """'3s ago', '5m ago', '2h ago', '4d ago' (or 'in 3s' for the future, '-' for None)."""
    if then is None:
        return "-"
    delta = now - then
    text = short_duration(abs(delta))
    return f"{text} ago" if delta >= 0 else f"in {text}"


def short_duration(seconds: float) -> str:
    """A compact duration: '0.4s', '12s', '5m', '2h', '4d'."""
    if seconds < 10:
        return f"{seconds:.1f}s" if seconds < 1 else f"{seconds:.0f}s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.0f}s"


def human_bytes(count: float) -> str:
    """'512 B', '1.5 KiB', '12.0 MiB', ..."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def iso_time(value: float | str | None, *, precise: bool = False) -> str | None:
    """A time as ISO 8601 in UTC with ``Z``: '2026-03-01T14:03:07Z' (None stays None).

    Args:
        value: a unix time, or SQLite's UTC TEXT ('2026-03-01 14:03:07', as
            CURRENT_TIMESTAMP writes it) or an ISO string with a zone.
        precise: milliseconds too ('…07.250Z'), for JSON that scripts compare.
    """
    if value is None:
        return None
    if isinstance(value, str):
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:  # the store writes UTC without saying so
            moment = moment.replace(tzinfo=UTC)
    else:
        moment = datetime.fromtimestamp(value, tz=UTC)
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds" if precise else "seconds")
    return text.removesuffix("+00:00") + "Z"


def time_text(value: float | str | None) -> str:
    """``iso_time`` for a table cell: '-' for None."""
    return iso_time(value) or "-"


def json_times(document: Any) -> Any:
    """``document`` with every time field (``TIME_KEYS``, ``*_at``) as a precise ``iso_time``."""
    if isinstance(document, dict):
        return {
            key: iso_time(value, precise=True)
            if _is_time_key(key)
            and isinstance(value, int | float | str)
            and not isinstance(value, bool)
            else json_times(value)
            for key, value in document.items()
        }
    if isinstance(document, list | tuple):
        return [json_times(item) for item in document]
    return document


def _is_time_key(key: object) -> bool:
    return isinstance(key, str) and (key in TIME_KEYS or key.endswith("_at"))


@attrs.frozen
class Column:
    """One table column; ``shrink`` ('middle', 'end' or 'path') lets it be cut to fit."""

    header: str
    shrink: str | None = None
    min_width: int = 8
    align_right: bool = False


def _fit(widths: list[int], columns: Sequence[Column], max_width: int) -> list[int]:
    """Shrink the cuttable columns, widest first, until the table fits ``max_width``."""
    widths = list(widths)
    excess = sum(widths) + len(GAP) * (len(widths) - 1) - max_width
    while excess > 0:
        candidates = [
            i for i, c in enumerate(columns) if c.shrink and widths[i] > max(c.min_width, 1)
        ]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1
    return widths


def _cell(text: str, width: int, column: Column) -> str:
    cut = {"middle": truncate_middle, "path": truncate_path}.get(column.shrink or "", truncate_end)
    text = cut(text, width)
    return text.rjust(width) if column.align_right else text.ljust(width)


def table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], *, max_width: int = TABLE_WIDTH
) -> str:
    """Render rows (already strings) as an aligned table at most ``max_width`` wide.

    Control characters in a cell (a file name with a newline or an escape
    sequence) are shown escaped (``printable``): one row stays one line.
    """
    rows = [[printable(text) for text in row] for row in rows]
    natural = [max([len(c.header)] + [len(row[i]) for row in rows]) for i, c in enumerate(columns)]
    widths = _fit(natural, columns, max_width)
    lines = [GAP.join(_cell(c.header, w, c) for c, w in zip(columns, widths, strict=True))]
    for row in rows:
        cells = (_cell(text, w, c) for text, w, c in zip(row, widths, columns, strict=True))
        lines.append(GAP.join(cells))
    return "\n".join(line.rstrip() for line in lines)


# Control characters as the escapes Python's repr uses ("\n", "\x1b").
_CONTROL = {c: repr(chr(c))[1:-1] for c in (*range(0x20), *range(0x7F, 0xA0))}


def printable(text: str) -> str:
    """``text`` with control characters (C0, DEL, C1) escaped: safe on one terminal line."""
    return text.translate(_CONTROL)


def dumps(document: Any) -> str:
    """The one JSON document a ``--json`` command prints (stable key order, ISO times)."""
    return json.dumps(json_times(document), indent=2, sort_keys=True, default=str)


@attrs.define(eq=False)
class Progress:
    """A one-line progress bar on a TTY (``\\r`` updates); silent otherwise.

    Attributes:
        label: what is being done ('scanning /data').
        total: the number of steps, when known.
        stream: where to draw (stderr by default).
    """

    label: str
    total: int | None = None
    stream: TextIO = attrs.field(factory=lambda: sys.stderr)
    enabled: bool = attrs.field(default=None)
    _last_draw: float = 0.0
    _drawn: bool = False

    def __attrs_post_init__(self) -> None:
        if self.enabled is None:
            self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, done: int, detail: str = "", *, force: bool = False) -> None:
        """Redraw (throttled) with ``done`` steps finished."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < PROGRESS_INTERVAL:
            return
        self._last_draw = now
        self.stream.write("\r" + truncate_end(self.line(done, detail), TABLE_WIDTH - 1) + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def line(self, done: int, detail: str = "") -> str:
        if self.total:
            filled = PROGRESS_BAR_WIDTH * min(done, self.total) // self.total
            bar = "█" * filled + "░" * (PROGRESS_BAR_WIDTH - filled)
            text = f"{self.label} {bar} {done}/{self.total}"
        else:
            text = f"{self.label} {done}"
        return f"{text} {printable(detail)}".rstrip()

    def close(self) -> None:
        """Erase the progress line so the summary starts on a clean line."""
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


# --- topics ---------------------------------------------------------------------------

TOPIC_COLUMNS = (
    Column("topic", shrink="end", min_width=10),
    Column("sink", shrink="path", min_width=16),
    Column("contract", align_right=True),
    Column("rows", align_right=True),
    Column("files", align_right=True, min_width=5),
    Column("quarantined", align_right=True),
)


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def topics_table(topics: Sequence[dict[str, Any]]) -> str:
    """``topics``: one line per (topic, sink); 'v2' for the contract, '-' for none yet."""
    rows = [
        [
            t["topic"],
            t["sink_uri"],
            "-" if t["contract_version"] is None else f"v{t['contract_version']}",
            _count(t["rows"]),
            _count(t["files"]),
            _count(t["rows_quarantined"]),
        ]
        for t in topics
    ]
    return table(TOPIC_COLUMNS, rows)


def contract_changes(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]]) -> str:
    """What a contract version changed: '+note: string; val: int32 -> int64'."""
    old = {c["name"]: c["type"] for c in before}
    parts = []
    for column in after:
        name, kind = column["name"], column["type"]
        if name not in old:
            parts.append(f"+{name}: {kind}")
        elif old[name] != kind:
            parts.append(f"{name}: {old[name]} -> {kind}")
    return "; ".join(parts) or "-"


def topic_lines(sink: dict[str, Any]) -> list[str]:
    """``topic NAME`` for one sink: counts, the contract's columns, the version history."""
    lines = [
        f"{sink['topic']} at {sink['sink_uri']}",
        f"  {_count(sink['rows'])} rows in {plural(sink['files'] or 0, 'file')} from "
        f"{plural(sink['jobs'] or 0, 'job')}; {_count(sink['rows_quarantined'])} quarantined",
    ]
    contract = sink["contract"]
    if contract is None:
        return [*lines, "  contract: none recorded yet (no job has committed)"]
    lines.append(f"  contract v{contract['version']}:")
    columns = [Column("column", shrink="end", min_width=10), Column("type", shrink="end")]
    cells = [[c["name"], c["type"]] for c in contract["columns"]]
    lines += [
        f"    {line}" for line in table(columns, cells, max_width=TABLE_WIDTH - 4).splitlines()
    ]
    lines.append("  history:")
    history = [
        Column("version", align_right=True, min_width=7),
        Column("first job", align_right=True),
        Column("recorded"),
        Column("change", shrink="end", min_width=10),
    ]
    rows: list[list[str]] = []
    previous: list[dict[str, Any]] = []
    for version in sink["history"]:
        change = "first version" if not previous else contract_changes(previous, version["columns"])
        first_job = version["first_job_id"]
        rows.append(
            [
                f"v{version['version']}",
                "-" if first_job is None else str(first_job),
                time_text(version["recorded_at"]),
                change,
            ]
        )
        previous = version["columns"]
    lines += [
        f"    {line}" for line in table(history, rows, max_width=TABLE_WIDTH - 4).splitlines()
    ]
    return lines


def job_topic_lines(outputs: Sequence[dict[str, Any]]) -> list[str]:
    """``job ID``'s topics: rows written and quarantined per topic of its latest attempt."""
    if not outputs:
        return []
    columns = [
        Column("topic", shrink="end", min_width=10),
        Column("rows", align_right=True),
        Column("quarantined", align_right=True),
        Column("contract", align_right=True),
        Column("output", shrink="path", min_width=16),
    ]
    rows = [
        [
            o["topic"],
            _count(o["rows"]),
            _count(o["rows_quarantined"]),
            "-" if o["contract_version"] is None else f"v{o['contract_version']}",
            o["uri"],
        ]
        for o in outputs
    ]
    body = table(columns, rows, max_width=TABLE_WIDTH - 4)
    return ["  topics:"] + [f"    {line}" for line in body.splitlines()]
