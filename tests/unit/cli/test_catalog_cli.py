"""``catalog --out``: where the DuckDB file may go (issue 11)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cli_harness import Cli


def test_catalog_refuses_to_overwrite_the_database_itself(cli: Cli, db_path: Path) -> None:
    result = cli("catalog", "--out", str(db_path))
    assert result.rc != 0
    assert "is the database" in result.err
    conn = sqlite3.connect(db_path)  # still the SQLite database, tables and all
    assert conn.execute("SELECT count(*) FROM cf_processing_queue").fetchone() == (0,)
    conn.close()


def test_catalog_writes_into_a_missing_folder(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "new" / "dir" / "cat.duckdb"
    result = cli("catalog", "--out", str(out))
    assert result.rc == 0, result.err
    assert out.is_file()
