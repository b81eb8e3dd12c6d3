"""SmartFillSimulator pricing, checked to the paisa against hand-computed prices."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from itertools import count

import pytest

from execgw.server.domain import (
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    Product,
    Quote,
    Side,
    Validity,
)
from execgw.server.events import Event, OrderCancelled, OrderFilled, OrderTriggered
from execgw.server.instruments import Instrument, InstrumentRegistry
from execgw.server.venues.simulator import SmartFillSimulator

D = Decimal
NOW = datetime(2026, 11, 27, 4, 30, tzinfo=UTC)


class Sim:
    """The simulator with fill ids and the clock filled in."""

    def __init__(self, bps: str) -> None:
        instruments = InstrumentRegistry([Instrument("NSE:IDEA", D("0.01"), 1)])
        self.inner = SmartFillSimulator(slippage_bps=D(bps), instruments=instruments)
        ids = count(1)
        self.fill_id = lambda: f"F{next(ids)}"

    def on_new_order(self, o: Order, q: Quote, now: datetime) -> list[Event]:
        return self.inner.on_new_order(o, q, now, self.fill_id)

    def on_quote(self, q: Quote, now: datetime) -> list[Event]:
        return self.inner.on_quote(q, now, self.fill_id)

    def working_order_ids(self) -> list[str]:
        return self.inner.working_order_ids()

    def cancel(self, order_id: str, symbol: str) -> bool:
        return self.inner.cancel(order_id, symbol)

    def restore(self, orders: list[Order]) -> None:
        self.inner.restore(orders)


def simulator(bps: str = "5") -> Sim:
    return Sim(bps)


def order(
    side: Side,
    order_type: OrderType,
    *,
    price: str | None = None,
    trigger: str | None = None,
    validity: Validity = Validity.DAY,
    symbol: str = "NSE:INFY",
    qty: int = 10,
) -> Order:
    intent = OrderIntent(
        symbol=symbol,
        strategy_code="S1",
        side=side,
        qty=qty,
        order_type=order_type,
        product=Product.MIS,
        validity=validity,
        price=None if price is None else D(price),
        trigger_price=None if trigger is None else D(trigger),
    )
    return Order("O1", "c1", intent, OrderStatus.PLACED, NOW, NOW)


def quote(ltp: str, symbol: str = "NSE:INFY") -> Quote:
    return Quote(symbol=symbol, ltp=D(ltp), timestamp=NOW)


def fill_price(events: list[Event]) -> Decimal:
    fills = [e for e in events if isinstance(e, OrderFilled)]
    assert len(fills) == 1
    return fills[0].fill.price


@pytest.mark.parametrize(
    ("side", "ltp", "expected"),
    [
        # 1500.00 * 1.0005 = 1500.75 exactly: already on the tick.
        (Side.BUY, "1500.00", "1500.75"),
        # 1500.00 * 0.9995 = 1499.25 exactly.
        (Side.SELL, "1500.00", "1499.25"),
        # 1497.35 * 1.0005 = 1498.098675 -> up to 1498.10 (worse for the buyer).
        (Side.BUY, "1497.35", "1498.10"),
        # 1497.35 * 0.9995 = 1496.601325 -> down to 1496.60 (worse for the seller).
        (Side.SELL, "1497.35", "1496.60"),
    ],
)
def test_market_slips_against_trader_and_snaps_to_worse_tick(
    side: Side, ltp: str, expected: str
) -> None:
    events = simulator().on_new_order(order(side, OrderType.MARKET), quote(ltp), NOW)
    assert fill_price(events) == D(expected)


def test_slippage_is_configurable_and_tick_comes_from_instrument() -> None:
    # 9.87 * 1.001 = 9.87987 -> up to 9.88 on a 0.01 tick.
    sim = simulator(bps="10")
    o = order(Side.BUY, OrderType.MARKET, symbol="NSE:IDEA")
    assert fill_price(sim.on_new_order(o, quote("9.87", "NSE:IDEA"), NOW)) == D("9.88")


def test_marketable_buy_limit_never_fills_above_limit() -> None:
    # slipped 1500.75, limit 1500.50: capped at the limit.
    o = order(Side.BUY, OrderType.LIMIT, price="1500.50")
    assert fill_price(simulator().on_new_order(o, quote("1500.00"), NOW)) == D("1500.50")


def test_marketable_buy_limit_fills_at_slipped_when_better_than_limit() -> None:
    o = order(Side.BUY, OrderType.LIMIT, price="1510.00")
    assert fill_price(simulator().on_new_order(o, quote("1500.00"), NOW)) == D("1500.75")


def test_marketable_sell_limit_never_fills_below_limit() -> None:
    o = order(Side.SELL, OrderType.LIMIT, price="1499.50")
    assert fill_price(simulator().on_new_order(o, quote("1500.00"), NOW)) == D("1499.50")


def test_resting_buy_limit_fills_at_limit_when_quote_crosses() -> None:
    sim = simulator()
    o = order(Side.BUY, OrderType.LIMIT, price="1490.00")
    assert sim.on_new_order(o, quote("1500.00"), NOW) == []
    assert sim.working_order_ids() == ["O1"]
    assert sim.on_quote(quote("1490.05"), NOW) == []
    events = sim.on_quote(quote("1489.00"), NOW)
    assert fill_price(events) == D("1490.00")
    assert sim.working_order_ids() == []


def test_resting_sell_limit_fills_when_ltp_reaches_limit() -> None:
    sim = simulator()
    o = order(Side.SELL, OrderType.LIMIT, price="1510.00")
    assert sim.on_new_order(o, quote("1500.00"), NOW) == []
    assert fill_price(sim.on_quote(quote("1510.00"), NOW)) == D("1510.00")


def test_ioc_limit_not_marketable_is_cancelled() -> None:
    sim = simulator()
    o = order(Side.BUY, OrderType.LIMIT, price="1490.00", validity=Validity.IOC)
    events = sim.on_new_order(o, quote("1500.00"), NOW)
    assert len(events) == 1
    assert isinstance(events[0], OrderCancelled)
    assert sim.working_order_ids() == []


def test_sl_m_sell_rests_until_trigger_then_fills_as_market() -> None:
    sim = simulator()
    o = order(Side.SELL, OrderType.SL_M, trigger="1480.00")
    assert sim.on_new_order(o, quote("1500.00"), NOW) == []
    assert sim.on_quote(quote("1480.05"), NOW) == []
    events = sim.on_quote(quote("1479.00"), NOW)
    assert isinstance(events[0], OrderTriggered)
    # 1479.00 * 0.9995 = 1478.2605 -> down to 1478.25.
    assert fill_price(events) == D("1478.25")


def test_sl_buy_triggers_then_rests_as_limit_when_not_marketable() -> None:
    sim = simulator()
    o = order(Side.BUY, OrderType.SL, trigger="1510.00", price="1510.00")
    assert sim.on_new_order(o, quote("1500.00"), NOW) == []
    # Gaps through the trigger to 1512: triggered, but 1512 > limit 1510, so it rests.
    events = sim.on_quote(quote("1512.00"), NOW)
    assert [type(e) for e in events] == [OrderTriggered]
    assert sim.working_order_ids() == ["O1"]
    # Comes back to 1509.00: fills at the limit.
    assert fill_price(sim.on_quote(quote("1509.00"), NOW)) == D("1510.00")


def test_sl_buy_marketable_at_trigger_fills_capped_at_limit() -> None:
    sim = simulator()
    o = order(Side.BUY, OrderType.SL, trigger="1510.00", price="1511.00")
    sim.on_new_order(o, quote("1500.00"), NOW)
    # 1510.00 * 1.0005 = 1510.755 -> 1510.80, below the 1511.00 limit.
    events = sim.on_quote(quote("1510.00"), NOW)
    assert fill_price(events) == D("1510.80")


def test_stop_already_through_trigger_executes_at_once() -> None:
    o = order(Side.BUY, OrderType.SL_M, trigger="1490.00")
    events = simulator().on_new_order(o, quote("1500.00"), NOW)
    assert isinstance(events[0], OrderTriggered)
    assert fill_price(events) == D("1500.75")


def test_cancel_removes_working_order_and_later_quotes_do_nothing() -> None:
    sim = simulator()
    o = order(Side.BUY, OrderType.LIMIT, price="1490.00")
    sim.on_new_order(o, quote("1500.00"), NOW)
    assert sim.cancel("O1", "NSE:INFY") is True
    assert sim.cancel("O1", "NSE:INFY") is False
    assert sim.on_quote(quote("1400.00"), NOW) == []


def test_restore_rearms_open_orders() -> None:
    sim = simulator()
    resting = order(Side.BUY, OrderType.LIMIT, price="1490.00")
    sim.restore([resting])
    assert fill_price(sim.on_quote(quote("1480.00"), NOW)) == D("1490.00")
