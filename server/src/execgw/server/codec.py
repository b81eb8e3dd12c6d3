"""The journal's encoding, derived from the declarations themselves.

Events (events.py) and the values they carry (domain.py) are dataclasses; msgspec
encodes and decodes them from their type annotations, so a new event or field needs no
codec code at all. Decimals travel as strings, datetimes as RFC 3339, enums by value,
so a decoded event equals the one encoded.

Journals written before this codec (hand-written JSON, sorted keys, `+00:00` offsets)
decode with the same types: the field names and value forms are the same.
"""

from __future__ import annotations

from typing import Any, TypeVar, get_args

import msgspec

from execgw.server.domain import Order
from execgw.server.events import Event

_T = TypeVar("_T")

# Every event type, by the name journaled in a row's `kind` column.
EVENT_TYPES: dict[str, type[Any]] = {cls.__name__: cls for cls in get_args(Event)}

_encoder = msgspec.json.Encoder(decimal_format="string")


class CodecError(ValueError):
    pass


class _Body(msgspec.Struct, frozen=True):
    """A journal row's body: the event, and the order as that event left it."""

    event: msgspec.Raw
    order: msgspec.Raw = msgspec.Raw(b"null")


def event_kind(event: Event) -> str:
    return type(event).__name__


def encode(value: object) -> str:
    return _encoder.encode(value).decode("utf-8")


def encode_bytes(value: object) -> bytes:
    return _encoder.encode(value)


def decode(text: str | bytes, into: type[_T]) -> _T:
    try:
        return msgspec.json.decode(text, type=into)
    except (msgspec.DecodeError, TypeError, ValueError, AttributeError, ArithmeticError) as e:
        # Whatever the bytes hold, a bad row is a CodecError (JournalCorrupt upstream),
        # never a traceback at start-up.
        raise CodecError(str(e)) from None


def encode_row(event: Event, order: Order | None) -> str:
    return encode({"event": event, "order": order})


def decode_row(kind: str, body: str) -> tuple[Event, Order | None]:
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        raise CodecError(f"unknown event kind {kind!r}")
    parts = decode(body, _Body)
    event: Event = decode(parts.event, cls)
    order: Order | None = decode(parts.order, Order | None)  # type: ignore[arg-type]
    return event, order


def json_loads(text: str) -> dict[str, Any]:
    """Any JSON object, for tools that read rows without their types (export)."""
    return decode(text, dict[str, Any])
