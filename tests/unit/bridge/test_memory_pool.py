"""The worker's and the guest's Arrow allocator: jemalloc unless the environment chose one."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pytest

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
