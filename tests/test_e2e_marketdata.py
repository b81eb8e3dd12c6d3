"""Market data: PublishQuotes / GetQuote end to end, and the synthetic feed as a unit."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from execgw.client import ExecutionClient, InvalidArgument, NotFound, OrderStatus, limit, market
from execgw.server.clock import ManualClock
from execgw.server.domain import Quote as DomainQuote
from execgw.server.instruments import Instrument, InstrumentRegistry
from execgw.server.marketdata import SyntheticFeed

if TYPE_CHECKING:
    from tests.conftest import MARKET_OPEN, RunningGateway, make_config
    from tests.e2e_helpers import INFY, SBIN, TCS, TIMEOUT_S, publish, quote
else:
    from conftest import MARKET_OPEN, RunningGateway, make_config
    from e2e_helpers import INFY, SBIN, TCS, TIMEOUT_S, publish, quote


@pytest.fixture
def client(gateway: RunningGateway) -> Iterator[ExecutionClient]:
    with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as c:
        yield c


def names_field(details: str, field: str) -> bool:
    return re.search(rf"(?<![\w.\]]){re.escape(field)}(?![\w])", details) is not None


# -- PublishQuotes ------------------------------------------------------------


def test_publish_returns_the_number_of_quotes_applied(client: ExecutionClient) -> None:
    assert client.publish_quotes([quote(INFY, 1500.00)]) == 1
    assert client.publish_quotes([quote(INFY, 1500.05), quote(TCS, 4100.00)]) == 2
    # 250 quotes go out in batches of 100, 100 and 50; every one is counted.
    many = [quote(SBIN, 820.00 + 0.05 * (i % 20)) for i in range(250)]
    assert client.publish_quotes(many) == 250
    assert client.publish_quotes([]) == 0


def test_publish_from_a_generator_streams_each_quote(client: ExecutionClient) -> None:
    ltps = [1500.00, 1500.05, 1500.10, 1499.95, 1501.20]
    assert client.publish_quotes(quote(INFY, ltp) for ltp in ltps) == 5
    assert client.get_quote(INFY).ltp == 1501.20
    assert client.publish_quotes(iter([quote(INFY, 1500.00)] * 7), batch_size=3) == 7


def test_get_quote_returns_the_latest_quote_of_each_symbol(client: ExecutionClient) -> None:
    client.publish_quotes(
        [
            quote(INFY, 1500.00, bid=1499.95, ask=1500.05, volume=1_000),
            quote(TCS, 4100.00, bid=4099.95, ask=4100.05, volume=50),
            quote(INFY, 1501.50, bid=1501.45, ask=1501.55, volume=1_200),
        ]
    )
    infy = client.get_quote(INFY)
    assert infy.symbol == INFY
    assert (infy.ltp, infy.bid, infy.ask, infy.volume) == (1501.50, 1501.45, 1501.55, 1_200)
    tcs = client.get_quote(TCS)
    assert (tcs.ltp, tcs.bid, tcs.ask, tcs.volume) == (4100.00, 4099.95, 4100.05, 50)
    publish(client, TCS, 4095.55)
    assert client.get_quote(TCS).ltp == 4095.55
    assert client.get_quote(INFY).ltp == 1501.50  # untouched


def test_quote_time_is_the_exchange_time_or_else_the_gateway_clock(
    client: ExecutionClient, clock: ManualClock
) -> None:
    publish(client, INFY, 1500.00)
    assert client.get_quote(INFY).timestamp.ToDatetime(tzinfo=UTC) == MARKET_OPEN
    clock.advance(timedelta(minutes=3))
    publish(client, INFY, 1500.05)
    later = MARKET_OPEN + timedelta(minutes=3)
    assert client.get_quote(INFY).timestamp.ToDatetime(tzinfo=UTC) == later
    exchange_time = datetime(2026, 11, 27, 4, 31, 7, 250_000, tzinfo=UTC)
    client.publish_quotes([quote(INFY, 1500.10, timestamp=exchange_time)])
    assert client.get_quote(INFY).timestamp.ToDatetime(tzinfo=UTC) == exchange_time


BAD_QUOTES: list[tuple[str, dict[str, Any], str]] = [
    ("ltp_zero", {"ltp": 0.0}, "quotes[0].ltp"),
    ("ltp_negative", {"ltp": -1500.0}, "quotes[0].ltp"),
    ("ltp_nan", {"ltp": math.nan}, "quotes[0].ltp"),
    ("ltp_inf", {"ltp": math.inf}, "quotes[0].ltp"),
    ("symbol_without_exchange", {"symbol": "INFY"}, "quotes[0].symbol"),
    ("symbol_empty", {"symbol": ""}, "quotes[0].symbol"),
    ("symbol_lowercase_exchange", {"symbol": "nse:INFY"}, "quotes[0].symbol"),
    ("bid_negative", {"bid": -1.0}, "quotes[0].bid"),
    ("ask_nan", {"ask": math.nan}, "quotes[0].ask"),
]


@pytest.mark.parametrize(
    ("fields", "field"), [c[1:] for c in BAD_QUOTES], ids=[c[0] for c in BAD_QUOTES]
)
def test_invalid_quote_is_invalid_argument_naming_the_field(
    client: ExecutionClient, fields: dict[str, Any], field: str
) -> None:
    values: dict[str, Any] = {"symbol": TCS, "ltp": 4100.0, "bid": 4099.95, "ask": 4100.05}
    values.update(fields)
    symbol = values.pop("symbol")
    ltp = values.pop("ltp")
    with pytest.raises(InvalidArgument) as info:
        client.publish_quotes([quote(symbol, ltp, **values)])
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert names_field(info.value.details, field), info.value.details
    # Nothing was applied.
    with pytest.raises(NotFound):
        client.get_quote(TCS)


def test_invalid_quote_is_named_by_its_index(client: ExecutionClient) -> None:
    with pytest.raises(InvalidArgument) as info:
        client.publish_quotes([quote(INFY, 1500.00), quote(TCS, 4100.00), quote(SBIN, 0.0)])
    assert names_field(info.value.details, "quotes[2].ltp"), info.value.details


def test_invalid_quote_does_not_move_the_book_or_fill_orders(client: ExecutionClient) -> None:
    publish(client, INFY, 1500.00)
    resting = client.submit(limit(INFY, "BUY", 10, 1495.00, strategy_code="md"))
    assert resting.status == OrderStatus.ORDER_STATUS_PLACED
    # -1.0 would "cross" a BUY limit if it were taken as a price.
    with pytest.raises(InvalidArgument):
        client.publish_quotes([quote(INFY, -1.0)])
    assert client.get_quote(INFY).ltp == 1500.00
    assert client.get_order(resting.order_id).status == OrderStatus.ORDER_STATUS_PLACED
    assert client.positions() == []


def test_get_quote_of_an_unknown_symbol_is_not_found(client: ExecutionClient) -> None:
    publish(client, INFY, 1500.00)
    with pytest.raises(NotFound) as info:
        client.get_quote("NSE:NOSUCH")
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert "NSE:NOSUCH" in info.value.details


def test_get_quote_without_a_symbol_is_invalid_argument(client: ExecutionClient) -> None:
    with pytest.raises(InvalidArgument) as info:
        client.get_quote("")
    assert names_field(info.value.details, "symbol"), info.value.details


# -- SyntheticFeed (unit) -------------------------------------------------------

START = {"NSE:INFY": 1500.0, "NSE:SBIN": 820.0, "NSE:BANKBEES": 512.34, "NSE:PENNY": 0.05}
REGISTRY = InstrumentRegistry([Instrument("NSE:BANKBEES", Decimal("0.01"), 1)])


def feed(seed: int, volatility_bps: float = 8.0, clock: ManualClock | None = None) -> SyntheticFeed:
    return SyntheticFeed(
        start_prices=START,
        instruments=REGISTRY,
        clock=clock or ManualClock(MARKET_OPEN),
        seed=seed,
        volatility_bps=volatility_bps,
    )


def walk(source: SyntheticFeed, steps: int) -> list[list[DomainQuote]]:
    return [source.step() for _ in range(steps)]


def test_same_seed_gives_the_same_quotes() -> None:
    first, second = walk(feed(7), 300), walk(feed(7), 300)
    assert first == second
    # It is a walk, not a constant: INFY's LTP moved.
    assert len({q.ltp for step in first for q in step if q.symbol == INFY}) > 10


def test_different_seeds_give_different_quotes() -> None:
    a = [q.ltp for step in walk(feed(1), 100) for q in step]
    b = [q.ltp for step in walk(feed(2), 100) for q in step]
    assert a != b


def test_every_quote_is_positive_and_on_the_tick() -> None:
    clock = ManualClock(MARKET_OPEN)
    source = feed(11, volatility_bps=500.0, clock=clock)  # violent, to reach the floor
    volumes: dict[str, int] = {}
    for _ in range(400):
        step = source.step()
        assert sorted(q.symbol for q in step) == sorted(START)
        for q in step:
            tick = REGISTRY.get(q.symbol).tick_size
            assert q.ltp > 0, q
            assert q.ltp % tick == 0, q
            assert q.bid == q.ltp - tick
            assert q.ask == q.ltp + tick
            assert q.bid_qty > 0
            assert q.ask_qty > 0
            assert q.volume > volumes.get(q.symbol, 0)  # cumulative
            volumes[q.symbol] = q.volume
            assert q.timestamp == clock.now()
        clock.advance(timedelta(milliseconds=250))


def test_starting_prices_are_snapped_to_the_tick() -> None:
    source = SyntheticFeed(
        start_prices={"NSE:INFY": 1500.03, "NSE:BANKBEES": 512.345},
        instruments=REGISTRY,
        clock=ManualClock(MARKET_OPEN),
        seed=3,
        volatility_bps=0.0,  # no movement: the first step shows the snapped start
    )
    ltps = {q.symbol: q.ltp for q in source.step()}
    assert ltps["NSE:INFY"] == Decimal("1500.05")  # 1500.03 -> nearest 0.05 tick
    assert ltps["NSE:BANKBEES"] % Decimal("0.01") == 0
    assert abs(ltps["NSE:BANKBEES"] - Decimal("512.345")) <= Decimal("0.005")


def test_a_restarted_synthetic_feed_continues_from_the_journaled_marks(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Not from its seed prices: the band would refuse the jump back, and the position
    would show a gain or loss that never happened."""
    config = make_config(
        tmp_path,
        market_data={
            "source": "synthetic",
            "synthetic": {"interval_ms": 2, "volatility_bps": 300.0, "symbols": {INFY: 1500.0}},
        },
        trading_day={"mis_square_off": None},
    )

    def ltp(gateway: RunningGateway) -> float | None:
        quote = gateway.gateway.core.quote(INFY)
        return None if quote is None else float(quote.ltp)

    def wait_for(gateway: RunningGateway, done: Callable[[float], bool]) -> float:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            price = ltp(gateway)
            if price is not None and done(price):
                return price
            time.sleep(0.005)  # polling a condition against a deadline, not waiting on time
        raise AssertionError("the synthetic feed never got there")

    first = RunningGateway(config, clock)
    try:
        wait_for(first, lambda p: abs(p - 1500.0) / 1500.0 > 0.10)
        with ExecutionClient(first.target) as client:
            fill = client.submit(market(INFY, "BUY", 1, strategy_code="syn"), "syn-1")
        marked = fill.avg_price
    finally:
        first.stop()
    assert abs(marked - 1500.0) / 1500.0 > 0.05

    # The same journal, a calm walk: whatever the first quotes do, they stay near a start.
    calm = make_config(
        tmp_path,
        market_data={
            "source": "synthetic",
            "synthetic": {"interval_ms": 2, "volatility_bps": 5.0, "symbols": {INFY: 1500.0}},
        },
        trading_day={"mis_square_off": None},
    )
    second = RunningGateway(calm, clock)
    try:
        resumed = wait_for(second, lambda p: True)
        assert abs(resumed - marked) / marked < 0.10, (resumed, marked)
    finally:
        second.stop()
