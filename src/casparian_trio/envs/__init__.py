"""Plugin environments: uv-built venvs keyed by env hash, plus the ``system`` env.

See ``manager.py`` for the build/cache/evict theory of operation and
``_hash.py`` for the env hash format.
"""

from __future__ import annotations

from casparian_trio.envs._hash import SYSTEM_ENV, compute_env_hash, is_env_hash
from casparian_trio.envs.manager import READY_MARKER, EnvManager

__all__ = ["READY_MARKER", "SYSTEM_ENV", "EnvManager", "compute_env_hash", "is_env_hash"]
