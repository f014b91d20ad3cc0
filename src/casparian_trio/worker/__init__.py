"""Data plane: the Worker's nursery of tasks and its per-job runner."""

from __future__ import annotations

from casparian_trio.worker.runner import JobExecutor, JobRun, StopReason
from casparian_trio.worker.service import EnvProvider, Worker

__all__ = ["EnvProvider", "JobExecutor", "JobRun", "StopReason", "Worker"]
