"""Field metadata that drives every payload's JSON, both ways.

Each attrs field of a payload class carries a ``Wire`` in its metadata: how to
read it from a JSON object (a reader from ``_fields``, which raises
RemoteProtocolError naming the field) and how to write it (a writer, which may
answer ``OMIT`` to leave the key out). ``to_json``/``from_json`` walk
``attrs.fields`` in declaration order, so the order of the attributes is the
order of the keys on the wire: reorder them and the bytes change.

The writers keep the v4 wire format exact: ``None`` extensions stay off the
wire, boolean extensions go on only when set, and lists are written even when
empty (old peers expect ``"jobs": []``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import attrs

from casparian_trio.errors import LocalProtocolError, RemoteProtocolError
from casparian_trio.filenames import shown
from casparian_trio.protocol import _fields as f
from casparian_trio.protocol.limits import WORKER_ID_MAX_BYTES, is_worker_id, utf8_size

T = TypeVar("T")

WIRE: Final = "casparian_trio.wire"  # the metadata key


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


OMIT: Final = _Omit()  # a writer's answer for "leave this key out"

Reader = Callable[[Mapping[str, Any], str], Any]
Writer = Callable[[Any], Any]


@attrs.frozen
class Wire:
    """How one attrs field goes on the wire: its reader, its writer and its JSON key."""

    read: Reader
    write: Writer
    name: str | None = None  # the JSON key when it is not the attribute's name


# --- writers ---------------------------------------------------------------------------------


def omit_none(value: Any) -> Any:
    return OMIT if value is None else value


def as_is(value: Any) -> Any:
    return value


def flag_out(value: bool) -> Any:
    # A boolean extension goes on the wire only when set: an old peer's message
    # and ours stay byte-identical while it is off.
    return True if value else OMIT


def count_out(value: int) -> Any:
    # A count extension whose default is 0 goes on the wire only when set (as flag_out).
    return value or OMIT


def strings_out(value: tuple[str, ...] | None) -> Any:
    return OMIT if value is None else list(value)


def objects_out(value: tuple[Any, ...]) -> Any:
    return [item.to_json() for item in value]


def mapping_out(value: Mapping[str, Any]) -> Any:
    return dict(value)


def mapping_or_omit(value: Mapping[str, Any]) -> Any:
    return dict(value) or OMIT


# --- readers -----------------------------------------------------------------------------------


def text(*, required: bool = True) -> Reader:
    return f.req_str if required else f.opt_str


def name() -> Reader:
    """A required worker id: 1 to WORKER_ID_MAX_BYTES bytes of UTF-8 text (``limits``)."""

    def read(obj: Mapping[str, Any], key: str) -> str:
        value = f.req_str(obj, key)
        if not is_worker_id(value):
            raise RemoteProtocolError(
                f"field {key!r} must be 1 to {WORKER_ID_MAX_BYTES} bytes, got {utf8_size(value)}",
                field=key,
            )
        return value

    return read


def named(what: str) -> Callable[[Any, Any, str], None]:
    """An attrs validator: LocalProtocolError unless the value is a worker id ``name()`` reads."""

    def check(_instance: Any, _attribute: Any, value: str) -> None:
        if not is_worker_id(value):
            raise LocalProtocolError(
                f"{what} must be 1 to {WORKER_ID_MAX_BYTES} bytes, got {value!r}"
            )

    return check


def shown_text() -> Reader:
    """Optional text for people (a host name): a lone surrogate (JSON's ``\\ud800``
    escape, which SQLite cannot store) comes out escaped (``filenames.shown``)."""

    def read(obj: Mapping[str, Any], key: str) -> str | None:
        value = f.opt_str(obj, key)
        return None if value is None else shown(value)

    return read


def integer(*, required: bool = True) -> Reader:
    return f.req_int if required else f.opt_int


def at_least(minimum: int) -> Reader:
    """An optional integer raised to ``minimum`` (absent, null or 0 mean ``minimum``)."""
    return lambda obj, name: max(minimum, f.opt_int(obj, name) or minimum)


def number() -> Reader:
    return f.opt_float


def flag(default: bool = False) -> Reader:
    return lambda obj, name: f.opt_bool(obj, name, default)


def mapping() -> Reader:
    return f.opt_dict


def strings(*, when_empty: tuple[str, ...] = (), nullable: bool = False) -> Reader:
    """A list of strings; ``nullable``: absent or null reads as None (not reported)."""

    def read(obj: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
        if nullable and obj.get(name) is None:
            return None
        return f.list_of(obj, name, f.str_item) or when_empty

    return read


def integers() -> Reader:
    """A list of integers (absent or null: empty)."""
    return lambda obj, name: f.list_of(obj, name, f.int_item)


def integers_or_omit(value: tuple[int, ...]) -> Any:
    return list(value) or OMIT


def objects(cls: type[Any], *, required: bool = False) -> Reader:
    """A list of nested payloads (``cls.from_json(value, where)``)."""
    return lambda obj, name: f.list_of(obj, name, cls.from_json, required)


def choice(allowed: tuple[str, ...], *, default: str | None = None) -> Reader:
    """A string from ``allowed``; ``default`` makes it optional."""

    def read(obj: Mapping[str, Any], name: str) -> str:
        value = f.req_str(obj, name) if default is None else f.opt_str(obj, name) or default
        return f.one_of(value, allowed, name)

    return read


def wire(read: Reader, write: Writer = omit_none, *, name: str | None = None) -> dict[str, Wire]:
    """Field metadata: ``attrs.field(metadata=wire(text()))``."""
    return {WIRE: Wire(read, write, name)}


# --- validators (what we build is checked as what we receive) ----------------------------------


def one_of(what: str, allowed: tuple[str, ...]) -> Callable[[Any, Any, str], None]:
    """An attrs validator: LocalProtocolError unless the value is one of ``allowed``."""

    def check(_instance: Any, _attribute: Any, value: str) -> None:
        if value not in allowed:
            raise LocalProtocolError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")

    return check


def positive(what: str) -> Callable[[Any, Any, int], None]:
    def check(_instance: Any, _attribute: Any, value: int) -> None:
        if value < 1:
            raise LocalProtocolError(f"{what} must be at least 1, got {value!r}")

    return check


# --- the two walks -----------------------------------------------------------------------------


_Spec = tuple[str, str, str, Wire]
_SPECS: dict[type[Any], tuple[_Spec, ...]] = {}


def _specs(cls: type[Any]) -> tuple[_Spec, ...]:
    """(attribute, init alias, JSON key, Wire) of each field of ``cls``, in order (once per class)."""
    specs = _SPECS.get(cls)
    if specs is None:
        specs = _SPECS[cls] = tuple(
            (field.name, field.alias, field.metadata[WIRE].name or field.name, field.metadata[WIRE])
            for field in attrs.fields(cls)
        )
    return specs


def to_json(payload: Any) -> dict[str, Any]:
    """The JSON object of an attrs payload, keys in field order."""
    doc: dict[str, Any] = {}
    for attribute, _alias, key, spec in _specs(type(payload)):
        value = spec.write(getattr(payload, attribute))
        if value is not OMIT:
            doc[key] = value
    return doc


def from_json(cls: type[T], obj: Mapping[str, Any]) -> T:
    """Build ``cls`` from a JSON object; RemoteProtocolError names a bad field.

    Unknown keys are ignored: newer peers may add extensions.
    """
    kwargs = {alias: spec.read(obj, key) for _attribute, alias, key, spec in _specs(cls)}
    return cls(**kwargs)
