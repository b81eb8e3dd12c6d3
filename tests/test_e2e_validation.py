"""Malformed requests end to end: INVALID_ARGUMENT naming the field, and nothing recorded.

Intents the builders would refuse (UNSPECIFIED enums, NaN prices, ...) are built
directly as execgw.v1 OrderIntent messages and sent through the real client.
The gateway runs with a Kite-format instrument dump in which NFO:NIFTY26DECFUT
has lot 50; every other symbol gets the defaults (tick 0.05, lot 1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from execgw.client import ExecutionClient, InvalidArgument, OrderStatus, RejectReason
from execgw.server.clock import ManualClock
from execgw.v1 import gateway_pb2, gateway_pb2_grpc, orders_pb2

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import (
        INFY,
        NIFTY_FUT,
        TCS,
        TIMEOUT_S,
        StreamSubscriptions,
        publish,
        raw_intent,
        stream_reader,
        write_fo_instruments,
    )
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import (
        INFY,
        NIFTY_FUT,
        TCS,
        TIMEOUT_S,
        StreamSubscriptions,
        publish,
        raw_intent,
        stream_reader,
        write_fo_instruments,
    )

LIMIT = orders_pb2.ORDER_TYPE_LIMIT
SL = orders_pb2.ORDER_TYPE_SL
SL_M = orders_pb2.ORDER_TYPE_SL_M

# (id, intent fields replacing a well-formed MARKET BUY 10 NSE:INFY, field the error names)
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("qty_zero", {"qty": 0}, "intent.qty"),
    ("qty_negative", {"qty": -10}, "intent.qty"),
    ("qty_not_a_lot_multiple", {"symbol": NIFTY_FUT, "qty": 75}, "intent.qty"),
    ("qty_below_one_lot", {"symbol": NIFTY_FUT, "qty": 25}, "intent.qty"),
    ("side_unspecified", {"side": orders_pb2.SIDE_UNSPECIFIED}, "intent.side"),
    ("side_unknown_number", {"side": 7}, "intent.side"),
    (
        "order_type_unspecified",
        {"order_type": orders_pb2.ORDER_TYPE_UNSPECIFIED},
        "intent.order_type",
    ),
    ("product_unspecified", {"product": orders_pb2.PRODUCT_UNSPECIFIED}, "intent.product"),
    ("validity_unspecified", {"validity": orders_pb2.VALIDITY_UNSPECIFIED}, "intent.validity"),
    ("limit_without_price", {"order_type": LIMIT}, "intent.price"),
    ("sl_without_price", {"order_type": SL, "trigger_price": 1490.0}, "intent.price"),
    ("sl_without_trigger", {"order_type": SL, "price": 1490.0}, "intent.trigger_price"),
    ("sl_m_without_trigger", {"order_type": SL_M}, "intent.trigger_price"),
    ("price_nan", {"order_type": LIMIT, "price": math.nan}, "intent.price"),
    ("price_plus_inf", {"order_type": LIMIT, "price": math.inf}, "intent.price"),
    ("price_minus_inf", {"order_type": LIMIT, "price": -math.inf}, "intent.price"),
    ("price_negative", {"order_type": LIMIT, "price": -1500.0}, "intent.price"),
    ("price_zero", {"order_type": LIMIT, "price": 0.0}, "intent.price"),
    ("price_off_tick", {"order_type": LIMIT, "price": 1500.03}, "intent.price"),
    ("price_on_market_order", {"price": 1500.0}, "intent.price"),
    (
        "trigger_nan",
        {"order_type": SL_M, "side": orders_pb2.SIDE_SELL, "trigger_price": math.nan},
        "intent.trigger_price",
    ),
    (
        "trigger_negative",
        {"order_type": SL_M, "side": orders_pb2.SIDE_SELL, "trigger_price": -1490.0},
        "intent.trigger_price",
    ),
    (
        "trigger_off_tick",
        {"order_type": SL_M, "side": orders_pb2.SIDE_SELL, "trigger_price": 1490.02},
        "intent.trigger_price",
    ),
    (
        "sl_buy_trigger_above_limit",
        {"order_type": SL, "price": 1500.0, "trigger_price": 1501.0},
        "intent.trigger_price",
    ),
    (
        "sl_m_ioc",
        {"order_type": SL_M, "trigger_price": 1510.0, "validity": orders_pb2.VALIDITY_IOC},
        "intent.validity",
    ),
    ("symbol_empty", {"symbol": ""}, "intent.symbol"),
    ("symbol_without_exchange", {"symbol": "INFY"}, "intent.symbol"),
    ("strategy_code_empty", {"strategy_code": ""}, "intent.strategy_code"),
    ("strategy_code_blank", {"strategy_code": "   "}, "intent.strategy_code"),
    ("confidence_below_zero", {"confidence": -0.1}, "intent.confidence"),
    ("confidence_above_one", {"confidence": 1.1}, "intent.confidence"),
    ("confidence_nan", {"confidence": math.nan}, "intent.confidence"),
    ("tag_21_chars", {"tag": "t" * 21}, "intent.tag"),
]


def names_field(details: str, field: str) -> bool:
    """True when `field` appears in `details` as a whole dotted name."""
    return re.search(rf"(?<![\w.]){re.escape(field)}(?![\w.\[])", details) is not None


@pytest.fixture
def fo_gateway(tmp_path: Path, clock: ManualClock) -> Iterator[RunningGateway]:
    config = make_config(tmp_path, instruments={"csv": str(write_fo_instruments(tmp_path))})
    running = RunningGateway(config, clock)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def client(fo_gateway: RunningGateway) -> Iterator[ExecutionClient]:
    with ExecutionClient(fo_gateway.target, timeout=TIMEOUT_S) as c:
        # Quotes for every symbol, so a wrongly accepted intent would fill, not just reject.
        publish(c, INFY, 1500.00)
        publish(c, NIFTY_FUT, 24500.00)
        yield c


def head_sequence(gateway: RunningGateway) -> int:
    """The sequence number of the last journaled event (white box, read-only)."""
    head: int = gateway.gateway.core.head_sequence
    return head


def assert_nothing_recorded(client: ExecutionClient, gateway: RunningGateway, head: int) -> None:
    assert client.list_orders() == []
    assert client.positions() == []
    # The journal has not moved: no event was produced.
    assert head_sequence(gateway) == head


@pytest.mark.parametrize(("fields", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_intent_is_invalid_argument_naming_the_field(
    client: ExecutionClient, fo_gateway: RunningGateway, fields: dict[str, Any], field: str
) -> None:
    head = head_sequence(fo_gateway)
    with pytest.raises(InvalidArgument) as info:
        client.submit(raw_intent(**fields))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert names_field(info.value.details, field), info.value.details
    assert_nothing_recorded(client, fo_gateway, head)


def test_lot_error_names_the_lot_size(client: ExecutionClient) -> None:
    with pytest.raises(InvalidArgument) as info:
        client.submit(raw_intent(symbol=NIFTY_FUT, qty=75))
    assert "50" in info.value.details


@pytest.mark.parametrize("client_order_id", ["has space", "ordre-é", "tab\there"])
def test_malformed_client_order_id_is_invalid_argument(
    client: ExecutionClient, fo_gateway: RunningGateway, client_order_id: str
) -> None:
    head = head_sequence(fo_gateway)
    with pytest.raises(InvalidArgument) as info:
        client.submit(raw_intent(), client_order_id=client_order_id)
    assert names_field(info.value.details, "client_order_id"), info.value.details
    assert_nothing_recorded(client, fo_gateway, head)


def test_missing_intent_is_invalid_argument(
    client: ExecutionClient, fo_gateway: RunningGateway
) -> None:
    # The client always sends an intent, so use the bare stub.
    head = head_sequence(fo_gateway)
    with grpc.insecure_channel(fo_gateway.target) as channel:
        stub = gateway_pb2_grpc.ExecutionGatewayStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.SubmitOrder(gateway_pb2.SubmitOrderRequest(client_order_id="x1"), timeout=5)
    error: Any = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert names_field(error.details(), "intent"), error.details()
    assert_nothing_recorded(client, fo_gateway, head)


def test_client_order_id_longer_than_64_is_invalid_argument(
    client: ExecutionClient, fo_gateway: RunningGateway
) -> None:
    # The client refuses it before sending, so use the bare stub.
    head = head_sequence(fo_gateway)
    with grpc.insecure_channel(fo_gateway.target) as channel:
        stub = gateway_pb2_grpc.ExecutionGatewayStub(channel)
        request = gateway_pb2.SubmitOrderRequest(intent=raw_intent(), client_order_id="k" * 65)
        with pytest.raises(grpc.RpcError) as info:
            stub.SubmitOrder(request, timeout=5)
    error: Any = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert names_field(error.details(), "client_order_id"), error.details()
    assert_nothing_recorded(client, fo_gateway, head)
    # 64 is still fine.
    assert client.submit(raw_intent(), client_order_id="k" * 64).client_order_id == "k" * 64


def test_a_malformed_submit_does_not_use_up_its_client_order_id(client: ExecutionClient) -> None:
    with pytest.raises(InvalidArgument):
        client.submit(raw_intent(qty=0), client_order_id="fresh-1")
    result = client.submit(raw_intent(qty=10), client_order_id="fresh-1")
    assert result.status == OrderStatus.ORDER_STATUS_FILLED
    assert result.avg_price == 1500.75  # 1500.00 x 1.0005
    assert [o.client_order_id for o in client.list_orders()] == ["fresh-1"]


@pytest.mark.parametrize(
    ("fields", "price"),
    [
        ({"qty": 100, "symbol": NIFTY_FUT}, None),  # two lots
        ({"tag": "t" * 20}, None),  # exactly Kite's limit
        ({"confidence": 0.0}, None),
        ({"confidence": 1.0}, None),
        # A marketable BUY limit on the tick: slipped 1500.75 capped at 1500.05.
        ({"order_type": LIMIT, "price": 1500.05}, 1500.05),
        # 30001 x 0.05 = 1500.0500000000002: honest float noise, still that tick.
        ({"order_type": LIMIT, "price": 30001 * 0.05}, 1500.05),
    ],
    ids=["two_lots", "tag_20", "confidence_0", "confidence_1", "price_on_tick", "float_noise"],
)
def test_boundary_values_are_accepted(
    client: ExecutionClient, fields: dict[str, Any], price: float | None
) -> None:
    result = client.submit(raw_intent(**fields))
    assert result.status == OrderStatus.ORDER_STATUS_FILLED
    assert result.filled_qty == fields.get("qty", 10)
    if price is not None:
        assert result.price == price
        assert result.avg_price == price
    assert len(client.list_orders()) == 1


def test_no_malformed_intent_reaches_the_order_book_or_the_stream(
    fo_gateway: RunningGateway, client: ExecutionClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    subscriptions = StreamSubscriptions(fo_gateway, monkeypatch)
    head = head_sequence(fo_gateway)
    with stream_reader(
        fo_gateway, subscriptions, include_order_updates=True, include_risk_events=True
    ) as reader:
        for case_id, fields, field in CASES:
            with pytest.raises(InvalidArgument) as info:
                client.submit(raw_intent(**fields), client_order_id=f"bad-{case_id}")
            assert names_field(info.value.details, field), (case_id, info.value.details)
        assert client.list_orders() == []
        assert client.positions() == []

        # A valid order afterwards produces the next event after the quotes' ones:
        # the stream (every kind of event) shows nothing in between.
        sentinel = client.submit(raw_intent(symbol=TCS, strategy_code="sentinel"))
        assert sentinel.reject_reason == RejectReason.REJECT_REASON_NO_MARKET_DATA
        first = reader.next()
        assert first.WhichOneof("payload") == "order_update"
        assert first.order_update.order_id == sentinel.order_id
        assert first.sequence == head + 1
    assert [o.order_id for o in client.list_orders()] == [sentinel.order_id]
