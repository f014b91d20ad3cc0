"""CURVE on the sockets (ironhouse): the ZAP authenticator and the socket options.

The Sentinel's ROUTER is a CURVE server: every peer must prove it holds a
secret key whose public half is in ``authorized/``. pyzmq's
``ThreadAuthenticator`` answers libzmq's ZAP requests from a thread; ours asks
a fresh ``KeyRing`` for every handshake (so ``keys add``/``keys revoke`` count
for the next connection, no reload or restart), and gives the accepted
connection the User-Id ``<role>:<name>``, which libzmq attaches to every message
from it as frame metadata (``Frame.get("User-Id")``).

The authenticator must be serving on the socket's context *before* the socket
binds: libzmq lets every client in while no ZAP handler exists. So a keyed
ROUTER gets a context of its own (one ZAP handler per context), and closing
the channel stops the thread and destroys that context.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from casparian_trio.transport.keys import ClientKeys, KeyPair, KeyRing

logger = logging.getLogger(__name__)

ZAP_DOMAIN = "casparian"
# ZMTP heartbeats on a keyed ROUTER: without ROUTER_HANDOVER a worker that
# reconnects after a network cut waits until the dead connection is noticed;
# ping every 2 s, give up after 6 s (the Sentinel's default liveness).
ZMTP_HEARTBEAT_IVL_MS = 2_000
ZMTP_HEARTBEAT_TIMEOUT_MS = 6_000
# A refused peer's DEALER reconnects every 100 ms: log each key once a minute.
REFUSAL_LOG_INTERVAL_S = 60.0


class _Provider:
    """``configure_curve_callback``'s credentials provider: one KeyRing read per handshake."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._logged: dict[bytes, float] = {}  # key -> when its refusal was last logged

    def callback(self, domain: str, key: bytes) -> bool:
        peer = KeyRing.load(self.directory).peer(key)
        if peer is None:
            self._log_refusal(key)
        return peer is not None

    def _log_refusal(self, key: bytes) -> None:
        now = time.monotonic()
        if now - self._logged.get(key, -math.inf) < REFUSAL_LOG_INTERVAL_S:
            return
        if len(self._logged) > 10_000:  # many invented keys: forget, keep logging bounded
            self._logged.clear()
        self._logged[key] = now
        logger.warning(
            "refused a CURVE key that is not authorized (%s…)",
            key[:8].decode("ascii", "replace"),
            extra={"event": "auth.refused"},
        )


class KeyAuthenticator(ThreadAuthenticator):
    """A ZAP handler that admits the keys of one keys folder, User-Id ``<role>:<name>``."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], directory: Path) -> None:
        super().__init__(context=context, log=logging.getLogger(__name__ + ".zap"))
        self.directory = directory

    def curve_user_id(self, client_public_key: bytes) -> str:
        peer = KeyRing.load(self.directory).peer(z85.encode(client_public_key))
        # Only called after the callback accepted the key; a revoke in between
        # leaves a User-Id the Sentinel does not recognise (it refuses everything).
        return "" if peer is None else peer.user_id


def start_authenticator(
    context: zmq.Context[zmq.Socket[bytes]], directory: Path
) -> KeyAuthenticator:
    """Serve ZAP for ``context`` from the keys in ``directory`` (call ``stop()`` when done)."""
    auth = KeyAuthenticator(context, directory)
    auth.start()
    auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=_Provider(directory))
    return auth


def make_server(sock: zmq.Socket[bytes], keys: KeyPair) -> None:
    """CURVE server options (call before bind)."""
    assert keys.secret is not None
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt_string(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
    sock.setsockopt(zmq.HEARTBEAT_IVL, ZMTP_HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, ZMTP_HEARTBEAT_TIMEOUT_MS)


def make_client(sock: zmq.Socket[bytes], keys: ClientKeys) -> None:
    """CURVE client options (call before connect): only that Sentinel can complete the handshake."""
    assert keys.own.secret is not None
    sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.own.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.own.secret)
