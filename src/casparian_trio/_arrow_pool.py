"""Arrow's C++ default memory pool: jemalloc, chosen before pyarrow loads.

Why: ``pa.set_memory_pool`` (``bridge._memory_pool``) changes the pool
pyarrow's own calls take, not Arrow's C++ default pool, and Parquet's writer
takes its page and encoder buffers from that default (pyarrow 26: the
``memory_pool`` argument of ``pq.ParquetWriter`` does not reach them; 11 of
its 12.6 MB for a 100 k-row table came from mimalloc with jemalloc set).
Arrow reads the default once, from ``ARROW_DEFAULT_MEMORY_POOL``, while
pyarrow loads; left alone it is mimalloc, whose fresh per-thread heaps (huge
pages zeroed on first touch) the worker's encoding threads paid for on every
big job. Measured on a 2-core VM, the 2 M-row, 18-column job through a real
Sentinel and worker, three alternated runs each: encoding CPU 0.86-1.05 s with
mimalloc, 0.66-0.69 s with jemalloc; the whole job 1.94-2.14 s against
1.59-1.84 s (README, "Performance").

Only for a pyarrow built with jemalloc, which is known without loading it:
the manylinux wheels on PyPI are; other builds may not be, and Arrow prints a
warning for a backend it lacks. A pool the environment names is kept as it
is. Guests inherit the variable (``_guestproc.PASS_THROUGH``) and make the
same choice.

Source: Arrow C++ ``memory_pool.cc`` (``ARROW_DEFAULT_MEMORY_POOL``, read by
``default_memory_pool()``); pyarrow's ``_parquet.pyx`` (the writer's
properties carry no pool).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ENV = "ARROW_DEFAULT_MEMORY_POOL"
PREFERRED = "jemalloc"


def prefer_jemalloc_default(environ: dict[str, str] | None = None) -> bool:
    """Set ``ARROW_DEFAULT_MEMORY_POOL=jemalloc`` for this process if nobody chose a pool.

    Must run before pyarrow is imported (afterwards Arrow has read the
    variable: nothing is changed). ``environ``: the mapping to set (default
    ``os.environ``). Returns whether it was set here.
    """
    env = os.environ if environ is None else environ
    if env.get(ENV) or "pyarrow" in sys.modules or not _pyarrow_has_jemalloc():
        return False
    env[ENV] = PREFERRED
    return True


def _pyarrow_has_jemalloc() -> bool:
    """Whether the installed pyarrow is a manylinux wheel (built with jemalloc), without importing it."""
    try:
        spec = importlib.util.find_spec("pyarrow")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    return wheel_has_jemalloc(Path(next(iter(spec.submodule_search_locations))).parent)


def wheel_has_jemalloc(site: Path) -> bool:
    """Whether ``site`` holds a pyarrow installed from a manylinux wheel (its ``WHEEL`` tags)."""
    for wheel in sorted(site.glob("pyarrow-*.dist-info/WHEEL")):
        try:
            lines = wheel.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        return any(line.startswith("Tag:") and "manylinux" in line for line in lines)
    return False
