"""``init-db``, ``sentinel`` and ``worker``: the database and the two long-running services.

SIGINT and SIGTERM end ``sentinel`` and ``worker`` with exit 0 at any moment of
start-up: ``_signals`` records them until the command's Trio signal receiver
takes over (``signal_task``), and that receiver is read concurrently with the
service's start-up. The worker drains (finishes its jobs within its grace).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from casparian_trio import _signals
from casparian_trio.cli._common import DB_HELP, EXIT_OK
from casparian_trio.cli._db import db_path, init_database, require_database
from casparian_trio.config import (
    CONFIG_ENV,
    CONFIG_FILE,
    SentinelConfig,
    WorkerConfig,
    env_of,
    flag_of,
    options,
)

if TYPE_CHECKING:
    from casparian_trio.worker import Worker

logger = logging.getLogger("casparian_trio")

OnSignal = Callable[[signal.Signals], None]


def add_commands(sub: Any) -> None:
    """``init-db``, ``sentinel``, ``worker``."""
    p = sub.add_parser(
        "init-db", help="create or upgrade a database (the only command that creates one)"
    )
    p.add_argument("--db", default=None, help=DB_HELP)
    p.set_defaults(handler=cmd_init_db)

    p = sub.add_parser("sentinel", help="run the control plane (job queue + dispatch)")
    add_config_options(p, SentinelConfig)
    p.set_defaults(handler=cmd_sentinel, long_running=True)

    p = sub.add_parser("worker", help="run a worker (executes plugins, writes Parquet)")
    add_config_options(p, WorkerConfig)
    p.set_defaults(handler=cmd_worker, long_running=True)

    p = sub.add_parser("completion", help="print a shell completion script (bash or zsh)")
    p.add_argument("shell", choices=["bash", "zsh"], help="the shell to complete for")
    p.set_defaults(handler=cmd_completion)


def cmd_completion(args: argparse.Namespace) -> int:
    """The completion script, generated from the parser itself (shtab)."""
    import shtab

    from casparian_trio.cli import build_parser

    print(shtab.complete(build_parser(), shell=args.shell))
    return EXIT_OK


def _default_text(field: attrs.Attribute[Any]) -> str:
    if field.metadata["default_help"]:
        return str(field.metadata["default_help"])
    default = field.default
    if isinstance(default, tuple):
        return ",".join(default)
    return "none" if default is None else str(default)


def add_config_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """A flag for every option of ``cls``, its help naming the env var and the default."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help=(
            "TOML file with [sentinel] and [worker] tables "
            f"(env ${CONFIG_ENV}; default ./{CONFIG_FILE} if present)"
        ),
    )
    for field in options(cls):
        kind = field.metadata["kind"]
        help = f"{field.metadata['help']} (env ${env_of(field)}; default {_default_text(field)})"
        if kind == "bool":
            parser.add_argument(
                flag_of(field), dest=field.name, action="store_true", default=None, help=help
            )
            continue
        types: dict[str, Callable[[str], Any]] = {"float": float, "int": int}
        parser.add_argument(
            flag_of(field),
            dest=field.name,
            type=types.get(kind, str),
            default=None,
            metavar=field.metadata.get("metavar")
            or (field.name.upper().removesuffix("_S") if kind in ("float", "int") else None),
            help=help,
        )


def _flags(args: argparse.Namespace, cls: type) -> dict[str, object]:
    return {f.name: getattr(args, f.name, None) for f in options(cls)}


def _config_path(args: argparse.Namespace) -> Path | None:
    return Path(args.config) if args.config else None


def cmd_init_db(args: argparse.Namespace) -> int:
    from casparian_trio.store import reports

    path = db_path(args)
    db = init_database(path)
    try:
        version = db.run_sync(reports.schema_version)
    finally:
        db.close()
    print(f"database {path} ready (schema version {version})")
    return EXIT_OK


def cmd_sentinel(args: argparse.Namespace) -> int:
    config = SentinelConfig.load(_flags(args, SentinelConfig), config_path=_config_path(args))
    require_database(config.db)  # a mistyped --db must not become an empty queue
    trio.run(_sentinel_main, config)
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    config = WorkerConfig.load(_flags(args, WorkerConfig), config_path=_config_path(args))
    trio.run(_worker_main, config)
    return EXIT_OK


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


@contextlib.contextmanager
def stop_signal_receiver() -> Iterator[AsyncIterator[int]]:
    """Trio's receiver for SIGINT and SIGTERM; on the way out, both ignored from then on.

    Leaving the receiver puts back the early Python handler, and trio then closes
    its wakeup socket before it restores the wakeup fd: a signal in that gap made
    CPython write to a closed (or reused) fd. Ignoring them first, still inside
    ``trio.run``, closes the gap; the process is stopping anyway.
    """
    try:
        with trio.open_signal_receiver(*_signals.STOP_SIGNALS) as signals:
            yield signals
    finally:
        _signals.ignore_from_now()


async def _sentinel_main(config: SentinelConfig) -> None:
    from casparian_trio.runtime import serve_sentinel

    with stop_signal_receiver() as signals:
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
    with stop_signal_receiver() as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(signal_task, signals, drain.on_signal, name="worker.signals")
            if not drain.requested:  # else stopped before it started: nothing to drain
                async with open_worker(config) as worker:
                    drain.attach(worker)
                    await worker.run()
            nursery.cancel_scope.cancel(reason="worker stopped")
