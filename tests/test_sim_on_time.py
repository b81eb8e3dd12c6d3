"""Regressions from the review of fill latency (FillExecuted, Order.fills_in_flight):
what the simulator's latency holds is delivered as time passes, not only with its
symbol's next quote, so no fill the simulated exchange made is lost at the rollover;
a late report neither moves its order's updated_at back nor puts its old price over a
newer mark; and a replay reproduces deliveries made by time alone.

Driven through the real engine (the one the gateway runs in its single writer), with a
ManualClock as the only time; slippage 0, so every fill price is the price it met."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

from execgw.server.domain import (
    Fill,
    OrderStatus,
    Product,
    Quote,
    Side,
)
from execgw.server.events import (
    DayRolledOver,
    FillExecuted,
    MarksRecorded,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
)
from execgw.server.journal import GENESIS_HASH
from execgw.server.ledger import Ledger
from execgw.server.recovery import GatewayState, IdSource
from execgw.server.replay import replay, summarize
from execgw.server.risk_state import RiskBook

if TYPE_CHECKING:
    from tests.sim_session import INFY, T0, Session, config, intent, kinds, ms, recording
else:
    from sim_session import INFY, T0, Session, config, intent, kinds, ms, recording

# 07:59:59.950 IST the next morning: 50 ms before the 08:00 rollover.
JUST_BEFORE_ROLLOVER = datetime(2026, 11, 28, 2, 29, 59, 950_000, tzinfo=UTC)
FILL_LATENCY: dict[str, Any] = {"slippage_bps": 0.0, "simulator": {"latency_ms": {"fill": 100.0}}}


# -- 1. time delivers what latency held --------------------------------------------


def test_a_report_lands_when_due_with_no_quote_of_its_symbol() -> None:
    s = Session(config(FILL_LATENCY))
    s.quote("1000.00")
    order_id = s.submit(intent("BUY", 10), "k1")  # made at T0, reported at T0 + 100 ms
    s.clock.advance(ms(50))
    assert s.tick() == []
    s.clock.advance(ms(100))
    assert kinds(s.tick()) == ["OrderFilled"]
    order = s.engine.state.ledger.order(order_id)
    assert order is not None
    assert (order.status, order.filled_qty, order.fills_in_flight) == (OrderStatus.FILLED, 10, ())
    assert s.position() == 10


def test_a_fill_on_the_days_last_quote_is_not_lost_at_the_rollover() -> None:
    """The reviewer's scenario: a resting BUY fills at the exchange on INFY's last quote
    of the day (report due 100 ms later); INFY gets no more quotes. The next morning
    the order is FILLED and the position held, not CANCELLED with nothing filled."""
    s = Session(config(FILL_LATENCY))
    s.quote("1000.00")
    order_id = s.submit(intent("BUY", 10, "990.00"), "k1")
    s.clock.advance(timedelta(seconds=60))
    assert "FillExecuted" in kinds(s.quote("989.00"))
    s.clock.advance(timedelta(days=1))
    events = s.tick()
    assert kinds(events)[0] == "OrderFilled"  # before the rollover, not after
    assert not [e for e in events if isinstance(e, OrderCancelled)]
    fills = [r.event.fill for r in s.records if isinstance(r.event, OrderFilled)]
    assert [(f.order_id, f.qty, f.price) for f in fills] == [(order_id, 10, Decimal("990.00"))]
    assert s.position() == 10


def test_the_mis_square_off_is_not_lost_and_the_position_not_carried_overnight() -> None:
    """The reviewer's scenario: the gateway's own square-off SELL fills at the exchange
    on the 15:20 tick, with no INFY quote after it; before, its report was dropped at
    the rollover, the position carried overnight, and squared off again the next day."""
    s = Session(config(FILL_LATENCY), start=datetime(2026, 11, 27, 9, 40, tzinfo=UTC))
    s.quote("1000.00")
    s.submit(intent("BUY", 10, product=Product.MIS), "k1")
    s.clock.advance(timedelta(seconds=1))
    s.tick()  # the BUY's report
    assert s.position() == 10
    s.clock.advance(timedelta(minutes=10))  # 15:20:01 IST
    assert kinds(s.tick())[:3] == ["MisSquareOffStarted", "OrderAccepted", "FillExecuted"]
    s.clock.advance(timedelta(seconds=1))
    s.tick()
    assert s.position() == 0
    s.clock.advance(timedelta(hours=17))  # the next day, after the 08:00 rollover
    events = s.tick()
    assert any(isinstance(e, DayRolledOver) for e in events)
    assert s.position() == 0
    sells = [
        r.event.fill
        for r in s.records
        if isinstance(r.event, OrderFilled) and r.event.fill.side is Side.SELL
    ]
    assert [f.qty for f in sells] == [10]


def test_reports_still_on_their_way_at_the_rollover_are_taken_before_the_rest_expires() -> None:
    """Fills capped by the displayed quantity: 60 of a resting BUY 100 fill at the
    exchange 50 ms before the rollover; the rollover comes before their report is due.
    The 60 stand (the report is taken then), only the 40 left expire."""
    execution = {
        "slippage_bps": 0.0,
        "simulator": {"cap_to_displayed_qty": True, "latency_ms": {"fill": 100.0}},
    }
    s = Session(config(execution))
    s.quote("1000.00", qty=500)
    order_id = s.submit(intent("BUY", 100, "990.00"), "k1")
    s.clock.set(JUST_BEFORE_ROLLOVER)
    s.tick()  # the evening's square-off time passed (no MIS here)
    assert kinds(s.quote("989.00", qty=60)) == ["QuoteObserved", "FillExecuted"]
    s.clock.advance(ms(50))  # 08:00:00.000 IST: the rollover; the report is due at .050
    events = s.tick()
    rolled = next(i for i, e in enumerate(events) if isinstance(e, DayRolledOver))
    assert kinds(events[:rolled]).count("OrderFilled") == 1  # the day that ended
    expired = [e for e in events if isinstance(e, OrderCancelled)]
    assert [e.order_id for e in expired] == [order_id]
    assert expired[0].message.startswith("expired")
    filled = [e for e in events if isinstance(e, OrderFilled)]
    assert [(e.fill.qty, e.fill.timestamp) for e in filled] == [(60, JUST_BEFORE_ROLLOVER)]
    assert s.position() == 60
    s.clock.advance(ms(100))
    assert s.tick() == []  # nothing delivered twice


def test_the_rollover_takes_the_reports_of_an_order_filled_whole() -> None:
    s = Session(config(FILL_LATENCY))
    s.quote("1000.00")
    s.submit(intent("BUY", 10, "990.00"), "k1")
    s.clock.set(JUST_BEFORE_ROLLOVER)
    s.quote("989.00")
    s.clock.advance(ms(50))
    events = s.tick()
    assert "OrderCancelled" not in kinds(events)
    assert kinds(events).count("OrderFilled") == 1
    assert s.position() == 10


# -- the replay reproduces what time delivered ---------------------------------------


def test_a_replay_delivers_what_time_delivered_in_the_recording() -> None:
    """Insert latency 100 ms: the order reaches the exchange, and fills, on a tick
    with no quote; the client's cancel after that finds it FILLED (refused, not
    journaled). The replay of the recording gives the same fill, twice."""
    cfg = config(
        {"slippage_bps": 0.0, "simulator": {"latency_ms": {"insert": 100.0}}},
        journal={"path": "unused.db", "record_quotes": True},
    )
    s = recording(cfg)
    s.quote("1000.00")
    order_id = s.submit(intent("BUY", 10), "k1")
    s.clock.advance(ms(150))
    assert kinds(s.tick())[:2] == ["OrderArrived", "OrderFilled"]
    order = s.engine.state.ledger.order(order_id)
    assert order is not None
    assert order.status is OrderStatus.FILLED
    recorded = summarize(s.engine.state)
    first, second = replay(s.records, cfg), replay(s.records, cfg)
    assert first == second == recorded
    assert first.orders[("s", "k1")].filled_qty == 10


# -- 3. updated_at ---------------------------------------------------------------


def test_a_late_report_moves_updated_at_forward_to_its_report_time() -> None:
    """Made at T0, reported at T0 + 100 ms; a cancel at T0 + 10 makes the order
    PENDING_CANCEL then. The report must not set updated_at back to T0; the fill keeps
    the exchange's time."""
    s = Session(config(FILL_LATENCY))
    s.quote("1000.00")
    order_id = s.submit(intent("BUY", 10), "k1")
    s.clock.advance(ms(10))
    s.run(s.engine.cancel, order_id)
    order = s.engine.state.ledger.order(order_id)
    assert order is not None
    assert (order.status, order.updated_at) == (OrderStatus.PENDING_CANCEL, T0 + ms(10))
    s.clock.advance(ms(140))
    (filled,) = [e for e in s.quote("1005.00") if isinstance(e, OrderFilled)]
    assert filled.fill.timestamp == T0
    done = s.engine.state.ledger.order(order_id)
    assert done is not None
    assert (done.status, done.updated_at) == (OrderStatus.FILLED, T0 + ms(100))


# -- 4. marks ----------------------------------------------------------------------


def test_a_late_report_does_not_put_its_old_price_over_a_newer_mark() -> None:
    """The fold (live and at recovery alike): a fill made at T0 at 1000, marks
    journaled at T0 + 50 ms at 1010, the fill's report at T0 + 100 ms. The mark stays
    1010."""
    state = GatewayState(
        ledger=Ledger(), risk=RiskBook(), ids=IdSource(), sequence=0, head_hash=GENESIS_HASH
    )
    order = intent("BUY", 10)
    fill = Fill(
        fill_id="F0000000001",
        order_id="O0000000001",
        client_order_id="k1",
        strategy_code="s",
        symbol=INFY,
        side=Side.BUY,
        product=Product.CNC,
        qty=10,
        price=Decimal(1000),
        timestamp=T0,
    )
    quote = Quote(INFY, Decimal(1000), T0)
    state.apply(OrderAccepted("O0000000001", "k1", order, T0))
    state.apply(FillExecuted(fill, quote, T0 + ms(100)))
    state.apply(MarksRecorded({INFY: Decimal(1010)}, T0 + ms(50)))
    state.apply(OrderFilled(fill, quote))
    assert state.marks[INFY] == Decimal(1010)
    position = state.ledger.position(("s", INFY, Product.CNC))
    assert position is not None
    assert position.net_qty == 10


def test_closing_an_order_with_a_report_still_on_its_way_is_logged_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The engine never does this any more (the rollover takes the reports first); if
    anything ever closes such an order, the lost fill is an ERROR, not silence."""
    state = GatewayState(
        ledger=Ledger(), risk=RiskBook(), ids=IdSource(), sequence=0, head_hash=GENESIS_HASH
    )
    fill = Fill(
        fill_id="F0000000001",
        order_id="O0000000001",
        client_order_id="k1",
        strategy_code="s",
        symbol=INFY,
        side=Side.BUY,
        product=Product.CNC,
        qty=10,
        price=Decimal(1000),
        timestamp=T0,
    )
    state.apply(OrderAccepted("O0000000001", "k1", intent("BUY", 10), T0))
    state.apply(FillExecuted(fill, Quote(INFY, Decimal(1000), T0), T0 + ms(100)))
    with caplog.at_level(logging.ERROR):
        state.apply(OrderCancelled("O0000000001", T0 + ms(10), "expired"))
    assert any("F0000000001" in r.getMessage() for r in caplog.records)
