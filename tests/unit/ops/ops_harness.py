"""Shared pieces of the operator-command tests (a module, so tests can import its types)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs

PLUGIN = """
MANIFEST = {{"name": "{name}", "version": "{version}", "pattern": "{pattern}"}}


class Handler:
    def execute(self, file_path):
        yield from ()
"""


@attrs.frozen
class Result:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Cli = Callable[..., Result]
