"""Which allocator Arrow's buffers come from in the worker (the host side).

jemalloc when this pyarrow has it and ``ARROW_DEFAULT_MEMORY_POOL`` does not
choose another pool; else Arrow's default (mimalloc). Measured on a 2-core
Firecracker VM (README, "Performance"), the held-out 2M-row job through a real
Sentinel and worker: 0.39-0.42 s with jemalloc against 0.50-0.60 s with
mimalloc, whose fresh arenas cost the host ~0.1 s of system time per big job
(the receive buffers and row groups are fresh memory on every job). The guest
makes the same choice for itself in ``guest.py`` (it imports nothing of ours).
This is pyarrow's pool; Arrow's C++ default (Parquet's writer buffers) is
named before pyarrow loads, by the command line (``casparian_trio._arrow_pool``).
"""

from __future__ import annotations

import os

import pyarrow as pa

PREFERRED = "jemalloc"


def prefer_jemalloc() -> str:
    """Make jemalloc this process's default Arrow pool unless the environment chose one.

    Returns the backend now in use (``pa.default_memory_pool().backend_name``).
    """
    chosen = os.environ.get("ARROW_DEFAULT_MEMORY_POOL")
    available = PREFERRED in pa.supported_memory_backends()
    if not chosen and available and pa.default_memory_pool().backend_name != PREFERRED:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    return str(pa.default_memory_pool().backend_name)
