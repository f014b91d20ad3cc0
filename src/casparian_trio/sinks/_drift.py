"""Drift rules: what happens when a batch's column type differs from its topic's (pure).

One table decides, the same within a job and across jobs (``drift(src, dst)``):

===========================================  ==========  ==========================================
batch type → contract type                   rule        effect
===========================================  ==========  ==========================================
same type                                    SAME        nothing
null → any                                   LOSSLESS    cast (all values are null)
dictionary<T> → U                            as T → U    decoded first
narrower integer → wider integer             LOSSLESS    cast (e.g. int32 → int64, uint8 → int16)
int → float with room in the mantissa        LOSSLESS    cast (int32 → float64)
float32 → float64                            LOSSLESS    cast
string ↔ large_string, binary ↔ large_binary LOSSLESS    cast
number, bool, date, time, timestamp → string LOSSLESS    cast (the value's text)
timestamp, same zone-awareness, coarser unit LOSSLESS    cast (ms → us; zone A → zone B: same instant)
string → number, bool, date, time, timestamp PARSE       per value; values that do not parse are
                                                         quarantined (or fail: ``on_invalid``)
other number → number (wider → narrower,     CHECKED     safe cast; a value that does not fit, or a
float → int, int64 → float64)                            float with a fraction, fails the job naming
                                                         the column, both types and the row
timestamp finer unit, date ↔ timestamp       CHECKED     safe cast, as above
naive ↔ time-zone-aware timestamp            FORBIDDEN   fails the job (the instant is unknowable)
anything else                                FORBIDDEN   fails the job naming column and both types
===========================================  ==========  ==========================================

Within one job before a contract exists, a LOSSLESS change in the other
direction (the job's type so far → the batch's) *widens* the job's schema
instead (``widens(current, incoming)``): a column all-null in the first batch
and strings later ends typed string; int32 then int64 ends int64. Text after
numbers does not widen: the text is parsed, as it would be against a contract.
"""

from __future__ import annotations

import enum

import pyarrow as pa

_INT_RANGE = {
    pa.int8(): (-(2**7), 2**7 - 1),
    pa.int16(): (-(2**15), 2**15 - 1),
    pa.int32(): (-(2**31), 2**31 - 1),
    pa.int64(): (-(2**63), 2**63 - 1),
    pa.uint8(): (0, 2**8 - 1),
    pa.uint16(): (0, 2**16 - 1),
    pa.uint32(): (0, 2**32 - 1),
    pa.uint64(): (0, 2**64 - 1),
}
# Integers a float holds exactly: 2**mantissa bits (IEEE 754 binary32/binary64).
_FLOAT_EXACT_BITS = {pa.float16(): 11, pa.float32(): 24, pa.float64(): 53}


class Drift(enum.Enum):
    SAME = "same"
    LOSSLESS = "lossless"
    PARSE = "parse"
    CHECKED = "checked"
    FORBIDDEN = "forbidden"


def drift(src: pa.DataType, dst: pa.DataType) -> Drift:
    """The rule for writing a ``src`` column into a ``dst`` contract column (module table)."""
    if src == dst:
        return Drift.SAME
    if pa.types.is_null(src):
        return Drift.LOSSLESS
    if pa.types.is_dictionary(src):
        inner = drift(src.value_type, dst)
        return Drift.LOSSLESS if inner is Drift.SAME else inner
    if pa.types.is_dictionary(dst):
        return drift(src, dst.value_type)
    if _is_text(dst) and (_is_text(src) or _is_scalar(src)):
        return Drift.LOSSLESS
    if _is_binary(src) and _is_binary(dst):
        return Drift.LOSSLESS
    if _is_text(src):
        return Drift.PARSE if _is_scalar(dst) else Drift.FORBIDDEN
    if pa.types.is_timestamp(src) and pa.types.is_timestamp(dst):
        return _timestamp_drift(src, dst)
    if _is_number(src) and _is_number(dst):
        return Drift.LOSSLESS if _exact(src, dst) else Drift.CHECKED
    temporal = (pa.types.is_date(src) or pa.types.is_timestamp(src)) and (
        pa.types.is_date(dst) or pa.types.is_timestamp(dst)
    )
    if temporal and not _aware(src) and not _aware(dst):
        return Drift.CHECKED
    return Drift.FORBIDDEN


def widens(current: pa.DataType, incoming: pa.DataType) -> bool:
    """True when a job's own (not yet contracted) column type should become ``incoming``."""
    if _is_text(incoming) and not _is_text(current) and not pa.types.is_null(current):
        return False  # numbers then text: the text is parsed into the numbers' type
    return drift(current, incoming) is Drift.LOSSLESS


def describe_forbidden(src: pa.DataType, dst: pa.DataType) -> str:
    """Why ``src`` cannot go into ``dst``, for the job's error line."""
    if pa.types.is_timestamp(src) and pa.types.is_timestamp(dst) and _aware(src) != _aware(dst):
        aware, naive = (src, dst) if _aware(src) else (dst, src)
        return (
            f"time-zone-aware ({aware}) and naive ({naive}) timestamps cannot share a column; "
            "make the plugin emit one kind"
        )
    return f"{src} cannot be written as {dst}"


def _timestamp_drift(src: pa.TimestampType, dst: pa.TimestampType) -> Drift:
    if _aware(src) != _aware(dst):
        return Drift.FORBIDDEN
    order = ["s", "ms", "us", "ns"]
    return Drift.LOSSLESS if order.index(src.unit) <= order.index(dst.unit) else Drift.CHECKED


def _exact(src: pa.DataType, dst: pa.DataType) -> bool:
    if pa.types.is_integer(src) and pa.types.is_integer(dst):
        lo, hi = _INT_RANGE[src]
        dlo, dhi = _INT_RANGE[dst]
        return dlo <= lo and hi <= dhi
    if pa.types.is_integer(src) and pa.types.is_floating(dst):
        value_bits = src.bit_width - (0 if pa.types.is_unsigned_integer(src) else 1)
        return bool(value_bits <= _FLOAT_EXACT_BITS[dst])
    if pa.types.is_floating(src) and pa.types.is_floating(dst):
        return bool(src.bit_width <= dst.bit_width)
    return False


def _aware(t: pa.DataType) -> bool:
    return bool(pa.types.is_timestamp(t) and t.tz is not None)


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _is_binary(t: pa.DataType) -> bool:
    return bool(pa.types.is_binary(t) or pa.types.is_large_binary(t))


def _is_number(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


def _is_scalar(t: pa.DataType) -> bool:
    return _is_number(t) or pa.types.is_boolean(t) or pa.types.is_temporal(t)
