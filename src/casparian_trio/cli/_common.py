"""The operator commands of ``python -m casparian_trio``: publish, scan, inspect, steer.

``cli.build_parser`` calls ``add_commands(subparsers)``; every command sets
``handler`` to a function ``(args) -> exit code``. Errors a user can cause are
``CasparianError`` subclasses carrying one line that names the thing and the
fix (cli.main prints them). Results go to stdout, progress and notes to stderr;
``--json`` prints one JSON document instead of tables.

The commands are synchronous: they use the store's sync cores through
``Database.run_sync`` (``publish`` alone drives the async ``record_deploy``),
and commit each step as its own short transaction, so a running Sentinel is
never blocked for long and notices the change within its poll interval.
Implementations live in ``_ops_publish``, ``_ops_scan``, ``_ops_jobs`` and
``_ops_workers`` (with ``_ops_detail`` for ``job ID`` and ``_ops_db`` for
opening the database and the joined reads); walking and routing are
``scout``'s, formatting is ``_render``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any

from casparian_trio._ops_jobs import cmd_cancel, cmd_job, cmd_jobs, cmd_retry
from casparian_trio._ops_publish import cmd_publish, deploy_via_sentinel, request_deploy
from casparian_trio._ops_scan import cmd_scan, cmd_source_add, cmd_source_list, cmd_submit
from casparian_trio._ops_workers import cmd_status, cmd_workers
from casparian_trio.store import JobStatus

__all__ = ["add_commands", "deploy_via_sentinel", "request_deploy"]

logger = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace], Any]  # an exit code, or a coroutine of one
DB_HELP = "SQLite file (default $CASPARIAN_DB or ./casparian.db)"
DEFAULT_LIMIT = 50  # a screenful; --limit raises it


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


def _quiet_logs(handler: Handler) -> Handler:
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


def _command(sub: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    parser.add_argument("--db", default=None, help=DB_HELP)
    parser.set_defaults(handler=_quiet_logs(handler))
    return parser


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document for scripts")


def add_commands(sub: Any) -> None:
    """Add the operator subcommands to the CLI's subparsers."""
    _add_publish(sub)
    _add_sources(sub)
    _add_jobs(sub)


def _add_publish(sub: Any) -> None:
    p = _command(sub, "publish", cmd_publish, "check a plugin and make it the ACTIVE version")
    p.add_argument("plugin", metavar="PLUGIN.py", help="the plugin file (a Handler class)")
    p.add_argument("--lockfile", help="uv.lock, or the folder of its uv project (default: system)")
    p.add_argument("--version", help="version to publish (default: MANIFEST['version'] or 0)")
    p.add_argument(
        "--sentinel", metavar="ADDR", help="DEPLOY to a running sentinel instead of the database"
    )


def _add_sources(sub: Any) -> None:
    source = sub.add_parser("source", help="manage source folders", description="manage sources")
    actions = source.add_subparsers(dest="source_command", metavar="ACTION", required=True)
    p = _command(actions, "add", cmd_source_add, "register a folder whose files become jobs")
    p.add_argument("dir", metavar="DIR")
    p = _command(actions, "list", cmd_source_list, "list source folders")
    _json_flag(p)

    p = _command(sub, "scan", cmd_scan, "find new and changed files and queue their jobs")
    p.add_argument(
        "source", nargs="?", metavar="SOURCE", help="one source id or path (default all)"
    )

    p = _command(sub, "submit", cmd_submit, "queue one file for one plugin")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--plugin", required=True, metavar="NAME", help="a published plugin")
    p.add_argument("--priority", type=int, default=0, help="higher runs first (default 0)")
    _json_flag(p)


def _add_jobs(sub: Any) -> None:
    p = _command(sub, "jobs", cmd_jobs, "list jobs, newest first")
    p.add_argument("--status", type=str.upper, choices=[str(s) for s in JobStatus])
    p.add_argument("--plugin", metavar="NAME")
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"default {DEFAULT_LIMIT}")
    _json_flag(p)

    p = _command(sub, "job", cmd_job, "everything known about one job")
    p.add_argument("id", type=int, metavar="ID")
    _json_flag(p)

    p = _command(sub, "cancel", cmd_cancel, "cancel a queued job, or abort a running one")
    p.add_argument("id", type=int, metavar="ID")
    p = _command(sub, "retry", cmd_retry, "queue a FAILED or CANCELLED job again")
    p.add_argument("id", type=int, metavar="ID")

    p = _command(sub, "workers", cmd_workers, "list the workers the sentinel knows")
    _json_flag(p)
    p = _command(sub, "status", cmd_status, "queue counts, throughput and workers at a glance")
    _json_flag(p)
