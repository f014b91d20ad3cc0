"""File names that are not valid UTF-8: recorded without loss, shown escaped.

POSIX file names are bytes. Python hands an undecodable byte to us as a
surrogate escape (PEP 383: ``b"caf\\xe9"`` is ``"caf\\udce9"``), which opens
the file again but cannot be stored as SQLite TEXT nor printed. So:

- ``to_db``: a name that encodes as UTF-8 is stored as TEXT; one that does not
  is stored as its raw bytes (a BLOB in the same column; SQLite keeps the
  value's own type);
- ``from_db``: either back to the ``str`` that opens the file;
- ``shown``: the name for people (terminal, JSON, error text), undecodable
  bytes as ``\\xNN`` (``caf\\xe9.csv``), like ``ls --quoting-style=escape``;
  any other lone surrogate (text a peer sent as a JSON ``\\ud800`` escape)
  as ``\\udNNN``.
"""

from __future__ import annotations

import os


def to_db(name: str) -> str | bytes:
    """What to bind for a path or name column: the text, or its raw bytes."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name)
    return name


def from_db(value: str | bytes) -> str:
    """A stored path or name as the ``str`` that opens the file (surrogates for raw bytes)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def shown(text: str) -> str:
    """``text`` safe to print and store as TEXT: undecodable bytes become ``\\xNN``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate no file name gives (JSON's "\\ud800" escape)
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
        return raw.decode("utf-8", "backslashreplace")
    return text
