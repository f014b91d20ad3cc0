"""Raw ZeroMQ peers for the keyed-Sentinel tests: plain, unknown-key and keyed DEALERs.

Synchronous pyzmq in the test process, talking to a real ``sentinel`` process:
each peer sends protocol messages and collects whatever comes back within a
window. No Trio: these stand in for attackers and for a worker under test control.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import attrs
import zmq
import zmq.auth

from casparian_trio.protocol import (
    Conclude,
    Deploy,
    Heartbeat,
    Identify,
    JobRef,
    Payload,
    decode,
    encode,
)
from casparian_trio.protocol.codec import Message

# How long a peer listens for an answer that should come (a hang guard) and for
# one that must not come (long enough that a Sentinel that would answer, does).
ANSWER_WITHIN_S = 30.0
SILENCE_S = 2.0


def keys_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "casparian_trio", "keys", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def make_keys(directory: Path, workers: tuple[str, ...], admins: tuple[str, ...]) -> Path:
    """``keys init`` + ``keys add`` through the command line, as a user does."""
    keys_cli("init", str(directory))
    for name in workers:
        keys_cli("add", name, "--role", "worker", "--dir", str(directory))
    for name in admins:
        keys_cli("add", name, "--role", "admin", "--dir", str(directory))
    return directory


@attrs.define(eq=False)
class RawPeer:
    """One DEALER: CURVE with ``key_file`` (a ``.key_secret``) or plain when None."""

    address: str
    identity: bytes
    server_key: bytes | None = None
    key_file: Path | None = None
    own_keys: tuple[bytes, bytes] | None = None  # (public, secret), e.g. never authorized
    sock: zmq.Socket[bytes] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTING_ID, self.identity)
        pair = self.own_keys
        if self.key_file is not None:
            public, secret = zmq.auth.load_certificate(self.key_file)
            assert secret is not None
            pair = (public, secret)
        if pair is not None:
            assert self.server_key is not None
            self.sock.curve_serverkey = self.server_key
            self.sock.curve_publickey, self.sock.curve_secretkey = pair
        self.sock.connect(self.address)

    def send(self, payload: Payload, job_id: int = 0) -> None:
        self.sock.send_multipart(encode(payload, job_id))

    def collect(self, seconds: float, *, until: type | None = None) -> list[Message]:
        """Every message received within ``seconds`` (or up to the first ``until``)."""
        got: list[Message] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(int(left * 1000) + 1):
                break
            message = decode(self.sock.recv_multipart())
            got.append(message)
            if until is not None and isinstance(message.payload, until):
                break
        return got

    def close(self) -> None:
        self.sock.close(linger=0)


def identify(
    peer: RawPeer, worker_id: str, *, slots: int = 1, jobs: tuple[JobRef, ...] = ()
) -> None:
    peer.send(Identify(worker_id=worker_id, slots=slots, jobs=jobs, answer_heartbeats=True))
    peer.send(Heartbeat(status="IDLE", worker_id=worker_id, free_slots=slots, jobs=jobs))


def busy(peer: RawPeer, worker_id: str, job_id: int, attempt: int) -> None:
    held = (JobRef(job_id, attempt),)
    peer.send(Heartbeat(status="BUSY", worker_id=worker_id, free_slots=0, jobs=held))


def success(job_id: int, attempt: int) -> tuple[Conclude, int]:
    metrics = {"rows": 1, "bytes": 1, "duration_s": 0.1}
    return Conclude(status="SUCCESS", metrics=metrics, attempt=attempt), job_id


EVIL_SOURCE = """
import pyarrow as pa

MANIFEST = {"name": "evil", "version": "6.6.6", "pattern": "*"}


class Handler:
    def execute(self, file_path):
        yield pa.table({"owned": [1]})
"""


def evil_deploy() -> Deploy:
    import hashlib

    digest = hashlib.sha256(EVIL_SOURCE.encode()).hexdigest()
    return Deploy(
        plugin_name="evil",
        version="6.6.6",
        source_code=EVIL_SOURCE,
        env_hash="system",
        artifact_hash=digest,
        manifest={"name": "evil", "version": "6.6.6", "pattern": "*"},
    )
