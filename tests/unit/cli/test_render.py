"""Pure formatting: truncation, ages, tables that fit, the TTY-only progress line."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casparian_trio.cli import _render

NOW = 1_700_000_000.0


@given(st.text(min_size=0, max_size=200), st.integers(min_value=2, max_value=120))
def test_truncate_middle_keeps_both_ends_and_fits(text: str, width: int) -> None:
    cut = _render.truncate_middle(text, width)
    assert len(cut) <= width
    if len(text) <= width:
        assert cut == text
    else:
        head = cut[: (width - 1) // 2]
        assert cut[len(head)] == _render.ELLIPSIS
        assert text.startswith(head)
        assert text.endswith(cut[len(head) + 1 :])
        assert len(cut) == width


def test_truncate_end() -> None:
    assert _render.truncate_end("short", 10) == "short"
    assert _render.truncate_end("a long error message", 8) == "a long …"


@pytest.mark.parametrize(
    ("then", "expected"),
    [
        (None, "-"),
        (NOW - 0.4, "0.4s ago"),
        (NOW - 3, "3s ago"),
        (NOW - 42, "42s ago"),
        (NOW - 300, "5m ago"),
        (NOW - 7200, "2h ago"),
        (NOW - 4 * 86400, "4d ago"),
        (NOW + 5, "in 5s"),
    ],
)
def test_ago(then: float | None, expected: str) -> None:
    assert _render.ago(then, NOW) == expected


def test_human_bytes() -> None:
    assert _render.human_bytes(10) == "10 B"
    assert _render.human_bytes(1536) == "1.5 KiB"
    assert _render.human_bytes(5 * 1024**3) == "5.0 GiB"


def test_truncate_path_keeps_the_file_name() -> None:
    path = "2024/very-long-folder/deeper/still/report.csv"
    assert _render.truncate_path(path, 100) == path
    assert _render.truncate_path(path, 20) == "2024/ver…/report.csv"
    assert len(_render.truncate_path(path, 20)) == 20
    assert _render.truncate_path(path, 8) == "…ort.csv"


def test_first_line_skips_blank_lines() -> None:
    assert _render.first_line("\n  ValueError: bad\nTraceback...") == "ValueError: bad"
    assert _render.first_line(None) == ""


def test_table_shrinks_only_cuttable_columns_to_fit() -> None:
    columns = [
        _render.Column("id", align_right=True),
        _render.Column("file", shrink="middle"),
        _render.Column("error", shrink="end"),
    ]
    rows = [["7", "deep/" * 30 + "name.csv", "boom " * 40], ["12", "x.csv", ""]]
    lines = _render.table(columns, rows, max_width=60).splitlines()
    assert all(len(line) <= 60 for line in lines)
    assert lines[0].split() == ["id", "file", "error"]
    assert lines[1].lstrip().startswith("7  deep/")
    assert "name.csv" in lines[1]  # the middle is cut, the file name kept
    assert lines[2].startswith("12  x.csv")


def test_table_that_fits_is_not_cut() -> None:
    columns = [_render.Column("a"), _render.Column("b", shrink="end")]
    assert _render.table(columns, [["1", "two"]]) == "a  b\n1  two"


def test_progress_draws_on_a_tty_and_erases_itself() -> None:
    stream = io.StringIO()
    progress = _render.Progress("scanning /data", total=4, stream=stream, enabled=True)
    progress.update(2, "a.csv", force=True)
    progress.close()
    text = stream.getvalue()
    assert text.startswith("\rscanning /data ")
    assert "2/4 a.csv" in text
    assert text.endswith("\r\x1b[K")


def test_progress_is_silent_when_not_a_tty() -> None:
    stream = io.StringIO()  # isatty() is False
    progress = _render.Progress("scanning", total=3, stream=stream)
    progress.update(1, force=True)
    progress.close()
    assert stream.getvalue() == ""


@pytest.mark.parametrize(
    ("value", "precise", "expected"),
    [
        (None, False, None),
        (NOW, False, "2023-11-14T22:13:20Z"),
        (NOW + 0.25, True, "2023-11-14T22:13:20.250Z"),
        ("2023-11-14 22:13:20", False, "2023-11-14T22:13:20Z"),  # SQLite's zone-less UTC TEXT
        ("2023-11-14T23:13:20+01:00", False, "2023-11-14T22:13:20Z"),
    ],
)
def test_iso_time_is_utc_with_z(value: float | str | None, precise: bool, expected: str) -> None:
    assert _render.iso_time(value, precise=precise) == expected


def test_dumps_writes_every_time_field_as_iso_and_leaves_durations() -> None:
    doc = {
        "started_at": NOW,
        "stopped_at": None,
        "workers": [{"last_seen": NOW, "slots": 2}],
        "end_time": "2023-11-14 22:13:20",
        "uptime_s": 12.5,
        "running": True,
    }
    assert json.loads(_render.dumps(doc)) == {
        "started_at": "2023-11-14T22:13:20.000Z",
        "stopped_at": None,
        "workers": [{"last_seen": "2023-11-14T22:13:20.000Z", "slots": 2}],
        "end_time": "2023-11-14T22:13:20.000Z",
        "uptime_s": 12.5,
        "running": True,
    }


def test_table_cells_show_control_characters_escaped() -> None:
    # A file named "a\nb.csv" or "\x1b[2J.csv" must not break the table or drive the terminal.
    text = _render.table(
        [_render.Column("file"), _render.Column("n")], [["a\nb.csv", "1"], ["\x1b[2J.csv", "2"]]
    )
    lines = text.splitlines()
    assert len(lines) == 3
    assert "\x1b" not in text
    assert lines[1].split() == ["a\\nb.csv", "1"]
    assert lines[2].split() == ["\\x1b[2J.csv", "2"]


def test_progress_detail_shows_control_characters_escaped() -> None:
    bar = _render.Progress("scanning", total=2, stream=io.StringIO(), enabled=False)
    assert bar.line(1, "x\r\ny.csv").endswith("x\\r\\ny.csv")
