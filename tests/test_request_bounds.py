"""Every request field is bounded (issue: hostile testing, defects 1 and 2).

Numbers are finite, positive where they must be and under a documented ceiling; text is
short, free of control characters and, for symbols, matched in full. Each violation is
INVALID_ARGUMENT naming the field, and nothing reaches the journal. A poison order cannot
knock an honest caller's order out of its batch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import struct_pb2

from execgw.client import ExecgwError, ExecutionClient, OrderStatus, RejectReason, market
from execgw.server.clock import ManualClock
from execgw.v1 import (
    gateway_pb2,
    gateway_pb2_grpc,
    market_data_pb2,
    market_data_pb2_grpc,
    orders_pb2,
)

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TIMEOUT_S, publish, raw_intent
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TIMEOUT_S, publish, raw_intent

LIMIT = orders_pb2.ORDER_TYPE_LIMIT
SL = orders_pb2.ORDER_TYPE_SL
SL_M = orders_pb2.ORDER_TYPE_SL_M
SELL = orders_pb2.SIDE_SELL
REJECTED = OrderStatus.Value("ORDER_STATUS_REJECTED")


@pytest.fixture
def running(tmp_path: Path, clock: ManualClock) -> Iterator[RunningGateway]:
    gateway = RunningGateway(make_config(tmp_path), clock)
    try:
        with ExecutionClient(gateway.target) as client:
            publish(client, INFY, 1500.0)
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def stub(running: RunningGateway) -> Iterator[gateway_pb2_grpc.ExecutionGatewayStub]:
    with grpc.insecure_channel(
        running.target, options=[("grpc.max_send_message_length", 16 * 1024 * 1024)]
    ) as channel:
        yield gateway_pb2_grpc.ExecutionGatewayStub(channel)


def _metadata(value: Any) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels):
        value = {"x": value}
    return value


INTENT_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("price_1e26", {"order_type": LIMIT, "price": 1e26}, "intent.price"),
    ("price_over_ceiling", {"order_type": LIMIT, "price": 10_000_000.05}, "intent.price"),
    ("sl_price_1e26", {"order_type": SL, "price": 1e26, "trigger_price": 1e26}, "intent.price"),
    ("trigger_1e17", {"order_type": SL_M, "trigger_price": 1e17}, "intent.trigger_price"),
    ("subnormal_price", {"order_type": LIMIT, "price": 5e-324}, "intent.price"),
    ("qty_huge", {"qty": 2**62}, "intent.qty"),
    ("symbol_trailing_newline", {"symbol": "NSE:INFY\n"}, "intent.symbol"),
    ("symbol_too_long", {"symbol": "NSE:" + "A" * 100}, "intent.symbol"),
    ("strategy_code_2mb", {"strategy_code": "s" * 2_000_000}, "intent.strategy_code"),
    ("strategy_code_spaces", {"strategy_code": "my strategy"}, "intent.strategy_code"),
    ("strategy_code_newline", {"strategy_code": "s1\n"}, "intent.strategy_code"),
    ("reason_3_9mb", {"reason": "r" * 3_900_000}, "intent.reason"),
    ("reason_too_long", {"reason": "r" * 281}, "intent.reason"),
    ("reason_control", {"reason": "fine\x1b[2Jforged"}, "intent.reason"),
    ("tag_newline", {"tag": "a\nb"}, "intent.tag"),
    ("metadata_big", {"metadata": _metadata({"blob": "x" * 5000})}, "intent.metadata"),
    (
        "metadata_many_keys",
        {"metadata": _metadata({f"k{i}": i for i in range(65)})},
        "intent.metadata",
    ),
    ("metadata_deep", {"metadata": _metadata(_deep(6))}, "intent.metadata"),
    ("metadata_control", {"metadata": _metadata({"note": "a\rb"})}, "intent.metadata.note"),
]


@pytest.mark.parametrize(
    ("fields", "field"), [c[1:] for c in INTENT_CASES], ids=[c[0] for c in INTENT_CASES]
)
def test_an_out_of_bounds_intent_is_invalid_argument_and_records_nothing(
    running: RunningGateway,
    stub: gateway_pb2_grpc.ExecutionGatewayStub,
    fields: dict[str, Any],
    field: str,
) -> None:
    head = running.gateway.core.head_sequence
    intent = raw_intent(**fields)
    calls: list[tuple[Any, Any]] = [
        (stub.SubmitOrder, gateway_pb2.SubmitOrderRequest(intent=intent)),
        (stub.PreviewOrder, gateway_pb2.PreviewOrderRequest(intent=intent)),
    ]
    for call, request in calls:
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=TIMEOUT_S)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = info.value.details() or ""
        assert details.startswith(field), details
        assert len(details) < 500, "the error echoed the oversized value back"
    assert running.gateway.core.head_sequence == head


@pytest.mark.parametrize(
    ("call", "request_", "field"),
    [
        ("GetOrder", gateway_pb2.GetOrderRequest(order_id="O" * 100_000), "order_id"),
        ("CancelOrder", gateway_pb2.CancelOrderRequest(order_id="O1\n"), "order_id"),
        ("ListOrders", gateway_pb2.ListOrdersRequest(symbol="NSE:INFY\n"), "symbol"),
        ("ListOrders", gateway_pb2.ListOrdersRequest(strategy_code="x" * 33), "strategy_code"),
        ("GetPositions", gateway_pb2.GetPositionsRequest(strategy_code="a b"), "strategy_code"),
        ("GetRiskState", gateway_pb2.GetRiskStateRequest(strategy_code="\x00"), "strategy_code"),
        ("HaltTrading", gateway_pb2.HaltTradingRequest(reason="x" * 1_000_000), "reason"),
        ("HaltTrading", gateway_pb2.HaltTradingRequest(actor="ops\nroot"), "actor"),
        ("ResumeTrading", gateway_pb2.ResumeTradingRequest(reason="a\x07"), "reason"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_every_request_field_is_bounded(
    running: RunningGateway,
    stub: gateway_pb2_grpc.ExecutionGatewayStub,
    call: str,
    request_: Any,
    field: str,
) -> None:
    head = running.gateway.core.head_sequence
    with pytest.raises(grpc.RpcError) as info:
        getattr(stub, call)(request_, timeout=TIMEOUT_S)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(field), info.value.details()
    assert running.gateway.core.head_sequence == head


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (gateway_pb2.StreamFillsRequest(symbols=["NSE:INFY\n"]), "symbols[0]"),
        (gateway_pb2.StreamFillsRequest(strategy_codes=["ok", "x" * 1000]), "strategy_codes[1]"),
        (gateway_pb2.StreamFillsRequest(symbols=[f"NSE:S{i}" for i in range(101)]), "symbols"),
    ],
)
def test_stream_filters_are_bounded(
    stub: gateway_pb2_grpc.ExecutionGatewayStub, request_: Any, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        next(iter(stub.StreamFills(request_, timeout=TIMEOUT_S)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(field), info.value.details()


@pytest.mark.parametrize("symbol", ["NSE:" + "A" * 3_000_000, "NSE:INFY\n\x1b[31mFAKE", ""])
def test_get_quote_bounds_its_symbol_and_never_echoes_it(
    running: RunningGateway, symbol: str
) -> None:
    with (
        grpc.insecure_channel(
            running.target, options=[("grpc.max_send_message_length", 16 * 1024 * 1024)]
        ) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        market_data_pb2_grpc.MarketDataStub(channel).GetQuote(
            market_data_pb2.GetQuoteRequest(symbol=symbol), timeout=TIMEOUT_S
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details() or ""
    assert details.startswith("symbol")
    assert len(details) < 200
    assert "\x1b" not in details


def test_the_trigger_gets_the_same_collar_as_the_price(running: RunningGateway) -> None:
    with ExecutionClient(running.target) as client:
        # A stop-loss SELL triggered 93% below the LTP: on tick, under the ceiling.
        result = client.submit(raw_intent(order_type=SL_M, side=SELL, trigger_price=100.0))
    assert result.status == REJECTED
    assert result.reject_reason == RejectReason.Value("REJECT_REASON_PRICE_COLLAR")
    assert "trigger_price 100" in result.message


def test_poison_orders_never_fail_an_honest_callers_order(running: RunningGateway) -> None:
    """Four attacker loops send 1e26 LIMIT and SL orders while an honest client trades:
    the honest client sees no failure at all (it used to lose 4 orders out of 5)."""
    stop = threading.Event()
    attacker_errors: list[grpc.StatusCode] = []

    def attack() -> None:
        with grpc.insecure_channel(running.target) as channel:
            attacker = gateway_pb2_grpc.ExecutionGatewayStub(channel)
            poison = [
                raw_intent(order_type=LIMIT, price=1e26, strategy_code="evil"),
                raw_intent(order_type=SL, price=1e26, trigger_price=1e26, strategy_code="evil"),
                raw_intent(order_type=SL_M, trigger_price=1e17, strategy_code="evil"),
            ]
            n = 0
            while not stop.is_set():
                try:
                    attacker.SubmitOrder(
                        gateway_pb2.SubmitOrderRequest(intent=poison[n % 3]), timeout=TIMEOUT_S
                    )
                except grpc.RpcError as e:
                    attacker_errors.append(e.code())
                n += 1

    threads = [threading.Thread(target=attack) for _ in range(4)]
    for t in threads:
        t.start()
    failures: list[ExecgwError] = []
    try:
        with ExecutionClient(running.target, retries=0) as client:
            for i in range(150):
                try:
                    client.submit(market(INFY, "BUY", 1, strategy_code="honest"), f"h-{i}")
                except ExecgwError as e:
                    failures.append(e)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=TIMEOUT_S)
    assert failures == []
    assert attacker_errors, "the attack never ran"
    assert set(attacker_errors) == {grpc.StatusCode.INVALID_ARGUMENT}
    with ExecutionClient(running.target) as client:
        assert len(client.list_orders(strategy_code="honest")) == 150
        assert client.list_orders(strategy_code="evil") == []
