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
the manylinux wheels on PyPI are (the installed version's ``WHEEL`` tags say
so); other builds may not be, and Arrow prints a warning for a backend it
lacks. A pool the environment names is kept as it is. Guests do not inherit
the name given here (``_guestproc.guest_env``): their pyarrow is their
environment's, maybe another build, and they choose for themselves
(``guest._choose_memory_pool``); a pool the user named reaches them.

Source: Arrow C++ ``memory_pool.cc`` (``ARROW_DEFAULT_MEMORY_POOL``, read by
``default_memory_pool()``); pyarrow's ``_parquet.pyx`` (the writer's
properties carry no pool).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

ENV = "ARROW_DEFAULT_MEMORY_POOL"
PREFERRED = "jemalloc"
# pyarrow/_generated_version.py (setuptools-scm / vcs-versioning): "__version__ = version = '26.0.1'"
_VERSION = re.compile(r"""(?m)^__version__\s*=\s*(?:version\s*=\s*)?['"]([^'"]+)['"]""")
_named_here = False


def prefer_jemalloc_default(environ: dict[str, str] | None = None) -> bool:
    """Set ``ARROW_DEFAULT_MEMORY_POOL=jemalloc`` for this process if nobody chose a pool.

    Must run before pyarrow is imported (afterwards Arrow has read the
    variable: nothing is changed). ``environ``: the mapping to set (default
    ``os.environ``). Returns whether it was set here.
    """
    global _named_here
    env = os.environ if environ is None else environ
    if env.get(ENV) or "pyarrow" in sys.modules or not _pyarrow_has_jemalloc():
        return False
    env[ENV] = PREFERRED
    _named_here = environ is None
    return True


def named_here() -> bool:
    """Whether this process's ``ARROW_DEFAULT_MEMORY_POOL`` is ours, not the user's."""
    return _named_here


def _pyarrow_has_jemalloc() -> bool:
    """Whether the installed pyarrow is a manylinux wheel (built with jemalloc), without importing it."""
    try:
        spec = importlib.util.find_spec("pyarrow")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    return wheel_has_jemalloc(Path(next(iter(spec.submodule_search_locations))))


def wheel_has_jemalloc(package: Path) -> bool:
    """Whether the pyarrow package at ``package`` came from a manylinux wheel.

    Its version from ``_generated_version.py`` names its ``dist-info`` beside
    it (a stale one of another version is not read); without a version, the
    only ``pyarrow-*.dist-info`` there counts. False when none is found (a
    source, editable or conda build).
    """
    infos = sorted(package.parent.glob("pyarrow-*.dist-info"))
    try:
        found = _VERSION.search((package / "_generated_version.py").read_text(encoding="utf-8"))
    except OSError:
        found = None
    if found is not None:
        infos = [i for i in infos if i.name == f"pyarrow-{found.group(1)}.dist-info"]
    if len(infos) != 1:
        return False
    try:
        lines = (infos[0] / "WHEEL").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    return any(line.startswith("Tag:") and "manylinux" in line for line in lines)
