"""The worker's input check, as a table: no files, no Trio (bridge/_input_check.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from casparian_trio._realpath import real_path
from casparian_trio.bridge import _input_check
from casparian_trio.bridge._input_check import (
    SKIP_GONE,
    SKIP_SUPERSEDED,
    Observed,
    Refusal,
    judge,
)

PATH = "/data/src/a.csv"
REG = stat.S_IFREG | 0o644


def seen(
    *,
    mode: int = REG,
    size: int = 10,
    mtime: float = 1700000000.25,
    real_path: str = PATH,
    real_root: str = "/data/src",
) -> Observed:
    return Observed(True, mode, size, mtime, real_path, real_root)


GONE = Refusal(f"file gone: {PATH} (deleted since scan)", SKIP_GONE, deterministic=False)
CHANGED = Refusal(
    f"file changed since scan: {PATH}; the next scan queues the new version",
    SKIP_SUPERSEDED,
    deterministic=False,
)
LINK = Refusal(f"refusing {PATH}: a symlink (the worker does not follow links)")
NOT_REGULAR = Refusal(f"refusing {PATH}: not a regular file")


def outside(real: str, root: str = "/data/src") -> Refusal:
    return Refusal(f"refusing {PATH}: it resolves to {real}, outside its source root {root}")


# (what lstat/realpath saw, the queued size, the queued mtime, the decision)
CASES: list[tuple[Observed, int | None, float | None, Refusal | None]] = [
    (seen(), 10, 1700000000.25, None),
    (seen(), None, None, None),  # no recorded size/mtime: only the kind and place count
    (Observed(exists=False), 10, 1700000000.25, GONE),
    (Observed(exists=False), None, None, GONE),
    (seen(size=11), 10, 1700000000.25, CHANGED),
    (seen(mtime=1700000001.25), 10, 1700000000.25, CHANGED),
    (seen(size=11), 10, None, CHANGED),
    (seen(mtime=1.5), None, 2.0, CHANGED),
    # a whole-second recording (the version's TEXT column) matches the same second
    (seen(mtime=1700000000.75), 10, 1700000000.0, None),
    (seen(mtime=1700000001.0), 10, 1700000000.0, CHANGED),
    (seen(mode=stat.S_IFLNK | 0o777), 10, 1700000000.25, LINK),
    (seen(mode=stat.S_IFLNK | 0o777, size=3), 10, None, LINK),  # refused before compared
    (seen(mode=stat.S_IFDIR | 0o755), None, None, NOT_REGULAR),
    (seen(mode=stat.S_IFIFO | 0o644), None, None, NOT_REGULAR),
    (seen(real_path="/etc/passwd"), 10, 1700000000.25, outside("/etc/passwd")),
    # a sibling whose name starts like the root is not inside it
    (seen(real_path="/data/src2/a.csv"), None, None, outside("/data/src2/a.csv")),
    (seen(real_path="/data/src"), None, None, outside("/data/src")),
    (seen(real_path="/data/src/deep/a.csv"), 10, 1700000000.25, None),
    (seen(real_path="relative/a.csv"), None, None, outside("relative/a.csv")),
]


@pytest.mark.parametrize(("observed", "size", "mtime", "decision"), CASES)
def test_judge(
    observed: Observed, size: int | None, mtime: float | None, decision: Refusal | None
) -> None:
    assert judge(PATH, observed, file_size=size, file_mtime=mtime) == decision


def test_refusals_are_deterministic_and_skips_are_not() -> None:
    assert (LINK.skip_reason, LINK.deterministic) == (None, True)
    assert (GONE.deterministic, CHANGED.deterministic) == (False, False)


def test_real_path_agrees_with_realpath(tmp_path: Path) -> None:
    """The kernel's answer (/proc/self/fd) is realpath's, for links, dots, missing paths."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f.csv").write_text("x\n")
    (tmp_path / "link").symlink_to(tmp_path / "a")
    (tmp_path / "a" / "b" / "to_f").symlink_to("f.csv")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for rel in [
        "a/b/f.csv",
        "link/b/f.csv",
        "link",
        "a/b/to_f",
        "dangling",
        "missing/file.csv",
        "a/b/../b/f.csv",
        "caf\udce9.csv",  # a name that is not UTF-8 (surrogate-escaped)
    ]:
        path = str(tmp_path / rel)
        assert real_path(path) == os.path.realpath(path), rel


def test_digest_reads_no_more_than_the_queued_size_and_never_a_fifo(tmp_path: Path) -> None:
    """A file swapped in after the lstat costs at most the queued size; a FIFO does not hang."""
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(50 * 1024**3)  # sparse: 50 GB that would take minutes to hash
    assert _input_check.digest(str(big), limit=5) not in (None, "")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert _input_check.digest(str(fifo), limit=5) == ""  # judged "changed", not read
    link = tmp_path / "link"
    link.symlink_to(big)
    assert _input_check.digest(str(link)) == ""
    assert _input_check.digest(str(tmp_path / "gone")) is None
    small = tmp_path / "small.txt"
    small.write_bytes(b"hello")
    assert _input_check.digest(str(small), limit=5) == _input_check.digest(str(small))
