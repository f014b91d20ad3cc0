"""``status --watch``: each frame is the ``status`` lines and the workers, redrawn in place."""

from __future__ import annotations

import io
from functools import partial

from http_seed import NOW, Seeded
from rich.console import Console

from casparian_trio.cli._watch import frame_text, watch_status
from casparian_trio.store import Database, workers


def test_a_frame_shows_the_counts_and_the_workers(db: Database, seeded: Seeded) -> None:
    db.run_sync(
        partial(
            workers.upsert_worker,
            worker_id="w-frame",
            host="h",
            pid=7,
            capabilities=["sales"],
            slots=2,
            status="IDLE",
            now=NOW - 5,
        )
    )
    text = frame_text(db, now=NOW, interval_s=1.0)
    assert "1 queued · 0 running · 2 completed · 1 failed" in text
    assert "oldest queued job waiting 30s" in text
    assert "w-frame" in text
    assert "every 1 s · Ctrl-C to stop" in text


def test_watch_redraws_in_place(db: Database, seeded: Seeded) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    clock = iter([NOW, NOW + 1, NOW + 2])
    slept: list[float] = []
    watch_status(
        db, interval_s=0.5, console=console, frames=3, clock=lambda: next(clock), sleep=slept.append
    )
    screen = out.getvalue()
    assert slept == [0.5, 0.5]
    for second in ("00Z", "01Z", "02Z"):  # three frames, each with its own time
        assert f"{second} · every 0.5 s" in screen
    assert "\x1b[" in screen  # cursor moves: drawn over the last frame, not below it
