"""Fixtures for the end-to-end tests (helpers live in e2e_procs.py).

``cluster`` gives a test its own port, database, output root and TMPDIR under
``tmp_path``; at teardown it prints every process's stderr (pytest shows it
only when the test failed) and SIGKILLs whatever is still running.
``hard_timeout`` bounds a whole test with SIGALRM, so nothing can hang CI.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest
from e2e_procs import Cluster

# A hang guard for a whole test, not a speed limit: far above any test's run time
# on a loaded machine (tools/under_load.sh), and above each single wait's own
# guard (e2e_procs.HANG_S), so that a hung wait reports itself first.
TEST_TIMEOUT_S = 300


@pytest.fixture
def hard_timeout() -> Iterator[None]:
    def expired(_signum: int, _frame: FrameType | None) -> None:
        raise TimeoutError(f"end-to-end test exceeded {TEST_TIMEOUT_S} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def cluster(tmp_path: Path, hard_timeout: None) -> Iterator[Cluster]:
    c = Cluster(root=tmp_path)
    c.init_db()  # as a user does first: only init-db creates a database
    try:
        yield c
    finally:
        print(c.diagnostics())
        c.shutdown()
