"""Command line: ``python -m casparian_trio`` / ``casparian-trio``.

The only module that configures logging and calls ``trio.run``. Every error a
user can trigger ends as one line on stderr naming the thing and the fix, and a
non-zero exit; ``--verbose`` adds the traceback.

SIGINT and SIGTERM end the long-running commands (``sentinel``, ``worker``,
``demo``) with exit 0 at any moment of start-up: ``_signals`` records them until
the command's Trio signal receiver takes over, and that receiver is read
concurrently with the service's start-up. Other commands get Python's default
behaviour back, so Ctrl-C interrupts them as usual.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import signal
import sys
import traceback
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from casparian_trio import __version__, _signals
from casparian_trio._logging import LOG_FORMATS, setup_logging
from casparian_trio.config import (
    DEFAULT_ADDRESS,
    DEFAULT_DB,
    DEFAULT_OUTPUT,
    SentinelConfig,
    WorkerConfig,
)
from casparian_trio.errors import CasparianError, ConfigError, first_cause, leaves, one_line

if TYPE_CHECKING:
    from casparian_trio.worker import Worker

logger = logging.getLogger("casparian_trio")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
Handler = Callable[[argparse.Namespace], Any]  # returns an exit code, or a coroutine of one
OnSignal = Callable[[signal.Signals], None]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="casparian-trio",
        description="Turn directories of messy files into typed Parquet tables.",
    )
    parser.add_argument("--version", action="version", version=f"casparian-trio {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text (default) or json: one JSON object a line, with the event fields",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

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

    p = sub.add_parser("demo", help="run the whole flow on generated sample files, in seconds")
    p.add_argument(
        "--dir", default="./casparian-demo", help="working folder (default ./casparian-demo)"
    )
    p.add_argument("--workers", type=int, default=2, help="workers to start (default 2)")
    p.set_defaults(handler=cmd_demo, long_running=True)

    try:
        from casparian_trio import ops
    except ImportError:  # pragma: no cover - operator commands arrive with their module
        pass
    else:
        ops.add_commands(sub)
    for command in sub.choices.values():  # `-v` works after the command too
        command.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help="debug logs and tracebacks",
        )
        command.add_argument(
            "--log-format",
            choices=LOG_FORMATS,
            default=argparse.SUPPRESS,
            help="text (default) or json: one JSON object a line, with the event fields",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Again (idempotent): the `casparian-trio` console script enters here, not via __main__.
    _signals.install_early()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "long_running", False) and _signals.restore_default() is not None:
        return EXIT_OK  # stopped before it started, like a Ctrl-C would have
    setup_logging(verbose=args.verbose, log_format=args.log_format)
    try:
        return _run(args)
    finally:
        if getattr(args, "long_running", False):
            _signals.ignore_from_now()  # it is stopping already; a late signal changes nothing


def _run(args: argparse.Namespace) -> int:
    handler: Handler = args.handler
    try:
        if inspect.iscoroutinefunction(handler):
            return int(trio.run(handler, args))
        return int(handler(args))
    except KeyboardInterrupt:
        return EXIT_OK
    except (CasparianError, BaseExceptionGroup) as exc:
        found = leaves(exc)
        if any(isinstance(e, KeyboardInterrupt) for e in found):
            return EXIT_OK
        cause, others = first_cause(exc)
        if not isinstance(cause, CasparianError):
            return _report_bug(exc, cause)
        if args.verbose:  # each cause's own traceback: a user never sees an ExceptionGroup
            for leaf in [cause, *(e for e in found if e is not cause)]:
                logger.error("failed", exc_info=leaf)
        print(f"error: {one_line(exc) if others else cause}", file=sys.stderr)
        return EXIT_ERROR


def _report_bug(exc: BaseException, cause: BaseException) -> int:
    """A bug of ours inside nursery groups: the first cause's own traceback, then one line."""
    if not isinstance(exc, BaseExceptionGroup):
        raise exc
    traceback.print_exception(cause, file=sys.stderr)
    print(
        f"error: unexpected {one_line(exc)} (a bug; please report it with the traceback above)",
        file=sys.stderr,
    )
    return EXIT_ERROR


async def _signal_task(
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
    from casparian_trio.store import open_database

    db = open_database(args.db)
    try:
        version = db.run_sync(lambda conn: conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()
    print(f"database {args.db} ready (schema version {version})")
    return EXIT_OK


async def cmd_demo(args: argparse.Namespace) -> int:
    from casparian_trio.demo import run_demo

    if not args.verbose:  # the demo prints its own progress; service logs would drown it
        logging.getLogger("casparian_trio").setLevel(logging.WARNING)
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    with trio.open_signal_receiver(*_signals.STOP_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:

            def stop(signum: signal.Signals) -> None:
                logger.info("%s: stopping the demo", signum.name)
                nursery.cancel_scope.cancel(reason="signal")

            await nursery.start(_signal_task, signals, stop, name="demo.signals")
            if nursery.cancel_scope.cancel_called:
                return EXIT_OK  # stopped before it started
            code = await run_demo(Path(args.dir), workers=args.workers)
            nursery.cancel_scope.cancel(reason="demo finished")
            return code
    return EXIT_OK  # stopped by a signal


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
            await nursery.start(_signal_task, signals, stop, name="sentinel.signals")
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
            await nursery.start(_signal_task, signals, drain.on_signal, name="worker.signals")
            if not drain.requested:  # else stopped before it started: nothing to drain
                async with open_worker(config) as worker:
                    drain.attach(worker)
                    await worker.run()
            nursery.cancel_scope.cancel(reason="worker stopped")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
