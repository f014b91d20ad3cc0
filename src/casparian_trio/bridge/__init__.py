"""The bridge: run a plugin in a guest process and stream its Arrow output to sinks.

``host.py`` is the Trio side (BridgeExecutor); ``guest.py`` runs inside the
plugin environment and imports nothing from this package.
"""

from __future__ import annotations

from casparian_trio.bridge.host import BridgeExecutor

__all__ = ["BridgeExecutor"]
