"""Regressions from the review of durable liquidity (QuoteObserved): with a liquidity
cap on, a quote is journaled only when an order may fill against it, that is for a
symbol with an order at the simulated exchange (working there or on its way), or at
the moment an order first meets it. A feed of quotes with no orders writes nothing.
Restart tests of what the journaled quotes restore: tests/test_sim_restart.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from execgw.client import ExecutionClient, OrderStatus, Quote, limit
from execgw.server.clock import ManualClock
from execgw.server.domain import (
    Order,
    OrderIntent,
    OrderType,
    Product,
    Side,
    Validity,
)
from execgw.server.domain import OrderStatus as DomainStatus
from execgw.server.domain import Quote as DomainQuote
from execgw.server.events import Event, OrderAccepted, OrderFilled, QuoteObserved
from execgw.server.instruments import Instrument, InstrumentRegistry
from execgw.server.journal import GENESIS_HASH, Journal
from execgw.server.ledger import Ledger
from execgw.server.recovery import GatewayState, IdSource
from execgw.server.risk_state import RiskBook
from execgw.server.venues.fill_model import FillModel
from execgw.server.venues.simulator import SmartFillSimulator

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, SBIN, TCS, TIMEOUT_S
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, SBIN, TCS, TIMEOUT_S

PLACED = DomainStatus.PLACED
CAPS: dict[str, dict[str, Any]] = {
    "displayed": {"cap_to_displayed_qty": True},
    "volume_limit": {"volume_limit": 0.1},
    "volume_share": {"slippage_model": "volume_share"},
}


def _events(path: str) -> list[Event]:
    journal = Journal(Path(path), read_only=True)
    try:
        return [r.event for r in journal.records_after(0, 100_000)]
    finally:
        journal.close()


def _book(symbol: str, ltp: float, volume: int) -> Quote:
    return Quote(
        symbol=symbol, ltp=ltp, bid=ltp - 0.05, ask=ltp, bid_qty=500, ask_qty=500, volume=volume
    )


@pytest.mark.parametrize("cap", list(CAPS), ids=list(CAPS))
def test_quotes_with_no_orders_write_no_journal_rows_under_caps(
    tmp_path: Path, clock: ManualClock, cap: str
) -> None:
    execution = {"slippage_bps": 0.0, "simulator": CAPS[cap]}
    config = make_config(tmp_path, execution=execution)
    running = RunningGateway(config, clock)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            running.call(running.gateway.core.tick())  # the day's start is journaled
            before = len(_events(config.journal.path))
            for i in range(30):
                clock.advance(timedelta(milliseconds=100))
                batch = [_book(s, 1000.0 + i, 10_000 + 100 * i) for s in (INFY, TCS, SBIN)]
                assert c.publish_quotes(batch) == 3
            assert len(_events(config.journal.path)) == before
            # An order: INFY's quote in force is journaled ahead of it, and INFY's quotes
            # from then on; still none of the others'.
            resting = c.submit(limit(INFY, "BUY", 10, 1020.0, strategy_code="s"))
            assert resting.status == OrderStatus.ORDER_STATUS_PLACED
            for i in range(3):
                clock.advance(timedelta(milliseconds=100))
                batch = [_book(s, 1030.0 + i, 13_000 + 100 * i) for s in (INFY, TCS, SBIN)]
                assert c.publish_quotes(batch) == 3
            observed = [e for e in _events(config.journal.path) if isinstance(e, QuoteObserved)]
            assert [(e.quote.symbol, e.quote.ltp) for e in observed] == [
                (INFY, Decimal("1029.00")),
                (INFY, Decimal("1030.00")),
                (INFY, Decimal("1031.00")),
                (INFY, Decimal("1032.00")),
            ]
            # The order gone, INFY's quotes are not journaled any more.
            c.cancel(resting.order_id)
            rows = len(_events(config.journal.path))
            clock.advance(timedelta(milliseconds=100))
            assert c.publish_quotes([_book(INFY, 1040.0, 14_000)]) == 1
            assert len(_events(config.journal.path)) == rows
    finally:
        running.stop()


def test_the_volume_of_a_quote_seen_with_no_order_is_journaled_when_an_order_meets_it() -> None:
    """volume_limit 0.1, domain level: Q1 (10,000) and Q2 (11,000) come with no order,
    and are not journaled. A BUY 150 meets Q2: Q2 goes to the journal with the volume
    before it (10,000), ahead of the fill of 100; a simulator restored from the state
    offers the next order nothing more of Q2."""
    sym, t0 = INFY, datetime(2026, 11, 27, 4, 30, tzinfo=UTC)

    def simulator() -> SmartFillSimulator:
        return SmartFillSimulator(
            slippage_bps=Decimal(0),
            instruments=InstrumentRegistry([Instrument(sym, Decimal("0.05"), 1)]),
            model=FillModel(volume_limit=Decimal("0.1")),
        )

    state = GatewayState(
        ledger=Ledger(), risk=RiskBook(), ids=IdSource(), sequence=0, head_hash=GENESIS_HASH
    )

    def place(order_id: str, qty: int, at: datetime) -> Order:
        intent = OrderIntent(sym, "s", Side.BUY, qty, OrderType.MARKET, Product.CNC, Validity.DAY)
        state.apply(OrderAccepted(order_id, order_id, intent, at))
        order = state.ledger.order(order_id)
        assert order is not None
        return order

    sim = simulator()
    q1 = DomainQuote(sym, Decimal(1000), t0, volume=10_000)
    q2 = DomainQuote(sym, Decimal(1000), t0 + timedelta(seconds=1), volume=11_000)
    assert sim.on_quote(q1, q1.timestamp, state.ids.fill_id) == []
    assert sim.on_quote(q2, q2.timestamp, state.ids.fill_id) == []
    made = sim.on_new_order(place("O1", 150, q2.timestamp), q2, q2.timestamp, state.ids.fill_id)
    assert [type(e) for e in made] == [QuoteObserved, OrderFilled]
    observed, filled = made
    assert isinstance(observed, QuoteObserved)
    assert isinstance(filled, OrderFilled)
    assert (observed.quote, observed.previous_volume) == (q2, 10_000)
    assert filled.fill.qty == 100
    for event in made:
        state.apply(event)

    again = simulator()
    again.restore(state.ledger.open_orders(), state.liquidity.values())
    later = again.on_new_order(place("O2", 10, q2.timestamp), q2, q2.timestamp, state.ids.fill_id)
    assert [e for e in later if isinstance(e, OrderFilled)] == []


def test_a_restart_does_not_offer_volume_from_a_stale_journaled_quote() -> None:
    """volume_limit 0.1, domain level. INFY had a resting order while Q1 (10,000) and
    Q2 (11,000) came (journaled); it was cancelled; Q3 (20,000) and Q4 (30,000) came
    with no order (not journaled). After a restart Q5 (30,500) traded 500 since Q4:
    at most 50 may fill, never the 1,950 the journaled Q2 would suggest."""
    sym, t0 = INFY, datetime(2026, 11, 27, 4, 30, tzinfo=UTC)

    def simulator() -> SmartFillSimulator:
        return SmartFillSimulator(
            slippage_bps=Decimal(0),
            instruments=InstrumentRegistry([Instrument(sym, Decimal("0.05"), 1)]),
            model=FillModel(volume_limit=Decimal("0.1")),
        )

    def quote(n: int, volume: int) -> DomainQuote:
        return DomainQuote(sym, Decimal(1000), t0 + timedelta(seconds=n), volume=volume)

    state = GatewayState(
        ledger=Ledger(), risk=RiskBook(), ids=IdSource(), sequence=0, head_hash=GENESIS_HASH
    )
    sim = simulator()
    fold = [*sim.on_quote(quote(1, 10_000), t0, state.ids.fill_id)]
    resting = OrderIntent(
        sym, "s", Side.BUY, 10, OrderType.LIMIT, Product.CNC, Validity.DAY, price=Decimal(900)
    )
    state.apply(OrderAccepted("O1", "r", resting, t0))
    order = state.ledger.order("O1")
    assert order is not None
    fold += sim.on_new_order(order, quote(1, 10_000), t0, state.ids.fill_id)
    fold += sim.on_quote(quote(2, 11_000), t0, state.ids.fill_id)
    fold += sim.cancel_now(order, t0, "cancelled by client")
    for event in fold:
        state.apply(event)
    assert state.liquidity[sym].quote.volume == 11_000
    assert sim.on_quote(quote(3, 20_000), t0, state.ids.fill_id) == []
    assert sim.on_quote(quote(4, 30_000), t0, state.ids.fill_id) == []

    def fills_on_q5(venue: SmartFillSimulator, order_id: str) -> int:
        q5 = quote(5, 30_500)
        venue.on_quote(q5, q5.timestamp, state.ids.fill_id)
        buy = OrderIntent(sym, "s", Side.BUY, 5_000, OrderType.MARKET, Product.CNC, Validity.DAY)
        new = Order(order_id, order_id, buy, PLACED, q5.timestamp, q5.timestamp)
        events = venue.on_new_order(new, q5, q5.timestamp, state.ids.fill_id)
        return sum(e.fill.qty for e in events if isinstance(e, OrderFilled))

    uninterrupted = fills_on_q5(sim, "O2")
    again = simulator()
    again.restore(state.ledger.open_orders(), state.liquidity.values())
    assert uninterrupted == 50
    assert fills_on_q5(again, "O3") <= uninterrupted


def test_liquidity_taken_from_the_quote_in_force_stays_taken_after_a_rebuild() -> None:
    """cap_to_displayed_qty, domain level: A (BUY 60) takes 60 of the ask's 100 and is
    done, so INFY has no order left. A rebuild (a failed command's recovery keeps the
    quote book) restores the simulator from the state: B (BUY 100) meeting the same
    quote gets the 40 left, not 100."""
    sym, t0 = INFY, datetime(2026, 11, 27, 4, 30, tzinfo=UTC)

    def simulator() -> SmartFillSimulator:
        return SmartFillSimulator(
            slippage_bps=Decimal(0),
            instruments=InstrumentRegistry([Instrument(sym, Decimal("0.05"), 1)]),
            model=FillModel(cap_to_displayed_qty=True, price_source="touch"),
        )

    state = GatewayState(
        ledger=Ledger(), risk=RiskBook(), ids=IdSource(), sequence=0, head_hash=GENESIS_HASH
    )

    def place(order_id: str, qty: int) -> Order:
        intent = OrderIntent(sym, "s", Side.BUY, qty, OrderType.MARKET, Product.CNC, Validity.DAY)
        state.apply(OrderAccepted(order_id, order_id, intent, t0))
        order = state.ledger.order(order_id)
        assert order is not None
        return order

    q = DomainQuote(sym, Decimal(1000), t0, Decimal("999.95"), Decimal(1000), 100, 100)
    sim = simulator()
    assert sim.on_quote(q, t0, state.ids.fill_id) == []
    for event in sim.on_new_order(place("O1", 60), q, t0, state.ids.fill_id):
        state.apply(event)
    assert state.ledger.open_orders() == []

    again = simulator()
    again.restore(state.ledger.open_orders(), state.liquidity.values())
    events = again.on_new_order(place("O2", 100), q, t0, state.ids.fill_id)
    assert [e.fill.qty for e in events if isinstance(e, OrderFilled)] == [40]
