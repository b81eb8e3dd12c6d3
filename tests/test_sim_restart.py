"""Regressions from the review of the paper simulator: what it knew only in memory
survives a restart (orders still on their way to the simulated exchange, the brokerage
an order paid), and the MIS square-off of a position above the freeze quantity goes
out in slices the exchange takes."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from execgw.client import ExecutionClient, OrderStatus, Quote, limit, market
from execgw.server.clock import ManualClock
from execgw.server.domain import Fill
from execgw.server.events import OrderFilled
from execgw.server.journal import Journal

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TIMEOUT_S, publish
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TIMEOUT_S, publish

FILLED = OrderStatus.ORDER_STATUS_FILLED
CANCELLED = OrderStatus.ORDER_STATUS_CANCELLED
REJECTED = OrderStatus.ORDER_STATUS_REJECTED


def _quote(ltp: float, *, ask_qty: int) -> Quote:
    return Quote(symbol=INFY, ltp=ltp, bid=ltp - 0.05, ask=ltp, bid_qty=ask_qty, ask_qty=ask_qty)


def _fills(path: str) -> list[Fill]:
    journal = Journal(Path(path), read_only=True)
    try:
        records = journal.records_after(0, 10_000)
    finally:
        journal.close()
    return [r.event.fill for r in records if isinstance(r.event, OrderFilled)]


def restarted(running: RunningGateway) -> RunningGateway:
    running.stop()
    return RunningGateway(running.config, running.clock)


def test_orders_on_their_way_to_the_exchange_still_arrive_after_a_restart(
    tmp_path: Path, clock: ManualClock
) -> None:
    execution: dict[str, Any] = {
        "slippage_bps": 0.0,
        "simulator": {"latency_ms": {"insert": 200.0}},
    }
    config = make_config(tmp_path, execution=execution, instruments={"freeze_qty": {INFY: 50}})
    running = RunningGateway(config, clock)
    with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
        publish(c, INFY, 1000.00)
        ioc = c.submit(limit(INFY, "BUY", 10, 990.00, strategy_code="s", validity="IOC"))
        big = c.submit(market(INFY, "BUY", 500, strategy_code="s"))
    running = restarted(running)
    try:
        clock.advance(timedelta(milliseconds=300))
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            publish(c, INFY, 1000.00)
            # As without the restart: the IOC meets 1000 and is cancelled, the order
            # above the freeze quantity is refused, nothing fills.
            assert c.get_order(ioc.order_id).status == CANCELLED
            assert c.get_order(big.order_id).status == REJECTED
            assert c.positions("s") == []
    finally:
        running.stop()


def test_the_brokerage_cap_of_an_order_holds_across_a_restart(
    tmp_path: Path, clock: ManualClock
) -> None:
    execution: dict[str, Any] = {
        "slippage_bps": 0.0,
        "simulator": {"cap_to_displayed_qty": True, "price_source": "touch"},
        "charges": {"enabled": True},
    }
    running = RunningGateway(make_config(tmp_path, execution=execution), clock)
    with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
        assert c.publish_quotes([_quote(1500.00, ask_qty=60)]) == 1
        order = c.submit(market(INFY, "BUY", 100, strategy_code="s"))
        assert c.get_order(order.order_id).filled_qty == 60
    running = restarted(running)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            assert c.publish_quotes([_quote(1500.00, ask_qty=60)]) == 1
            done = c.get_order(order.order_id)
            assert done.status == FILLED
        # Zerodha: min(Rs 20, 0.03% of the order's value) once per order, not per fill.
        brokerage = sum(
            f.charges.brokerage for f in _fills(running.config.journal.path) if f.charges
        )
        assert brokerage == Decimal("20.00")
    finally:
        running.stop()


def test_a_square_off_above_the_freeze_quantity_goes_in_slices(
    tmp_path: Path, clock: ManualClock
) -> None:
    config = make_config(tmp_path, instruments={"freeze_qty": {INFY: 100}})
    running = RunningGateway(config, clock)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            publish(c, INFY, 1000.00)
            for _ in range(2):
                assert c.submit(market(INFY, "BUY", 100, strategy_code="s")).status == FILLED
            clock.advance(timedelta(hours=5, minutes=30))  # past 15:20 IST
            for _ in range(3):
                running.call(running.gateway.core.tick())
            assert c.positions("s")[0].net_qty == 0
            square_offs = [o for o in c.list_orders(strategy_code="s") if o.tag == "MIS_SQUAREOFF"]
            assert [o.qty for o in square_offs] == [100, 100]
    finally:
        running.stop()
