"""The code stays ruff-clean and type-checks: part of the suite, so CI holds us to it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_check_and_format() -> None:
    check = run("ruff", "check", "src", "tests", "tools")
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = run("ruff", "format", "--check", "src", "tests", "tools")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@pytest.mark.slow
def test_mypy() -> None:
    result = run("mypy", "src")
    assert result.returncode == 0, result.stdout + result.stderr
