"""Short constructors for ``OrderIntent``.

They exist so strategy code reads like the order it places (``limit("NSE:INFY",
"BUY", 10, 1500.5, strategy_code="mom")``) and so that a mistyped side or
product fails on the strategy's own line instead of coming back as a reject.
Prices and quantities are not checked here: the gateway owns those rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from execgw.client._convert import (
    EnumLike,
    coerce_product,
    coerce_side,
    coerce_validity,
    dict_to_struct,
)
from execgw.v1.orders_pb2 import OrderIntent, OrderType

__all__ = ["limit", "market", "stop"]


def _intent(
    symbol: str,
    side: EnumLike,
    qty: int,
    order_type: OrderType.ValueType,
    *,
    price: float | None,
    trigger_price: float | None,
    strategy_code: str,
    product: EnumLike,
    validity: EnumLike,
    tag: str,
    reason: str,
    confidence: float | None,
    metadata: Mapping[str, Any] | None,
) -> OrderIntent:
    return OrderIntent(
        symbol=symbol,
        strategy_code=strategy_code,
        side=coerce_side(side),
        qty=qty,
        order_type=order_type,
        product=coerce_product(product),
        validity=coerce_validity(validity),
        price=price,
        trigger_price=trigger_price,
        tag=tag,
        reason=reason,
        confidence=confidence,
        metadata=dict_to_struct(metadata, "metadata"),
    )


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
    price: float,
    *,
    strategy_code: str,
    product: EnumLike = "MIS",
    validity: EnumLike = "DAY",
    tag: str = "",
    reason: str = "",
    confidence: float | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> OrderIntent:
    """A LIMIT order at ``price`` rupees or better."""
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
    trigger_price: float,
    *,
    price: float | None = None,
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
