"""Names that are not valid UTF-8 survive the catalog and print escaped (issue 11)."""

from __future__ import annotations

import os
import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casparian_trio.filenames import from_db, shown, to_db

names = st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b and b"\0" not in b)


@given(names)
def test_any_name_round_trips_through_sqlite(raw: bytes) -> None:
    name = os.fsdecode(raw)
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (rel_path TEXT NOT NULL)")
    conn.execute("INSERT INTO t VALUES (?)", (to_db(name),))
    (stored,) = conn.execute("SELECT rel_path FROM t").fetchone()
    assert os.fsencode(from_db(stored)) == raw
    assert conn.execute("SELECT count(*) FROM t WHERE rel_path = ?", (to_db(name),)).fetchone()[0]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"caf\xe9.csv", "caf\\xe9.csv"),
        ("café.csv".encode(), "café.csv"),
        (b"a\xff\xfeb", "a\\xff\\xfeb"),
    ],
)
def test_shown_escapes_only_undecodable_bytes(raw: bytes, expected: str) -> None:
    assert shown(os.fsdecode(raw)) == expected
    shown(os.fsdecode(raw)).encode("utf-8")  # printable and storable as TEXT


@given(st.text(alphabet=st.characters(codec=None, exclude_categories=())))
def test_shown_text_is_always_storable(text: str) -> None:
    """Any str, lone surrogates included (a peer's JSON "\\ud800" escape), comes out as UTF-8 text."""
    out = shown(text)
    out.encode("utf-8")
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("INSERT INTO t VALUES (?)", (out,))


def test_a_surrogate_no_file_name_gives_is_escaped_as_code_point() -> None:
    assert shown("x\ud800y") == "x\\ud800y"
    assert shown("caf\udce9 and \udfff") == "caf\\udce9 and \\udfff"
