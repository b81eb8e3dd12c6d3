"""Short constructors for ``OrderIntent``.

They exist so strategy code reads like the order it places (``limit("NSE:INFY",
"BUY", 10, 1500.5, strategy_code="mom")``) and so that a mistyped side or
product fails on the strategy's own line instead of coming back as a reject.
Prices and quantities are not checked here: the gateway owns those rules.

A price given as a ``Decimal`` is sent exactly, as ``price_decimal`` (fixed-point
text), with the nearest double in ``price`` for servers that predate the exact field;
the gateway uses the text. A float is sent as the double alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, TypeAlias

from execgw.client._convert import (
    EnumLike,
    coerce_product,
    coerce_side,
    coerce_validity,
    dict_to_struct,
)
from execgw.client.money import decimal_text
from execgw.v1.orders_pb2 import OrderIntent, OrderType

__all__ = ["Price", "limit", "market", "stop"]

# A price in rupees: a Decimal is sent exactly, a float or int as a double.
Price: TypeAlias = float | Decimal


def _intent(
    symbol: str,
    side: EnumLike,
    qty: int,
    order_type: OrderType.ValueType,
    *,
    price: Price | None,
    trigger_price: Price | None,
    strategy_code: str,
    product: EnumLike,
    validity: EnumLike,
    tag: str,
    reason: str,
    confidence: float | None,
    metadata: Mapping[str, Any] | None,
) -> OrderIntent:
    intent = OrderIntent(
        symbol=symbol,
        strategy_code=strategy_code,
        side=coerce_side(side),
        qty=qty,
        order_type=order_type,
        product=coerce_product(product),
        validity=coerce_validity(validity),
        tag=tag,
        reason=reason,
        confidence=confidence,
        metadata=dict_to_struct(metadata, "metadata"),
    )
    _set_price(intent, "price", price)
    _set_price(intent, "trigger_price", trigger_price)
    return intent


def _set_price(intent: OrderIntent, name: str, value: Price | None) -> None:
    if value is None:
        return
    if isinstance(value, Decimal):
        setattr(intent, name + "_decimal", decimal_text(value))
        setattr(intent, name, float(value))
    else:
        setattr(intent, name, value)


def market(
    symbol: str,
    side: EnumLike,
    qty: int,
    *,
    strategy_code: str,
    product: EnumLike = "MIS",
    validity: EnumLike = "DAY",
    tag: str = "",
    reason: str = "",
    confidence: float | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> OrderIntent:
    """A MARKET order: no price, fills at the prevailing price."""
    return _intent(
        symbol,
        side,
        qty,
        OrderType.ORDER_TYPE_MARKET,
        price=None,
        trigger_price=None,
        strategy_code=strategy_code,
        product=product,
        validity=validity,
        tag=tag,
        reason=reason,
        confidence=confidence,
        metadata=metadata,
    )


def limit(
    symbol: str,
    side: EnumLike,
    qty: int,
    price: Price,
    *,
    strategy_code: str,
    product: EnumLike = "MIS",
    validity: EnumLike = "DAY",
    tag: str = "",
    reason: str = "",
    confidence: float | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> OrderIntent:
    """A LIMIT order at ``price`` rupees or better (a ``Decimal`` is sent exactly)."""
    return _intent(
        symbol,
        side,
        qty,
        OrderType.ORDER_TYPE_LIMIT,
        price=price,
        trigger_price=None,
        strategy_code=strategy_code,
        product=product,
        validity=validity,
        tag=tag,
        reason=reason,
        confidence=confidence,
        metadata=metadata,
    )


def stop(
    symbol: str,
    side: EnumLike,
    qty: int,
    trigger_price: Price,
    *,
    price: Price | None = None,
    strategy_code: str,
    product: EnumLike = "MIS",
    validity: EnumLike = "DAY",
    tag: str = "",
    reason: str = "",
    confidence: float | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> OrderIntent:
    """A stop-loss order: SL_M without ``price``, SL (stop-limit) with one.

    One function for both because the only difference a strategy cares about is
    whether it names a limit price once the trigger is hit.
    """
    order_type = OrderType.ORDER_TYPE_SL_M if price is None else OrderType.ORDER_TYPE_SL
    return _intent(
        symbol,
        side,
        qty,
        order_type,
        price=price,
        trigger_price=trigger_price,
        strategy_code=strategy_code,
        product=product,
        validity=validity,
        tag=tag,
        reason=reason,
        confidence=confidence,
        metadata=metadata,
    )
