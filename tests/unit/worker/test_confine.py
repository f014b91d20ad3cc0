"""What a worker refuses to run whoever asks: inputs outside its roots, system env when keyed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from casparian_trio.protocol import Dispatch, SinkConfig
from casparian_trio.worker.confine import outside_roots, refusal, refused_receipt


def dispatch(path: Path | str, env_hash: str = "system") -> Dispatch:
    return Dispatch(
        plugin_name="p",
        file_path=str(path),
        sinks=(SinkConfig(topic="output", uri="parquet://out"),),
        file_version_id=1,
        env_hash=env_hash,
        source_code="",
        artifact_hash="a",
        attempt=1,
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ok.csv").write_text("x\n")
    return tmp_path / "data"


def test_a_file_inside_a_root_passes(root: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    assert outside_roots(str(root / "ok.csv"), [str(other), str(root)]) is None
    assert outside_roots("/etc/passwd", []) is None  # no roots known: not this check's call


def test_files_outside_every_root_are_refused(root: Path) -> None:
    why = outside_roots("/etc/passwd", [str(root)])
    assert why is not None
    assert why.deterministic
    assert "not under this worker's source roots" in why.message


def test_a_symlink_inside_a_root_is_refused(root: Path) -> None:
    os.symlink("/etc/passwd", root / "link.csv")
    why = outside_roots(str(root / "link.csv"), [str(root)])
    assert why is not None
    assert "symlink" in why.message


def test_a_missing_file_is_left_to_the_freshness_check(root: Path) -> None:
    assert outside_roots(str(root / "gone.csv"), [str(root)]) is None


def test_a_keyed_worker_runs_env_system_only_when_allowed(root: Path) -> None:
    job = dispatch(root / "ok.csv")
    why = refusal(job, roots=[str(root)], keyed=True, allow_system=False)
    assert why is not None
    assert "--allow-system-env" in why.message
    assert refusal(job, roots=[str(root)], keyed=True, allow_system=True) is None
    assert refusal(job, roots=[str(root)], keyed=False, allow_system=False) is None
    built = dispatch(root / "ok.csv", env_hash="e" * 64)
    assert refusal(built, roots=[str(root)], keyed=True, allow_system=False) is None


def test_the_refusal_is_a_failed_deterministic_receipt(root: Path) -> None:
    why = refusal(dispatch("/etc/passwd"), roots=[str(root)], keyed=False, allow_system=False)
    assert why is not None
    receipt = refused_receipt(why, 3)
    assert receipt.status == "FAILED"
    assert receipt.deterministic
    assert receipt.attempt == 3
    assert receipt.error_message == why.message
