"""Seeded paper latency, end to end: an order meets the quote in force when it reaches
the exchange, and an order keeps working until its cancel arrives. The ManualClock is
the only time; slippage is 0 so every fill price is the LTP it met."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from execgw.client import ExecutionClient, OrderStatus, limit, market
from execgw.server.clock import ManualClock
from execgw.server.venues.latency import LatencyModel

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TIMEOUT_S, publish
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TIMEOUT_S, publish

FILLED = OrderStatus.ORDER_STATUS_FILLED
PLACED = OrderStatus.ORDER_STATUS_PLACED
PENDING_CANCEL = OrderStatus.ORDER_STATUS_PENDING_CANCEL
CANCELLED = OrderStatus.ORDER_STATUS_CANCELLED

LATENCY: dict[str, Any] = {
    "slippage_bps": 0.0,
    "simulator": {"latency_ms": {"insert": 100.0, "cancel": 100.0}},
}


@pytest.fixture
def client(tmp_path: Path, clock: ManualClock) -> Iterator[ExecutionClient]:
    gateway = RunningGateway(make_config(tmp_path, execution=LATENCY), clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as c:
            yield c
    finally:
        gateway.stop()


def ms(n: int) -> timedelta:
    return timedelta(milliseconds=n)


def test_an_order_meets_the_quote_in_force_when_it_arrives(
    client: ExecutionClient, clock: ManualClock
) -> None:
    publish(client, INFY, 1000.00)
    sent = client.submit(market(INFY, "BUY", 10, strategy_code="s"))
    # Sent at t0; it reaches the exchange at t0 + 100 ms.
    assert (sent.status, sent.filled_qty) == (PLACED, 0)
    clock.advance(ms(50))
    publish(client, INFY, 1010.00)  # t0 + 50: still on its way
    assert client.get_order(sent.order_id).status == PLACED
    clock.advance(ms(100))
    publish(client, INFY, 1020.00)  # t0 + 150: it arrived at t0 + 100, when 1010 stood
    done = client.get_order(sent.order_id)
    assert (done.status, done.avg_price_decimal) == (FILLED, "1010.00")


def test_an_order_fills_while_its_cancel_is_on_the_way(
    client: ExecutionClient, clock: ManualClock
) -> None:
    publish(client, INFY, 1000.00)
    order_id = client.submit(limit(INFY, "BUY", 10, 990.00, strategy_code="s")).order_id
    clock.advance(ms(200))
    publish(client, INFY, 1000.00)  # the order is at the exchange now, resting
    assert client.cancel(order_id).status == PENDING_CANCEL
    clock.advance(ms(50))
    publish(client, INFY, 989.00)  # the cancel arrives only at + 100 ms: too late
    done = client.get_order(order_id)
    assert (done.status, done.avg_price_decimal) == (FILLED, "990.0")


def test_a_cancel_that_arrived_first_leaves_nothing_to_fill(
    client: ExecutionClient, clock: ManualClock
) -> None:
    publish(client, INFY, 1000.00)
    order_id = client.submit(limit(INFY, "BUY", 10, 990.00, strategy_code="s")).order_id
    clock.advance(ms(200))
    publish(client, INFY, 1000.00)
    client.cancel(order_id)
    clock.advance(ms(150))
    publish(client, INFY, 989.00)  # the cancel arrived at + 100 ms, before this quote
    done = client.get_order(order_id)
    assert (done.status, done.filled_qty) == (CANCELLED, 0)


def test_jitter_is_seeded_by_the_seed_and_the_order() -> None:
    model = LatencyModel(insert_ms=Decimal(5), jitter_ms=Decimal(10), seed=1)
    first = model.delay("insert", "O1")
    assert first == model.delay("insert", "O1")
    assert timedelta(milliseconds=5) <= first < timedelta(milliseconds=15)
    delays = {model.delay("insert", f"O{i}") for i in range(50)}
    assert len(delays) > 40
    assert (
        LatencyModel(insert_ms=Decimal(5), jitter_ms=Decimal(10), seed=2).delay("insert", "O1")
        != first
    )
