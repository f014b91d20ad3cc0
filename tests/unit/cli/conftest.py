"""Fixtures for the operator-command tests: a database file, plugins, and a CLI runner.

Commands run in-process through ``cli.main([...])`` against real SQLite files in
``tmp_path``; ``ops_db`` builds state directly with the store's sync cores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_harness import PLUGIN, Cli, Result

from casparian_trio.cli import main
from casparian_trio.store import Database, open_database


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "casparian.db"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], db_path: Path) -> Cli:
    """``cli("jobs", "--json")`` runs the command on ``db_path`` and captures its output.

    ``db_path`` is made first (as ``init-db`` would): only ``init-db`` creates a database.
    """
    open_database(db_path).close()

    def run(*argv: str, db: Path | None = db_path) -> Result:
        capsys.readouterr()
        args = [*argv, "--db", str(db)] if db is not None else list(argv)
        rc = main(args)
        captured = capsys.readouterr()
        return Result(rc, captured.out, captured.err)

    return run


@pytest.fixture
def write_plugin(tmp_path: Path) -> Callable[..., Path]:
    """``write_plugin(name, version, pattern)`` writes a valid plugin file."""

    def write(name: str = "sales", version: str = "1.0.0", pattern: str = "*.csv") -> Path:
        path = tmp_path / "plugins" / f"{name}-{version}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text(PLUGIN.format(name=name, version=version, pattern=pattern))
        return path

    return write


@pytest.fixture
def ops_db(db_path: Path) -> Iterator[Database]:
    """The same database file, opened directly (creates and migrates it)."""
    db = open_database(db_path)
    yield db
    db.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A source folder with two CSVs (one nested) and a text file."""
    root = tmp_path / "data"
    (root / "2024").mkdir(parents=True)
    (root / "a.csv").write_text("id,v\n1,2\n")
    (root / "2024" / "b.csv").write_text("id,v\n3,4\n")
    (root / "notes.txt").write_text("not a csv\n")
    return root
