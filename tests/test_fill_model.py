"""The simulator's market model: touch prices, liquidity caps, partial fills, impact.

Every expected fill is worked out by hand in a comment. The tick is 0.05; a BUY snaps
up and a SELL down, against the trader. Fills are folded into the orders here as the
ledger would, so that a remainder carries into the next quote.
"""

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
from execgw.server.events import Event, OrderCancelled, OrderFilled
from execgw.server.instruments import Instrument, InstrumentRegistry
from execgw.server.venues.fill_model import FillModel
from execgw.server.venues.simulator import SmartFillSimulator

D = Decimal
NOW = datetime(2026, 11, 27, 4, 30, tzinfo=UTC)
SYM = "NSE:INFY"


class Sim:
    def __init__(self, bps: str = "0", **model: object) -> None:
        instruments = InstrumentRegistry([Instrument(SYM, D("0.05"), 1)])
        self.inner = SmartFillSimulator(
            slippage_bps=D(bps),
            instruments=instruments,
            model=FillModel(**model),  # type: ignore[arg-type]
        )
        ids = count(1)
        self.fill_id = lambda: f"F{next(ids)}"
        self._orders: dict[str, Order] = {}

    def new(self, o: Order, q: Quote) -> list[Event]:
        self._orders[o.order_id] = o
        return self._fold(self.inner.on_new_order(o, q, NOW, self.fill_id))

    def quote(self, q: Quote) -> list[Event]:
        return self._fold(self.inner.on_quote(q, NOW, self.fill_id))

    def _fold(self, events: list[Event]) -> list[Event]:
        """What the ledger does with a fill or a cancel, enough for these tests."""
        for event in events:
            if isinstance(event, OrderFilled):
                o = self._orders[event.fill.order_id]
                o.filled_qty += event.fill.qty
                o.status = OrderStatus.FILLED if o.remaining_qty == 0 else OrderStatus.PARTIAL
            elif isinstance(event, OrderCancelled):
                self._orders[event.order_id].status = OrderStatus.CANCELLED
        return events


_ids = count(1)


def order(
    side: Side,
    qty: int,
    *,
    price: str | None = None,
    validity: Validity = Validity.DAY,
) -> Order:
    intent = OrderIntent(
        symbol=SYM,
        strategy_code="S1",
        side=side,
        qty=qty,
        order_type=OrderType.MARKET if price is None else OrderType.LIMIT,
        product=Product.MIS,
        validity=validity,
        price=None if price is None else D(price),
    )
    n = next(_ids)
    return Order(f"O{n}", f"c{n}", intent, OrderStatus.PLACED, NOW, NOW)


def q(
    ltp: str,
    bid: str = "0",
    ask: str = "0",
    *,
    bid_qty: int = 0,
    ask_qty: int = 0,
    volume: int = 0,
) -> Quote:
    return Quote(SYM, D(ltp), NOW, D(bid), D(ask), bid_qty, ask_qty, volume)


def fills(events: list[Event]) -> list[tuple[str, int, Decimal]]:
    return [
        (e.fill.order_id, e.fill.qty, e.fill.price) for e in events if isinstance(e, OrderFilled)
    ]


def cancels(events: list[Event]) -> list[str]:
    return [e.message for e in events if isinstance(e, OrderCancelled)]


# -- price source -------------------------------------------------------------


def test_touch_buys_at_the_ask_and_sells_at_the_bid() -> None:
    sim = Sim(price_source="touch")
    quote = q("100.00", "99.90", "100.10")
    buy, sell = order(Side.BUY, 5), order(Side.SELL, 5)
    assert fills(sim.new(buy, quote)) == [(buy.order_id, 5, D("100.10"))]
    assert fills(sim.new(sell, quote)) == [(sell.order_id, 5, D("99.90"))]


def test_touch_slippage_is_applied_on_top_of_the_ask_and_snapped_up() -> None:
    # 1234.60 x 1.0005 = 1235.2173 -> up -> 1235.25
    sim = Sim("5", price_source="touch")
    buy = order(Side.BUY, 1)
    assert fills(sim.new(buy, q("1234.55", "1234.50", "1234.60"))) == [
        (buy.order_id, 1, D("1235.25"))
    ]


def test_touch_falls_back_to_ltp_when_that_side_of_the_book_is_empty() -> None:
    sim = Sim(price_source="touch")
    buy, sell = order(Side.BUY, 1), order(Side.SELL, 1)
    # No ask: the BUY pays LTP; the bid is there, the SELL gets it.
    assert fills(sim.new(buy, q("100.00", bid="99.95"))) == [(buy.order_id, 1, D("100.00"))]
    assert fills(sim.new(sell, q("100.00", bid="99.95"))) == [(sell.order_id, 1, D("99.95"))]


def test_touch_limit_is_marketable_against_the_ask_not_the_ltp() -> None:
    sim = Sim(price_source="touch")
    # LTP 100.00 reaches the limit, but the ask 100.10 does not: the order rests.
    buy = order(Side.BUY, 5, price="100.00")
    assert sim.new(buy, q("100.00", "99.90", "100.10")) == []
    assert sim.inner.working_order_ids() == [buy.order_id]
    # The ask comes down through the limit: the resting order trades at its own price.
    assert fills(sim.quote(q("99.95", "99.85", "99.95"))) == [(buy.order_id, 5, D("100.00"))]


def test_touch_ioc_limit_below_the_ask_is_cancelled_naming_the_ask() -> None:
    sim = Sim(price_source="touch")
    events = sim.new(
        order(Side.BUY, 5, price="100.00", validity=Validity.IOC), q("100", "99.9", "100.1")
    )
    assert cancels(events) == ["IOC limit 100.00 not marketable against ask 100.1"]


# -- displayed quantity -------------------------------------------------------


def test_fill_is_capped_by_the_displayed_ask_and_the_rest_fills_on_later_quotes() -> None:
    sim = Sim(price_source="touch", cap_to_displayed_qty=True)
    buy = order(Side.BUY, 100)
    # 30 shown at the ask: 30 now, 70 stay working.
    assert fills(sim.new(buy, q("100", "99.9", "100.0", ask_qty=30))) == [
        (buy.order_id, 30, D("100.0"))
    ]
    assert buy.status is OrderStatus.PARTIAL
    assert sim.inner.working_order_ids() == [buy.order_id]
    # 50 at 100.05 next: 50 more there.
    assert fills(sim.quote(q("100", "99.9", "100.05", ask_qty=50))) == [
        (buy.order_id, 50, D("100.05"))
    ]
    # 500 at 100.10: the last 20, and the order leaves the book.
    assert fills(sim.quote(q("100", "99.9", "100.10", ask_qty=500))) == [
        (buy.order_id, 20, D("100.10"))
    ]
    assert buy.filled_qty == 100
    assert sim.inner.working_order_ids() == []


def test_ioc_remainder_beyond_the_displayed_qty_is_cancelled() -> None:
    sim = Sim(price_source="touch", cap_to_displayed_qty=True)
    sell = order(Side.SELL, 100, validity=Validity.IOC)
    events = sim.new(sell, q("100", "99.90", "100.0", bid_qty=40))
    assert fills(events) == [(sell.order_id, 40, D("99.90"))]
    assert cancels(events) == ["IOC remainder 60 of 100 cancelled: no more liquidity in the quote"]
    assert sim.inner.working_order_ids() == []


def test_liquidity_one_order_took_is_not_there_for_the_next_within_one_quote() -> None:
    sim = Sim(price_source="touch", cap_to_displayed_qty=True)
    quote = q("100", "99.9", "100.0", bid_qty=10, ask_qty=25)
    first, second, third = order(Side.BUY, 20), order(Side.BUY, 20), order(Side.BUY, 20)
    assert fills(sim.new(first, quote)) == [(first.order_id, 20, D("100.0"))]
    # 5 left at the ask for the second; nothing at all for the third.
    assert fills(sim.new(second, quote)) == [(second.order_id, 5, D("100.0"))]
    assert fills(sim.new(third, quote)) == []
    assert third.status is OrderStatus.PLACED
    # The bid side is untouched by the buys.
    sell = order(Side.SELL, 10)
    assert fills(sim.new(sell, quote)) == [(sell.order_id, 10, D("99.9"))]
    # The next quote's 30 go oldest first: 15 to the second, 15 of the third's 20.
    assert fills(sim.quote(q("100", "99.9", "100.0", ask_qty=30))) == [
        (second.order_id, 15, D("100.0")),
        (third.order_id, 15, D("100.0")),
    ]


def test_an_empty_ask_fills_nothing_when_capped() -> None:
    sim = Sim(cap_to_displayed_qty=True)
    buy = order(Side.BUY, 10, validity=Validity.IOC)
    events = sim.new(buy, q("100"))
    assert fills(events) == []
    assert cancels(events) == ["IOC remainder 10 of 10 cancelled: no more liquidity in the quote"]


# -- volume participation -----------------------------------------------------


def test_volume_limit_caps_fills_at_a_share_of_the_volume_traded_since_the_last_quote() -> None:
    sim = Sim(volume_limit=D("0.1"))
    # The first quote of the symbol: no traded volume known yet, so no fill.
    sim.quote(q("100", volume=10_000))
    buy = order(Side.BUY, 120)
    assert fills(sim.new(buy, q("100", volume=10_000))) == []
    # 500 traded: 10% is 50.
    assert fills(sim.quote(q("100", volume=10_500))) == [(buy.order_id, 50, D("100"))]
    # 1,234 traded: 123.4 rounds down to 123, more than the 70 left.
    assert fills(sim.quote(q("100", volume=11_734))) == [(buy.order_id, 70, D("100"))]


def test_volume_budget_is_shared_by_both_sides_within_one_quote() -> None:
    sim = Sim(volume_limit=D("0.5"))
    sim.quote(q("100", volume=0))
    sim.quote(q("100", volume=100))  # 100 traded: 50 to take
    quote = q("100", volume=100)
    buy, sell = order(Side.BUY, 30), order(Side.SELL, 30)
    assert fills(sim.new(buy, quote)) == [(buy.order_id, 30, D("100"))]
    assert fills(sim.new(sell, quote)) == [(sell.order_id, 20, D("100"))]


def test_both_caps_apply_the_smaller_wins() -> None:
    sim = Sim(cap_to_displayed_qty=True, volume_limit=D("1"))
    sim.quote(q("100", ask_qty=1_000, volume=0))
    buy = order(Side.BUY, 500)
    # 1,000 shown but only 40 traded since the last quote.
    assert fills(sim.new(buy, q("100", ask_qty=1_000, volume=40))) == [(buy.order_id, 40, D("100"))]


# -- impact slippage ----------------------------------------------------------


def test_volume_share_impact_is_k_times_participation_squared() -> None:
    sim = Sim(slippage_model="volume_share", impact_k=D("0.1"))
    sim.quote(q("1000", volume=0))
    quote = q("1000", volume=1_000)
    buy, sell = order(Side.BUY, 100), order(Side.SELL, 50)
    # 100 of 1,000 traded: 0.1 x 0.1^2 = 0.001 -> 1000 x 1.001 = 1001.00
    assert fills(sim.new(buy, quote)) == [(buy.order_id, 100, D("1001.000"))]
    # The quote has given 100 + 50 of its 1,000 (both sides count, as zipline's
    # volume_for_bar): 0.1 x 0.15^2 = 0.00225 -> 1000 x 0.99775 = 997.75
    assert fills(sim.new(sell, quote)) == [(sell.order_id, 50, D("997.75"))]


def test_volume_share_prices_a_fill_on_all_the_quote_gave_so_splitting_saves_little() -> None:
    """Ten BUYs of 10 against 1,000 traded in one quote: the n-th is priced at
    participation 10n/1,000, impact 0.1 x (n/100)^2 = n^2 / 100,000, so at
    1000 + n^2 x 0.01 snapped up to the tick. The tenth pays what one BUY of 100 does
    (1001.00); priced on its own 10 each would pay 1000.01 -> 1000.05."""
    sim = Sim(slippage_model="volume_share", impact_k=D("0.1"))
    sim.quote(q("1000", volume=0))
    quote = q("1000", volume=1_000)
    prices = []
    for _ in range(10):
        (fill,) = fills(sim.new(order(Side.BUY, 10), quote))
        prices.append(fill[2])
    # 1000.01, .04, .09, .16, .25, .36, .49, .64, .81, 1001.00 -> up to 0.05
    assert prices == [
        D(p)
        for p in (
            "1000.05", "1000.05", "1000.10", "1000.20", "1000.25",
            "1000.40", "1000.50", "1000.65", "1000.85", "1001.00",
        )
    ]  # fmt: skip
    # The next quote (100 more traded) starts afresh: 10 of 100, 0.1 x 0.1^2 = 0.001
    # -> 1000 x 1.001 = 1001.00
    buy = order(Side.BUY, 10)
    assert fills(sim.new(buy, q("1000", volume=1_100))) == [(buy.order_id, 10, D("1001.00"))]


def test_volume_share_with_a_volume_limit_prices_the_capped_fill() -> None:
    sim = Sim(slippage_model="volume_share", impact_k=D("0.1"), volume_limit=D("0.25"))
    sim.quote(q("1000", volume=0))
    buy = order(Side.BUY, 500)
    # Capped at 250 of 1,000: 0.1 x 0.25^2 = 0.00625 -> 1006.25
    assert fills(sim.new(buy, q("1000", volume=1_000))) == [(buy.order_id, 250, D("1006.25"))]


def test_volume_share_without_volume_uses_the_displayed_qty_then_the_worst_case() -> None:
    sim = Sim(slippage_model="volume_share", impact_k=D("0.1"))
    buy = order(Side.BUY, 20)
    # 20 of 100 shown: 0.1 x 0.2^2 = 0.004 -> 100 x 1.004 = 100.40
    shown = q("100", ask_qty=100, bid_qty=100)
    assert fills(sim.new(buy, shown)) == [(buy.order_id, 20, D("100.40"))]
    # 20 more of the same 100 asked: 0.1 x 0.4^2 = 0.016 -> 101.60
    again = order(Side.BUY, 20)
    assert fills(sim.new(again, shown)) == [(again.order_id, 20, D("101.60"))]
    # The bid side has given nothing yet: 20 of 100 bid, 0.004 -> 100 x 0.996 = 99.60
    hit = order(Side.SELL, 20)
    assert fills(sim.new(hit, shown)) == [(hit.order_id, 20, D("99.60"))]
    sell = order(Side.SELL, 1)
    # Nothing known: participation 1, impact 0.1 -> 100 x 0.9 = 90.00
    assert fills(sim.new(sell, q("100"))) == [(sell.order_id, 1, D("90.0"))]


def test_the_default_model_fills_everything_at_once_whatever_the_book_shows() -> None:
    sim = Sim("5")
    buy = order(Side.BUY, 1_000)
    # 1234.55 x 1.0005 = 1235.167275 -> up -> 1235.20, all 1,000 although 1 is shown.
    assert fills(sim.new(buy, q("1234.55", "1234.50", "1234.60", ask_qty=1, volume=5))) == [
        (buy.order_id, 1_000, D("1235.20"))
    ]


@pytest.mark.parametrize(
    "bad", [{"volume_limit": D(0)}, {"volume_limit": D("1.5")}, {"impact_k": D(-1)}]
)
def test_the_model_refuses_nonsense(bad: dict[str, Decimal]) -> None:
    with pytest.raises(ValueError, match="must be"):
        FillModel(**bad)  # type: ignore[arg-type]


# -- queue position at the touch ---------------------------------------------


def test_touch_probability_zero_needs_a_trade_through() -> None:
    sim = Sim(touch_fill_probability=D(0))
    buy = order(Side.BUY, 5, price="100.00")
    assert sim.new(buy, q("100.10")) == []
    # LTP at the limit: others are ahead in the queue.
    assert fills(sim.quote(q("100.00"))) == []
    # A trade below the limit: it must have been filled at its price.
    assert fills(sim.quote(q("99.95"))) == [(buy.order_id, 5, D("100.00"))]


def test_touch_mode_fills_a_resting_limit_when_the_far_side_crosses_it() -> None:
    sim = Sim(price_source="touch", touch_fill_probability=D(0))
    sell = order(Side.SELL, 5, price="100.00")
    assert sim.new(sell, q("99.95", "99.90", "100.05")) == []
    # A bid at the limit crosses a resting sell, whatever LTP does.
    assert fills(sim.quote(q("99.95", "100.00", "100.05"))) == [(sell.order_id, 5, D("100.00"))]


def _touch_run(seed: int) -> list[str]:
    sim = Sim(touch_fill_probability=D("0.5"), seed=seed)
    orders = [order(Side.BUY, 1, price="100.00") for _ in range(200)]
    for i, o in enumerate(orders):
        o.order_id = f"T{i:03d}"  # the same ids in every run, as a replayed journal has
        sim.new(o, q("100.05"))
    return [oid for oid, _, _ in fills(sim.quote(q("100.00")))]


def test_touch_probability_fills_about_that_share_the_same_ones_for_the_same_seed() -> None:
    first = _touch_run(seed=7)
    # 200 draws at 0.5: 100 expected, sd about 7.
    assert 70 < len(first) < 130
    assert _touch_run(seed=7) == first
    assert _touch_run(seed=8) != first
