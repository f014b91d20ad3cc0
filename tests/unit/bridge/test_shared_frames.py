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
MIN = _shared_frames.MIN_BYTES
LIMIT = 4 * MIN
FRAME = b"arrow bytes".ljust(MIN, b"\0")


def memfd(data: bytes, seals: int = ALL_SEALS, size: int | None = None) -> int:
    fd = os.memfd_create("test-frame", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    if size is not None:
        os.ftruncate(fd, size)  # a hole: pages nobody wrote
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
    fd = memfd(FRAME)
    view = _shared_frames.map_frame(fd, LIMIT)
    assert bytes(view) == FRAME
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
    fd = memfd(FRAME, seals)
    with pytest.raises(_framing.InvalidFrame, match="not sealed"):
        _shared_frames.map_frame(fd, LIMIT)
    assert closed(fd)


def test_an_oversized_small_or_hollow_frame_is_refused() -> None:
    fd = memfd(b"x" * (LIMIT + 1))
    with pytest.raises(_framing.OversizedFrame, match=f"{LIMIT + 1} bytes"):
        _shared_frames.map_frame(fd, LIMIT)
    assert closed(fd)
    for small in (b"", b"x" * (MIN - 1)):  # a mapping per tiny frame would exhaust descriptors
        fd = memfd(small)
        with pytest.raises(_framing.InvalidFrame, match="at least"):
            _shared_frames.map_frame(fd, LIMIT)
    fd = memfd(b"x" * 100, size=LIMIT)  # mostly a hole: the host would pay for the pages
    with pytest.raises(_framing.InvalidFrame, match="not all written"):
        _shared_frames.map_frame(fd, LIMIT)
    assert closed(fd)


def test_a_descriptor_that_is_not_a_memfd_is_refused() -> None:
    read, write = os.pipe()
    try:
        with pytest.raises(_framing.InvalidFrame, match="not a memfd"):
            _shared_frames.map_frame(read, LIMIT)
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


def test_past_the_mapping_limit_frames_are_copied(monkeypatch: pytest.MonkeyPatch) -> None:
    """A guest sending many frames holds at most MAX_LIVE_MAPPINGS descriptors and mappings."""
    import gc
    import mmap

    from casparian_trio.bridge import _stream

    monkeypatch.setattr(_stream, "MAX_LIVE_MAPPINGS", 2)
    a, b = socket.socketpair()
    conn = _stream.GuestConnection(b, shared=True)  # type: ignore[arg-type]  (no I/O here)
    try:
        views = [conn.map_shared(memfd(FRAME), LIMIT) for _ in range(3)]
        assert [isinstance(v.obj, mmap.mmap) for v in views] == [True, True, False]
        assert all(bytes(v) == FRAME for v in views)
        assert conn.received == 3 * MIN
        del views
        gc.collect()
        again = conn.map_shared(memfd(FRAME), LIMIT)  # the two mappings are gone: mapped again
        assert isinstance(again.obj, mmap.mmap)
    finally:
        a.close()
        b.close()
