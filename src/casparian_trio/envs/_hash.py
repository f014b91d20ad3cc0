"""The environment hash: what identifies a plugin environment (pure, no I/O).

Format (version 1): ``sha256`` hex digest of the UTF-8 encoding of the canonical
JSON document::

    {"format":"casparian-env/1","lockfile":<uv.lock text>,
     "pyproject":<pyproject.toml text or null>,"python":<version string or null>}

serialised with sorted keys, ``separators=(",", ":")`` and ``ensure_ascii=False``.
Line endings are normalised to ``\\n`` first, so a lockfile checked out on
Windows hashes the same. JSON string escaping makes the combination
unambiguous (no field can run into the next).
"""

from __future__ import annotations

import hashlib
import json
import re

SYSTEM_ENV = "system"
FORMAT = "casparian-env/1"
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


def _norm(text: str | None) -> str | None:
    return None if text is None else text.replace("\r\n", "\n")


def compute_env_hash(lockfile: str, pyproject: str | None, python_version: str | None) -> str:
    """Return the env hash of a uv project (see the module docstring for the format)."""
    doc = {
        "format": FORMAT,
        "lockfile": _norm(lockfile),
        "pyproject": _norm(pyproject),
        "python": python_version or None,
    }
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def is_env_hash(value: str) -> bool:
    """True for a well-formed hash (64 lowercase hex digits): safe as a directory name."""
    return bool(_HEX64.match(value))
