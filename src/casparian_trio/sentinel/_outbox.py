"""The bounded channel through which every task but the sender reaches the socket."""

from __future__ import annotations

import logging

import attrs
import trio

from casparian_trio.protocol import Payload, encode

logger = logging.getLogger(__name__)

# Enough for a burst of dispatches and aborts to every worker; if the sender
# falls this far behind, the socket is stuck and waiting would not help.
OUTBOX_CAPACITY = 10_000


@attrs.frozen
class Outgoing:
    identity: bytes
    payload: Payload
    job_id: int = 0

    def frames(self) -> list[bytes]:
        return [self.identity, *encode(self.payload, self.job_id)]


@attrs.define(eq=False)
class Outbox:
    sender: trio.MemorySendChannel[Outgoing] = attrs.field(init=False)
    receiver: trio.MemoryReceiveChannel[Outgoing] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.sender, self.receiver = trio.open_memory_channel[Outgoing](OUTBOX_CAPACITY)

    def put(self, item: Outgoing) -> None:
        """Queue a message without waiting (callers hold state they must not yield on)."""
        try:
            self.sender.send_nowait(item)
        except trio.WouldBlock:
            logger.error(
                "outbox full; dropping %s for %r (the socket is not draining)",
                type(item.payload).__name__,
                item.identity,
            )
