"""How the client subcommands print: aligned tables (rich) for people, one JSON object
per line (--json) for scripts.

Prices go to the tick and money to the paisa (two decimals, from the results' exact
`*_decimal` strings, never from the floats); times are in the trading day's timezone
with its offset. In JSON each float that has an exact `*_decimal` twin is replaced by
that string, and timestamps are ISO 8601 in the same timezone."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, tzinfo
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich import box
from rich.console import Console
from rich.table import Table

DEFAULT_TIMEZONE = "Asia/Kolkata"
PAISA = Decimal("0.01")
# Timestamp fields, as MessageToDict names them with preserving_proto_field_name.
_TIME_FIELDS = frozenset({"timestamp", "created_at", "tripped_at"})
_DECIMAL_SUFFIX = "_decimal"


def when(ts: Timestamp, zone: tzinfo) -> str:
    """2026-11-27 10:00:00 +05:30; empty for an unset timestamp."""
    if not ts.seconds and not ts.nanos:
        return ""
    return _stamp(ts.ToDatetime().replace(tzinfo=UTC).astimezone(zone), millis=False)


def when_ms(ts: Timestamp, zone: tzinfo) -> str:
    """2026-11-27 10:00:00.123 +05:30, for the stream's lines."""
    return _stamp(ts.ToDatetime().replace(tzinfo=UTC).astimezone(zone), millis=True)


def _stamp(moment: datetime, *, millis: bool) -> str:
    clock = f"{moment:%H:%M:%S.%f}"[:-3] if millis else f"{moment:%H:%M:%S}"
    return f"{moment:%Y-%m-%d} {clock} {_offset(moment)}"


def _offset(moment: datetime) -> str:
    raw = f"{moment:%z}"  # +0530; Python 3.11 has no %:z
    return f"{raw[:3]}:{raw[3:5]}" if raw else ""


def money(text: str) -> str:
    """An exact decimal string to two places (the tick, the paisa); empty stays empty."""
    if not text:
        return ""
    try:
        value = Decimal(text).quantize(PAISA, rounding=ROUND_HALF_EVEN)
    except InvalidOperation:
        return text
    return str(value.copy_abs() if value == 0 else value)  # never "-0.00"


def plain(text: str) -> str:
    """A count or a ratio without float noise: at most four places, no trailing zeros."""
    if not text:
        return ""
    try:
        value = Decimal(text).quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN)
    except InvalidOperation:
        return text
    if value == 0:
        value = value.copy_abs()  # never "-0"
    out = f"{value:f}"
    return out.rstrip("0").rstrip(".") if "." in out else out


def percent(text: str) -> str:
    """A fraction as a percentage to two places: 0.0003 is 0.03%."""
    if not text:
        return ""
    try:
        return f"{(Decimal(text) * 100).quantize(PAISA, rounding=ROUND_HALF_EVEN)}%"
    except InvalidOperation:
        return text


def enum_name(name: str, prefix: str) -> str:
    return name.removeprefix(prefix)


def table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: Iterable[str] = (),
) -> None:
    """Print an aligned table; numbers right-aligned by their column name (or `numeric`)."""
    grid = Table(
        title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False, show_edge=False
    )
    right_aligned = _NUMERIC | frozenset(numeric)
    for name in columns:
        right = name in right_aligned
        grid.add_column(name, justify="right" if right else "left", no_wrap=True)
    for row in rows:
        grid.add_row(*row)
    _console().print(grid)


def line(text: str) -> None:
    print(text, flush=True)


def _console() -> Console:
    # Piped, rich would wrap at 80 columns: give it room, the table takes only its width.
    width = shutil.get_terminal_size((200, 24)).columns if sys.stdout.isatty() else 1000
    return _Console(file=sys.stdout, width=width, highlight=False, soft_wrap=False)


class _Console(Console):
    """rich exits 1 on a closed pipe; let `execgw` handle it like any other write."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


_NUMERIC = frozenset(
    {
        "QTY",
        "FILLED",
        "PRICE",
        "TRIGGER",
        "AVG PRICE",
        "NET QTY",
        "BUY QTY",
        "SELL QTY",
        "LAST",
        "REALIZED",
        "UNREALIZED",
        "VALUE",
        "LIMIT",
        "TRADES",
        "LOSS STREAK",
        "CANCELLED ORDERS",
        "DAY PNL",
        "EQUITY",
        "PEAK",
        "DRAWDOWN",
    }
)


def json_object(message: Message, zone: tzinfo) -> dict[str, Any]:
    """The message as proto3 JSON with field names as in the .proto, every field present,
    floats replaced by their exact `*_decimal` strings and times in `zone`."""
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _exact(data, zone)


def _exact(data: dict[str, Any], zone: tzinfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key.endswith(_DECIMAL_SUFFIX):
            continue
        twin = f"{key}{_DECIMAL_SUFFIX}"
        if twin in data:
            out[key] = data[twin] or None
        elif key == "raw" and not value:
            continue
        elif key in _TIME_FIELDS and isinstance(value, str):
            out[key] = _iso(value, zone)
        elif isinstance(value, dict):
            out[key] = _exact(value, zone)
        elif isinstance(value, list):
            out[key] = [_exact(v, zone) if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
    for key in data:  # an optional float left unset: its decimal twin says so
        if key.endswith(_DECIMAL_SUFFIX) and key.removesuffix(_DECIMAL_SUFFIX) not in out:
            out[key.removesuffix(_DECIMAL_SUFFIX)] = data[key] or None
    return out


def _iso(text: str, zone: tzinfo) -> str:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return moment.astimezone(zone).isoformat()


def print_json(message: Message, zone: tzinfo) -> None:
    print(json.dumps(json_object(message, zone), sort_keys=True))
