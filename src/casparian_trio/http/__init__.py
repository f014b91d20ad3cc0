"""The Sentinel's dashboard and Prometheus ``/metrics``: an ASGI app served by hypercorn on Trio.

One more task in the Sentinel's nursery (``sentinel.http``), started only when
``--http`` is given. It reads the store through a connection of its own (a
second SQLite connection in WAL mode: readers never wait for the Sentinel's
writer, and the Sentinel's one-writer limiter never waits for a page), so a
page or a scrape cannot delay a dispatch. Cancel and retry (POST) are the
CLI's store calls, allowed only when a token is configured.

This package's ``__init__`` imports nothing heavy: hypercorn, starlette,
jinja2 and prometheus_client load only when the server starts
(``casparian_trio.http.server.serve_http``), so a Sentinel without ``--http``
starts as fast as before.
"""

from __future__ import annotations

from casparian_trio.http._address import HttpAddress, check_http_settings, parse_http_address

__all__ = ["HttpAddress", "check_http_settings", "parse_http_address"]
