"""``init-db``, ``sentinel`` and ``worker``: the database and the two long-running services.

SIGINT and SIGTERM end ``sentinel`` and ``worker`` with exit 0 at any moment of
start-up: ``_signals`` records them until the command's Trio signal receiver
takes over (``signal_task``), and that receiver is read concurrently with the
service's start-up. The worker drains (finishes its jobs within its grace).
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from casparian_trio import _signals
from casparian_trio.cli._common import EXIT_OK
from casparian_trio.config import (
    DEFAULT_ADDRESS,
    DEFAULT_DB,
    DEFAULT_OUTPUT,
    SentinelConfig,
    WorkerConfig,
)

if TYPE_CHECKING:
    from casparian_trio.worker import Worker

logger = logging.getLogger("casparian_trio")

OnSignal = Callable[[signal.Signals], None]


def add_commands(sub: Any) -> None:
    """``init-db``, ``sentinel``, ``worker``."""
    p = sub.add_parser("init-db", help="create or upgrade a database")
    p.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file (default {DEFAULT_DB})")
    p.set_defaults(handler=cmd_init_db)

    p = sub.add_parser("sentinel", help="run the control plane (job queue + dispatch)")
    p.add_argument(
        "--bind", default=None, help=f"ZeroMQ address to bind (default {DEFAULT_ADDRESS})"
    )
    p.add_argument("--db", default=None, help=f"SQLite file (default {DEFAULT_DB})")
    p.add_argument("--heartbeat-interval", type=float, default=None, help="seconds (default 2)")
    p.add_argument(
        "--liveness-timeout", type=float, default=None, help="seconds (default 3 x heartbeat)"
    )
    p.add_argument(
        "--job-timeout", type=float, default=None, help="default job timeout, seconds (3600)"
    )
    p.add_argument(
        "--abort-grace", type=float, default=None, help="seconds after ABORT (default 10)"
    )
    p.set_defaults(handler=cmd_sentinel, long_running=True)

    p = sub.add_parser("worker", help="run a worker (executes plugins, writes Parquet)")
    p.add_argument("--connect", default=None, help=f"Sentinel address (default {DEFAULT_ADDRESS})")
    p.add_argument("--output", default=None, help=f"output root (default {DEFAULT_OUTPUT})")
    p.add_argument("--worker-id", default=None, help="stable id (default HOST-PID)")
    p.add_argument("--concurrency", type=int, default=None, help="jobs at once (default 1)")
    p.add_argument("--capabilities", default=None, help="comma-separated plugin names (default *)")
    p.add_argument("--heartbeat-interval", type=float, default=None, help="seconds (default 2)")
    p.add_argument("--grace", type=float, default=None, help="drain grace on SIGTERM, seconds (30)")
    p.add_argument("--envs-root", default=None, help="where plugin envs are built (~/.cache/...)")
    p.add_argument(
        "--envs-max-bytes", type=int, default=None, help="evict least recently used envs beyond"
    )
    p.add_argument(
        "--warm-guests",
        type=int,
        default=None,
        help="envs that keep a started guest ready (default 2; 0: none)",
    )
    p.add_argument(
        "--allow-system-env",
        action="store_true",
        default=None,
        help="run plugins whose env is unknown in this interpreter",
    )
    p.set_defaults(handler=cmd_worker, long_running=True)


async def signal_task(
    signals: AsyncIterator[int],
    on_signal: OnSignal,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Pass ``on_signal`` every stop signal: first one recorded early, then each as it comes.

    Start it (``nursery.start``) right after ``trio.open_signal_receiver``: from
    then on the receiver queues what the early handlers would have recorded, so
    none is lost; a signal recorded early has been passed on when ``start`` returns.
    """
    early = _signals.stop_requested()
    if early is not None:
        on_signal(early)
    task_status.started()
    async for signum in signals:
        on_signal(signal.Signals(signum))


# --- commands ----------------------------------------------------------------


def cmd_init_db(args: argparse.Namespace) -> int:
    from casparian_trio.store import open_database, reports

    db = open_database(args.db)
    try:
        version = db.run_sync(reports.schema_version)
    finally:
        db.close()
    print(f"database {args.db} ready (schema version {version})")
    return EXIT_OK


def cmd_sentinel(args: argparse.Namespace) -> int:
    config = SentinelConfig.from_env(
        bind=args.bind,
        db=Path(args.db) if args.db else None,
        heartbeat_interval=args.heartbeat_interval,
        liveness_timeout=args.liveness_timeout,
        job_timeout=args.job_timeout,
        abort_grace=args.abort_grace,
    )
    trio.run(_sentinel_main, config)
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    config = WorkerConfig.from_env(
        connect=args.connect,
        output=Path(args.output) if args.output else None,
        worker_id=args.worker_id,
        concurrency=args.concurrency,
        capabilities=tuple(c.strip() for c in args.capabilities.split(","))
        if args.capabilities
        else None,
        heartbeat_interval=args.heartbeat_interval,
        grace=args.grace,
        envs_root=Path(args.envs_root) if args.envs_root else None,
        envs_max_bytes=args.envs_max_bytes,
        allow_system_env=args.allow_system_env,
        warm_guests=args.warm_guests,
    )
    trio.run(_worker_main, config)
    return EXIT_OK


async def _sentinel_main(config: SentinelConfig) -> None:
    from casparian_trio.runtime import serve_sentinel

    with trio.open_signal_receiver(*_signals.STOP_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:

            def stop(signum: signal.Signals) -> None:
                logger.info("%s: stopping the sentinel", signum.name)
                nursery.cancel_scope.cancel(reason="signal")

            # Signals are read from now on, also during start-up (migrations).
            await nursery.start(signal_task, signals, stop, name="sentinel.signals")
            if not nursery.cancel_scope.cancel_called:  # else stopped before it started
                nursery.start_soon(serve_sentinel, config, name="sentinel")
    logger.info("sentinel stopped")


@attrs.define(eq=False)
class _Drain:
    """Stop signals to ``Worker.request_shutdown()``, held until the worker exists."""

    worker: Worker | None = None
    requested: bool = False

    def on_signal(self, signum: signal.Signals) -> None:
        logger.info("%s: draining the worker", signum.name)
        if self.worker is None:
            self.requested = True  # nothing runs yet; it drains as soon as it exists
        else:
            self.worker.request_shutdown()

    def attach(self, worker: Worker) -> None:
        self.worker = worker
        if self.requested:
            worker.request_shutdown()


async def _worker_main(config: WorkerConfig) -> None:
    from casparian_trio.runtime import open_worker

    drain = _Drain()
    with trio.open_signal_receiver(*_signals.STOP_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(signal_task, signals, drain.on_signal, name="worker.signals")
            if not drain.requested:  # else stopped before it started: nothing to drain
                async with open_worker(config) as worker:
                    drain.attach(worker)
                    await worker.run()
            nursery.cancel_scope.cancel(reason="worker stopped")
