"""Turns a client's raw intent into a domain OrderIntent, or says which field is wrong.

Everything here is a property of the request and the instrument alone, so it runs
before the single writer sees the order: a malformed request never touches state.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from execgw.server.domain import OrderIntent, OrderType, Product, Side, Validity
from execgw.server.instruments import Instrument, InstrumentRegistry

_T = TypeVar("_T")

MAX_TAG_LENGTH = 20
MAX_CLIENT_ORDER_ID_LENGTH = 64
_SYMBOL_RE = re.compile(r"^[A-Z][A-Z0-9_]*:[A-Za-z0-9&_.\-]+$")
_CLIENT_ORDER_ID_RE = re.compile(r"^[\x21-\x7e]+$")
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
    if client_order_id and not _CLIENT_ORDER_ID_RE.match(client_order_id):
        raise InvalidRequest("client_order_id", "must be printable ASCII without spaces")


def validate_intent(raw: RawIntent, instruments: InstrumentRegistry) -> OrderIntent:
    prefix = "intent."
    if not raw.symbol:
        raise InvalidRequest(prefix + "symbol", "must not be empty")
    if not _SYMBOL_RE.match(raw.symbol):
        raise InvalidRequest(
            prefix + "symbol", f"{raw.symbol!r} is not in EXCHANGE:TRADINGSYMBOL form"
        )
    if not raw.strategy_code.strip():
        raise InvalidRequest(prefix + "strategy_code", "must not be empty")
    side = _required(raw.side, prefix + "side")
    order_type = _required(raw.order_type, prefix + "order_type")
    product = _required(raw.product, prefix + "product")
    validity = _required(raw.validity, prefix + "validity")

    instrument = instruments.get(raw.symbol)
    if raw.qty <= 0:
        raise InvalidRequest(prefix + "qty", f"must be > 0, got {raw.qty}")
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

    if len(raw.tag) > MAX_TAG_LENGTH:
        raise InvalidRequest(
            prefix + "tag", f"is {len(raw.tag)} characters, at most {MAX_TAG_LENGTH} allowed"
        )
    if raw.confidence is not None and not (0.0 <= raw.confidence <= 1.0):
        raise InvalidRequest(prefix + "confidence", f"must be within [0, 1], got {raw.confidence}")

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
    nearest = instrument.nearest_tick(exact)
    if abs(exact - nearest) > instrument.tick_size * _TICK_TOLERANCE or nearest <= 0:
        raise InvalidRequest(
            field_name,
            f"{value} is not on the tick size {instrument.tick_size} of {instrument.symbol}",
        )
    return nearest


def validate_quote(symbol: str, ltp: float, bid: float, ask: float, field_prefix: str) -> None:
    if not _SYMBOL_RE.match(symbol):
        raise InvalidRequest(
            field_prefix + "symbol", f"{symbol!r} is not in EXCHANGE:TRADINGSYMBOL form"
        )
    if math.isnan(ltp) or math.isinf(ltp) or ltp <= 0:
        raise InvalidRequest(field_prefix + "ltp", f"must be a finite number > 0, got {ltp}")
    for name, value in (("bid", bid), ("ask", ask)):
        if math.isnan(value) or math.isinf(value) or value < 0:
            raise InvalidRequest(field_prefix + name, f"must be a finite number >= 0, got {value}")
