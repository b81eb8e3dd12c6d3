"""Exact money on the wire: every price and PnL sent out has a `_decimal` string equal to
the ledger's Decimal, and prices may be sent in as exact decimal text.

The convention: fixed-point text (never an exponent), the Decimal as the ledger holds it;
a quotient that does not terminate (an average price) has 28 significant digits, the
precision of Python's default Decimal context, with which the ledger computes.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from execgw.client import (
    ExecutionClient,
    InvalidArgument,
    OrderStatus,
    Quote,
    exact,
    exact_field,
    limit,
    market,
    stop,
)
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

D = Decimal
FILLED = OrderStatus.Value("ORDER_STATUS_FILLED")
PLACED = OrderStatus.Value("ORDER_STATUS_PLACED")


@pytest.fixture
def running(tmp_path: Path, clock: ManualClock) -> Iterator[RunningGateway]:
    # No slippage: a MARKET order fills at the LTP, so the test knows every price.
    gateway = RunningGateway(make_config(tmp_path, execution={"slippage_bps": 0.0}), clock)
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def client(running: RunningGateway) -> Iterator[ExecutionClient]:
    with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
        yield c


def _fills_from_journal(target: str, count: int) -> list[orders_pb2.Fill]:
    """The first `count` fills, replayed from sequence 1."""
    fills: list[orders_pb2.Fill] = []
    with grpc.insecure_channel(target) as channel:
        stream = gateway_pb2_grpc.ExecutionGatewayStub(channel).StreamFills(
            gateway_pb2.StreamFillsRequest(from_sequence=1), timeout=TIMEOUT_S
        )
        for response in stream:
            if response.event.HasField("fill"):
                fills.append(response.event.fill)
                if len(fills) == count:
                    stream.cancel()
                    break
    return fills


def test_every_money_value_sent_out_has_the_ledgers_exact_value(
    running: RunningGateway, client: ExecutionClient
) -> None:
    buys = []
    for ltp in (1488.00, 1488.35, 1488.75):
        publish(client, INFY, ltp)
        buys.append(client.submit(market(INFY, "BUY", 10, strategy_code="exact")))
    # 30 bought for 44651: the average does not terminate.
    [position] = client.positions("exact")
    avg = D("44651.00") / 30
    assert str(avg) == "1488.366666666666666666666667"  # 28 significant digits
    assert exact(position.avg_price_decimal) == avg
    assert position.avg_price_decimal == "1488.366666666666666666666667"
    assert position.avg_price == float(avg)

    publish(client, INFY, 1490.00)
    sell = client.submit(market(INFY, "SELL", 10, strategy_code="exact"))
    publish(client, INFY, 1487.45)

    # Results: the average of one fill is that fill's price.
    for result, price in zip(buys, ("1488.00", "1488.35", "1488.75"), strict=True):
        assert result.status == FILLED
        assert exact(result.avg_price_decimal) == D(price)
        assert result.avg_price == float(D(price))
        assert exact_field(result, "avg_price") == D(price)
        assert result.price_decimal == ""
        assert exact_field(result, "price") is None
    assert exact(sell.avg_price_decimal) == D("1490.00")

    # Fills, as the stream carries them (with the order each left behind).
    fills = _fills_from_journal(running.target, 4)
    assert [exact(f.price_decimal) for f in fills] == [
        D("1488.00"),
        D("1488.35"),
        D("1488.75"),
        D("1490.00"),
    ]
    assert [f.price for f in fills] == [1488.0, 1488.35, 1488.75, 1490.0]

    # A third sold at 1490, the rest marked at 1487.45: the wire carries the ledger's
    # Decimals as they are (the open cost of 20 after removing a third of 44651, over 20).
    [position] = client.positions("exact")
    realized = D("1490.00") * 10 - D("44651.00") * 10 / 30
    assert position.avg_price_decimal == "1488.366666666666666666666666"
    assert exact(position.realized_pnl_decimal) == realized
    assert exact(position.last_price_decimal) == D("1487.45")
    [view] = running.call(running.gateway.core.positions("exact"))
    assert exact(position.unrealized_pnl_decimal) == view.unrealized_pnl
    assert exact(position.avg_price_decimal) == view.avg_price
    assert exact(position.realized_pnl_decimal) == view.realized_pnl
    for name in ("avg_price", "realized_pnl", "unrealized_pnl", "last_price"):
        value = exact_field(position, name)
        assert value is not None, name
        assert getattr(position, name) == float(value), name

    # The risk state, field by field against the risk engine's Decimals.
    state = client.risk_state()
    report = running.call(running.gateway.core.risk_report(""))
    for name in (
        "realized_pnl",
        "unrealized_pnl",
        "day_pnl",
        "equity",
        "peak_equity",
        "drawdown_pct",
    ):
        text = getattr(state, f"{name}_decimal")
        assert "E" not in text.upper(), text
        assert exact(text) == getattr(report, name), name
        assert getattr(state, name) == float(getattr(report, name)), name
    assert exact(state.realized_pnl_decimal) == realized
    breakers = {(b.name, b.strategy_code): b for b in state.breakers}
    for b in report.breakers:
        sent = breakers[(b.breaker.value, b.strategy_code)]
        assert exact(sent.value_decimal) == b.value, b.breaker
        assert exact(sent.limit_decimal) == b.limit, b.breaker
    assert exact(breakers[("max_daily_loss_rupees", "")].limit_decimal) == D("5000.0")
    [strategy] = state.strategies
    assert exact(strategy.realized_pnl_decimal) == realized

    # And the quote the marks come from.
    quote = client.get_quote(INFY)
    assert exact(quote.ltp_decimal) == D("1487.45")
    assert exact(quote.bid_decimal) == 0
    assert exact(quote.ask_decimal) == 0


def test_a_decimal_price_is_sent_exactly_and_comes_back_exactly(client: ExecutionClient) -> None:
    publish(client, INFY, 1500.0)
    intent = limit(INFY, "BUY", 5, D("1450.05"), strategy_code="exact")
    assert intent.price_decimal == "1450.05"
    assert intent.price == 1450.05
    result = client.submit(intent)
    assert result.status == PLACED, result.message
    assert exact(result.price_decimal) == D("1450.05")
    assert result.price == 1450.05

    sl = client.submit(stop(INFY, "SELL", 5, D("1400.10"), price=D("1400.00"), strategy_code="x"))
    assert sl.status == PLACED, sl.message
    assert (exact(sl.trigger_price_decimal), exact(sl.price_decimal)) == (
        D("1400.10"),
        D("1400.00"),
    )
    # A float still travels as the double alone.
    plain = limit(INFY, "BUY", 5, 1450.1, strategy_code="exact")
    assert not plain.HasField("price_decimal")


def test_decimal_text_alone_is_the_price(client: ExecutionClient) -> None:
    publish(client, INFY, 1500.0)
    intent = raw_intent(order_type=orders_pb2.ORDER_TYPE_LIMIT, price_decimal="1499.950")
    result = client.submit(intent)
    assert result.status == PLACED, result.message
    assert exact(result.price_decimal) == D("1499.95")
    assert result.price == 1499.95


@pytest.mark.parametrize(
    ("fields", "violation"),
    [
        # Both forms, different values: the exact one is named.
        ({"price": 1450.05, "price_decimal": "1450.10"}, "intent.price_decimal"),
        ({"price": 1450.0500001, "price_decimal": "1450.05"}, "intent.price_decimal"),
        ({"trigger_price": 1400.0, "trigger_price_decimal": "1400.05"}, "intent.trigger_price"),
        # Text that is no fixed-point decimal.
        ({"price_decimal": "1.45005E3"}, "intent.price_decimal"),
        ({"price_decimal": "NaN"}, "intent.price_decimal"),
        ({"price_decimal": " 1450.05"}, "intent.price_decimal"),
        ({"price_decimal": "1450."}, "intent.price_decimal"),
        ({"price_decimal": "1" * 33}, "intent.price_decimal"),
        ({"price_decimal": ""}, "intent.price_decimal"),
        # Exact text must be exactly on the tick (a double may be off by float noise).
        ({"price_decimal": "1450.0500001"}, "intent.price_decimal"),
        ({"price_decimal": "-1450.05"}, "intent.price_decimal"),
        ({"price_decimal": "10000000.05"}, "intent.price_decimal"),
    ],
)
def test_malformed_exact_prices_are_invalid_argument_naming_the_field(
    client: ExecutionClient, fields: dict[str, Any], violation: str
) -> None:
    publish(client, INFY, 1500.0)
    order_type = (
        orders_pb2.ORDER_TYPE_SL if "trigger_price" in fields else orders_pb2.ORDER_TYPE_LIMIT
    )
    values: dict[str, Any] = {"order_type": order_type, "side": orders_pb2.SIDE_SELL}
    if order_type == orders_pb2.ORDER_TYPE_SL:
        values["price"] = 1400.0
    values.update(fields)
    with pytest.raises(InvalidArgument) as info:
        client.submit(raw_intent(**values))
    fields_named = [f for f, _ in info.value.field_violations]
    if violation == "intent.trigger_price":
        violation = "intent.trigger_price_decimal"
    assert fields_named == [violation], info.value.field_violations
    assert info.value.details.startswith(violation)


def test_an_exact_price_on_an_order_type_without_one_is_refused(client: ExecutionClient) -> None:
    publish(client, INFY, 1500.0)
    with pytest.raises(InvalidArgument) as info:
        client.submit(raw_intent(price_decimal="1500.00"))
    assert info.value.field_violations == [
        ("intent.price_decimal", "must not be set for MARKET orders")
    ]


@pytest.fixture
def quotes_stub(running: RunningGateway) -> Iterator[market_data_pb2_grpc.MarketDataStub]:
    with grpc.insecure_channel(running.target) as channel:
        yield market_data_pb2_grpc.MarketDataStub(channel)


def test_quotes_may_be_published_as_exact_text(
    client: ExecutionClient, quotes_stub: market_data_pb2_grpc.MarketDataStub
) -> None:
    quote = Quote(symbol=INFY, ltp_decimal="1501.25", bid_decimal="1501.20", ask=1501.30)
    assert client.publish_quotes([quote]) == 1
    back = client.get_quote(INFY)
    assert (exact(back.ltp_decimal), exact(back.bid_decimal), exact(back.ask_decimal)) == (
        D("1501.25"),
        D("1501.20"),
        D("1501.30"),
    )
    assert (back.ltp, back.bid, back.ask) == (1501.25, 1501.2, 1501.3)

    bad = [
        Quote(symbol=INFY, ltp=1501.25, ltp_decimal="1501.30"),
        Quote(symbol=INFY, ltp_decimal="1501.27"),
        Quote(symbol=INFY, ltp_decimal="1e3"),
        Quote(symbol=INFY, ltp=1501.0, bid_decimal="-1"),
    ]
    with pytest.raises(grpc.RpcError) as info:
        quotes_stub.PublishQuotes(
            iter([market_data_pb2.PublishQuotesRequest(quotes=bad)]), timeout=TIMEOUT_S
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details() or ""
    assert details.startswith("quotes[0].ltp_decimal: 1501.30 differs from quotes[0].ltp")
    for named in ("quotes[1].ltp_decimal", "quotes[2].ltp_decimal", "quotes[3].bid_decimal"):
        assert named in details
    assert exact(client.get_quote(INFY).ltp_decimal) == D("1501.25")  # nothing applied


def test_exact_field_falls_back_to_the_double_of_an_older_server() -> None:
    old = orders_pb2.ExecutionResult(avg_price=1496.6)
    assert exact_field(old, "avg_price") == D("1496.6")
    assert exact_field(orders_pb2.ExecutionResult(), "avg_price") is None
    assert exact_field(orders_pb2.Position(), "last_price") is None
    assert exact_field(orders_pb2.Position(), "realized_pnl") == 0
    with pytest.raises(ValueError, match="no field"):
        exact_field(old, "nonsense")
    assert exact("") is None
    with pytest.raises(ValueError, match="not decimal text"):
        exact("Infinity")
