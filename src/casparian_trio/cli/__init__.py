"""Command line: ``python -m casparian_trio`` / ``casparian-trio``.

The package holds the parser and ``main``; one module per command family adds
its commands (``services``: init-db, sentinel, worker; ``publish``; ``scan``:
source, scan, submit; ``jobs``: jobs, cancel, retry; ``detail``: job;
``topics``: topics, topic; ``query``: catalog, query; ``workers``: workers, status; ``demo``), calling
the store and the domain modules and rendering with the private ``_render``.
No SQL here.

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
import sys
import traceback
from collections.abc import Sequence

import trio

from casparian_trio import __version__, _signals
from casparian_trio._logging import LOG_FORMATS, setup_logging
from casparian_trio.cli import (
    demo,
    detail,
    jobs,
    keys,
    publish,
    query,
    scan,
    services,
    topics,
    workers,
)
from casparian_trio.cli._common import EXIT_ERROR, EXIT_OK, EXIT_USAGE, Handler
from casparian_trio.errors import CasparianError, first_cause, leaves, one_line

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_USAGE", "Handler", "build_parser", "main"]

logger = logging.getLogger("casparian_trio")

# Each family adds its commands in this order (the order of `--help`).
FAMILIES = (services, demo, keys, publish, scan, jobs, detail, topics, query, workers)


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
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, help="one of the commands below"
    )

    for family in FAMILIES:
        family.add_commands(sub)
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
