"""Orders first: while an order, a cancel or a halt is in a real gateway's core, its event
bus limits stream sends (tests/test_bus_delivery.py drives the bus itself). Reads,
quotes and the like do not; a caller that goes away still lets go of the limit.

The core's loop is watched from inside (RunningGateway.call): a command is "in the core"
from the moment it is queued until its answer, and the test looks in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from execgw.server.clock import ManualClock
from execgw.server.domain import OrderIntent, OrderType, Product, Quote, Side, Validity

if TYPE_CHECKING:
    from tests.conftest import MARKET_OPEN, RunningGateway, make_config
else:
    from conftest import MARKET_OPEN, RunningGateway, make_config


@pytest.fixture
def running(tmp_path: Path, clock: ManualClock) -> Iterator[RunningGateway]:
    gateway = RunningGateway(make_config(tmp_path), clock)
    try:
        gateway.call(
            gateway.gateway.core.apply_quotes(
                [Quote(symbol="NSE:INFY", ltp=Decimal("1500"), timestamp=MARKET_OPEN)]
            )
        )
        yield gateway
    finally:
        gateway.stop()


def _intent(order_type: OrderType = OrderType.MARKET, price: str | None = None) -> OrderIntent:
    return OrderIntent(
        strategy_code="alpha",
        symbol="NSE:INFY",
        side=Side.BUY,
        qty=1,
        order_type=order_type,
        product=Product.MIS,
        validity=Validity.DAY,
        price=None if price is None else Decimal(price),
    )


def _orders_in_core_during(running: RunningGateway, make: Callable[[], Awaitable[Any]]) -> int:
    """How many orders the bus counts while the command `make` queues waits for its
    answer, after which the count must be back to none."""

    async def watch() -> int:
        bus = running.gateway.core.bus
        task = asyncio.ensure_future(make())
        await asyncio.sleep(0)  # the caller has queued its command and waits
        during = bus.orders_in_core
        await task
        assert bus.orders_in_core == 0
        return during

    result: int = running.call(watch())
    return result


def test_orders_cancels_and_halts_count_reads_and_quotes_do_not(
    running: RunningGateway,
) -> None:
    core = running.gateway.core
    assert _orders_in_core_during(running, lambda: core.submit(_intent(), "first")) == 1
    resting = running.call(core.submit(_intent(OrderType.LIMIT, "1400.00"), "resting"))
    assert resting.status.is_open
    assert _orders_in_core_during(running, lambda: core.cancel(resting.order_id)) == 1
    assert _orders_in_core_during(running, lambda: core.halt("alpha", "desk", "drill")) == 1
    assert _orders_in_core_during(running, lambda: core.get_order(resting.order_id)) == 0
    assert _orders_in_core_during(running, lambda: core.list_orders()) == 0
    assert _orders_in_core_during(running, lambda: core.risk_report()) == 0
    quote = Quote(symbol="NSE:INFY", ltp=Decimal("1501"), timestamp=MARKET_OPEN)
    assert _orders_in_core_during(running, lambda: core.apply_quotes([quote])) == 0


def test_a_caller_that_goes_away_lets_go_of_the_limit(running: RunningGateway) -> None:
    """Cancelled while its order waits in the core: the order is still placed (the
    writer runs every queued command), and the bus no longer counts it."""

    async def cancel_midway() -> tuple[int, int]:
        core = running.gateway.core
        task = asyncio.ensure_future(core.submit(_intent(), "gone"))
        await asyncio.sleep(0)
        during = core.bus.orders_in_core
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return during, core.bus.orders_in_core

    assert running.call(cancel_midway()) == (1, 0)
    placed, _ = running.call(running.gateway.core.list_orders())
    assert [o.client_order_id for o in placed] == ["gone"]
