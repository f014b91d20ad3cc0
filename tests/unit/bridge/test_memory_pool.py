"""The worker's and the guest's Arrow allocator: jemalloc unless the environment chose one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from casparian_trio import _arrow_pool
from casparian_trio.bridge._memory_pool import prefer_jemalloc

HAS_JEMALLOC = "jemalloc" in pa.supported_memory_backends()

PROBE = """
import sys
sys.path.insert(0, {src!r})
import pyarrow as pa
{call}
print(pa.default_memory_pool().backend_name)
"""


def _backend_after(call: str, env: dict[str, str]) -> str:
    """The default pool's backend in a fresh interpreter after ``call`` (a fresh
    process: the choice is process-wide and cannot be undone in this one)."""
    import casparian_trio

    src = str(casparian_trio.__path__[0]).rsplit("/", 1)[0]
    code = PROBE.format(src=src, call=call)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(not HAS_JEMALLOC, reason="this pyarrow has no jemalloc")
def test_the_worker_prefers_jemalloc() -> None:
    call = "from casparian_trio.bridge._memory_pool import prefer_jemalloc; prefer_jemalloc()"
    assert _backend_after(call, {}) == "jemalloc"


def test_the_environment_still_decides() -> None:
    call = "from casparian_trio.bridge._memory_pool import prefer_jemalloc; prefer_jemalloc()"
    assert _backend_after(call, {"ARROW_DEFAULT_MEMORY_POOL": "system"}) == "system"


@pytest.mark.skipif(not HAS_JEMALLOC, reason="this pyarrow has no jemalloc")
def test_the_guest_makes_the_same_choice() -> None:
    from casparian_trio.bridge import guest

    call = f"import runpy; g = runpy.run_path({guest.__file__!r}); g['_choose_memory_pool'](pa)"
    assert _backend_after(call, {}) == "jemalloc"
    assert _backend_after(call, {"ARROW_DEFAULT_MEMORY_POOL": "system"}) == "system"


def test_prefer_jemalloc_names_the_pool_in_use() -> None:
    assert prefer_jemalloc() == pa.default_memory_pool().backend_name


RETAINED = """
import sys, time
sys.path.insert(0, {src!r})
import pyarrow as pa
import pyarrow.csv as pacsv
import runpy
g = runpy.run_path({guest!r})
g['_choose_memory_pool'](pa)
def rss_mb():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * 4096 // 2**20
before = rss_mb()
table = pacsv.read_csv({csv!r})  # parsed on Arrow's threads, as a plugin's table is
peak = rss_mb()
del table
time.sleep(2.5)  # past Arrow's 1 s decay, well inside the guest's
print(before, peak, rss_mb())
"""


@pytest.mark.skipif(not HAS_JEMALLOC, reason="this pyarrow has no jemalloc")
@pytest.mark.parametrize("env", [{}, {"ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}])
def test_a_guest_keeps_freed_pages_for_its_next_job(tmp_path: Path, env: dict[str, str]) -> None:
    """With Arrow's 1 s decay a parsed table's pages are gone 2.5 s after it; the guest keeps them,
    also when its worker named jemalloc for it (the variable is passed through)."""
    import casparian_trio
    from casparian_trio.bridge import guest

    csv = tmp_path / "big.csv"
    n = 1_500_000
    pacsv.write_csv(pa.table({"a": range(n), "b": [f"row {i % 977}" for i in range(n)]}), csv)
    src = str(casparian_trio.__path__[0]).rsplit("/", 1)[0]
    code = RETAINED.format(src=src, guest=guest.__file__, csv=str(csv))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    baseline, peak, after = map(int, done.stdout.split())
    assert guest.JEMALLOC_DECAY_MS > 2500
    assert peak - baseline > 40
    assert after - baseline > (peak - baseline) // 2  # most of the table's pages still held


# --- Arrow's C++ default pool (casparian_trio._arrow_pool) ---------------------------------

ENTRY_PROBE = """
import os, runpy, sys
sys.path.insert(0, {src!r})
sys.argv = ["casparian_trio", "--help"]
try:
    runpy.run_module("casparian_trio", run_name="__main__")
except SystemExit:
    pass
import pyarrow as pa
import pyarrow.parquet as pq
table = pa.table({{"a": list(range(100_000)), "b": ["x"] * 100_000}})
pq.write_table(table, pa.BufferOutputStream())
print(os.environ.get("ARROW_DEFAULT_MEMORY_POOL"), pa.mimalloc_memory_pool().total_bytes_allocated())
"""


def _entry_probe(env: dict[str, str]) -> list[str]:
    import casparian_trio

    src = str(casparian_trio.__path__[0]).rsplit("/", 1)[0]
    done = subprocess.run(
        [sys.executable, "-c", ENTRY_PROBE.format(src=src)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Unsupported backend" not in done.stderr
    return done.stdout.strip().splitlines()[-1].split()


@pytest.mark.skipif(
    not _arrow_pool._pyarrow_has_jemalloc(), reason="this pyarrow is not a manylinux wheel"
)
def test_the_command_line_makes_jemalloc_arrows_cpp_default() -> None:
    """``python -m casparian_trio`` names jemalloc before pyarrow loads: Parquet's
    writer buffers (Arrow's C++ default pool) then come from it, not mimalloc."""
    assert _entry_probe({}) == ["jemalloc", "0"]
    # a pool the environment names is left alone
    chosen, from_mimalloc = _entry_probe({"ARROW_DEFAULT_MEMORY_POOL": "mimalloc"})
    assert chosen == "mimalloc"
    assert int(from_mimalloc) > 0


def test_the_default_is_named_only_before_pyarrow_loads_and_only_if_unset() -> None:
    # pyarrow is loaded in this process: too late to name a default
    assert _arrow_pool.prefer_jemalloc_default({}) is False
    env = {"ARROW_DEFAULT_MEMORY_POOL": "system"}
    assert _arrow_pool.prefer_jemalloc_default(env) is False
    assert env == {"ARROW_DEFAULT_MEMORY_POOL": "system"}


def test_a_guest_gets_the_users_pool_not_the_one_named_here(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from casparian_trio.bridge._guestproc import guest_env

    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
    monkeypatch.setattr(_arrow_pool, "_named_here", False)  # the user's
    assert guest_env(tmp_path, Path(sys.executable))["ARROW_DEFAULT_MEMORY_POOL"] == "jemalloc"
    monkeypatch.setattr(_arrow_pool, "_named_here", True)  # the command line's
    assert "ARROW_DEFAULT_MEMORY_POOL" not in guest_env(tmp_path, Path(sys.executable))


def _installed(site: Path, version: str, tags: list[str]) -> Path:
    """A fake pyarrow ``version`` in ``site``: its package (version file) and dist-info."""
    info = site / f"pyarrow-{version}.dist-info"
    info.mkdir(parents=True)
    body = "Wheel-Version: 1.0\nRoot-Is-Purelib: false\n" + "".join(f"Tag: {t}\n" for t in tags)
    (info / "WHEEL").write_text(body)
    package = site / "pyarrow"
    package.mkdir(exist_ok=True)
    return package


def test_a_stale_dist_info_of_another_version_is_not_read(tmp_path: Path) -> None:
    package = _installed(tmp_path, "14.0.2", ["cp311-cp311-manylinux_2_17_x86_64"])
    _installed(tmp_path, "26.0.1", ["cp311-cp311-linux_x86_64"])  # a local build
    version = "__version__ = version = '26.0.1'\n__version_tuple__ = (26, 0, 1)\n"
    (package / "_generated_version.py").write_text(version)
    assert _arrow_pool.wheel_has_jemalloc(package) is False
    (package / "_generated_version.py").write_text(version.replace("26.0.1", "14.0.2"))
    assert _arrow_pool.wheel_has_jemalloc(package) is True
    (package / "_generated_version.py").unlink()  # no version: two candidates, no answer
    assert _arrow_pool.wheel_has_jemalloc(package) is False


@pytest.mark.parametrize(
    ("tags", "has"),
    [
        (["cp311-cp311-manylinux_2_28_x86_64"], True),
        (["cp312-cp312-manylinux_2_17_aarch64", "cp312-cp312-manylinux2014_aarch64"], True),
        (["cp311-cp311-macosx_12_0_arm64"], False),
        (["cp311-cp311-win_amd64"], False),
        ([], False),
    ],
)
def test_only_a_manylinux_wheel_counts_as_built_with_jemalloc(
    tmp_path: Path, tags: list[str], has: bool
) -> None:
    package = _installed(tmp_path, "26.0.1", tags)
    assert _arrow_pool.wheel_has_jemalloc(package) is has
    assert _arrow_pool.wheel_has_jemalloc(tmp_path / "elsewhere" / "pyarrow") is False  # none
