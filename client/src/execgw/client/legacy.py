"""Bridge for strategies moving from the old in-process gateway.

The old gateway passed plain dataclasses around; these functions translate their
dict form (``dataclasses.asdict``) to and from the wire messages so a strategy
can switch transports without rewriting its order logic. ``*_to_legacy`` output
uses exactly the old field names, so ``OldDataclass(**d)`` keeps working.

Everything the bridge cannot translate raises ``ValueError`` naming the field:
a silently dropped key on an order path is a wrong order.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from execgw.client._convert import (
    coerce_enum,
    coerce_order_type,
    coerce_product,
    coerce_side,
    coerce_validity,
    dict_to_struct,
    enum_name,
    struct_to_dict,
)
from execgw.v1 import orders_pb2
from execgw.v1.orders_pb2 import ExecutionResult, OrderIntent, OrderType

__all__ = [
    "INTENT_FIELDS",
    "KITE_UNSUPPORTED_ARGS",
    "RESULT_FIELDS",
    "intent_from_kite",
    "intent_from_legacy",
    "intent_to_legacy",
    "result_from_legacy",
    "result_to_legacy",
]

INTENT_FIELDS: tuple[str, ...] = (
    "symbol",
    "strategy_code",
    "side",
    "qty",
    "order_type",
    "product",
    "validity",
    "price",
    "trigger_price",
    "tag",
    "reason",
    "confidence",
    "metadata",
)
_INTENT_REQUIRED = frozenset(
    {"symbol", "strategy_code", "side", "qty", "order_type", "product", "validity"}
)

RESULT_FIELDS: tuple[str, ...] = (
    "order_id",
    "client_order_id",
    "status",
    "symbol",
    "side",
    "qty",
    "filled_qty",
    "avg_price",
    "message",
    "reject_reason",
    "raw",
    "timestamp",
    "strategy_code",
    "dry_run",
)
_RESULT_REQUIRED = frozenset({"order_id", "status", "symbol", "side", "qty"})

# Kite place_order arguments that execgw has no equivalent for. They are refused
# when set rather than dropped, because each one changes what the order does.
KITE_UNSUPPORTED_ARGS: tuple[str, ...] = (
    "disclosed_quantity",
    "squareoff",
    "stoploss",
    "trailing_stoploss",
    "iceberg_legs",
    "iceberg_quantity",
    "auction_number",
    "market_protection",
    "validity_ttl",
)

# The old code and Kite both use 0 for "no price"; in the proto an absent price is
# distinct from 0.0, so 0 is read as absent where the order type takes no price.
_NO_PRICE = frozenset({OrderType.ORDER_TYPE_MARKET, OrderType.ORDER_TYPE_SL_M})
_NO_TRIGGER = frozenset({OrderType.ORDER_TYPE_MARKET, OrderType.ORDER_TYPE_LIMIT})


def _check_keys(d: Mapping[str, Any], allowed: tuple[str, ...], required: frozenset[str]) -> None:
    if not isinstance(d, Mapping):
        raise ValueError(f"expected a mapping, got {type(d).__name__}")
    unknown = [key for key in d if key not in allowed]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; expected a subset of {', '.join(allowed)}")
    missing = sorted(required - d.keys())
    if missing:
        raise ValueError(f"missing key {missing[0]!r}")


def _str(d: Mapping[str, Any], key: str) -> str:
    value = d.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected a string, got {type(value).__name__}")
    return value


def _int(d: Mapping[str, Any], key: str) -> int:
    value = d.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key}: expected an int, got {value!r}")
    return value


def _float(value: object, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError(f"{key}: expected a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{key}: must be finite, got {value!r}")
    return number


def _price(value: object, key: str, order_type: int, unused_for: frozenset[int]) -> float | None:
    number = _float(value, key)
    if number == 0 and order_type in unused_for:
        return None
    return number


def _name(value: object) -> str:
    if isinstance(value, enum.Enum):
        value = value.value if isinstance(value.value, str) else value.name
    return str(value)


def intent_from_legacy(d: Mapping[str, Any]) -> OrderIntent:
    """Old ``OrderIntent`` dict to the wire message."""
    _check_keys(d, INTENT_FIELDS, _INTENT_REQUIRED)
    order_type = coerce_order_type(d["order_type"])
    return OrderIntent(
        symbol=_str(d, "symbol"),
        strategy_code=_str(d, "strategy_code"),
        side=coerce_side(d["side"]),
        qty=_int(d, "qty"),
        order_type=order_type,
        product=coerce_product(d["product"]),
        validity=coerce_validity(d["validity"]),
        price=_price(d.get("price"), "price", order_type, _NO_PRICE),
        trigger_price=_price(d.get("trigger_price"), "trigger_price", order_type, _NO_TRIGGER),
        tag=_str(d, "tag"),
        reason=_str(d, "reason"),
        confidence=_float(d.get("confidence"), "confidence"),
        metadata=dict_to_struct(d.get("metadata"), "metadata"),
    )


def intent_to_legacy(i: OrderIntent) -> dict[str, Any]:
    """Wire ``OrderIntent`` to the old dict; SL_M is spelled "SL-M" as the old code did."""
    order_type = enum_name(orders_pb2.OrderType, i.order_type, "order_type")
    return {
        "symbol": i.symbol,
        "strategy_code": i.strategy_code,
        "side": enum_name(orders_pb2.Side, i.side, "side"),
        "qty": i.qty,
        "order_type": "SL-M" if order_type == "SL_M" else order_type,
        "product": enum_name(orders_pb2.Product, i.product, "product"),
        "validity": enum_name(orders_pb2.Validity, i.validity, "validity"),
        "price": i.price if i.HasField("price") else None,
        "trigger_price": i.trigger_price if i.HasField("trigger_price") else None,
        "tag": i.tag,
        "reason": i.reason,
        "confidence": i.confidence if i.HasField("confidence") else None,
        "metadata": struct_to_dict(i.metadata),
    }


def _timestamp(value: object) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"timestamp: not ISO-8601: {value!r}") from exc
    if not isinstance(value, datetime):
        raise ValueError(f"timestamp: expected a datetime or ISO-8601 string, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        # A naive time from an Indian desk is usually IST, not UTC; guessing
        # would shift the audit trail by 5h30m, so the caller must say.
        raise ValueError(f"timestamp: must be timezone-aware, got {value.isoformat()}")
    return value


def result_from_legacy(d: Mapping[str, Any]) -> ExecutionResult:
    """Old ``ExecutionResult`` dict to the wire message.

    ``side`` and ``reject_reason`` may be None (a malformed order has no side; an
    accepted one has no reject reason); ``status`` must be a real status.
    """
    _check_keys(d, RESULT_FIELDS, _RESULT_REQUIRED)
    side = d.get("side")
    reason = d.get("reject_reason")
    dry_run = d.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ValueError(f"dry_run: expected a bool, got {dry_run!r}")
    result = ExecutionResult(
        order_id=_str(d, "order_id"),
        client_order_id=_str(d, "client_order_id"),
        status=coerce_enum(orders_pb2.OrderStatus, d["status"], "status"),
        symbol=_str(d, "symbol"),
        side=orders_pb2.SIDE_UNSPECIFIED if side is None else coerce_side(side),
        qty=_int(d, "qty"),
        filled_qty=_int(d, "filled_qty"),
        avg_price=_float(d.get("avg_price"), "avg_price"),
        message=_str(d, "message"),
        reject_reason=(
            orders_pb2.REJECT_REASON_UNSPECIFIED
            if reason is None or reason == ""
            else coerce_enum(orders_pb2.RejectReason, reason, "reject_reason")
        ),
        raw=dict_to_struct(d.get("raw"), "raw"),
        strategy_code=_str(d, "strategy_code"),
        dry_run=dry_run,
    )
    timestamp = _timestamp(d.get("timestamp"))
    if timestamp is not None:
        result.timestamp.FromDatetime(timestamp)
    return result


def result_to_legacy(r: ExecutionResult) -> dict[str, Any]:
    """Wire ``ExecutionResult`` to the old dict.

    Only the old fields come out; order_type, product, validity, price,
    trigger_price, tag and created_at did not exist there and are left behind.
    """
    return {
        "order_id": r.order_id,
        "client_order_id": r.client_order_id,
        "status": enum_name(orders_pb2.OrderStatus, r.status, "status"),
        "symbol": r.symbol,
        "side": enum_name(orders_pb2.Side, r.side, "side"),
        "qty": r.qty,
        "filled_qty": r.filled_qty,
        "avg_price": r.avg_price if r.HasField("avg_price") else None,
        "message": r.message,
        "reject_reason": enum_name(orders_pb2.RejectReason, r.reject_reason, "reject_reason"),
        "raw": struct_to_dict(r.raw),
        "timestamp": r.timestamp.ToDatetime(tzinfo=UTC) if r.HasField("timestamp") else None,
        "strategy_code": r.strategy_code,
        "dry_run": r.dry_run,
    }


def _unset(value: object) -> bool:
    # Kite code passes None, 0 or "" to mean "not used".
    return value is None or (not isinstance(value, bool) and value in (0, ""))


def intent_from_kite(
    *,
    variety: str = "regular",
    exchange: str,
    tradingsymbol: str,
    transaction_type: str,
    quantity: int,
    product: str,
    order_type: str,
    price: float | None = None,
    validity: str | None = "DAY",
    trigger_price: float | None = None,
    tag: str | None = None,
    strategy_code: str,
    disclosed_quantity: int | None = None,
    squareoff: float | None = None,
    stoploss: float | None = None,
    trailing_stoploss: float | None = None,
    iceberg_legs: int | None = None,
    iceberg_quantity: int | None = None,
    auction_number: str | int | None = None,
    market_protection: float | None = None,
    validity_ttl: int | None = None,
) -> OrderIntent:
    """Kite Connect ``place_order`` keyword arguments to an ``OrderIntent``.

    Lets a strategy written against pykiteconnect keep its call sites: pass the
    same keywords plus ``strategy_code``. Every Kite argument is named here so a
    typo is a TypeError; the ones execgw cannot honour (``KITE_UNSUPPORTED_ARGS``)
    raise ValueError unless unset (None, 0 or ""). ``validity=None`` means DAY,
    as it does at Kite.
    """
    unsupported = {
        "disclosed_quantity": disclosed_quantity,
        "squareoff": squareoff,
        "stoploss": stoploss,
        "trailing_stoploss": trailing_stoploss,
        "iceberg_legs": iceberg_legs,
        "iceberg_quantity": iceberg_quantity,
        "auction_number": auction_number,
        "market_protection": market_protection,
        "validity_ttl": validity_ttl,
    }
    for name, value in unsupported.items():
        if not _unset(value):
            raise ValueError(f"{name}={value!r} is not supported by execgw")
    if _name(variety).lower() != "regular":
        raise ValueError(f"variety: only 'regular' is supported, got {variety!r}")
    for name, part in (("exchange", exchange), ("tradingsymbol", tradingsymbol)):
        if not isinstance(part, str) or not part or ":" in part:
            raise ValueError(f"{name}: expected a non-empty name without ':', got {part!r}")
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise ValueError(f"quantity: expected an int, got {quantity!r}")
    kind = coerce_order_type(order_type)
    return OrderIntent(
        symbol=f"{exchange}:{tradingsymbol}",
        strategy_code=strategy_code,
        side=coerce_side(transaction_type, "transaction_type"),
        qty=quantity,
        order_type=kind,
        product=coerce_product(product),
        validity=coerce_validity("DAY" if validity is None else validity),
        price=_price(price, "price", kind, _NO_PRICE),
        trigger_price=_price(trigger_price, "trigger_price", kind, _NO_TRIGGER),
        tag=tag or "",
    )
