"""``serve_http``: the dashboard as one task of the Sentinel's nursery (hypercorn on Trio).

Theory of operation: the task opens a second connection to the Sentinel's
database (no migrations: the Sentinel did them), binds the listening socket
itself (so a port in use is one clear line, and no socket is left to the
garbage collector), builds the Starlette app and runs ``hypercorn.trio.serve``
on that socket (``fd://``) in a nursery of its own. ``task_status.started``
hands back the URL actually bound (``:0`` asks for a free port), after it is
logged as ``dashboard on http://HOST:PORT`` (event ``http.started``). It
returns only when cancelled, with the rest of the Sentinel; hypercorn's
graceful close is bounded by ``GRACEFUL_S``. The connection is closed last,
when no read can be pending (``Database.run`` never abandons its thread).
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from casparian_trio.errors import ConfigError
from casparian_trio.http._address import HttpAddress
from casparian_trio.http.app import Dashboard, build_app
from casparian_trio.sentinel.registry import Registry
from casparian_trio.store import open_database

logger = logging.getLogger(__name__)

# Open requests get this long to finish when the Sentinel stops: pages are
# small reads, and a stopping Sentinel should not wait on a slow browser.
GRACEFUL_S = 1.0


def bound_socket(address: HttpAddress) -> socket.socket:
    """A TCP socket bound to ``address`` (not listening yet), closed again if binding fails.

    Raises:
        ConfigError: the port is in use, or the address is not one of this host's.
    """
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"--http {address.bind}: unknown host ({exc.strerror})") from exc
    family, kind, proto, _, where = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(where)
    except OSError as exc:
        sock.close()
        raise ConfigError(_bind_error(address, exc)) from exc
    return sock


def hypercorn_config(sock: socket.socket) -> HypercornConfig:
    """hypercorn on our bound socket (it takes the descriptor over), our logs, no access log."""
    config = HypercornConfig()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    # Its warnings and errors in our log format; its "Running on" line is ours (http.started).
    errorlog = logging.getLogger("casparian_trio.http.hypercorn")
    errorlog.setLevel(logging.WARNING)
    config.errorlog = errorlog
    config.graceful_timeout = GRACEFUL_S
    config.include_server_header = False
    return config


async def serve_http(
    address: HttpAddress,
    *,
    db_path: str,
    token: str | None,
    registry: Registry | None = None,
    wall: Callable[[], float] = time.time,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the dashboard on ``address`` until cancelled; ``started`` with its URL.

    Args:
        address: where to listen (``check_http_settings`` already applied the token rule).
        db_path: the Sentinel's database file.
        token: required on every request when set; enables cancel and retry.
        registry: the Sentinel's live worker registry (busy and free slots).

    Raises:
        ConfigError: the address cannot be bound (in use, or not an address of this host).
    """
    if db_path == ":memory:":
        raise ConfigError("--http needs the sentinel's database file, not :memory:")
    db = open_database(db_path, migrate=False)
    try:
        config = hypercorn_config(bound_socket(address))  # a bind error is ours, and one line
        app = build_app(Dashboard(db=db, token=token, registry=registry, wall=wall))
        async with trio.open_nursery() as nursery:
            # hypercorn's ASGI type is a union its Starlette-typed callers cannot name.
            binds = await nursery.start(partial(serve, app, config))  # type: ignore[arg-type]
            url = str(binds[0])
            logger.info(
                "dashboard on %s (%s)",
                url,
                "token required" if token else "read-only",
                extra={"event": "http.started", "url": url},
            )
            task_status.started(url)
    finally:
        db.close()


def _bind_error(address: HttpAddress, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"--http {address.bind}: the port is in use; stop what runs there or pass another --http"
    return (
        f"--http {address.bind}: cannot listen there ({exc.strerror or exc}); pass another --http"
    )
