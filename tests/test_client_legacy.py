"""Legacy bridge: old dicts and Kite arguments to wire messages and back."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from google.protobuf import struct_pb2

from execgw.client import (
    ExecutionResult,
    OrderIntent,
    OrderStatus,
    OrderType,
    Product,
    RejectReason,
    Side,
    Validity,
    intent_from_kite,
    intent_from_legacy,
    intent_to_legacy,
    limit,
    market,
    result_from_legacy,
    result_to_legacy,
    stop,
)
from execgw.client.legacy import INTENT_FIELDS, KITE_UNSUPPORTED_ARGS, RESULT_FIELDS

IST = timezone(timedelta(hours=5, minutes=30))


def _intent(**overrides: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "symbol": "NSE:INFY",
        "strategy_code": "mom_v2",
        "side": "BUY",
        "qty": 10,
        "order_type": "MARKET",
        "product": "MIS",
        "validity": "DAY",
        "price": None,
        "trigger_price": None,
        "tag": "",
        "reason": "",
        "confidence": None,
        "metadata": {},
    }
    d.update(overrides)
    return d


def _result(**overrides: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "order_id": "ord-20250114-000042",
        "client_order_id": "3f2b9c0e6a4d4e7f9b1a2c3d4e5f6a7b",
        "status": "FILLED",
        "symbol": "NSE:INFY",
        "side": "BUY",
        "qty": 10,
        "filled_qty": 10,
        "avg_price": 1501.25,
        "message": "filled by paper venue",
        "reject_reason": None,
        "raw": {},
        "timestamp": datetime(2025, 1, 14, 4, 1, 2, 345678, tzinfo=UTC),
        "strategy_code": "mom_v2",
        "dry_run": False,
    }
    d.update(overrides)
    return d


INTENT_ROUND_TRIPS = [
    _intent(),
    _intent(side="SELL", product="NRML", validity="IOC", qty=75, symbol="NFO:NIFTY25JANFUT"),
    _intent(order_type="LIMIT", price=1499.95, tag="entry-1", reason="ema cross"),
    _intent(order_type="SL", price=800.5, trigger_price=801.0, product="CNC", confidence=0.0),
    _intent(order_type="SL-M", trigger_price=23410.5, confidence=0.73),
    _intent(
        order_type="LIMIT",
        price=0.05,
        metadata={"signal": "breakout", "lots": 2, "atr": 12.5, "legs": [1, "x", None, True]},
    ),
]


@pytest.mark.parametrize("legacy", INTENT_ROUND_TRIPS)
def test_intent_legacy_round_trip_is_lossless(legacy: dict[str, Any]) -> None:
    intent = intent_from_legacy(legacy)
    back = intent_to_legacy(intent)
    assert back == legacy
    assert {k: type(v) for k, v in back.items()} == {k: type(v) for k, v in legacy.items()}
    assert intent_from_legacy(back) == intent


def test_intent_from_legacy_sets_wire_fields() -> None:
    intent = intent_from_legacy(
        _intent(
            side="sell",
            order_type="SL",
            price=800.5,
            trigger_price=801.0,
            product="NRML",
            validity="IOC",
            tag="sl-1",
            reason="stop",
            confidence=0.6,
            metadata={"lots": 3},
        )
    )
    expected = OrderIntent(
        symbol="NSE:INFY",
        strategy_code="mom_v2",
        side=Side.SIDE_SELL,
        qty=10,
        order_type=OrderType.ORDER_TYPE_SL,
        product=Product.PRODUCT_NRML,
        validity=Validity.VALIDITY_IOC,
        price=800.5,
        trigger_price=801.0,
        tag="sl-1",
        reason="stop",
        confidence=0.6,
    )
    expected.metadata.update({"lots": 3})
    assert intent == expected


@pytest.mark.parametrize(
    "intent",
    [
        market("NSE:INFY", "BUY", 10, strategy_code="mom_v2"),
        limit("NSE:TCS", "SELL", 3, 4012.4, strategy_code="mr", validity="IOC", confidence=0.9),
        stop("NSE:SBIN", "SELL", 100, 801.0, strategy_code="brk", metadata={"why": "atr"}),
        stop("NSE:SBIN", "BUY", 100, 801.0, price=802.0, strategy_code="brk", product="CNC"),
    ],
)
def test_intent_wire_round_trip_is_lossless(intent: OrderIntent) -> None:
    assert intent_from_legacy(intent_to_legacy(intent)) == intent


@pytest.mark.parametrize(
    ("overrides", "price", "trigger_price"),
    [
        ({"order_type": "MARKET", "price": 0.0, "trigger_price": 0.0}, None, None),
        ({"order_type": "MARKET", "price": 0, "trigger_price": 0}, None, None),
        ({"order_type": "SL-M", "price": 0.0, "trigger_price": 99.5}, None, 99.5),
        ({"order_type": "LIMIT", "price": 101.5, "trigger_price": 0.0}, 101.5, None),
        # 0 is a real (invalid) limit price: kept so the gateway rejects it visibly.
        ({"order_type": "LIMIT", "price": 0.0}, 0.0, None),
        ({"order_type": "SL", "price": 0.0, "trigger_price": 0.0}, 0.0, 0.0),
    ],
)
def test_zero_means_no_price_only_where_unused(
    overrides: dict[str, Any], price: float | None, trigger_price: float | None
) -> None:
    intent = intent_from_legacy(_intent(**overrides))
    assert (intent.price if intent.HasField("price") else None) == price
    got_trigger = intent.trigger_price if intent.HasField("trigger_price") else None
    assert got_trigger == trigger_price


def test_sl_m_spellings_are_accepted_and_written_kite_style() -> None:
    for spelling in ("SL-M", "SL_M", "sl-m"):
        intent = intent_from_legacy(_intent(order_type=spelling, trigger_price=10.0))
        assert intent.order_type == OrderType.ORDER_TYPE_SL_M
        assert intent_to_legacy(intent)["order_type"] == "SL-M"


class _OldSide(enum.Enum):
    BUY = "BUY"
    SELL = "SELL"


class _OldOrderType(enum.Enum):
    MARKET = "MARKET"
    SL_M = "SL_M"


def test_old_enum_members_and_decimals_are_accepted() -> None:
    intent = intent_from_legacy(
        _intent(side=_OldSide.SELL, order_type=_OldOrderType.SL_M, trigger_price=Decimal("99.55"))
    )
    assert intent.side == Side.SIDE_SELL
    assert intent.order_type == OrderType.ORDER_TYPE_SL_M
    assert intent.trigger_price == 99.55


def test_missing_optional_keys_default() -> None:
    required = {k: _intent()[k] for k in INTENT_FIELDS[:7]}
    assert intent_to_legacy(intent_from_legacy(required)) == _intent()


@pytest.mark.parametrize(
    ("legacy", "message"),
    [
        (_intent(sl_price=99.0), r"unknown key 'sl_price'"),
        (_intent(exchange="NSE"), r"unknown key 'exchange'"),
        ({k: v for k, v in _intent().items() if k != "product"}, r"missing key 'product'"),
        (_intent(side="SHORT"), r"^side: unknown value 'SHORT'"),
        (_intent(order_type="STOP"), r"^order_type: unknown value 'STOP'"),
        (_intent(validity="GTC"), r"^validity: unknown value 'GTC'"),
        (_intent(qty=10.0), r"^qty: expected an int"),
        (_intent(qty=True), r"^qty: expected an int"),
        (_intent(order_type="LIMIT", price="1500"), r"^price: expected a number"),
        (_intent(order_type="LIMIT", price=float("nan")), r"^price: must be finite"),
        (_intent(confidence="high"), r"^confidence: expected a number"),
        (_intent(tag=5), r"^tag: expected a string"),
        (_intent(metadata=["a"]), r"^metadata: expected a mapping"),
    ],
)
def test_intent_from_legacy_rejects(legacy: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        intent_from_legacy(legacy)


RESULT_ROUND_TRIPS = [
    _result(),
    _result(
        status="REJECTED",
        filled_qty=0,
        avg_price=None,
        message="no quote for NSE:INFY",
        reject_reason="NO_MARKET_DATA",
        raw={"venue": "paper", "checks": ["risk", "market_data"], "latency_us": 412},
        dry_run=True,
    ),
    _result(status="PLACED", filled_qty=0, avg_price=None, client_order_id="", timestamp=None),
    _result(status="PARTIAL", filled_qty=4, avg_price=1500.05, side="SELL"),
    _result(status="CANCELLED", filled_qty=0, avg_price=None, message="IOC expired"),
    _result(status="REJECTED", reject_reason="MAX_TRADES_PER_STRATEGY_PER_DAY", side=None),
]


@pytest.mark.parametrize("legacy", RESULT_ROUND_TRIPS)
def test_result_legacy_round_trip_is_lossless(legacy: dict[str, Any]) -> None:
    result = result_from_legacy(legacy)
    back = result_to_legacy(result)
    assert back == legacy
    assert {k: type(v) for k, v in back.items()} == {k: type(v) for k, v in legacy.items()}
    assert result_from_legacy(back) == result


def test_result_from_legacy_sets_wire_fields() -> None:
    result = result_from_legacy(
        _result(status="rejected", reject_reason="REJECT_REASON_PRICE_COLLAR", avg_price=None)
    )
    assert result.status == OrderStatus.ORDER_STATUS_REJECTED
    assert result.reject_reason == RejectReason.REJECT_REASON_PRICE_COLLAR
    assert not result.HasField("avg_price")
    assert result.timestamp.seconds == int(datetime(2025, 1, 14, 4, 1, 2, tzinfo=UTC).timestamp())
    assert result.timestamp.nanos == 345678000


@pytest.mark.parametrize(
    "timestamp",
    [
        "2025-01-14T04:01:02.345678Z",
        "2025-01-14T04:01:02.345678+00:00",
        "2025-01-14T09:31:02.345678+05:30",
        datetime(2025, 1, 14, 9, 31, 2, 345678, tzinfo=IST),
    ],
)
def test_timestamps_come_back_as_utc(timestamp: str | datetime) -> None:
    out = result_to_legacy(result_from_legacy(_result(timestamp=timestamp)))["timestamp"]
    assert out == datetime(2025, 1, 14, 4, 1, 2, 345678, tzinfo=UTC)
    assert out.tzinfo is UTC


@pytest.mark.parametrize("empty", [None, ""])
def test_unset_reject_reason_reads_as_none(empty: str | None) -> None:
    result = result_from_legacy(_result(reject_reason=empty))
    assert result.reject_reason == RejectReason.REJECT_REASON_UNSPECIFIED
    assert result_to_legacy(result)["reject_reason"] is None


def test_result_to_legacy_keeps_only_old_fields() -> None:
    result = ExecutionResult(
        order_id="ord-1",
        client_order_id="cid-1",
        status=OrderStatus.ORDER_STATUS_PLACED,
        symbol="NSE:INFY",
        side=Side.SIDE_BUY,
        qty=10,
        order_type=OrderType.ORDER_TYPE_LIMIT,
        product=Product.PRODUCT_CNC,
        price=1490.0,
        tag="t",
        strategy_code="mom_v2",
    )
    result.raw.CopyFrom(struct_pb2.Struct())
    out = result_to_legacy(result)
    assert tuple(out) == RESULT_FIELDS
    assert out["status"] == "PLACED"
    assert out["avg_price"] is None
    assert out["timestamp"] is None
    assert out["raw"] == {}


@pytest.mark.parametrize(
    ("legacy", "message"),
    [
        (_result(fill_price=1.0), r"unknown key 'fill_price'"),
        ({k: v for k, v in _result().items() if k != "status"}, r"missing key 'status'"),
        (_result(status="COMPLETE"), r"^status: unknown value 'COMPLETE'"),
        (_result(status=None), r"^status: unknown value None"),
        (_result(reject_reason="TOO_RISKY"), r"^reject_reason: unknown value 'TOO_RISKY'"),
        (_result(timestamp=datetime(2025, 1, 14, 9, 31)), r"^timestamp: must be timezone-aware"),
        (_result(timestamp="2025-01-14 09:31:02"), r"^timestamp: must be timezone-aware"),
        (_result(timestamp="yesterday"), r"^timestamp: not ISO-8601"),
        (_result(timestamp=1736827262), r"^timestamp: expected a datetime"),
        (_result(dry_run="no"), r"^dry_run: expected a bool"),
        (_result(raw="{}"), r"^raw: expected a mapping"),
    ],
)
def test_result_from_legacy_rejects(legacy: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        result_from_legacy(legacy)


def _kite(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "variety": "regular",
        "exchange": "NSE",
        "tradingsymbol": "INFY",
        "transaction_type": "BUY",
        "quantity": 10,
        "product": "MIS",
        "order_type": "MARKET",
        "strategy_code": "kite_port",
    }
    kwargs.update(overrides)
    return kwargs


KITE_CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (_kite(), _intent(strategy_code="kite_port")),
    (
        _kite(price=0, trigger_price=0, validity=None, tag=None),
        _intent(strategy_code="kite_port"),
    ),
    (
        _kite(
            exchange="NFO",
            tradingsymbol="NIFTY25JANFUT",
            transaction_type="SELL",
            quantity=75,
            product="NRML",
            order_type="LIMIT",
            price=23400.05,
            validity="IOC",
            tag="algo-7",
        ),
        _intent(
            symbol="NFO:NIFTY25JANFUT",
            strategy_code="kite_port",
            side="SELL",
            qty=75,
            product="NRML",
            order_type="LIMIT",
            price=23400.05,
            validity="IOC",
            tag="algo-7",
        ),
    ),
    (
        _kite(order_type="SL-M", trigger_price=1490.0, price=0, transaction_type="SELL"),
        _intent(strategy_code="kite_port", order_type="SL-M", trigger_price=1490.0, side="SELL"),
    ),
    (
        _kite(
            order_type="SL", price=1489.5, trigger_price=1490.0, product="CNC", variety="REGULAR"
        ),
        _intent(
            strategy_code="kite_port",
            order_type="SL",
            price=1489.5,
            trigger_price=1490.0,
            product="CNC",
        ),
    ),
    (
        _kite(disclosed_quantity=0, squareoff=None, iceberg_legs=0, auction_number=""),
        _intent(strategy_code="kite_port"),
    ),
]


@pytest.mark.parametrize(("kwargs", "legacy"), KITE_CASES)
def test_intent_from_kite(kwargs: dict[str, Any], legacy: dict[str, Any]) -> None:
    intent = intent_from_kite(**kwargs)
    assert intent_to_legacy(intent) == legacy


@pytest.mark.parametrize("variety", ["amo", "co", "iceberg", "auction", "bo"])
def test_kite_unsupported_variety_raises(variety: str) -> None:
    with pytest.raises(
        ValueError, match=rf"^variety: only 'regular' is supported, got '{variety}'"
    ):
        intent_from_kite(**_kite(variety=variety))


@pytest.mark.parametrize("name", KITE_UNSUPPORTED_ARGS)
def test_kite_unsupported_argument_raises_when_set(name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}=5 is not supported"):
        intent_from_kite(**_kite(**{name: 5}))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"product": "CO"}, r"^product: unknown value 'CO'"),
        ({"product": "MTF"}, r"^product: unknown value 'MTF'"),
        ({"validity": "TTL"}, r"^validity: unknown value 'TTL'"),
        ({"transaction_type": "SHORT"}, r"^transaction_type: unknown value 'SHORT'"),
        ({"exchange": "NSE:"}, r"^exchange: expected a non-empty name"),
        ({"tradingsymbol": ""}, r"^tradingsymbol: expected a non-empty name"),
        ({"quantity": 10.0}, r"^quantity: expected an int"),
    ],
)
def test_kite_bad_values_raise(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        intent_from_kite(**_kite(**overrides))


def test_kite_unknown_argument_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'stop_loss'"):
        intent_from_kite(**_kite(stop_loss=5))
