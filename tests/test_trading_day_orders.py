"""The order book and idempotency keys belong to one trading day (Asia/Kolkata,
rolling at 08:00 local)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from execgw.client import (
    AlreadyExists,
    ExecutionClient,
    FailedPrecondition,
    OrderStatus,
    limit,
    market,
)
from execgw.server.clock import ManualClock
from execgw.v1 import market_data_pb2

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
else:
    from conftest import RunningGateway, make_config


@pytest.fixture
def session(tmp_path: Path, clock: ManualClock) -> Iterator[tuple[RunningGateway, ExecutionClient]]:
    running = RunningGateway(make_config(tmp_path), clock)
    client = ExecutionClient(running.target)
    try:
        client.publish_quotes([market_data_pb2.Quote(symbol="NSE:INFY", ltp=1500.0)])
        yield running, client
    finally:
        client.close()
        running.stop()


def next_day(running: RunningGateway, clock: ManualClock) -> None:
    clock.advance(timedelta(days=1))  # 10:00 IST tomorrow, past the 08:00 rollover
    running.call(running.gateway.core.tick())


def test_a_key_is_idempotent_within_the_day_and_free_the_next(
    session: tuple[RunningGateway, ExecutionClient], clock: ManualClock
) -> None:
    running, client = session
    intent = market("NSE:INFY", "BUY", 5, strategy_code="S1", product="NRML")
    first = client.submit(intent, "daily-key")
    assert client.submit(intent, "daily-key").order_id == first.order_id
    with pytest.raises(AlreadyExists):
        client.submit(market("NSE:INFY", "SELL", 5, strategy_code="S1"), "daily-key")

    next_day(running, clock)
    again = client.submit(intent, "daily-key")
    assert again.order_id != first.order_id
    assert again.status == OrderStatus.Value("ORDER_STATUS_FILLED")
    # Both fills count in the carried NRML position.
    [position] = client.positions("S1")
    assert position.net_qty == 10


def test_the_order_book_is_the_days_and_day_orders_expire(
    session: tuple[RunningGateway, ExecutionClient], clock: ManualClock
) -> None:
    running, client = session
    filled = client.submit(market("NSE:INFY", "BUY", 1, strategy_code="S1", product="NRML"))
    resting = client.submit(limit("NSE:INFY", "BUY", 1, 1400.0, strategy_code="S1"))
    assert [o.order_id for o in client.list_orders()] == [filled.order_id, resting.order_id]

    next_day(running, clock)
    assert client.list_orders() == []
    expired = client.get_order(resting.order_id)
    assert expired.status == OrderStatus.Value("ORDER_STATUS_CANCELLED")
    assert expired.message.startswith("expired: trading day ended")
    today = client.submit(market("NSE:INFY", "SELL", 1, strategy_code="S1", product="NRML"))
    assert [o.order_id for o in client.list_orders()] == [today.order_id]


def test_cancelling_an_order_the_rollover_expired_is_refused_cleanly(
    session: tuple[RunningGateway, ExecutionClient], clock: ManualClock
) -> None:
    running, client = session
    resting = client.submit(limit("NSE:INFY", "BUY", 1, 1400.0, strategy_code="S1"))
    clock.advance(timedelta(days=1))  # no tick: the cancel itself meets the rollover
    with pytest.raises(FailedPrecondition, match="CANCELLED"):
        client.cancel(resting.order_id)
    assert client.get_order(resting.order_id).message.startswith("expired")
    assert running.gateway.core.healthy


def test_mis_square_off_can_be_turned_off(tmp_path: Path, clock: ManualClock) -> None:
    config = make_config(tmp_path, trading_day={"mis_square_off": None})
    running = RunningGateway(config, clock)
    try:
        with ExecutionClient(running.target) as client:
            client.publish_quotes([market_data_pb2.Quote(symbol="NSE:INFY", ltp=1500.0)])
            client.submit(market("NSE:INFY", "BUY", 1, strategy_code="S1"))
            clock.advance(timedelta(hours=6))  # 16:00 IST
            running.call(running.gateway.core.tick())
            late = client.submit(market("NSE:INFY", "BUY", 1, strategy_code="S1"))
            assert late.status == OrderStatus.Value("ORDER_STATUS_FILLED")
            assert [p.net_qty for p in client.positions("S1")] == [2]  # nothing flattened
            assert client.risk_state().mis_entries_closed is False
    finally:
        running.stop()
