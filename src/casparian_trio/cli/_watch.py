"""``status --watch``: the ``status`` lines and the worker table, redrawn in place until Ctrl-C.

rich's ``Live`` redraws the frame; each frame is two read transactions
(``read_status`` and the worker table), so the terminal view and ``status``
cannot disagree. Ctrl-C ends it like any other command (exit 0); the last
frame stays on screen.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.live import Live
from rich.text import Text

from casparian_trio.cli import _render
from casparian_trio.cli.workers import read_status, status_lines, worker_views, workers_table
from casparian_trio.store import Database, reports


def frame_text(db: Database, *, now: float, interval_s: float) -> str:
    """One frame: the ``status`` lines, the workers, and when it was drawn."""
    lines = status_lines(read_status(db, now=now))
    record, known = db.run_sync(reports.worker_table, readonly=True)
    _, rows = worker_views(record, known, now=now)
    if rows:
        lines += ["", workers_table(rows)]
    lines += ["", f"{_render.time_text(now)} · every {interval_s:g} s · Ctrl-C to stop"]
    return "\n".join(lines)


def watch_status(
    db: Database,
    *,
    interval_s: float,
    console: Console | None = None,
    frames: int | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Redraw ``frame_text`` every ``interval_s`` until Ctrl-C (or ``frames`` frames, for tests)."""
    drawn = 0
    with Live(console=console or Console(), auto_refresh=False) as live:
        while frames is None or drawn < frames:
            if drawn:
                sleep(interval_s)
            live.update(Text(frame_text(db, now=clock(), interval_s=interval_s)), refresh=True)
            drawn += 1
