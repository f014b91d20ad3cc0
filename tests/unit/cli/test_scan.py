"""``source add``, ``scan`` and ``submit``: catalog files, queue one job per new version."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_harness import Cli

from casparian_trio import scout


@pytest.fixture
def published(cli: Cli, write_plugin: Callable[..., Path]) -> None:
    assert cli("publish", str(write_plugin())).rc == 0


def query(db_path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db_path)
    try:
        return [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def job_files(db_path: Path) -> list[tuple[str, str]]:
    return query(
        db_path,
        "SELECT l.rel_path, q.plugin_name FROM cf_processing_queue q"
        " JOIN cf_file_version v ON v.id = q.file_version_id"
        " JOIN cf_file_location l ON l.id = v.location_id ORDER BY q.id",
    )


@pytest.fixture
def hash_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path scout.hash_file is asked to read."""
    calls: list[Path] = []
    real = scout.hash_file

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(scout, "hash_file", counting)
    return calls


# --- source add / list -------------------------------------------------------------------


def test_source_add_records_the_absolute_path(
    cli: Cli, data_dir: Path, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(data_dir.parent)
    result = cli("source", "add", "data")
    assert result.rc == 0
    assert result.out.startswith(f"source 1: {data_dir} (added)")
    assert query(db_path, "SELECT path FROM cf_source_root") == [(str(data_dir),)]
    assert "(already added)" in cli("source", "add", str(data_dir)).out


def test_source_add_refuses_a_file(cli: Cli, data_dir: Path) -> None:
    result = cli("source", "add", str(data_dir / "a.csv"))
    assert result.rc == 1
    assert (
        result.err
        == f"error: {data_dir / 'a.csv'} is not a directory; `source add` takes a folder of input files\n"
    )


def test_source_list(cli: Cli, data_dir: Path, published: None) -> None:
    cli("source", "add", str(data_dir))
    cli("scan")
    listing = cli("source", "list")
    assert str(data_dir) in listing.out
    assert cli("source", "list", "--json").json() == [
        {"id": 1, "path": str(data_dir), "type": "local", "active": 1, "files": 3}
    ]


# --- scan --------------------------------------------------------------------------------


def test_scan_queues_matching_files_once(
    cli: Cli, data_dir: Path, db_path: Path, published: None
) -> None:
    cli("source", "add", str(data_dir))
    first = cli("scan")
    assert first.rc == 0
    assert first.out.startswith("scanned 3 files (3 new, 0 changed, 0 unchanged) in ")
    assert first.out.rstrip().endswith("; queued 2 jobs")
    assert job_files(db_path) == [("2024/b.csv", "sales"), ("a.csv", "sales")]

    second = cli("scan")
    assert "scanned 3 files (0 new, 0 changed, 3 unchanged)" in second.out
    assert second.out.rstrip().endswith("queued 0 jobs")
    assert len(job_files(db_path)) == 2


def test_unchanged_files_are_not_hashed_again(
    cli: Cli, data_dir: Path, published: None, hash_calls: list[Path]
) -> None:
    cli("source", "add", str(data_dir))
    cli("scan")
    assert len(hash_calls) == 3
    hash_calls.clear()
    cli("scan")
    assert hash_calls == []


def test_changed_content_queues_a_new_job(
    cli: Cli, data_dir: Path, db_path: Path, published: None, hash_calls: list[Path]
) -> None:
    cli("source", "add", str(data_dir))
    cli("scan")
    hash_calls.clear()
    (data_dir / "a.csv").write_text("id,v\n1,2\n5,6\n")
    result = cli("scan")
    assert "(0 new, 1 changed, 2 unchanged)" in result.out
    assert "queued 1 job" in result.out
    assert hash_calls == [data_dir / "a.csv"]
    assert job_files(db_path)[-1] == ("a.csv", "sales")
    assert len(job_files(db_path)) == 3


def test_touched_file_with_same_content_is_hashed_but_not_queued(
    cli: Cli, data_dir: Path, db_path: Path, published: None, hash_calls: list[Path]
) -> None:
    cli("source", "add", str(data_dir))
    cli("scan")
    hash_calls.clear()
    os.utime(data_dir / "a.csv", (1_600_000_000, 1_600_000_000))
    result = cli("scan")
    assert "(0 new, 0 changed, 3 unchanged)" in result.out
    assert hash_calls == [data_dir / "a.csv"]
    hash_calls.clear()
    cli("scan")  # the new mtime is recorded: no hashing the next time
    assert hash_calls == []
    assert len(job_files(db_path)) == 2


def test_scan_ignores_temp_hidden_and_casparianignore_files(
    cli: Cli, data_dir: Path, db_path: Path, published: None
) -> None:
    for name in (".hidden.csv", "upload.csv.part", "x.tmp", "a.csv~", "skip/me.csv"):
        (data_dir / name).parent.mkdir(exist_ok=True)
        (data_dir / name).write_text("id\n1\n")
    (data_dir / "__pycache__").mkdir()
    (data_dir / "__pycache__" / "c.csv").write_text("id\n")
    (data_dir / ".casparianignore").write_text("skip/\n")
    cli("source", "add", str(data_dir))
    result = cli("scan")
    assert "scanned 3 files (3 new" in result.out
    assert job_files(db_path) == [("2024/b.csv", "sales"), ("a.csv", "sales")]


def test_scan_one_source_by_id_or_path(
    cli: Cli, data_dir: Path, tmp_path: Path, published: None
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "z.csv").write_text("id\n")
    cli("source", "add", str(data_dir))
    cli("source", "add", str(other))
    assert "scanned 1 file (1 new" in cli("scan", "2").out
    assert "scanned 3 files (3 new" in cli("scan", str(data_dir)).out
    both = cli("scan")
    assert f"source 1 {data_dir}: 3 files" in both.out
    assert "scanned 4 files (0 new, 0 changed, 4 unchanged)" in both.out


def test_scan_errors(cli: Cli, data_dir: Path, db_path: Path, ops_db: object) -> None:
    assert (
        cli("scan").err
        == "error: no sources to scan; add one with `casparian-trio source add DIR`\n"
    )
    cli("source", "add", str(data_dir))
    assert "no source '9'" in cli("scan", "9").err


def test_scan_without_rules_explains_why_nothing_was_queued(
    cli: Cli, data_dir: Path, ops_db: object
) -> None:
    cli("source", "add", str(data_dir))
    result = cli("scan")
    assert "queued 0 jobs" in result.out
    assert "note: no routing rules" in result.err


# --- submit --------------------------------------------------------------------------------


def test_submit_registers_the_folder_and_queues(
    cli: Cli, data_dir: Path, db_path: Path, published: None
) -> None:
    target = data_dir / "notes.txt"  # no rule matches it: submit does not need one
    result = cli("submit", str(target), "--plugin", "sales", "--priority", "7")
    assert result.rc == 0
    assert result.out == f"job 1 queued: sales on {target}\n"
    assert query(db_path, "SELECT path FROM cf_source_root") == [(str(data_dir),)]
    assert query(db_path, "SELECT plugin_name, priority, status FROM cf_processing_queue") == [
        ("sales", 7, "QUEUED")
    ]
    again = cli("submit", str(target), "--plugin", "sales", "--json").json()
    assert again == {"job_id": 1, "created": False, "status": "QUEUED"}


def test_submit_uses_an_existing_root_containing_the_file(
    cli: Cli, data_dir: Path, db_path: Path, published: None
) -> None:
    cli("source", "add", str(data_dir))
    cli("submit", str(data_dir / "2024" / "b.csv"), "--plugin", "sales")
    assert query(db_path, "SELECT count(*) FROM cf_source_root") == [(1,)]
    assert job_files(db_path) == [("2024/b.csv", "sales")]
    # A scan afterwards sees the file as known and unchanged: no second job.
    assert "queued 1 job" in cli("scan").out  # only a.csv
    assert len(job_files(db_path)) == 2


def test_submit_errors(cli: Cli, data_dir: Path, published: None) -> None:
    missing = cli("submit", str(data_dir / "nope.csv"), "--plugin", "sales")
    assert missing.rc == 1
    assert "is not a file" in missing.err
    unknown = cli("submit", str(data_dir / "a.csv"), "--plugin", "ghost")
    assert unknown.err == (
        "error: plugin 'ghost' is not published; run `casparian-trio publish PLUGIN.py` first\n"
    )


# --- deletions, files that come back, reprocessing (issue 11) ----------------------------


def jobs_by_kind(db_path: Path) -> list[tuple[str, str, str]]:
    return query(
        db_path,
        "SELECT l.rel_path, q.kind, q.status FROM cf_processing_queue q"
        " JOIN cf_file_version v ON v.id = q.file_version_id"
        " JOIN cf_file_location l ON l.id = v.location_id ORDER BY q.id",
    )


def complete_all(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("UPDATE cf_processing_queue SET status = 'COMPLETED'")
    conn.close()


def test_a_deleted_file_gets_one_retraction_job_per_plugin(
    cli: Cli, data_dir: Path, db_path: Path, published: None
) -> None:
    cli("source", "add", str(data_dir))
    cli("scan")
    complete_all(db_path)
    (data_dir / "a.csv").unlink()
    result = cli("scan", "--json")
    assert (result.json()["deleted"], result.json()["retractions"]) == (1, 1)
    assert jobs_by_kind(db_path)[-1] == ("a.csv", "retract", "QUEUED")
    again = cli("scan", "--json").json()
    assert (again["deleted"], again["retractions"]) == (0, 0)  # noticed once


def test_a_file_that_comes_back_is_parsed_again_and_its_retraction_cancelled(
    cli: Cli, data_dir: Path, db_path: Path, published: None
) -> None:
    cli("source", "add", str(data_dir))
    cli("scan")
    complete_all(db_path)
    content = (data_dir / "a.csv").read_bytes()
    (data_dir / "a.csv").unlink()
    cli("scan")
    (data_dir / "a.csv").write_bytes(content)  # the same content is back
    result = cli("scan", "--json").json()
    assert (result["new"], result["queued"]) == (1, 1)
    kinds = [j for j in jobs_by_kind(db_path) if j[0] == "a.csv"]
    assert kinds == [("a.csv", "parse", "QUEUED"), ("a.csv", "retract", "CANCELLED")]


def test_an_unlistable_folder_is_not_a_deletion(
    cli: Cli, data_dir: Path, db_path: Path, published: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("source", "add", str(data_dir))
    cli("scan")
    real = os.scandir

    def refuse_2024(path: object) -> object:
        if str(path).endswith("2024"):
            raise PermissionError(13, "Permission denied")
        return real(path)  # type: ignore[call-overload]

    monkeypatch.setattr(scout.os, "scandir", refuse_2024)
    result = cli("scan", "--json")
    assert result.json()["deleted"] == 0
    assert "cannot list" in result.err


def test_a_new_plugin_version_reprocesses_its_files(
    cli: Cli, data_dir: Path, db_path: Path, published: None, write_plugin: Callable[..., Path]
) -> None:
    cli("source", "add", str(data_dir))
    cli("scan")
    complete_all(db_path)
    newer = write_plugin(version="2.0.0")
    result = cli("publish", str(newer))
    assert result.rc == 0, result.err
    assert "reprocessing: queued 2 jobs" in result.out
    assert [s for _, _, s in jobs_by_kind(db_path)] == ["QUEUED", "QUEUED"]


def test_publish_no_reprocess_says_so(
    cli: Cli, data_dir: Path, db_path: Path, published: None, write_plugin: Callable[..., Path]
) -> None:
    cli("source", "add", str(data_dir))
    cli("scan")
    complete_all(db_path)
    result = cli("publish", str(write_plugin(version="2.0.0")), "--no-reprocess")
    assert "not reprocessing (--no-reprocess)" in result.out
    assert [s for _, _, s in jobs_by_kind(db_path)] == ["COMPLETED", "COMPLETED"]
    forced = cli("reprocess", "--plugin", "sales", "--glob", "2024/", "--json")
    assert forced.json()["queued"] == 1
    assert jobs_by_kind(db_path)[0] == ("2024/b.csv", "parse", "QUEUED")


def test_reprocess_names_an_unpublished_plugin(cli: Cli, db_path: Path, ops_db: object) -> None:
    result = cli("reprocess", "--plugin", "nope")
    assert result.rc != 0
    assert "plugin 'nope' is not published" in result.err


def test_an_empty_source_root_is_not_a_deletion_of_everything(
    cli: Cli, data_dir: Path, db_path: Path, published: None
) -> None:
    # An unmounted mount point is an empty folder: its files are unknown, not deleted.
    cli("source", "add", str(data_dir))
    cli("scan")
    complete_all(db_path)
    for path in sorted(data_dir.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    result = cli("scan", "--json")
    assert result.rc == 0
    assert (result.json()["deleted"], result.json()["retractions"]) == (0, 0)
    assert "is empty" in result.err
    (data_dir / "a.csv").write_text("id,v\n1,2\n")  # something is there again: deletions count
    again = cli("scan", "--json").json()
    assert again["deleted"] == 2  # 2024/b.csv and notes.txt


def test_retry_refuses_a_retraction_whose_file_is_back(
    cli: Cli, data_dir: Path, db_path: Path, published: None
) -> None:
    # Run, it would remove the rows of a file that exists again.
    cli("source", "add", str(data_dir))
    cli("scan")
    complete_all(db_path)
    content = (data_dir / "a.csv").read_bytes()
    (data_dir / "a.csv").unlink()
    cli("scan")
    (data_dir / "a.csv").write_bytes(content)
    cli("scan")
    [(retract_id,)] = query(db_path, "SELECT id FROM cf_processing_queue WHERE kind = 'retract'")
    result = cli("retry", str(retract_id))
    assert result.rc != 0
    assert "its file is back" in result.err
    assert jobs_by_kind(db_path)[-1] == ("a.csv", "retract", "CANCELLED")
    forced = cli("retry", "--force", str(retract_id))
    assert forced.rc != 0
    assert jobs_by_kind(db_path)[-1] == ("a.csv", "retract", "CANCELLED")
