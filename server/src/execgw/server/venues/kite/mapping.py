"""How gateway orders read in Kite Connect's terms, and Kite's answers in ours.

Pure functions, no SDK: the dry-run venue uses them to record the exact call it does
not make, so it needs nothing that could make it.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from decimal import Decimal
from typing import Any

from execgw.server.domain import OrderIntent, OrderType, Side
from execgw.server.events import OrderSubmitted
from execgw.server.venues import base

VARIETY = "regular"
TAG_PREFIX = "EG"
# Kite rejects a longer tag outright (it does not truncate).
MAX_TAG_LENGTH = 20

_ORDER_TYPES = {
    OrderType.MARKET: "MARKET",
    OrderType.LIMIT: "LIMIT",
    OrderType.SL: "SL",
    OrderType.SL_M: "SL-M",
}
# Kite statuses that end an order; every other one (OPEN, TRIGGER PENDING, the
# transient *PENDING and *RECEIVED ones) means the order still works.
_FINAL_STATES = {
    "COMPLETE": base.DONE,
    "CANCELLED": base.CANCELLED,
    "CANCELLED AMO": base.CANCELLED,
    "REJECTED": base.REJECTED,
}


def order_tag(strategy_code: str, client_order_id: str) -> str:
    """A 20-character alphanumeric tag, the same every time for the same order key, so
    the order can be found in Kite's order book whatever happened to its answer."""
    digest = hashlib.sha256(f"{strategy_code}\0{client_order_id}".encode()).digest()
    body = base64.b32encode(digest).decode("ascii").rstrip("=")
    return (TAG_PREFIX + body)[:MAX_TAG_LENGTH]


def split_symbol(symbol: str) -> tuple[str, str]:
    """ "NSE:INFY" -> ("NSE", "INFY")."""
    exchange, _, tradingsymbol = symbol.partition(":")
    return exchange, tradingsymbol


def price_text(value: Decimal) -> str:
    """A price as Kite's form field carries it: plain decimal text, never an exponent."""
    return f"{value:f}"


def protection_text(market_protection: float) -> str:
    value = Decimal(repr(market_protection))
    return str(int(value)) if value == value.to_integral_value() else f"{value:f}"


def place_order_params(
    intent: OrderIntent, *, tag: str, market_protection: float
) -> dict[str, Any]:
    """The keyword arguments of `KiteConnect.place_order` for this order, as text where
    Kite's form has text, so the journal holds exactly what goes on the wire."""
    exchange, tradingsymbol = split_symbol(intent.symbol)
    params: dict[str, Any] = {
        "variety": VARIETY,
        "exchange": exchange,
        "tradingsymbol": tradingsymbol,
        "transaction_type": "BUY" if intent.side is Side.BUY else "SELL",
        "quantity": intent.qty,
        "product": intent.product.value,
        "order_type": _ORDER_TYPES[intent.order_type],
        "validity": intent.validity.value,
        "tag": tag,
    }
    if intent.order_type in (OrderType.LIMIT, OrderType.SL):
        assert intent.price is not None
        params["price"] = price_text(intent.price)
    if intent.order_type in (OrderType.SL, OrderType.SL_M):
        assert intent.trigger_price is not None
        params["trigger_price"] = price_text(intent.trigger_price)
    if intent.order_type in (OrderType.MARKET, OrderType.SL_M):
        params["market_protection"] = protection_text(market_protection)
    return params


def submission(
    order_id: str,
    client_order_id: str,
    intent: OrderIntent,
    now: datetime,
    *,
    venue: str,
    market_protection: float,
    dry_run: bool,
    internal: bool,
    placed_by: str,
) -> OrderSubmitted:
    """The journal record of an order handed to Kite (or to its dry run): the exact
    place_order call, under the order's tag."""
    request = place_order_params(
        intent,
        tag=order_tag(intent.strategy_code, client_order_id),
        market_protection=market_protection,
    )
    return OrderSubmitted(
        order_id,
        client_order_id,
        intent,
        now,
        venue=venue,
        request=request,
        dry_run=dry_run,
        internal=internal,
        placed_by=placed_by,
    )


def cancel_params(venue_order_id: str) -> dict[str, Any]:
    """The keyword arguments of `KiteConnect.cancel_order`."""
    return {"variety": VARIETY, "order_id": venue_order_id}


def order_state(kite_order: dict[str, Any]) -> str:
    """Kite's status as one of the venue seam's states (base.WORKING, DONE, ...)."""
    return _FINAL_STATES.get(str(kite_order.get("status") or "").upper(), base.WORKING)


def order_message(kite_order: dict[str, Any]) -> str:
    """Kite's status_message when it has one, else its status."""
    message = kite_order.get("status_message") or kite_order.get("status") or ""
    return str(message)


def plain(value: Any) -> Any:
    """A Kite answer made journal- and Struct-safe: the SDK parses timestamps into
    datetimes, which go back to Kite's own text form; other values stay as they are."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, Decimal):
        return float(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
