"""The ``Channel`` interface every transport implements.

A channel is one end of a ZeroMQ-style DEALER/ROUTER conversation:

* a DEALER sends and receives ``[header, payload]`` (any number of frames);
* a ROUTER receives ``[identity, *frames]`` and replies with
  ``[identity, *frames]``; sending to an identity it cannot reach raises
  :class:`~casparian_trio.errors.PeerUnreachable`.

Invariants shared by all implementations (the contract test suite in
``tests/integration/transport/test_transport_contract.py`` holds both to them):

* ``receive`` is cancellation-safe: a message taken from the transport is
  returned to the caller, never dropped by a cancel scope.
* A send waits (back-pressure) instead of dropping when the peer's buffer is full.
* ``close`` is synchronous and idempotent; tasks waiting in ``send``/``receive``
  wake with :class:`~casparian_trio.errors.TransportClosed`.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Protocol, Self, runtime_checkable


@runtime_checkable
class Channel(Protocol):
    """One end of a DEALER/ROUTER conversation (see the module docstring)."""

    async def send(self, frames: Sequence[bytes]) -> None:
        """Send one multipart message (ROUTER: ``frames[0]`` is the peer identity)."""
        ...

    async def receive(self) -> list[bytes]:
        """Receive one multipart message (ROUTER: ``result[0]`` is the peer identity)."""
        ...

    async def receive_authenticated(self) -> tuple[list[bytes], str | None]:
        """``receive``, plus the ZAP User-Id of the connection it came on (None: no CURVE)."""
        ...

    def receive_nowait_authenticated(self) -> tuple[list[bytes], str | None] | None:
        """``receive_authenticated`` of a message already waiting, or None at once (no wait).

        Lets a reader drain what has arrived as one batch. Raises TransportClosed
        when closed.
        """
        ...

    def close(self) -> None:
        """Close the channel; idempotent; wakes waiters with TransportClosed."""
        ...

    @property
    def closed(self) -> bool:
        """True once ``close`` has been called."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def check_frame_count(frames: Sequence[bytes], *, is_router: bool) -> None:
    """Reject a message no peer could make sense of.

    Raises:
        ValueError: no frames at all, or a ROUTER message with no frame after
            the identity (a programming error, not a transport failure).
    """
    minimum = 2 if is_router else 1
    if len(frames) < minimum:
        what = "[identity, *frames] with at least one frame" if is_router else "at least one frame"
        raise ValueError(f"a message needs {what}, got {len(frames)} frame(s)")
