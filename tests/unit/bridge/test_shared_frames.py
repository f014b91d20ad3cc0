"""The host maps a guest's frame only from a sealed memfd of an allowed size."""

from __future__ import annotations

import fcntl
import os
import socket

import pytest

from casparian_trio.bridge import _framing, _shared_frames
from casparian_trio.bridge import guest as guest_script

pytestmark = pytest.mark.skipif(not _shared_frames.supported(), reason="Linux memfd seals")

ALL_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


def memfd(data: bytes, seals: int = ALL_SEALS) -> int:
    fd = os.memfd_create("test-frame", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


def closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def test_a_sealed_frame_maps_read_only_and_its_descriptor_is_closed() -> None:
    fd = memfd(b"arrow bytes")
    view = _shared_frames.map_frame(fd, 1024)
    assert bytes(view) == b"arrow bytes"
    assert view.readonly
    assert closed(fd)


@pytest.mark.parametrize(
    "seals",
    [
        0,
        fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE,  # could shrink under the mapping: SIGBUS
        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW,  # could change validated bytes
    ],
)
def test_an_unsealed_frame_is_refused(seals: int) -> None:
    fd = memfd(b"x" * 100, seals)
    with pytest.raises(_framing.InvalidFrame, match="not sealed"):
        _shared_frames.map_frame(fd, 1024)
    assert closed(fd)


def test_an_oversized_or_empty_frame_is_refused() -> None:
    fd = memfd(b"x" * 2048)
    with pytest.raises(_framing.OversizedFrame, match="2048 bytes"):
        _shared_frames.map_frame(fd, 1024)
    assert closed(fd)
    fd = memfd(b"")
    with pytest.raises(_framing.InvalidFrame, match="empty"):
        _shared_frames.map_frame(fd, 1024)


def test_a_descriptor_that_is_not_a_memfd_is_refused() -> None:
    read, write = os.pipe()
    try:
        with pytest.raises(_framing.InvalidFrame, match="not a memfd"):
            _shared_frames.map_frame(read, 1024)
        assert closed(read)
    finally:
        os.close(write)


def test_descriptors_come_out_of_the_ancillary_data() -> None:
    a, b = socket.socketpair()
    fds = [memfd(b"1"), memfd(b"2")]
    try:
        rights = [
            (socket.SOL_SOCKET, socket.SCM_RIGHTS, b"".join(f.to_bytes(4, "little") for f in fds))
        ]
        a.sendmsg([b"t"], rights)
        _msg, ancillary, _flags, _ = b.recvmsg(1, _shared_frames.ANCILLARY_BYTES)
        got = _shared_frames.descriptors(ancillary)
        assert [os.pread(f, 1, 0) for f in got] == [b"1", b"2"]
        for f in got:
            os.close(f)
    finally:
        for f in fds:
            os.close(f)
        a.close()
        b.close()


def test_the_guest_and_the_host_agree_on_the_tag() -> None:
    assert guest_script.SHARED_TAG == _framing.SHARED_TAG
    assert guest_script.SHARED_TAG not in (_framing.END_TAG, _framing.ERROR_TAG)
    assert guest_script.SHARED_TAG > _framing.MAX_FRAME_BYTES  # never a DATA frame's length
