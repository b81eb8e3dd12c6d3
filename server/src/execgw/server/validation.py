"""Turns a client's raw intent into a domain OrderIntent, or says which field is wrong.

Everything here is a property of the request and the instrument alone, so it runs
before the single writer sees the order: a malformed request never touches state.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar

from execgw.server.domain import OrderIntent, OrderType, Product, Quote, Side, Validity
from execgw.server.instruments import Instrument, InstrumentRegistry

_T = TypeVar("_T")
_P = ParamSpec("_P")

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
# Exact prices sent as text: fixed-point decimal, never an exponent, NaN or infinity.
_DECIMAL_RE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
MAX_DECIMAL_TEXT_LENGTH = 32
# Doubles such as 1499.8500000000001 come from honest float arithmetic; anything
# closer to a tick than this fraction of the tick is that tick.
_TICK_TOLERANCE = Decimal("1e-6")


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One broken rule: the field's path in the request and what is wrong with it."""

    field: str
    description: str


# The human-readable message lists violations up to this length, then counts the rest;
# the google.rpc.BadRequest details carry them all (within their own bound).
_MESSAGE_CHARS = 1024


class InvalidRequest(ValueError):
    """A malformed request. `field` and `message` are the first violation; `violations`
    holds every violation found in the request, the first one first."""

    def __init__(
        self, field_name: str, message: str, *, more: Iterable[FieldViolation] = ()
    ) -> None:
        self.violations = (FieldViolation(field_name, message), *more)
        self.field = field_name
        self.message = message
        super().__init__(_summary(self.violations))

    @classmethod
    def of(cls, violations: Iterable[FieldViolation]) -> InvalidRequest:
        first, *rest = violations
        return cls(first.field, first.description, more=rest)


def _summary(violations: tuple[FieldViolation, ...]) -> str:
    """Each violation as `field: description`, joined by "; ", the first one first."""
    text = f"{violations[0].field}: {violations[0].description}"
    for shown, v in enumerate(violations[1:], start=1):
        part = f"; {v.field}: {v.description}"
        if len(text) + len(part) > _MESSAGE_CHARS:
            return text + f" (and {len(violations) - shown} more)"
        text += part
    return text


class Violations:
    """Collects every violation of one request, so the client hears of all at once."""

    __slots__ = ("_found",)

    def __init__(self) -> None:
        self._found: list[FieldViolation] = []

    def __bool__(self) -> bool:
        return bool(self._found)

    def add(self, field_name: str, description: str) -> None:
        self._found.append(FieldViolation(field_name, description))

    def record(self, error: InvalidRequest) -> None:
        self._found.extend(error.violations)

    def check(self, check: Callable[_P, object], *args: _P.args, **kwargs: _P.kwargs) -> bool:
        """Run a check that raises InvalidRequest; True when it passed."""
        try:
            check(*args, **kwargs)
        except InvalidRequest as e:
            self.record(e)
            return False
        return True

    def value(self, parse: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T | None:
        """Run a parser that raises InvalidRequest; None (and the violations kept) when not."""
        try:
            return parse(*args, **kwargs)
        except InvalidRequest as e:
            self.record(e)
            return None

    def raise_if_any(self) -> None:
        if self._found:
            raise InvalidRequest.of(self._found)


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
    # The exact forms of the prices, as the client sent them; they win over the doubles.
    price_decimal: str | None = None
    trigger_price_decimal: str | None = None
    # Why the metadata could not be read (e.g. a NaN has no JSON form); "" when it could.
    metadata_error: str = ""


def validate_client_order_id(client_order_id: str, *, required: bool = False) -> None:
    """At most 64 printable ASCII characters; empty only when not `required`."""
    if not client_order_id:
        if required:
            raise InvalidRequest(
                "client_order_id",
                "must not be empty: it is the idempotency key that makes a retry safe "
                "(execution.require_client_order_id)",
            )
        return
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
    """The domain intent, or InvalidRequest with every violation of the intent."""
    prefix = "intent."
    found = Violations()
    symbol_ok = found.check(validate_symbol, raw.symbol, prefix + "symbol")
    found.check(validate_strategy_code, raw.strategy_code, prefix + "strategy_code")
    side = found.value(_required, raw.side, prefix + "side")
    order_type = found.value(_required, raw.order_type, prefix + "order_type")
    product = found.value(_required, raw.product, prefix + "product")
    validity = found.value(_required, raw.validity, prefix + "validity")

    # Lot and tick rules belong to the symbol's instrument: checked once the symbol is valid.
    instrument = instruments.get(raw.symbol) if symbol_ok else None
    if raw.qty <= 0:
        found.add(prefix + "qty", f"must be > 0, got {raw.qty}")
    elif raw.qty > MAX_QTY:
        found.add(prefix + "qty", f"must be at most {MAX_QTY}, got {raw.qty}")
    elif instrument is not None and raw.qty % instrument.lot_size != 0:
        found.add(
            prefix + "qty",
            f"{raw.qty} is not a multiple of the lot size {instrument.lot_size} of {raw.symbol}",
        )

    price = found.value(
        _price,
        _PriceInput(raw.price, raw.price_decimal, prefix + "price"),
        instrument,
        order_type,
        None if order_type is None else order_type in (OrderType.LIMIT, OrderType.SL),
    )
    needs_trigger = None if order_type is None else order_type in (OrderType.SL, OrderType.SL_M)
    trigger = found.value(
        _price,
        _PriceInput(raw.trigger_price, raw.trigger_price_decimal, prefix + "trigger_price"),
        instrument,
        order_type,
        needs_trigger,
    )
    if order_type is OrderType.SL and price is not None and trigger is not None:
        if side is Side.BUY and trigger > price:
            found.add(
                prefix + "trigger_price",
                f"{trigger} is above the limit price {price} of a stop-loss BUY",
            )
        if side is Side.SELL and trigger < price:
            found.add(
                prefix + "trigger_price",
                f"{trigger} is below the limit price {price} of a stop-loss SELL",
            )
    if needs_trigger and validity is Validity.IOC:
        found.add(prefix + "validity", "IOC is not allowed for SL and SL_M orders")

    found.check(validate_text, raw.tag, prefix + "tag", MAX_TAG_LENGTH)
    found.check(validate_text, raw.reason, prefix + "reason", MAX_REASON_LENGTH)
    if raw.confidence is not None and not (0.0 <= raw.confidence <= 1.0):
        found.add(prefix + "confidence", f"must be within [0, 1], got {raw.confidence}")
    if raw.metadata_error:
        found.add(prefix + "metadata", raw.metadata_error)
    else:
        found.check(validate_metadata, raw.metadata, prefix + "metadata")
    found.raise_if_any()
    if side is None or order_type is None or product is None or validity is None:
        raise AssertionError("an unset enum passed validation")  # found.raise_if_any raised

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
    if not metadata:  # most orders carry none: nothing to walk or measure
        return
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
        # None covers UNSPECIFIED and a number from a newer contract alike.
        raise InvalidRequest(field_name, "must be one of its named values (not UNSPECIFIED)")
    return value


@dataclass(frozen=True, slots=True)
class _PriceInput:
    """A price as sent: its double, its exact text, or both; `name` is the double's path."""

    value: float | None
    text: str | None
    name: str

    @property
    def given(self) -> bool:
        return self.value is not None or self.text is not None

    @property
    def field(self) -> str:
        """The field a violation about the sent value names: the exact one when sent."""
        return self.name if self.text is None else self.name + "_decimal"

    def amount(self) -> tuple[Decimal, bool]:
        """The value and whether it is exact text; InvalidRequest when it is no number."""
        if self.text is None:
            if self.value is None:
                raise AssertionError("amount() of an absent price")
            if not math.isfinite(self.value):
                raise InvalidRequest(self.name, f"must be a finite number, got {self.value}")
            return Decimal(repr(self.value)), False
        exact = parse_decimal(self.text, self.field)
        if self.value is not None and float(exact) != self.value:
            raise InvalidRequest(
                self.field,
                f"{self.text} differs from {self.name} {self.value!r}; send one of them, "
                "or the double nearest to the exact value",
            )
        return exact, True


def parse_decimal(text: str, field_name: str) -> Decimal:
    """Exact decimal text: `-?[0-9]+(\\.[0-9]+)?`, at most 32 characters."""
    if len(text) > MAX_DECIMAL_TEXT_LENGTH or not _DECIMAL_RE.fullmatch(text):
        raise InvalidRequest(
            field_name,
            f"{text[:MAX_DECIMAL_TEXT_LENGTH]!r} is not decimal text (digits with an optional "
            f"'-' and '.', no exponent, at most {MAX_DECIMAL_TEXT_LENGTH} characters)",
        )
    return Decimal(text)


def _price(
    sent: _PriceInput,
    instrument: Instrument | None,
    order_type: OrderType | None,
    required: bool | None,
) -> Decimal | None:
    """A price snapped to the tick; `required` None (unknown order type) checks the value
    alone, and `instrument` None (invalid symbol) skips the tick."""
    if not sent.given:
        if required and order_type is not None:
            raise InvalidRequest(sent.name, f"is required for {order_type.value} orders")
        return None
    if required is False and order_type is not None:
        raise InvalidRequest(sent.field, f"must not be set for {order_type.value} orders")
    exact, is_text = sent.amount()
    shown = sent.text if is_text else sent.value
    if exact <= 0:
        raise InvalidRequest(sent.field, f"must be > 0, got {shown}")
    if exact > MAX_PRICE:
        raise InvalidRequest(sent.field, f"must be at most {MAX_PRICE} rupees, got {shown}")
    if instrument is None:
        return exact
    nearest = instrument.nearest_tick(exact)
    # Exact text must be on the tick exactly; a double may be off by float noise.
    tolerance = 0 if is_text else instrument.tick_size * _TICK_TOLERANCE
    if abs(exact - nearest) > tolerance or nearest <= 0:
        raise InvalidRequest(
            sent.field,
            f"{shown} is not on the tick size {instrument.tick_size} of {instrument.symbol}",
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
    # Exact forms of the prices; "" when not sent, else they win over the doubles.
    ltp_decimal: str = ""
    bid_decimal: str = ""
    ask_decimal: str = ""


def is_full_symbol(symbol: str) -> bool:
    """EXCHANGE:TRADINGSYMBOL and nothing else (fullmatch: `$` would let "\n" through)."""
    return len(symbol) <= MAX_QUOTE_SYMBOL_LENGTH and _SYMBOL_RE.fullmatch(symbol) is not None


def validate_quote(
    raw: RawQuote, instruments: InstrumentRegistry, field_prefix: str, now: datetime
) -> Quote:
    """A domain Quote with prices snapped to the tick, or InvalidRequest naming every
    malformed field.

    `now` stands in for an absent exchange time."""
    found = Violations()
    if not is_full_symbol(raw.symbol):
        found.add(
            field_prefix + "symbol",
            f"{raw.symbol[:MAX_QUOTE_SYMBOL_LENGTH]!r} is not in EXCHANGE:TRADINGSYMBOL form "
            f"(at most {MAX_QUOTE_SYMBOL_LENGTH} characters)",
        )
        instrument = None
    else:
        instrument = instruments.get(raw.symbol)
    # 0 means "absent" for bid and ask, but a quote must have an ltp: a negative one is
    # told "must be > 0" here, not "(or 0 when absent)" as the bid and ask are.
    ltp = found.value(
        _quote_price,
        _quote_input(raw.ltp, raw.ltp_decimal, field_prefix + "ltp"),
        instrument,
        absent_allowed=False,
    )
    bid = found.value(
        _quote_price,
        _quote_input(raw.bid, raw.bid_decimal, field_prefix + "bid"),
        instrument,
        absent_allowed=True,
    )
    ask = found.value(
        _quote_price,
        _quote_input(raw.ask, raw.ask_decimal, field_prefix + "ask"),
        instrument,
        absent_allowed=True,
    )
    if bid is not None and ask is not None and bid > ask:
        found.add(field_prefix + "bid", f"{bid} is above the ask {ask}")
    for name, qty in (("bid_qty", raw.bid_qty), ("ask_qty", raw.ask_qty), ("volume", raw.volume)):
        if qty < 0:
            found.add(field_prefix + name, f"must be >= 0, got {qty}")
    when = now if raw.timestamp is None else found.value(_quote_time, raw.timestamp, field_prefix)
    found.raise_if_any()
    if ltp is None or when is None:
        raise AssertionError("an invalid quote passed validation")  # raise_if_any raised
    return Quote(
        symbol=raw.symbol,
        ltp=ltp,
        bid=_ZERO if bid is None else bid,
        ask=_ZERO if ask is None else ask,
        bid_qty=raw.bid_qty,
        ask_qty=raw.ask_qty,
        volume=raw.volume,
        timestamp=when,
    )


def _quote_input(value: float, text: str, name: str) -> _PriceInput:
    """A quote's price as sent: "" is no text, and beside text a 0 is no double."""
    if not text:
        return _PriceInput(value, None, name)
    return _PriceInput(None if value == 0 else value, text, name)


def _quote_price(
    sent: _PriceInput, instrument: Instrument | None, *, absent_allowed: bool
) -> Decimal | None:
    """A positive price on the tick; None for 0, which a bid or ask uses for "absent"."""
    exact, is_text = sent.amount()
    shown = sent.text if is_text else sent.value
    if exact <= 0:
        if not absent_allowed:
            raise InvalidRequest(sent.field, f"must be > 0, got {shown}")
        if exact == 0:
            return None
        raise InvalidRequest(sent.field, f"must be > 0 (or 0 when absent), got {shown}")
    if exact > MAX_QUOTE_PRICE:
        raise InvalidRequest(sent.field, f"{shown} is above the ceiling {MAX_QUOTE_PRICE:f}")
    if instrument is None:
        return exact
    nearest = instrument.nearest_tick(exact)
    if nearest <= 0:
        raise InvalidRequest(
            sent.field, f"{shown} is below one tick ({instrument.tick_size}) of {instrument.symbol}"
        )
    tolerance = 0 if is_text else instrument.tick_size * _TICK_TOLERANCE
    if abs(exact - nearest) > tolerance:
        raise InvalidRequest(
            sent.field,
            f"{shown} is not on the tick size {instrument.tick_size} of {instrument.symbol}",
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
