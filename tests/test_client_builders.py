"""Order builders: the intent each one produces and the mistakes it refuses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf import struct_pb2

from execgw.client import (
    OrderIntent,
    OrderType,
    Product,
    Side,
    Validity,
    builders,
    limit,
    market,
    stop,
)


def _fields(intent: OrderIntent) -> dict[str, Any]:
    """The intent as plain values, with absent optionals as None."""
    return {
        "symbol": intent.symbol,
        "strategy_code": intent.strategy_code,
        "side": intent.side,
        "qty": intent.qty,
        "order_type": intent.order_type,
        "product": intent.product,
        "validity": intent.validity,
        "price": intent.price if intent.HasField("price") else None,
        "trigger_price": intent.trigger_price if intent.HasField("trigger_price") else None,
        "tag": intent.tag,
        "reason": intent.reason,
        "confidence": intent.confidence if intent.HasField("confidence") else None,
        "has_metadata": intent.HasField("metadata"),
    }


def _expected(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "symbol": "NSE:INFY",
        "strategy_code": "mom_v2",
        "side": Side.SIDE_BUY,
        "qty": 10,
        "order_type": OrderType.ORDER_TYPE_MARKET,
        "product": Product.PRODUCT_MIS,
        "validity": Validity.VALIDITY_DAY,
        "price": None,
        "trigger_price": None,
        "tag": "",
        "reason": "",
        "confidence": None,
        "has_metadata": False,
    }
    base.update(overrides)
    return base


CASES: list[tuple[str, Callable[[], OrderIntent], dict[str, Any]]] = [
    (
        "market defaults",
        lambda: market("NSE:INFY", "BUY", 10, strategy_code="mom_v2"),
        _expected(),
    ),
    (
        "market lower-case strings",
        lambda: market(
            "NSE:INFY", "sell", 25, strategy_code="mom_v2", product="nrml", validity="ioc"
        ),
        _expected(
            side=Side.SIDE_SELL,
            qty=25,
            product=Product.PRODUCT_NRML,
            validity=Validity.VALIDITY_IOC,
        ),
    ),
    (
        "market proto enum ints and prefixed names",
        lambda: market(
            "NSE:INFY",
            Side.SIDE_SELL,
            1,
            strategy_code="mom_v2",
            product="PRODUCT_CNC",
            validity=Validity.VALIDITY_IOC,
        ),
        _expected(
            side=Side.SIDE_SELL,
            qty=1,
            product=Product.PRODUCT_CNC,
            validity=Validity.VALIDITY_IOC,
        ),
    ),
    (
        "limit with audit fields",
        lambda: limit(
            "NSE:RELIANCE",
            "Buy",
            5,
            2875.35,
            strategy_code="mr_1",
            tag="entry-1",
            reason="z-score -2.1",
            confidence=0.82,
        ),
        _expected(
            symbol="NSE:RELIANCE",
            strategy_code="mr_1",
            qty=5,
            order_type=OrderType.ORDER_TYPE_LIMIT,
            price=2875.35,
            tag="entry-1",
            reason="z-score -2.1",
            confidence=0.82,
        ),
    ),
    (
        "limit keeps a stated zero confidence",
        lambda: limit("NSE:INFY", "BUY", 10, 1500.0, strategy_code="mom_v2", confidence=0.0),
        _expected(order_type=OrderType.ORDER_TYPE_LIMIT, price=1500.0, confidence=0.0),
    ),
    (
        "stop without price is SL_M",
        lambda: stop("NFO:NIFTY25JANFUT", "SELL", 75, 23410.5, strategy_code="brk", product="NRML"),
        _expected(
            symbol="NFO:NIFTY25JANFUT",
            strategy_code="brk",
            side=Side.SIDE_SELL,
            qty=75,
            order_type=OrderType.ORDER_TYPE_SL_M,
            product=Product.PRODUCT_NRML,
            trigger_price=23410.5,
        ),
    ),
    (
        "stop with price is SL",
        lambda: stop("NSE:SBIN", "SELL", 100, 801.0, price=800.5, strategy_code="brk"),
        _expected(
            symbol="NSE:SBIN",
            strategy_code="brk",
            side=Side.SIDE_SELL,
            qty=100,
            order_type=OrderType.ORDER_TYPE_SL,
            price=800.5,
            trigger_price=801.0,
        ),
    ),
]


@pytest.mark.parametrize(("build", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_builder_produces_intent(
    build: Callable[[], OrderIntent], expected: dict[str, Any]
) -> None:
    assert _fields(build()) == expected


def test_builders_module_exports_the_same_functions() -> None:
    assert (builders.market, builders.limit, builders.stop) == (market, limit, stop)


def test_metadata_becomes_struct() -> None:
    intent = market(
        "NSE:INFY",
        "BUY",
        10,
        strategy_code="mom_v2",
        metadata={"signal": "ema_cross", "lots": 2, "atr": 12.5, "flags": [True, None]},
    )
    expected = struct_pb2.Struct()
    expected.update({"signal": "ema_cross", "lots": 2, "atr": 12.5, "flags": [True, None]})
    assert intent.HasField("metadata")
    assert intent.metadata == expected
    assert intent.metadata.fields["lots"].number_value == 2.0
    assert intent.metadata.fields["flags"].list_value.values[0].bool_value is True


def test_empty_metadata_is_absent() -> None:
    assert not market("NSE:INFY", "BUY", 1, strategy_code="s", metadata={}).HasField("metadata")


@pytest.mark.parametrize(
    ("build", "argument", "bad"),
    [
        (lambda: market("NSE:INFY", "HOLD", 1, strategy_code="s"), "side", "'HOLD'"),
        (lambda: market("NSE:INFY", 0, 1, strategy_code="s"), "side", "0"),
        (lambda: market("NSE:INFY", "unspecified", 1, strategy_code="s"), "side", "unspecified"),
        (lambda: market("NSE:INFY", True, 1, strategy_code="s"), "side", "True"),
        (lambda: market("NSE:INFY", 7, 1, strategy_code="s"), "side", "7"),
        (lambda: market("NSE:INFY", "BUY", 1, strategy_code="s", product="MTF"), "product", "MTF"),
        (
            lambda: limit("NSE:INFY", "BUY", 1, 10.0, strategy_code="s", validity="GTT"),
            "validity",
            "GTT",
        ),
        (
            lambda: stop("NSE:INFY", "SELL", 1, 9.0, strategy_code="s", product="BO"),
            "product",
            "BO",
        ),
    ],
)
def test_unknown_enum_value_raises_naming_argument(
    build: Callable[[], OrderIntent], argument: str, bad: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{argument}: unknown value .*{bad}") as info:
        build()
    assert "expected one of" in str(info.value)


def test_error_lists_accepted_names() -> None:
    with pytest.raises(ValueError, match=r"expected one of MIS, NRML, CNC$"):
        market("NSE:INFY", "BUY", 1, strategy_code="s", product="intraday")


def test_non_json_metadata_raises_naming_metadata() -> None:
    with pytest.raises(ValueError, match=r"^metadata: "):
        market("NSE:INFY", "BUY", 1, strategy_code="s", metadata={"when": object()})
