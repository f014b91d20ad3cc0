"""DATA frames through shared memory: a sealed memfd per frame, mapped read-only.

Why: a 2 M-row job moves ~100 MB of Arrow IPC from guest to host. Through the
socket that is three copies (into the guest's IPC buffer, into the kernel, out
into the host's) and ~0.1-0.2 s of CPU on two cores; through a memfd it is one
(the guest's IPC writer writes into it) and ~0.035 s (``tools/bench_bridge.py``
figures in the README). The host maps it and decodes the batches in place.

Safety, since the guest is not trusted: the host maps a frame only when the
memfd carries the seals ``F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE``: nobody
can truncate it under the mapping (SIGBUS in the worker) or change bytes the
host has already validated. Its size is checked against the frame limit before
it is mapped. Descriptors are received with ``MSG_CMSG_CLOEXEC`` and closed
once mapped (or on any error; ``GuestConnection.close_descriptors``).

Source: memfd_create(2) and fcntl(2), "File Sealing" (Linux >= 3.17).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import socket
import stat
import sys

from casparian_trio.bridge._framing import InvalidFrame, OversizedFrame

REQUIRED_SEALS = (
    getattr(fcntl, "F_SEAL_SHRINK", 0)
    | getattr(fcntl, "F_SEAL_GROW", 0)
    | getattr(fcntl, "F_SEAL_WRITE", 0)
)
# The guest sends smaller frames through the socket (guest.py SHARED_MIN_BYTES);
# a smaller SHARED frame is refused: a mapping per tiny frame is what a guest
# would send to run the worker out of descriptors and mappings.
MIN_BYTES = 256 * 1024
# Room for a few descriptors per read; a frame carries one.
ANCILLARY_BYTES = socket.CMSG_SPACE(4 * 4) if hasattr(socket, "CMSG_SPACE") else 0


def supported() -> bool:
    """Whether this host can receive frames through sealed memfds (Linux)."""
    return (
        sys.platform.startswith("linux")
        and hasattr(os, "memfd_create")
        and hasattr(fcntl, "F_GET_SEALS")
        and hasattr(socket, "CMSG_SPACE")
    )


def descriptors(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    """The file descriptors in a ``recvmsg`` ancillary list (SCM_RIGHTS)."""
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds.extend(int.from_bytes(data[i : i + 4], sys.byteorder) for i in range(0, usable, 4))
    return fds


def map_frame(fd: int, max_bytes: int) -> memoryview:
    """The frame in ``fd`` mapped read-only; ``fd`` is closed whatever happens.

    Raises:
        InvalidFrame: not a sealed regular memfd, or empty.
        OversizedFrame: bigger than ``max_bytes``.
    """
    try:
        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        except OSError as exc:
            raise InvalidFrame(
                f"invalid frame from guest: its shared memory is not a memfd ({exc.strerror})"
            ) from exc
        if seals & REQUIRED_SEALS != REQUIRED_SEALS:
            raise InvalidFrame(
                "invalid frame from guest: its shared memory is not sealed against writes"
            )
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size < MIN_BYTES:
            raise InvalidFrame(
                f"invalid frame from guest: {info.st_size} bytes of shared memory "
                f"(at least {MIN_BYTES})"
            )
        if info.st_size > max_bytes:
            raise OversizedFrame(
                f"oversized frame from guest: {info.st_size} bytes (max {max_bytes})"
            )
        if info.st_blksize != mmap.PAGESIZE or info.st_blocks * 512 < info.st_size:
            # Holes (pages the guest never wrote: the host would pay for them on
            # first touch) or huge pages (a fault that can fail as SIGBUS).
            raise InvalidFrame("invalid frame from guest: its shared memory is not all written")
        try:
            return memoryview(mmap.mmap(fd, info.st_size, prot=mmap.PROT_READ))
        except OSError as exc:
            raise InvalidFrame(
                f"invalid frame from guest: its shared memory cannot be mapped ({exc.strerror})"
            ) from exc
    finally:
        os.close(fd)
