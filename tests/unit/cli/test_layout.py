"""The operator layer is one package, and only the store (and the SQLite sink) speaks SQL."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[3] / "src" / "casparian_trio"


def test_the_command_line_is_one_package() -> None:
    names = {p.name for p in PACKAGE.iterdir()}
    assert "cli" in names
    assert (PACKAGE / "cli" / "__init__.py").is_file()
    assert not [n for n in names if n.startswith("_ops_") or n in ("ops.py", "_render.py")]


def test_only_the_store_and_the_sqlite_sink_import_sqlite3() -> None:
    importers = {
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if "import sqlite3" in p.read_text(encoding="utf-8")
    }
    assert importers
    assert {p for p in importers if not p.startswith("store/")} == {"sinks/sqlite.py"}
