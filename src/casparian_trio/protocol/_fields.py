"""Typed readers for JSON payload fields: each raises RemoteProtocolError naming the field."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from casparian_trio.errors import RemoteProtocolError

T = TypeVar("T")
_MISSING = object()


def _type_name(value: object) -> str:
    return type(value).__name__


def _get(obj: Mapping[str, Any], name: str, required: bool) -> Any:
    value = obj.get(name, _MISSING)
    if value is _MISSING or (value is None and required):
        if required:
            raise RemoteProtocolError(f"missing required field {name!r}", field=name)
        return None
    return value


def req_str(obj: Mapping[str, Any], name: str) -> str:
    value = _get(obj, name, True)
    if not isinstance(value, str):
        raise RemoteProtocolError(
            f"field {name!r} must be a string, got {_type_name(value)}", field=name
        )
    return value


def opt_str(obj: Mapping[str, Any], name: str) -> str | None:
    value = _get(obj, name, False)
    return None if value is None else req_str(obj, name)


def req_int(obj: Mapping[str, Any], name: str) -> int:
    value = _get(obj, name, True)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RemoteProtocolError(
            f"field {name!r} must be an integer, got {_type_name(value)}", field=name
        )
    return value


def opt_int(obj: Mapping[str, Any], name: str) -> int | None:
    value = _get(obj, name, False)
    return None if value is None else req_int(obj, name)


def opt_float(obj: Mapping[str, Any], name: str) -> float | None:
    value = _get(obj, name, False)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RemoteProtocolError(
            f"field {name!r} must be a number, got {_type_name(value)}", field=name
        )
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise RemoteProtocolError(f"field {name!r} must be a finite number", field=name)
    return number


def opt_bool(obj: Mapping[str, Any], name: str, default: bool) -> bool:
    value = _get(obj, name, False)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RemoteProtocolError(
            f"field {name!r} must be a boolean, got {_type_name(value)}", field=name
        )
    return value


def opt_dict(obj: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = _get(obj, name, False)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RemoteProtocolError(
            f"field {name!r} must be an object, got {_type_name(value)}", field=name
        )
    return value


def list_of(
    obj: Mapping[str, Any], name: str, item: Callable[[Any, str], T], required: bool = False
) -> tuple[T, ...]:
    value = _get(obj, name, required)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RemoteProtocolError(
            f"field {name!r} must be a list, got {_type_name(value)}", field=name
        )
    return tuple(item(v, f"{name}[{i}]") for i, v in enumerate(value))


def int_item(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RemoteProtocolError(
            f"{where} must be an integer, got {_type_name(value)}", field=where
        )
    return value


def str_item(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RemoteProtocolError(f"{where} must be a string, got {_type_name(value)}", field=where)
    return value


def as_object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise RemoteProtocolError(
            f"{where} must be an object, got {_type_name(value)}", field=where
        )
    return value


def one_of(value: str, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        raise RemoteProtocolError(
            f"field {name!r} must be one of {', '.join(allowed)}, got {value!r}", field=name
        )
    return value


@contextmanager
def within(where: str) -> Iterator[None]:
    """Qualify errors raised while reading a nested object: ``uri`` becomes ``sinks[1].uri``."""
    try:
        yield
    except RemoteProtocolError as exc:
        if exc.field is None or exc.field.startswith(where):
            raise
        raise RemoteProtocolError(f"{where}: {exc}", field=f"{where}.{exc.field}") from None
