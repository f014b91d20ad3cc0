"""scout: walking with ignore rules, change detection, streamed hashing, routing matches."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from casparian_trio import scout


def rel_paths(root: Path) -> list[str]:
    return [c.rel_path for c in scout.walk(root)]


def touch(root: Path, *paths: str) -> None:
    for rel in paths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)


def test_walk_skips_default_ignores(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "a.csv",
        "sub/b.csv",
        ".hidden.csv",
        ".git/config",
        "__pycache__/x.pyc",
        "pkg/__pycache__/y.pyc",
        "upload.part",
        "scratch.tmp",
        "a.csv~",
    )
    assert rel_paths(tmp_path) == ["a.csv", "sub/b.csv"]


def test_walk_reports_size_and_mtime(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_bytes(b"12345")
    os.utime(tmp_path / "x.csv", (1_600_000_000.5, 1_600_000_000.5))
    [candidate] = scout.walk(tmp_path)
    assert candidate == scout.Candidate("x.csv", 5, 1_600_000_000.5)


def test_casparianignore_globs_and_directory_patterns(tmp_path: Path) -> None:
    touch(tmp_path, "keep.csv", "raw/x.csv", "raw.csv", "out/y.csv", "sub/z.bak", "sub/ok.csv")
    (tmp_path / ".casparianignore").write_text("# comment\n\n*.bak\nraw/\n/out/*\n")
    assert rel_paths(tmp_path) == ["keep.csv", "raw.csv", "sub/ok.csv"]


def test_walk_does_not_follow_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    touch(outside, "secret.csv")
    root = tmp_path / "root"
    touch(root, "a.csv")
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "file-link.csv").symlink_to(outside / "secret.csv")
    assert rel_paths(root) == ["a.csv"]


def test_is_unchanged_compares_mtime_and_size() -> None:
    candidate = scout.Candidate("a.csv", 10, 5.0)
    assert scout.is_unchanged(candidate, {"a.csv": (5.0, 10)})
    assert not scout.is_unchanged(candidate, {"a.csv": (5.0, 11)})
    assert not scout.is_unchanged(candidate, {"a.csv": (6.0, 10)})
    assert not scout.is_unchanged(candidate, {})


def test_hash_file_streams_across_chunks(tmp_path: Path) -> None:
    data = os.urandom(scout.HASH_CHUNK * 2 + 17)
    (tmp_path / "big.bin").write_bytes(data)
    assert scout.hash_file(tmp_path / "big.bin") == hashlib.sha256(data).hexdigest()


RULES = [
    scout.Rule("*.csv", "sales", 0),
    scout.Rule("2024/*.csv", "archive", 5),
    scout.Rule("sales_*", "sales", 3),
    scout.Rule("*.json", "events", 0),
]


@pytest.mark.parametrize(
    ("rel_path", "expected"),
    [
        ("a.csv", [("sales", 0)]),
        ("deep/dir/a.csv", [("sales", 0)]),  # the base name matches *.csv
        ("2024/b.csv", [("archive", 5), ("sales", 0)]),
        ("x/sales_q1.csv", [("sales", 3)]),  # one job per plugin, highest priority
        ("notes.txt", []),
        ("A.CSV", []),  # case-sensitive, the same on every platform
    ],
)
def test_matches(rel_path: str, expected: list[tuple[str, int]]) -> None:
    assert [(r.plugin_name, r.priority) for r in scout.matches(RULES, rel_path)] == expected


def test_rules_from_rows_keep_enabled_only() -> None:
    rows = [
        {"pattern": "*.csv", "plugin_name": "a", "priority": 1, "enabled": 1},
        {"pattern": "*.csv", "plugin_name": "b", "priority": None, "enabled": 0},
    ]
    assert scout.Rule.enabled(rows) == [scout.Rule("*.csv", "a", 1)]
