"""Transport: the Trio shim over pyzmq and its in-memory twin, behind one ``Channel`` API.

This package is the only code that imports zmq; zmq errors become
``casparian_trio.errors`` transport errors here.
"""

from __future__ import annotations

from casparian_trio.transport._base import Channel
from casparian_trio.transport.memory import MemoryChannel, MemoryNetwork
from casparian_trio.transport.zmq_channel import ZmqChannel, open_dealer, open_router

__all__ = [
    "Channel",
    "MemoryChannel",
    "MemoryNetwork",
    "ZmqChannel",
    "open_dealer",
    "open_router",
]
