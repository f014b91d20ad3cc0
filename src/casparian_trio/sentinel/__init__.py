"""Control plane: the Sentinel's nursery of tasks, its worker registry and its decisions."""

from __future__ import annotations

from casparian_trio.sentinel.registry import Registry, WorkerState
from casparian_trio.sentinel.service import Sentinel

__all__ = ["Registry", "Sentinel", "WorkerState"]
