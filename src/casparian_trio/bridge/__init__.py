"""The bridge: run a plugin in a guest process and stream its Arrow output to sinks.

``host.py`` is the Trio side (BridgeExecutor); ``guest.py`` runs inside the
plugin environment and imports nothing from this package.

``BridgeExecutor`` is loaded on first use (PEP 562): the worker's confinement
check imports ``_input_check`` from here, and every command line start would
otherwise pay for importing pyarrow through ``host``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from casparian_trio.bridge.host import BridgeExecutor

__all__ = ["BridgeExecutor"]


def __getattr__(name: str) -> Any:
    if name == "BridgeExecutor":
        from casparian_trio.bridge.host import BridgeExecutor

        return BridgeExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
