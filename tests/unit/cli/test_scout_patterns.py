"""Routing patterns and .casparianignore follow git's rules (table-driven, no I/O but tmp files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from casparian_trio import scout

ROUTING_CASES = [
    # pattern, path, matches?
    ("sales/**/*.csv", "sales/a.csv", True),
    ("sales/**/*.csv", "sales/q1/b.csv", True),
    ("sales/**/*.csv", "sales/q1/m3/c.csv", True),
    ("sales/**/*.csv", "other/sales/a.csv", False),
    ("sales/**/*.csv", "sales/a.txt", False),
    ("sales/*.csv", "sales/a.csv", True),
    ("sales/*.csv", "sales/q1/b.csv", False),  # * stays within one segment
    ("*.csv", "a.csv", True),
    ("*.csv", "deep/er/a.csv", True),  # no slash: any depth
    ("**/*.csv", "a.csv", True),
    ("data_?.csv", "data_1.csv", True),
    ("data_?.csv", "data_10.csv", False),
    ("[ab].csv", "b.csv", True),
    ("*.CSV", "a.csv", False),  # case-sensitive, as git
]


@pytest.mark.parametrize(("pattern", "path", "expected"), ROUTING_CASES)
def test_routing_pattern(pattern: str, path: str, expected: bool) -> None:
    assert scout.pattern_matches(pattern, path) is expected


def test_matches_keeps_the_highest_priority_rule_per_plugin() -> None:
    rules = [
        scout.Rule("sales/**/*.csv", "sales", 1),
        scout.Rule("*.csv", "sales", 5),
        scout.Rule("*.csv", "audit", 0),
    ]
    assert scout.matches(rules, "sales/q1/b.csv") == [rules[1], rules[2]]


def _walk(root: Path, files: list[str], ignore: str) -> list[str]:
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    (root / scout.IGNORE_FILE).write_text(ignore)
    return [c.rel_path for c in scout.walk(root)]


IGNORE_CASES = [
    ("*.tmp\n!keep.tmp\n", ["a.tmp", "keep.tmp", "b.csv"], ["b.csv", "keep.tmp"]),
    ("# comment\n\n*.log\n", ["x.log", "y.csv"], ["y.csv"]),
    ("/top.csv\n", ["top.csv", "sub/top.csv"], ["sub/top.csv"]),  # anchored
    ("build/\n", ["build/a.csv", "b/build.csv"], ["b/build.csv"]),  # directories only
    ("raw/**\n!raw/keep.csv\n", ["raw/a.csv", "raw/keep.csv"], ["raw/keep.csv"]),
    ("logs/\n!logs/keep.csv\n", ["logs/a.csv", "logs/keep.csv"], ["logs/keep.csv"]),
    ("cache/\n", ["cache/a.csv", "x/cache/b.csv", "c.csv"], ["c.csv"]),
    ("", ["a.part", "b~", "c.csv", ".hidden.csv"], ["c.csv"]),  # defaults and dotfiles
]


@pytest.mark.parametrize(("ignore", "files", "expected"), IGNORE_CASES)
def test_ignore_file(tmp_path: Path, ignore: str, files: list[str], expected: list[str]) -> None:
    assert _walk(tmp_path, files, ignore) == expected


def test_a_name_that_is_not_utf8_is_walked_and_opens_again(tmp_path: Path) -> None:
    bad = os.path.join(os.fsencode(tmp_path), b"caf\xe9.csv")
    with open(bad, "wb") as f:
        f.write(b"a\n1\n")
    (tmp_path / "good.csv").write_text("a\n1\n")
    found = [c.rel_path for c in scout.walk(tmp_path)]
    assert found == ["caf\udce9.csv", "good.csv"]  # PEP 383 surrogate escape, sorted by str
    assert (tmp_path / found[0]).read_bytes() == b"a\n1\n"
    assert scout.matches([scout.Rule("*.csv", "p")], found[0])
