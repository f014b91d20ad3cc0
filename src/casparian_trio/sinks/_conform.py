"""Conform one column to its contract type, splitting out the values that cannot be (pure).

The rule comes from ``_drift.drift``; pyarrow does the casting. Written by
hand here: only the quarantine split (which values of a PARSE column do not
convert) and the search for the row that breaks a CHECKED cast.

Clean data pays one ``cast`` per column: the split runs only when a cast fails,
and then bisects the failing chunk, so its cost grows with the bad values, not
with the file.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import pyarrow as pa

from casparian_trio.errors import SinkError
from casparian_trio.sinks._drift import Drift, describe_forbidden, drift

_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)
# First-level chunk when a PARSE cast fails; failing chunks are bisected down to values.
SPLIT_CHUNK_ROWS = 4096
# A raw value longer than this is cut in the quarantine table.
RAW_VALUE_MAX_CHARS = 1000


@attrs.frozen
class Invalid:
    """The values of one column that did not convert: their rows in the batch, raw text, reason."""

    column: str
    indices: pa.Array  # int64 positions in the batch, ascending
    raw: pa.Array  # string: the value as the plugin sent it (cut at RAW_VALUE_MAX_CHARS)
    reason: str
    mask: pa.Array  # bool, one per row of the batch: True where the value is invalid

    def __len__(self) -> int:
        return len(self.indices)


@attrs.frozen
class Column:
    """A conformed column (nulls where values were invalid) and what was invalid in it."""

    array: pa.Array
    invalid: Invalid | None = None


def conform_column(
    col: pa.Array, dst: pa.DataType, *, topic: str, name: str, first_row: int
) -> Column:
    """``col`` as ``dst`` by the drift rules.

    Args:
        col: the batch's column.
        dst: the contract's type.
        topic, name: for messages.
        first_row: 1-based row number, in the job's output, of ``col[0]``.

    Raises:
        SinkError: a FORBIDDEN drift, or a CHECKED value that would lose meaning.
    """
    rule = drift(col.type, dst)
    if rule is Drift.SAME:
        return Column(col)
    if rule is Drift.FORBIDDEN:
        raise SinkError(
            f"topic {topic!r}: column {name!r}: {describe_forbidden(col.type, dst)} "
            f"(rows from {first_row})"
        )
    if pa.types.is_dictionary(col.type) and not pa.types.is_dictionary(dst):
        col = col.dictionary_decode()
    if rule is Drift.PARSE:
        return _parse(col, dst, name)
    try:
        return Column(col.cast(dst, safe=True))
    except _CAST_ERRORS as exc:
        if rule is Drift.LOSSLESS:  # a bug in the table, or an exotic nested type
            raise SinkError(
                f"topic {topic!r}: column {name!r} cannot be cast from {col.type} to {dst}: "
                f"{_first_line(exc)}"
            ) from exc
        index = _bad_indices(col, dst, first_only=True)[0]
        raise SinkError(
            f"topic {topic!r}: column {name!r}: {col.type} value {_raw(col[index])!r} at row "
            f"{first_row + index} does not fit the contract's {dst} without loss "
            "(a fraction, an out-of-range value or a finer time unit)"
        ) from exc


# Text a number cast accepts, checked in one vectorised pass (RE2 syntax) so the
# split costs one regex and one cast, not a search, when values do not parse.
# Padding and empty text pass the pattern (they are trimmed, or null, later).
_INTEGER_TEXT = r"^\s*([+-]?[0-9]+)?\s*$"
_FLOAT_TEXT = r"(?i)^\s*([+-]?(([0-9]+[.]?[0-9]*|[.][0-9]+)(e[+-]?[0-9]+)?|inf|infinity|nan))?\s*$"


# Compute functions turn a Python value into a scalar with pa.scalar, which
# imports pandas: the scalars they are given are built from buffers.
_EMPTY_TEXT = pa.Array.from_buffers(
    pa.string(), 1, [None, pa.py_buffer(bytes(8)), pa.py_buffer(b"")]
)[0]
_TRUE = pa.Array.from_buffers(pa.bool_(), 1, [None, pa.py_buffer(b"\x01")])[0]


def mask(n: int, true_at: Iterable[int]) -> pa.Array:
    """``n`` booleans, true at the indices ``true_at``, built from a bitmap.

    Not ``pa.array``: it imports pandas when installed (~0.3 s and ~40 MB in
    the worker, the first time a job has an invalid value).
    """
    bits = bytearray((n + 7) // 8)
    for i in true_at:
        bits[i >> 3] |= 1 << (i & 7)
    return pa.Array.from_buffers(pa.bool_(), n, [None, pa.py_buffer(bytes(bits))])


def _parse(col: pa.Array, dst: pa.DataType, name: str) -> Column:
    """Text into ``dst``: padding trimmed, empty text is null, what does not parse is invalid.

    Cheapest path first: the text as it is casts (clean data: one pass); else
    the values that cannot be numbers are found with one regex pass and nulled,
    and the rest cast; only padded or empty text needs the trimming pass.
    """
    import pyarrow.compute as pc  # only here: its import costs every worker ~30 ms and ~8 MB

    try:
        return Column(col.cast(dst, safe=True))
    except _CAST_ERRORS:
        pass
    pattern = _INTEGER_TEXT if pa.types.is_integer(dst) else None
    if pa.types.is_floating(dst):
        pattern = _FLOAT_TEXT
    null = pa.nulls(1, col.type)[0]  # not pa.scalar/pa.array: those import pandas
    if pattern is None:
        bad = mask(len(col), ())
    else:
        bad = pc.invert(pc.fill_null(pc.match_substring_regex(col, pattern), _TRUE))
    text = pc.if_else(bad, null, col)
    try:
        converted = text.cast(dst, safe=True)
    except _CAST_ERRORS:  # padding, empty text, out of range, or a type without a pattern
        text = pc.utf8_trim_whitespace(text)
        text = pc.if_else(pc.equal(text, _EMPTY_TEXT), null, text)
        try:
            converted = text.cast(dst, safe=True)
        except _CAST_ERRORS:
            rest = _bad_indices(text, dst, first_only=False)
            bad = pc.or_(bad, mask(len(text), rest))
            text = pc.if_else(bad, null, text)
            converted = text.cast(dst, safe=True)
    indices = pc.indices_nonzero(bad)
    if not len(indices):
        return Column(converted)  # padding or empty text only: nothing invalid
    raw = pc.utf8_slice_codeunits(col.take(indices), 0, RAW_VALUE_MAX_CHARS)
    return Column(converted, Invalid(name, indices, raw, f"not a valid {dst}", bad))


def _bad_indices(col: pa.Array, dst: pa.DataType, *, first_only: bool) -> list[int]:
    found: list[int] = []
    for start in range(0, len(col), SPLIT_CHUNK_ROWS):
        _bisect(col.slice(start, SPLIT_CHUNK_ROWS), start, dst, found, first_only)
        if first_only and found:
            break
    return found


def _bisect(
    part: pa.Array, offset: int, dst: pa.DataType, found: list[int], first_only: bool
) -> None:
    if first_only and found:
        return
    try:
        part.cast(dst, safe=True)
        return
    except _CAST_ERRORS:
        pass
    if len(part) == 1:
        found.append(offset)
        return
    mid = len(part) // 2
    _bisect(part.slice(0, mid), offset, dst, found, first_only)
    _bisect(part.slice(mid), offset + mid, dst, found, first_only)


def _raw(value: pa.Scalar) -> str | None:
    py = value.as_py()
    if py is None:
        return None
    text = py if isinstance(py, str) else str(py)
    return text[:RAW_VALUE_MAX_CHARS]


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
