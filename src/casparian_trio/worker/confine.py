"""What a worker refuses to run, whoever sends the DISPATCH (defence in depth).

CURVE already means only the real Sentinel can talk to a keyed worker; these
checks hold even if that Sentinel (or its database) is compromised:

- the input must be a regular file (not a symlink) under one of the worker's
  source roots: its own ``--source-root`` list, else the roots the Sentinel
  announced in its answers (``Heartbeat.source_roots``); with neither, only
  the per-dispatch check of ``bridge/_input_check.py`` applies;
- a keyed worker runs a plugin without a lockfile (env ``system``, i.e. the
  worker's own interpreter and packages) only with ``--allow-system-env``.

``refusal`` decides; its only I/O is ``_input_check.observe`` (an lstat and two
realpath calls per root), cheap enough for the intake task.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence

from casparian_trio.bridge._input_check import Refusal, judge, observe
from casparian_trio.envs import SYSTEM_ENV
from casparian_trio.protocol import Conclude, Dispatch


def outside_roots(path: str, roots: Sequence[str]) -> Refusal | None:
    """None when ``path`` is a regular file inside one of ``roots`` (or ``roots`` is empty).

    A missing file passes: there is nothing to confine, and the executor's
    freshness check (``bridge/_input_check.py``) ends the job SKIPPED.
    """
    if not roots:
        return None
    seen = observe(path, roots[0])
    if not seen.exists:
        return None  # nothing to open; the executor's own check ends it SKIPPED
    first = judge(path, seen, file_size=None, file_mtime=None)
    if first is None or not stat.S_ISREG(seen.mode):
        return first  # inside; or a symlink, a device...: refused under any root
    for root in roots[1:]:
        if judge(path, observe(path, root), file_size=None, file_mtime=None) is None:
            return None
    return Refusal(f"refusing {path}: not under this worker's source roots ({', '.join(roots)})")


def refusal(
    dispatch: Dispatch, *, roots: Sequence[str], keyed: bool, allow_system: bool
) -> Refusal | None:
    """Why this worker will not run ``dispatch`` (None: it may)."""
    if keyed and dispatch.env_hash == SYSTEM_ENV and not allow_system:
        return Refusal(
            f"refusing {dispatch.plugin_name}: it has no lockfile (env system, the worker's own "
            "interpreter); publish it with --lockfile, or start the worker with --allow-system-env"
        )
    return outside_roots(dispatch.file_path, roots)


def refused_receipt(why: Refusal, attempt: int | None) -> Conclude:
    """The receipt of a job refused before any guest started."""
    return Conclude(
        status="FAILED",
        metrics={"rows": 0, "bytes": 0, "duration_s": 0.0},
        error_message=why.message,
        attempt=attempt,
        deterministic=why.deterministic,
        skip_reason=why.skip_reason,
    )
