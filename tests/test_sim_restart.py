"""Regressions from the review of the paper simulator: what it knew only in memory
survives a restart (orders still on their way to the simulated exchange, the brokerage
an order paid, the volume it saw and what fills took of it), and the MIS square-off of
a position above the freeze quantity goes out in slices the exchange takes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from execgw.client import ExecutionClient, OrderStatus, Quote, limit, market
from execgw.server.clock import ManualClock
from execgw.server.domain import (
    Fill,
    OrderIntent,
    OrderType,
    Product,
    Side,
    Validity,
)
from execgw.server.domain import Quote as DomainQuote
from execgw.server.events import (
    CancelRequested,
    FillExecuted,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    QuoteObserved,
)
from execgw.server.instruments import Instrument, InstrumentRegistry
from execgw.server.journal import GENESIS_HASH, Journal
from execgw.server.ledger import Ledger
from execgw.server.recovery import GatewayState, IdSource
from execgw.server.risk_state import RiskBook
from execgw.server.venues.fill_model import FillModel
from execgw.server.venues.latency import LatencyModel
from execgw.server.venues.simulator import SmartFillSimulator

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TIMEOUT_S, publish
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TIMEOUT_S, publish

FILLED = OrderStatus.ORDER_STATUS_FILLED
CANCELLED = OrderStatus.ORDER_STATUS_CANCELLED
REJECTED = OrderStatus.ORDER_STATUS_REJECTED
PARTIAL = OrderStatus.ORDER_STATUS_PARTIAL


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


# -- the simulator's volume state (execution.simulator.volume_limit) ------------------


def _volume_quote(ltp: float, volume: int) -> Quote:
    return Quote(symbol=INFY, ltp=ltp, bid=ltp - 0.05, ask=ltp, bid_qty=0, ask_qty=0, volume=volume)


def _fills_of(path: str, order_id: str) -> list[tuple[int, Decimal]]:
    return [(f.qty, f.price) for f in _fills(path) if f.order_id == order_id]


@pytest.mark.parametrize("restart", [False, True], ids=["uninterrupted", "restarted"])
def test_volume_already_seen_survives_a_restart(
    tmp_path: Path, clock: ManualClock, restart: bool
) -> None:
    """volume_limit 0.1 of the volume traded between quotes. Q2 (11,000 after 10,000)
    offers 100: A (BUY 150) takes 100 at 1001, B (SELL 30) gets none (the traded volume
    is shared by both sides). Q3 (11,600) offers 60: A's last 50 at 1002, then B 10 at
    1002. Q4 (11,800) offers 20: B's last 20 at 1003. A restart between Q2 and Q3 must
    not change this: before, the simulator forgot Q2's volume, so Q3's traded volume was
    unknown and it offered nothing."""
    execution: dict[str, Any] = {"slippage_bps": 0.0, "simulator": {"volume_limit": 0.1}}
    running = RunningGateway(make_config(tmp_path, execution=execution), clock)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            assert c.publish_quotes([_volume_quote(1000.00, 10_000)]) == 1
            clock.advance(timedelta(seconds=1))
            assert c.publish_quotes([_volume_quote(1001.00, 11_000)]) == 1
            a = c.submit(market(INFY, "BUY", 150, strategy_code="s")).order_id
            b = c.submit(market(INFY, "SELL", 30, product="MIS", strategy_code="t")).order_id
            assert c.get_order(a).filled_qty == 100
            assert c.get_order(b).filled_qty == 0
        if restart:
            running = restarted(running)
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            clock.advance(timedelta(seconds=1))
            assert c.publish_quotes([_volume_quote(1002.00, 11_600)]) == 1
            clock.advance(timedelta(seconds=1))
            assert c.publish_quotes([_volume_quote(1003.00, 11_800)]) == 1
            assert (c.get_order(a).status, c.get_order(b).status) == (FILLED, FILLED)
        path = running.config.journal.path
        assert _fills_of(path, a) == [(100, Decimal("1001.00")), (50, Decimal("1002.00"))]
        assert _fills_of(path, b) == [(10, Decimal("1002.00")), (20, Decimal("1003.00"))]
    finally:
        running.stop()


@pytest.mark.parametrize("restart", [False, True], ids=["uninterrupted", "restarted"])
def test_volume_taken_from_a_quote_is_not_offered_again_after_a_restart(
    tmp_path: Path, clock: ManualClock, restart: bool
) -> None:
    """Insert latency 100 ms, volume_limit 0.1. R (BUY 80 limit 1001) rests; Q2
    (11,000 after 10,000: 100 to take) trades through it: 80 at 1001, 20 left. A (MARKET
    BUY 50), sent just before Q2, reaches the exchange after it, while Q2 is still in
    force: it gets the 20 left at 1000, and 30 rest (Q3 shows no new volume). A restart
    before A arrives must give the same: A meets Q2 with 20 left, not a fresh 100 (it
    took 50 then) nor the later Q3 (it took nothing then)."""
    execution: dict[str, Any] = {
        "slippage_bps": 0.0,
        "simulator": {"volume_limit": 0.1, "latency_ms": {"insert": 100.0}},
    }
    running = RunningGateway(make_config(tmp_path, execution=execution), clock)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            assert c.publish_quotes([_volume_quote(1000.00, 10_000)]) == 1
            r = c.submit(limit(INFY, "BUY", 80, 1001.00, strategy_code="s")).order_id
            clock.advance(timedelta(milliseconds=500))
            # R arrives (at + 100 ms, on the first quote: no volume seen yet) and rests.
            assert c.publish_quotes([_volume_quote(1003.00, 10_000)]) == 1
            clock.advance(timedelta(milliseconds=450))
            a = c.submit(market(INFY, "BUY", 50, strategy_code="s")).order_id  # due + 1,050
            clock.advance(timedelta(milliseconds=50))
            assert c.publish_quotes([_volume_quote(1000.00, 11_000)]) == 1  # Q2 at + 1,000
            assert c.get_order(r).filled_qty == 80
            assert c.get_order(a).filled_qty == 0
        if restart:
            running = restarted(running)
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            clock.advance(timedelta(milliseconds=200))
            assert c.publish_quotes([_volume_quote(1002.00, 11_000)]) == 1  # Q3
            done = c.get_order(a)
            assert (done.status, done.filled_qty) == (PARTIAL, 20)
        path = running.config.journal.path
        assert _fills_of(path, r) == [(80, Decimal("1001.0"))]
        assert _fills_of(path, a) == [(20, Decimal("1000.00"))]
    finally:
        running.stop()


def _new_state() -> GatewayState:
    return GatewayState(
        ledger=Ledger(), risk=RiskBook(), ids=IdSource(), sequence=0, head_hash=GENESIS_HASH
    )


def _quotes_through(sim: SmartFillSimulator, state: GatewayState, *quotes: DomainQuote) -> None:
    """Each quote to the simulator at its own time, and what it made to the state."""
    for quote in quotes:
        for event in sim.on_quote(quote, quote.timestamp, state.ids.fill_id):
            state.apply(event)


def test_the_journaled_liquidity_counts_a_late_reported_fill_once_and_restores_the_budget() -> None:
    """Domain level, with fill latency 50 ms and volume_limit 0.1: Q2 (11,000 after
    10,000) offers 100. A (BUY 60) takes 60 at once (FillExecuted, after Q2's
    QuoteObserved); its report, 50 ms
    later, takes nothing more. A simulator restored from the folded state offers B (BUY
    100) the 40 left of Q2, at Q2's ask."""
    sym, t0 = "NSE:INFY", datetime(2026, 11, 27, 4, 30, tzinfo=UTC)

    def simulator() -> SmartFillSimulator:
        return SmartFillSimulator(
            slippage_bps=Decimal(0),
            instruments=InstrumentRegistry([Instrument(sym, Decimal("0.05"), 1)]),
            model=FillModel(volume_limit=Decimal("0.1"), price_source="touch"),
            latency=LatencyModel(fill_ms=Decimal(50)),
        )

    def quote(at: datetime, volume: int) -> DomainQuote:
        return DomainQuote(
            sym, Decimal(1000), at, Decimal("999.95"), Decimal(1000), 500, 500, volume
        )

    def intent(qty: int) -> OrderIntent:
        return OrderIntent(sym, "s", Side.BUY, qty, OrderType.MARKET, Product.CNC, Validity.DAY)

    state = _new_state()
    sim = simulator()
    q1, q2 = quote(t0, 10_000), quote(t0 + timedelta(seconds=1), 11_000)
    _quotes_through(sim, state, q1, q2)
    state.apply(OrderAccepted("O1", "a", intent(60), q2.timestamp))
    order_a = state.ledger.order("O1")
    assert order_a is not None
    made = sim.on_new_order(order_a, q2, q2.timestamp, state.ids.fill_id)
    # Q2 is journaled only now, ahead of the first fill against it: with no order, no
    # quote was.
    assert [type(e) for e in made] == [QuoteObserved, FillExecuted]
    for event in made:
        state.apply(event)
    assert (state.liquidity[sym].previous_volume, state.liquidity[sym].taken_buy) == (10_000, 60)

    # Restored from the state alone (a restart): 40 of Q2's 100 are left.
    again = simulator()
    again.restore(state.ledger.open_orders(), state.liquidity.values())
    state.apply(OrderAccepted("O2", "b", intent(100), q2.timestamp))
    order_b = state.ledger.order("O2")
    assert order_b is not None
    (b_fill,) = again.on_new_order(order_b, q2, q2.timestamp, state.ids.fill_id)
    assert isinstance(b_fill, FillExecuted)
    assert (b_fill.fill.qty, b_fill.fill.price) == (40, Decimal(1000))
    state.apply(b_fill)
    assert state.liquidity[sym].taken_buy == 100

    # A's report lands (before Q3 is observed, in the same call): it takes nothing more.
    q3 = quote(t0 + timedelta(seconds=2), 11_000)
    delivered = again.on_quote(q3, q3.timestamp, state.ids.fill_id)
    assert [type(e) for e in delivered[:2]] == [OrderFilled, OrderFilled]
    for event in delivered[:2]:
        state.apply(event)
    assert state.liquidity[sym].taken_buy == 100
    assert isinstance(delivered[2], QuoteObserved)
    reported = state.ledger.order("O1")
    assert reported is not None
    assert reported.filled_qty == 60


def _cancel_in_flight_then_quote(
    root: Path, clock: ManualClock, *, restart: bool, after_ms: int, ltp: float
) -> tuple[int, int]:
    """A resting BUY 990 whose cancel (1 s of cancel latency) is on its way when a quote
    comes `after_ms` later, with or without a restart in between: (status, filled)."""
    execution: dict[str, Any] = {
        "slippage_bps": 0.0,
        "simulator": {"latency_ms": {"cancel": 1000.0}},
    }
    running = RunningGateway(make_config(root, execution=execution), clock)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            publish(c, INFY, 1000.00)
            order = c.submit(limit(INFY, "BUY", 10, 990.00, strategy_code="s"), "k1")
            c.cancel(order.order_id)
        if restart:
            running = restarted(running)
        clock.advance(timedelta(milliseconds=after_ms))
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            publish(c, INFY, ltp)
            done = c.get_order(order.order_id)
            return done.status, done.filled_qty
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("after_ms", "expected"),
    [
        # The cancel is still 700 ms away: the quote through the limit fills the order.
        (300, (FILLED, 10)),
        # The cancel reached the exchange first: nothing is left to fill.
        (1100, (CANCELLED, 0)),
    ],
)
def test_a_cancel_on_its_way_after_a_restart_arrives_when_due_not_at_once(
    tmp_path: Path, clock: ManualClock, after_ms: int, expected: tuple[int, int]
) -> None:
    start = clock.now()
    straight = _cancel_in_flight_then_quote(
        tmp_path / "a", clock, restart=False, after_ms=after_ms, ltp=985.00
    )
    clock.set(start)
    across = _cancel_in_flight_then_quote(
        tmp_path / "b", clock, restart=True, after_ms=after_ms, ltp=985.00
    )
    assert straight == expected
    assert across == expected


def test_a_restored_cancel_is_due_a_latency_after_it_was_sent_not_after_a_later_fill() -> None:
    """Domain level, cancel latency 1 s, displayed-quantity cap: a BUY 100 rests at 990
    behind a cancel sent at t0; at t0+300 ms a quote through the limit with 40 offered
    fills 40 (updated_at moves on). Restored then, the cancel reaches the exchange at
    t0+1 s, not t0+1.3 s, nor at once."""
    sym, t0 = "NSE:INFY", datetime(2026, 11, 27, 4, 30, tzinfo=UTC)

    def simulator() -> SmartFillSimulator:
        return SmartFillSimulator(
            slippage_bps=Decimal(0),
            instruments=InstrumentRegistry([Instrument(sym, Decimal("0.05"), 1)]),
            model=FillModel(cap_to_displayed_qty=True),
            latency=LatencyModel(cancel_ms=Decimal(1000)),
        )

    def quote(at: datetime, ltp: str) -> DomainQuote:
        return DomainQuote(sym, Decimal(ltp), at, Decimal(ltp), Decimal(ltp), 40, 40, 0)

    state = _new_state()
    sim = simulator()
    intent = OrderIntent(
        sym, "s", Side.BUY, 100, OrderType.LIMIT, Product.CNC, Validity.DAY, Decimal(990)
    )
    q0 = quote(t0, "1000")
    for event in sim.on_quote(q0, t0, state.ids.fill_id):
        state.apply(event)
    state.apply(OrderAccepted("O1", "a", intent, t0))
    order = state.ledger.order("O1")
    assert order is not None
    for event in sim.on_new_order(order, q0, t0, state.ids.fill_id):
        state.apply(event)
    assert sim.request_cancel(order, t0, "cancelled by client")
    state.apply(CancelRequested("O1", t0, "cancelled by client"))
    q1 = quote(t0 + timedelta(milliseconds=300), "985")
    for event in sim.on_quote(q1, q1.timestamp, state.ids.fill_id):
        state.apply(event)
    order = state.ledger.order("O1")
    assert order is not None
    assert (order.filled_qty, order.updated_at) == (40, q1.timestamp)

    again = simulator()
    again.restore(state.ledger.open_orders(), state.liquidity.values())
    assert again.on_time(t0 + timedelta(milliseconds=999), state.ids.fill_id) == []
    (cancelled,) = again.on_time(t0 + timedelta(seconds=1), state.ids.fill_id)
    assert isinstance(cancelled, OrderCancelled)
    assert (cancelled.order_id, cancelled.message) == ("O1", "cancelled by client")


def test_the_impact_already_taken_from_a_quote_survives_a_restart() -> None:
    """Domain level, volume_share with k 0.1: Q2 trades 1,000. A (BUY 50) pays impact
    0.1 x (50/1,000)^2 = 0.00025 -> 1000.25. Restored from the state alone, B (BUY 50)
    in the same quote pays for all 100 the quote gave: 0.1 x 0.1^2 = 0.001 -> 1001.00,
    as without the restart (not 1000.25, as if A had not traded)."""
    sym, t0 = "NSE:INFY", datetime(2026, 11, 27, 4, 30, tzinfo=UTC)

    def simulator() -> SmartFillSimulator:
        return SmartFillSimulator(
            slippage_bps=Decimal(0),
            instruments=InstrumentRegistry([Instrument(sym, Decimal("0.05"), 1)]),
            model=FillModel(slippage_model="volume_share", impact_k=Decimal("0.1")),
        )

    def intent(qty: int) -> OrderIntent:
        return OrderIntent(sym, "s", Side.BUY, qty, OrderType.MARKET, Product.CNC, Validity.DAY)

    def quote(at: datetime, volume: int) -> DomainQuote:
        return DomainQuote(sym, Decimal(1000), at, volume=volume)

    state = _new_state()
    sim = simulator()
    q1, q2 = quote(t0, 10_000), quote(t0 + timedelta(seconds=1), 11_000)
    _quotes_through(sim, state, q1, q2)

    def buy(simulator: SmartFillSimulator, order_id: str) -> Decimal:
        state.apply(OrderAccepted(order_id, order_id, intent(50), q2.timestamp))
        order = state.ledger.order(order_id)
        assert order is not None
        events = simulator.on_new_order(order, q2, q2.timestamp, state.ids.fill_id)
        for event in events:
            state.apply(event)
        (fill,) = [e.fill for e in events if isinstance(e, OrderFilled)]
        return fill.price

    assert buy(sim, "O1") == Decimal("1000.25")
    again = simulator()
    again.restore(state.ledger.open_orders(), state.liquidity.values())
    assert buy(again, "O2") == Decimal("1001.00")
