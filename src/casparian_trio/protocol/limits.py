"""How big a legitimate message can be: the basis of ``ZMQ_MAXMSGSIZE`` on both sides.

The largest messages carry a plugin: DEPLOY (source, lockfile, pyproject,
manifest), DISPATCH (source and sinks) and PREPARE_ENV (lockfile and
pyproject). ``publish`` refuses a plugin past these limits with a clear line;
everything else on the wire is a few kilobytes. Sans-I/O.
"""

from __future__ import annotations

# A plugin is one Python module: 4 MiB is far beyond any hand-written parser.
MAX_PLUGIN_SOURCE_BYTES = 4 * 1024 * 1024
# uv.lock of a large project (hundreds of packages with hashes) is ~1-2 MiB.
MAX_LOCKFILE_BYTES = 4 * 1024 * 1024
MAX_PYPROJECT_BYTES = 1024 * 1024
# JSON escapes what is not printable ASCII (``\\uXXXX``): at worst 6 bytes per
# byte of text, for control characters; headers, sinks and manifest fit in 64 KiB.
JSON_EXPANSION = 6
ENVELOPE_BYTES = 64 * 1024


def message_limit(
    source_bytes: int = MAX_PLUGIN_SOURCE_BYTES,
    lockfile_bytes: int = MAX_LOCKFILE_BYTES,
    pyproject_bytes: int = MAX_PYPROJECT_BYTES,
) -> int:
    """The largest encoded DEPLOY/DISPATCH for a plugin of these sizes, in bytes."""
    return JSON_EXPANSION * (source_bytes + lockfile_bytes + pyproject_bytes) + ENVELOPE_BYTES


# 54 MiB + 64 KiB: libzmq drops a peer that announces more, before reading it.
DEFAULT_MAX_MESSAGE_BYTES = message_limit()


# Prefetch (IDENTIFY ``prefetch``): a worker holds a DISPATCH it has no free
# slot for at most this long, then hands it back. The Sentinel's watchdog gives
# a job held ready that much more time (it cannot know when it started).
PREFETCH_HOLD_S = 2.0


# A worker's id (IDENTIFY ``worker_id``, ``--worker-id``): 1 to this many bytes
# of UTF-8 text. One rule for both: what a worker may be called is what the
# Sentinel accepts.
WORKER_ID_MAX_BYTES = 200


def utf8_size(text: str) -> int:
    """``text``'s UTF-8 length in bytes; 0 for text UTF-8 cannot hold (a lone surrogate)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return 0


def is_worker_id(text: str) -> bool:
    """Whether ``text`` is 1 to WORKER_ID_MAX_BYTES bytes of UTF-8 text."""
    return 0 < utf8_size(text) <= WORKER_ID_MAX_BYTES
