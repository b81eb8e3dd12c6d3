"""The richer paper simulator end to end: real client, real gateway, real journal.

execution.simulator with price_source touch and cap_to_displayed_qty: a BUY pays the
ask and takes at most ask_qty per quote; the remainder stays PARTIAL across quotes and
across a restart; an IOC remainder is cancelled. Slippage is 0 bps unless said.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from execgw.client import ExecutionClient, OrderStatus, Quote, limit, market
from execgw.server.clock import ManualClock

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TIMEOUT_S
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TIMEOUT_S

FILLED = OrderStatus.ORDER_STATUS_FILLED
PARTIAL = OrderStatus.ORDER_STATUS_PARTIAL
CANCELLED = OrderStatus.ORDER_STATUS_CANCELLED
PLACED = OrderStatus.ORDER_STATUS_PLACED

TOUCH_CAPPED: dict[str, Any] = {
    "slippage_bps": 0.0,
    "simulator": {"price_source": "touch", "cap_to_displayed_qty": True},
}


def book(ltp: float, bid: float, ask: float, bid_qty: int, ask_qty: int, volume: int = 0) -> Quote:
    return Quote(
        symbol=INFY, ltp=ltp, bid=bid, ask=ask, bid_qty=bid_qty, ask_qty=ask_qty, volume=volume
    )


def publish_book(client: ExecutionClient, *quotes: Quote) -> None:
    assert client.publish_quotes(list(quotes)) == len(quotes)


@pytest.fixture
def sim_gateway(tmp_path: Path, clock: ManualClock) -> Iterator[RunningGateway]:
    running = RunningGateway(make_config(tmp_path, execution=TOUCH_CAPPED), clock)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def client(sim_gateway: RunningGateway) -> Iterator[ExecutionClient]:
    with ExecutionClient(sim_gateway.target, timeout=TIMEOUT_S) as c:
        yield c


def test_market_buy_takes_the_displayed_ask_and_fills_the_rest_on_later_quotes(
    client: ExecutionClient,
) -> None:
    publish_book(client, book(1000.00, 999.90, 1000.10, 500, 30))
    result = client.submit(market(INFY, "BUY", 100, strategy_code="s"))
    # 30 at the ask 1000.10; 70 stay working.
    assert result.status == PARTIAL, result
    assert result.filled_qty == 30
    assert result.avg_price_decimal == "1000.10"
    publish_book(client, book(1000.00, 999.95, 1000.20, 500, 50))
    # 50 more at 1000.20: (30 x 1000.10 + 50 x 1000.20) / 80 = 1000.1625
    mid = client.get_order(result.order_id)
    assert (mid.status, mid.filled_qty) == (PARTIAL, 80)
    publish_book(client, book(1000.00, 999.95, 1000.30, 500, 1_000))
    done = client.get_order(result.order_id)
    assert (done.status, done.filled_qty) == (FILLED, 100)
    # (30 x 1000.10 + 50 x 1000.20 + 20 x 1000.30) / 100 = 1000.19
    assert done.avg_price_decimal == "1000.19"
    [position] = client.positions(strategy_code="s")
    assert position.net_qty == 100


def test_ioc_sell_remainder_is_cancelled_with_the_fill_kept(client: ExecutionClient) -> None:
    publish_book(client, book(1000.00, 999.90, 1000.10, 40, 500))
    result = client.submit(market(INFY, "SELL", 100, strategy_code="s", validity="IOC"))
    assert result.status == CANCELLED, result
    assert result.filled_qty == 40
    assert result.avg_price_decimal == "999.90"
    assert "IOC remainder 60 of 100" in result.message


def test_a_second_order_in_the_same_quote_gets_only_what_is_left(client: ExecutionClient) -> None:
    publish_book(client, book(1000.00, 999.90, 1000.10, 500, 25))
    first = client.submit(market(INFY, "BUY", 20, strategy_code="s"))
    second = client.submit(limit(INFY, "BUY", 20, 1000.10, strategy_code="s"))
    third = client.submit(market(INFY, "BUY", 20, strategy_code="s", validity="IOC"))
    assert (first.status, first.filled_qty) == (FILLED, 20)
    assert (second.status, second.filled_qty) == (PARTIAL, 5)
    assert (third.status, third.filled_qty) == (CANCELLED, 0)


def test_a_partial_order_keeps_filling_after_a_restart(tmp_path: Path, clock: ManualClock) -> None:
    config = make_config(tmp_path, execution=TOUCH_CAPPED)
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as client:
            publish_book(client, book(1000.00, 999.90, 1000.10, 500, 30))
            order_id = client.submit(market(INFY, "BUY", 100, strategy_code="s")).order_id
    finally:
        gateway.stop()
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as client:
            assert client.get_order(order_id).status == PARTIAL
            publish_book(client, book(1000.00, 999.90, 1000.00, 500, 100))
            done = client.get_order(order_id)
            assert (done.status, done.filled_qty) == (FILLED, 100)
            # (30 x 1000.10 + 70 x 1000.00) / 100 = 1000.03
            assert done.avg_price_decimal == "1000.03"
    finally:
        gateway.stop()


def test_a_dry_run_with_simulated_fills_uses_the_same_market_model(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("KITE_API_KEY", "KITE_API_SECRET", "KITE_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    config = make_config(
        tmp_path,
        mode="live",
        execution={"dry_run": True, "dry_run_fills": "simulate", **TOUCH_CAPPED},
        # Never called: a dry run holds no link to the broker.
        broker={"kite": {"root": "http://127.0.0.1:9", "market_protection": 2.5}},
    )
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as client:
            publish_book(client, book(1000.00, 999.90, 1000.10, 500, 30))
            result = client.submit(market(INFY, "BUY", 100, strategy_code="s"))
            assert result.dry_run
            assert (result.status, result.filled_qty) == (PARTIAL, 30)
            assert result.avg_price_decimal == "1000.10"
    finally:
        gateway.stop()
