"""Pieces every command family shares: the ``Handler`` alias, exit codes, adding a command.

A command module exposes ``add_commands(sub)``; each command sets ``handler``
to a function ``(args) -> exit code`` (or a coroutine function: ``main`` runs it
under ``trio.run``). Errors a user can cause are ``CasparianError`` subclasses
carrying one line that names the thing and the fix (``main`` prints them).
Results go to stdout, progress and notes to stderr; ``--json`` prints one JSON
document instead of tables.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
Handler = Callable[[argparse.Namespace], Any]  # returns an exit code, or a coroutine of one
DB_HELP = "SQLite file (env $CASPARIAN_DB; default ./casparian.db)"
JSON_HELP = "print one JSON document for scripts (default: tables)"
# The Sentinel's address wherever a command talks to it (worker --connect, publish --sentinel).
CONNECT_ENV = "CASPARIAN_CONNECT"


@contextlib.contextmanager
def _quiet(args: argparse.Namespace) -> Iterator[None]:
    package = logging.getLogger("casparian_trio")
    previous = package.level
    if not getattr(args, "verbose", False):
        package.setLevel(logging.WARNING)
    try:
        yield
    finally:
        package.setLevel(previous)


def quiet_logs(handler: Handler) -> Handler:
    """Run a command with the package's INFO logs off (results are printed; -v restores them)."""
    if inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def run_async(args: argparse.Namespace) -> int:
            with _quiet(args):
                return int(await handler(args))

        return run_async

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        with _quiet(args):
            return int(handler(args))

    return run


def command(sub: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
    """An operator command: ``--db``, quiet logs, ``help`` as its description too."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    parser.add_argument("--db", default=None, help=DB_HELP)
    parser.set_defaults(handler=quiet_logs(handler))
    return parser


def json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help=JSON_HELP)
