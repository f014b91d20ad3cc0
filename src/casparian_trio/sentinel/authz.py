"""Who may say what to a keyed Sentinel: a pure decision per message.

With keys, every message comes with the ZAP User-Id of the CURVE key that
completed its connection's handshake (``transport/_auth.py``), never with
anything the peer chose. The rules:

- no User-Id, or one our authenticator never issues: nothing is accepted;
- an **admin** key may DEPLOY, and nothing else (it is not a worker);
- a **worker** key may not DEPLOY (it gets an ERR, and the attempt is logged);
  everything else it sends must come with the routing id that is its key's
  name. The registry is keyed by routing id, so a worker key reaches only its
  own registry entry: its heartbeats, receipts and errors can concern only the
  jobs dispatched to it. Without ROUTER_HANDOVER (``open_router`` with keys) a
  second connection cannot take over a connected worker's route either.

Without keys (loopback only, or ``--insecure``) everything is accepted as
before. Sans-I/O.
"""

from __future__ import annotations

import attrs

from casparian_trio.protocol import Deploy, Payload
from casparian_trio.transport.keys import Peer, Role


@attrs.frozen
class Refusal:
    """Why a message is dropped; ``answer`` says whether the peer gets an ERR back."""

    reason: str
    answer: bool = False


def admit(peer: Peer | None, identity: bytes, payload: Payload) -> Refusal | None:
    """None when ``peer`` (from the message's User-Id) may send ``payload`` as ``identity``."""
    what = type(payload).__name__.upper()
    if peer is None:
        return Refusal(f"{what} from a connection without a known key")
    if isinstance(payload, Deploy):
        if peer.role is Role.ADMIN:
            return None
        return Refusal(f"DEPLOY from worker key {peer.name!r}: only admin keys may deploy", True)
    if peer.role is not Role.WORKER:
        return Refusal(f"{what} from admin key {peer.name!r}: admin keys only deploy")
    if identity != peer.name.encode():
        return Refusal(
            f"{what} from worker key {peer.name!r} under routing id {identity!r}: "
            "a worker speaks only under its own key's name"
        )
    return None
