"""Resolve a path's symlinks as ``os.path.realpath`` does, in two system calls on Linux."""

from __future__ import annotations

import os


def real_path(path: str) -> str:
    """``os.path.realpath``, from the kernel where it can tell (Linux ``/proc/self/fd``).

    ``realpath`` is an lstat per component in Python; an ``O_PATH`` open and one
    readlink resolve the same links in two system calls. Falls back to realpath
    when ``/proc`` is not there or the path went away meanwhile.
    """
    flags = getattr(os, "O_PATH", None)
    if flags is None:
        return os.path.realpath(path)
    try:
        fd = os.open(path, flags | os.O_CLOEXEC)
    except OSError:
        return os.path.realpath(path)
    try:
        resolved = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)
    finally:
        os.close(fd)
    if not resolved.startswith("/") or resolved.endswith(" (deleted)"):
        return os.path.realpath(path)
    return resolved
