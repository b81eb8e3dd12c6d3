"""Turns a client's raw intent into a domain OrderIntent, or says which field is wrong.

Everything here is a property of the request and the instrument alone, so it runs
before the single writer sees the order: a malformed request never touches state.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from execgw.server.domain import OrderIntent, OrderType, Product, Quote, Side, Validity
from execgw.server.instruments import Instrument, InstrumentRegistry

_T = TypeVar("_T")

# Request bounds. Each is documented in the proto and README; a value over one is
# INVALID_ARGUMENT naming the field, so nothing oversized reaches the journal or a stream.
MAX_TAG_LENGTH = 20
MAX_CLIENT_ORDER_ID_LENGTH = 64
MAX_ORDER_ID_LENGTH = 64
MAX_SYMBOL_LENGTH = 64
MAX_STRATEGY_CODE_LENGTH = 32
MAX_REASON_LENGTH = 280
MAX_ACTOR_LENGTH = 128
# Compact JSON of the metadata Struct, its keys at all levels, and its nesting depth.
MAX_METADATA_BYTES = 4096
MAX_METADATA_KEYS = 64
MAX_METADATA_DEPTH = 4
# Far above any NSE/BSE price or order size, yet far below where Decimal arithmetic or
# float conversion would lose its footing.
MAX_PRICE = Decimal(10_000_000)
MAX_QTY = 100_000_000
MAX_FILTER_VALUES = 100

_SYMBOL_RE = re.compile(r"[A-Z][A-Z0-9_]*:[A-Za-z0-9&_.\-]+")
_STRATEGY_CODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_PRINTABLE_ASCII_RE = re.compile(r"[\x21-\x7e]+")
# Doubles such as 1499.8500000000001 come from honest float arithmetic; anything
# closer to a tick than this fraction of the tick is that tick.
_TICK_TOLERANCE = Decimal("1e-6")


class InvalidRequest(ValueError):
    """A malformed request; `field` names the offending field for the client."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True, slots=True)
class RawIntent:
    """An intent as it arrived; None for an enum means the client left it UNSPECIFIED."""

    symbol: str
    strategy_code: str
    side: Side | None
    qty: int
    order_type: OrderType | None
    product: Product | None
    validity: Validity | None
    price: float | None = None
    trigger_price: float | None = None
    tag: str = ""
    reason: str = ""
    confidence: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def validate_client_order_id(client_order_id: str) -> None:
    if len(client_order_id) > MAX_CLIENT_ORDER_ID_LENGTH:
        raise InvalidRequest(
            "client_order_id", f"longer than {MAX_CLIENT_ORDER_ID_LENGTH} characters"
        )
    if client_order_id and not _PRINTABLE_ASCII_RE.fullmatch(client_order_id):
        raise InvalidRequest("client_order_id", "must be printable ASCII without spaces")


def validate_order_id(order_id: str, field_name: str = "order_id") -> None:
    if not order_id:
        raise InvalidRequest(field_name, "must not be empty")
    if len(order_id) > MAX_ORDER_ID_LENGTH or not _PRINTABLE_ASCII_RE.fullmatch(order_id):
        raise InvalidRequest(
            field_name,
            f"must be printable ASCII without spaces, at most {MAX_ORDER_ID_LENGTH} characters",
        )


def validate_symbol(symbol: str, field_name: str) -> None:
    """EXCHANGE:TRADINGSYMBOL, matched in full (a trailing newline is not part of a symbol)."""
    if not symbol:
        raise InvalidRequest(field_name, "must not be empty")
    if len(symbol) > MAX_SYMBOL_LENGTH:
        raise InvalidRequest(
            field_name, f"is {len(symbol)} characters, at most {MAX_SYMBOL_LENGTH} allowed"
        )
    if not _SYMBOL_RE.fullmatch(symbol):
        raise InvalidRequest(field_name, f"{symbol!r} is not in EXCHANGE:TRADINGSYMBOL form")


def validate_strategy_code(code: str, field_name: str, *, required: bool = True) -> None:
    """A short identifier: letters, digits, '_', '.', '-'; empty only where it means 'all'."""
    if not code:
        if required:
            raise InvalidRequest(field_name, "must not be empty")
        return
    if len(code) > MAX_STRATEGY_CODE_LENGTH:
        raise InvalidRequest(
            field_name, f"is {len(code)} characters, at most {MAX_STRATEGY_CODE_LENGTH} allowed"
        )
    if not _STRATEGY_CODE_RE.fullmatch(code):
        raise InvalidRequest(
            field_name,
            f"{code[:40]!r} is not a strategy code (letters, digits, '_', '.', '-'; "
            "starting with a letter or digit)",
        )


def validate_text(text: str, field_name: str, max_length: int) -> None:
    """Free text for the audit trail: bounded, and no control characters (which would let
    one field forge lines in logs, CSV exports or terminals)."""
    if len(text) > max_length:
        raise InvalidRequest(field_name, f"is {len(text)} characters, at most {max_length} allowed")
    bad = _first_control_character(text)
    if bad is not None:
        raise InvalidRequest(
            field_name, f"contains the control character U+{ord(bad):04X} at {text.index(bad)}"
        )


def validate_filter_values(values: list[str], field_name: str) -> None:
    if len(values) > MAX_FILTER_VALUES:
        raise InvalidRequest(
            field_name, f"has {len(values)} values, at most {MAX_FILTER_VALUES} allowed"
        )


def validate_intent(raw: RawIntent, instruments: InstrumentRegistry) -> OrderIntent:
    prefix = "intent."
    validate_symbol(raw.symbol, prefix + "symbol")
    validate_strategy_code(raw.strategy_code, prefix + "strategy_code")
    side = _required(raw.side, prefix + "side")
    order_type = _required(raw.order_type, prefix + "order_type")
    product = _required(raw.product, prefix + "product")
    validity = _required(raw.validity, prefix + "validity")

    instrument = instruments.get(raw.symbol)
    if raw.qty <= 0:
        raise InvalidRequest(prefix + "qty", f"must be > 0, got {raw.qty}")
    if raw.qty > MAX_QTY:
        raise InvalidRequest(prefix + "qty", f"must be at most {MAX_QTY}, got {raw.qty}")
    if raw.qty % instrument.lot_size != 0:
        raise InvalidRequest(
            prefix + "qty",
            f"{raw.qty} is not a multiple of the lot size {instrument.lot_size} of {raw.symbol}",
        )

    needs_price = order_type in (OrderType.LIMIT, OrderType.SL)
    needs_trigger = order_type in (OrderType.SL, OrderType.SL_M)
    price = _price(raw.price, prefix + "price", instrument, needs_price, order_type)
    trigger = _price(
        raw.trigger_price, prefix + "trigger_price", instrument, needs_trigger, order_type
    )
    if order_type is OrderType.SL and price is not None and trigger is not None:
        if side is Side.BUY and trigger > price:
            raise InvalidRequest(
                prefix + "trigger_price",
                f"{trigger} is above the limit price {price} of a stop-loss BUY",
            )
        if side is Side.SELL and trigger < price:
            raise InvalidRequest(
                prefix + "trigger_price",
                f"{trigger} is below the limit price {price} of a stop-loss SELL",
            )
    if needs_trigger and validity is Validity.IOC:
        raise InvalidRequest(prefix + "validity", "IOC is not allowed for SL and SL_M orders")

    validate_text(raw.tag, prefix + "tag", MAX_TAG_LENGTH)
    validate_text(raw.reason, prefix + "reason", MAX_REASON_LENGTH)
    if raw.confidence is not None and not (0.0 <= raw.confidence <= 1.0):
        raise InvalidRequest(prefix + "confidence", f"must be within [0, 1], got {raw.confidence}")
    validate_metadata(raw.metadata, prefix + "metadata")

    return OrderIntent(
        symbol=raw.symbol,
        strategy_code=raw.strategy_code,
        side=side,
        qty=raw.qty,
        order_type=order_type,
        product=product,
        validity=validity,
        price=price,
        trigger_price=trigger,
        tag=raw.tag,
        reason=raw.reason,
        confidence=raw.confidence,
        metadata=raw.metadata,
    )


def validate_metadata(metadata: dict[str, Any], field_name: str) -> None:
    """Small, shallow, finite and free of control characters: it is journaled with the
    order and sent back on every stream event about it."""
    keys = 0

    def walk(value: object, path: str, depth: int) -> None:
        nonlocal keys
        if isinstance(value, dict):
            if depth >= MAX_METADATA_DEPTH:
                raise InvalidRequest(
                    path, f"nests deeper than {MAX_METADATA_DEPTH} levels of objects and lists"
                )
            for key, item in value.items():
                keys += 1
                if keys > MAX_METADATA_KEYS:
                    raise InvalidRequest(
                        field_name, f"has more than {MAX_METADATA_KEYS} keys in all"
                    )
                validate_text(str(key), f"{path} key", MAX_REASON_LENGTH)
                walk(item, f"{path}.{key}", depth + 1)
        elif isinstance(value, list):
            if depth >= MAX_METADATA_DEPTH:
                raise InvalidRequest(
                    path, f"nests deeper than {MAX_METADATA_DEPTH} levels of objects and lists"
                )
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]", depth + 1)
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidRequest(path, f"must be a finite number, got {value}")
        elif isinstance(value, str):
            bad = _first_control_character(value)
            if bad is not None:
                raise InvalidRequest(path, f"contains the control character U+{ord(bad):04X}")

    walk(metadata, field_name, 0)
    size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise InvalidRequest(
            field_name, f"is {size} bytes as JSON, at most {MAX_METADATA_BYTES} allowed"
        )


# Control and format characters, line/paragraph separators, surrogates, private-use
# and unassigned code points: each can forge a log line, reorder what a terminal shows
# (U+202E) or hide text (U+200B), and none belongs in an id or an audit note.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _first_control_character(text: str) -> str | None:
    if text.isascii() and text.isprintable():
        return None  # the common case, without a per-character lookup
    for char in text:
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            return char
    return None


def _required(value: _T | None, field_name: str) -> _T:
    if value is None:
        raise InvalidRequest(field_name, "must be set (UNSPECIFIED is not allowed)")
    return value


def _price(
    value: float | None,
    field_name: str,
    instrument: Instrument,
    required: bool,
    order_type: OrderType,
) -> Decimal | None:
    if value is None:
        if required:
            raise InvalidRequest(field_name, f"is required for {order_type.value} orders")
        return None
    if not required:
        raise InvalidRequest(field_name, f"must not be set for {order_type.value} orders")
    if math.isnan(value) or math.isinf(value):
        raise InvalidRequest(field_name, f"must be a finite number, got {value}")
    if value <= 0:
        raise InvalidRequest(field_name, f"must be > 0, got {value}")
    exact = Decimal(repr(value))
    if exact > MAX_PRICE:
        raise InvalidRequest(field_name, f"must be at most {MAX_PRICE} rupees, got {value}")
    nearest = instrument.nearest_tick(exact)
    if abs(exact - nearest) > instrument.tick_size * _TICK_TOLERANCE or nearest <= 0:
        raise InvalidRequest(
            field_name,
            f"{value} is not on the tick size {instrument.tick_size} of {instrument.symbol}",
        )
    return nearest


# Quotes ---------------------------------------------------------------------

# One ceiling for order and quote prices: a quote above it is a broken feed, and
# keeping every price far below it keeps Decimal arithmetic on marks exact and finite.
MAX_QUOTE_PRICE = MAX_PRICE
MAX_QUOTE_SYMBOL_LENGTH = MAX_SYMBOL_LENGTH
# A quote's exchange time: from the Unix epoch to one day inside protobuf's last
# Timestamp, so it converts to any time zone without overflowing.
_QUOTE_EPOCH_MAX_S = 253_402_214_399  # 9999-12-30T23:59:59Z
_NANOS_PER_S = 1_000_000_000
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class RawQuote:
    """A quote as it arrived; `timestamp` is (seconds, nanos), None when absent."""

    symbol: str
    ltp: float
    bid: float = 0.0
    ask: float = 0.0
    bid_qty: int = 0
    ask_qty: int = 0
    volume: int = 0
    timestamp: tuple[int, int] | None = None


def is_full_symbol(symbol: str) -> bool:
    """EXCHANGE:TRADINGSYMBOL and nothing else (fullmatch: `$` would let "\n" through)."""
    return len(symbol) <= MAX_QUOTE_SYMBOL_LENGTH and _SYMBOL_RE.fullmatch(symbol) is not None


def validate_quote(
    raw: RawQuote, instruments: InstrumentRegistry, field_prefix: str, now: datetime
) -> Quote:
    """A domain Quote with prices snapped to the tick, or InvalidRequest naming the field.

    `now` stands in for an absent exchange time."""
    if not is_full_symbol(raw.symbol):
        raise InvalidRequest(
            field_prefix + "symbol",
            f"{raw.symbol[:MAX_QUOTE_SYMBOL_LENGTH]!r} is not in EXCHANGE:TRADINGSYMBOL form "
            f"(at most {MAX_QUOTE_SYMBOL_LENGTH} characters)",
        )
    instrument = instruments.get(raw.symbol)
    # 0 means "absent" for bid and ask, but a quote must have an ltp: a negative one is
    # told "must be > 0" here, not "(or 0 when absent)" as the bid and ask are.
    ltp = None
    if raw.ltp > 0 or not math.isfinite(raw.ltp):
        ltp = _quote_price(raw.ltp, field_prefix + "ltp", instrument)
    if ltp is None:
        raise InvalidRequest(field_prefix + "ltp", f"must be > 0, got {raw.ltp}")
    bid = _quote_price(raw.bid, field_prefix + "bid", instrument)
    ask = _quote_price(raw.ask, field_prefix + "ask", instrument)
    if bid is not None and ask is not None and bid > ask:
        raise InvalidRequest(field_prefix + "bid", f"{bid} is above the ask {ask}")
    for name, qty in (("bid_qty", raw.bid_qty), ("ask_qty", raw.ask_qty), ("volume", raw.volume)):
        if qty < 0:
            raise InvalidRequest(field_prefix + name, f"must be >= 0, got {qty}")
    return Quote(
        symbol=raw.symbol,
        ltp=ltp,
        bid=_ZERO if bid is None else bid,
        ask=_ZERO if ask is None else ask,
        bid_qty=raw.bid_qty,
        ask_qty=raw.ask_qty,
        volume=raw.volume,
        timestamp=now if raw.timestamp is None else _quote_time(raw.timestamp, field_prefix),
    )


def _quote_price(value: float, field_name: str, instrument: Instrument) -> Decimal | None:
    """A positive price on the tick; None for 0, which a quote uses for "absent"."""
    if math.isnan(value) or math.isinf(value):
        raise InvalidRequest(field_name, f"must be a finite number, got {value}")
    if value == 0:
        return None
    if value < 0:
        raise InvalidRequest(field_name, f"must be > 0 (or 0 when absent), got {value}")
    exact = Decimal(repr(value))
    if exact > MAX_QUOTE_PRICE:
        raise InvalidRequest(field_name, f"{value} is above the ceiling {MAX_QUOTE_PRICE:f}")
    nearest = instrument.nearest_tick(exact)
    if nearest <= 0:
        raise InvalidRequest(
            field_name, f"{value} is below one tick ({instrument.tick_size}) of {instrument.symbol}"
        )
    if abs(exact - nearest) > instrument.tick_size * _TICK_TOLERANCE:
        raise InvalidRequest(
            field_name,
            f"{value} is not on the tick size {instrument.tick_size} of {instrument.symbol}",
        )
    return nearest


def _quote_time(timestamp: tuple[int, int], field_prefix: str) -> datetime:
    seconds, nanos = timestamp
    if not 0 <= nanos < _NANOS_PER_S:
        raise InvalidRequest(
            field_prefix + "timestamp.nanos", f"must be within [0, 999999999], got {nanos}"
        )
    if not 0 <= seconds <= _QUOTE_EPOCH_MAX_S:
        raise InvalidRequest(
            field_prefix + "timestamp.seconds",
            f"must be within [0, {_QUOTE_EPOCH_MAX_S}] (1970-01-01 to 9999-12-30 UTC), "
            f"got {seconds}",
        )
    return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=nanos // 1000)
