"""Bounded frames and a worker its guests cannot read (issue 13), with real processes.

- A peer that announces a 1 GiB frame is dropped by the Sentinel's libzmq
  (ZMQ_MAXMSGSIZE) before the frame is assembled: the Sentinel's peak RSS
  (VmHWM of the real process) stays far below 300 MB. The test speaks raw
  ZMTP 3.0 over a TCP socket, so it sends a frame *header* claiming 1 GiB and
  then streams one reused 1 MiB buffer: cheap on the sending side.
- A plugin that reads ``/proc/<its parent pid>/environ`` (the worker's) gets
  nothing of the worker's environment: the worker is non-dumpable, and as
  root its guests run as another user or without capabilities.
"""

from __future__ import annotations

import socket
import struct

import pyarrow.parquet as pq
import pytest
from e2e_procs import Cluster, wait_until

PEAK_RSS_LIMIT_MB = 300
GIB = 1 << 30
CHUNK = b"\0" * (1 << 20)

# ZMTP 3.0 (RFC 23): signature, version 3.0, mechanism NULL, as-server 0, filler.
GREETING = b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\0" * 32


def _ready_command() -> bytes:
    name, value = b"Socket-Type", b"DEALER"
    body = b"\x05READY" + bytes([len(name)]) + name + struct.pack("!I", len(value)) + value
    return bytes([0x04, len(body)]) + body  # short command frame


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _handshake(sock: socket.socket) -> None:
    """Greetings both ways, then our READY (libzmq wants its greeting read first)."""
    sock.sendall(GREETING)
    theirs = b""
    while len(theirs) < len(GREETING):
        chunk = sock.recv(len(GREETING) - len(theirs))
        assert chunk, "the sentinel closed the connection during the greeting"
        theirs += chunk
    sock.sendall(_ready_command())


def _send_huge_frame(port: int) -> int:
    """Announce a 1 GiB message frame and stream it; returns the bytes the peer took."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        _handshake(sock)
        sock.sendall(b"\x02" + struct.pack("!Q", GIB))  # LONG frame, no MORE: 1 GiB follows
        try:
            while sent < GIB:
                sock.sendall(CHUNK)
                sent += len(CHUNK)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
    return sent


def _send_small_frame(port: int) -> None:
    """The same handshake and a 3-byte frame: the Sentinel reads it (and drops it as garbage)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        _handshake(sock)
        sock.sendall(b"\x00\x03abc")
        sock.recv(1024)  # its READY


def test_a_1_gib_frame_leaves_the_sentinel_small(cluster: Cluster) -> None:
    sentinel = cluster.start_sentinel()
    _send_small_frame(cluster.port)  # control: this raw ZMTP peer is a peer it serves
    sentinel.wait_for_log(r"dropping bad message")
    before = _peak_rss_mb(sentinel.pid)
    sent = _send_huge_frame(cluster.port)
    assert sent < GIB  # the Sentinel hung up instead of reading it all
    peak = _peak_rss_mb(sentinel.pid)
    print(
        f"sentinel peak RSS {before:.0f} MB before, {peak:.0f} MB after; peer sent {sent >> 20} MiB"
    )
    assert peak < PEAK_RSS_LIMIT_MB
    assert sentinel.popen.poll() is None  # and it keeps serving


ENVIRON_PLUGIN = """
import os

import pyarrow as pa


class Handler:
    def execute(self, file_path):
        parent = os.getppid()
        try:
            with open(f"/proc/{parent}/environ", "rb") as f:
                got = f.read().decode("utf-8", "replace")
        except OSError as exc:
            got = f"denied: {exc.strerror}"
        yield pa.table({"parent": [parent], "got": [got]})
"""

SECRET = "s3cr3t-token-do-not-leak"


def test_a_plugin_gets_nothing_of_the_workers_environment(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster.start_sentinel()
    monkeypatch.setenv("CASPARIAN_TEST_SECRET", SECRET)  # the worker inherits it
    worker = cluster.start_worker("w1")
    with open(f"/proc/{worker.pid}/environ", "rb") as f:
        assert SECRET.encode() in f.read()  # it is there to be stolen
    [job_id] = cluster.seed_jobs("snoop", ENVIRON_PLUGIN, {"a.txt": "x\n"})
    assert cluster.wait_for_status(job_id, "COMPLETED", "FAILED").status == "COMPLETED"
    files = wait_until("output", lambda: list(cluster.output.rglob("*.parquet")) or None, 30)
    [row] = pq.read_table(files[0]).to_pylist()
    assert row["parent"] == worker.pid  # it did look at the worker
    assert SECRET not in row["got"]
    assert row["got"].startswith("denied"), row["got"][:200]
