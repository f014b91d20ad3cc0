"""Log setup for every command: human text (default) or one JSON object per line.

``--log-format json`` uses python-json-logger: each record becomes an object
with ``time`` (ISO 8601 with zone, UTC), ``level``, ``logger``, ``message``,
and every ``extra`` field the code attaches (``event``, ``job_id``,
``worker_id``...: the stable event names of every logger call), so a log shipper can filter on
``event == "job.failed"`` without parsing text. Tracebacks go in ``exc_info``.
"""

from __future__ import annotations

import datetime
import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _IsoJsonFormatter(JsonFormatter):
    """JSON lines whose ``time`` is ISO 8601 in UTC with its zone."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        return moment.isoformat(timespec="milliseconds")


def json_formatter() -> logging.Formatter:
    return _IsoJsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )


def setup_logging(*, verbose: bool, log_format: str = "text", stream: Any = None) -> None:
    """Configure the root logger once for this process.

    Args:
        verbose: DEBUG instead of INFO.
        log_format: ``text`` or ``json`` (one object per line).
        stream: where to write (default stderr).

    Raises:
        ValueError: an unknown ``log_format``.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        handler.setFormatter(json_formatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT, datefmt="%H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
