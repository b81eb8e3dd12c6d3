"""The trading day: rollover at 08:00 Asia/Kolkata and MIS square-off at 15:20.

The day is a calendar day in Asia/Kolkata (UTC+05:30, no DST) that rolls at
trading_day.rollover, not at UTC midnight. MARKET_OPEN is 2026-11-27 10:00 IST;
UTC midnight after it is 2026-11-28 05:30 IST, still trading day 2026-11-27.
The background ticker is pushed out to 60 s: a test moves the clock, then ticks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from execgw.client import (
    OrderType,
    Product,
    RejectReason,
    RiskEventKind,
    Side,
    TradingState,
    market,
    stop,
)
from execgw.server.clock import ManualClock

if TYPE_CHECKING:
    from tests.risk_helpers import (
        CANCELLED,
        FILLED,
        INFY,
        PLACED,
        TCS,
        Harness,
        assert_accepted,
        assert_rejected,
        breaker,
        ist,
        tripped,
    )
else:
    from risk_helpers import (
        CANCELLED,
        FILLED,
        INFY,
        PLACED,
        TCS,
        Harness,
        assert_accepted,
        assert_rejected,
        breaker,
        ist,
        tripped,
    )

R = RejectReason
ACTIVE = TradingState.TRADING_STATE_ACTIVE
REDUCING = TradingState.TRADING_STATE_REDUCING
SQUARE_OFF_TAG = "MIS_SQUAREOFF"
MIS_CLOSED_MESSAGE = "MIS entries are closed after 15:20 Asia/Kolkata"


def test_the_day_rolls_at_0800_ist_not_at_utc_midnight(tmp_path: Path, clock: ManualClock) -> None:
    overrides = {"execution": {"circuit_breakers": {"max_trades_per_day": 3}}}
    with Harness(tmp_path, clock, **overrides) as h:
        h.publish(INFY, 1000.0)
        assert_accepted(h.mkt("BUY", 1, strategy="S1"))
        h.publish(INFY, 990.0)
        assert_accepted(h.mkt("SELL", 1, strategy="S1"))  # realized -10, S1 streak 1
        h.publish(INFY, 1000.0)
        assert_accepted(h.mkt("BUY", 1, strategy="S2", product="CNC"))  # 3rd: trips
        day1 = h.state()
        assert day1.trading_day == "2026-11-27"
        assert tripped(day1) == {("max_trades_per_day", "")}
        assert (day1.trades_today, day1.realized_pnl) == (3, -10.0)

        with h.stream(include_risk_events=True) as events:
            # UTC midnight = 05:30 IST on the 28th: still trading day 2026-11-27.
            clock.set(datetime(2026, 11, 28, 0, 0, tzinfo=UTC))
            h.tick()
            night = h.state()
            assert night.trading_day == "2026-11-27"
            assert (night.trades_today, night.realized_pnl) == (3, -10.0)
            assert tripped(night) == {("max_trades_per_day", "")}
            assert_rejected(h.mkt("BUY", 1, strategy="S3"), R.REJECT_REASON_MAX_TRADES_PER_DAY)

            clock.set(ist(2026, 11, 28, 7, 59, 59.999))
            h.tick()
            assert h.state().trading_day == "2026-11-27"
            assert h.state().trades_today == 3

            clock.set(ist(2026, 11, 28, 8, 0))
            h.tick()
            seen = events.risk_events(RiskEventKind.RISK_EVENT_KIND_DAY_ROLLED_OVER)

        # Only one rollover, at 08:00 IST; the overnight tick saw the square-off instead.
        kinds = [e.risk_event.kind for e in seen]
        assert kinds == [
            RiskEventKind.RISK_EVENT_KIND_MIS_SQUARE_OFF,
            RiskEventKind.RISK_EVENT_KIND_DAY_ROLLED_OVER,
        ]
        assert seen[0].risk_event.trading_day == "2026-11-27"
        rolled = seen[-1]
        assert rolled.risk_event.trading_day == "2026-11-28"
        assert rolled.risk_event.state == ACTIVE
        assert rolled.timestamp.ToDatetime(tzinfo=UTC) == ist(2026, 11, 28, 8, 0)

        day2 = h.state()
        assert day2.trading_day == "2026-11-28"
        assert day2.state == ACTIVE
        assert tripped(day2) == set()
        assert (day2.trades_today, day2.realized_pnl) == (0, 0.0)
        assert breaker(day2, "max_trades_per_day").value == 0.0
        # Per-strategy counters and streaks reset too.
        for strategy in day2.strategies:
            assert (strategy.trades_today, strategy.loss_streak) == (0, 0), strategy
            assert strategy.realized_pnl == 0.0
            assert strategy.state == ACTIVE
        assert not day2.mis_entries_closed
        assert_accepted(h.mkt("BUY", 1, strategy="S3"))
        assert h.state().trades_today == 1
        # Positions are not a daily counter: S2's CNC holding carries over.
        assert h.net_qty("S2") == 1


def test_a_tripped_loss_breaker_clears_at_rollover(tmp_path: Path, clock: ManualClock) -> None:
    overrides = {"execution": {"circuit_breakers": {"max_daily_loss_rupees": 100.0}}}
    with Harness(tmp_path, clock, **overrides) as h:
        h.publish(INFY, 1000.0)
        assert_accepted(h.mkt("BUY", 10))
        h.publish(INFY, 990.0)  # loss 100.00: tripped
        assert_accepted(h.mkt("SELL", 10))  # REDUCING lets the close through
        state = h.state()
        assert state.state == REDUCING
        assert state.realized_pnl == -100.0
        assert_rejected(h.mkt("BUY", 1), R.REJECT_REASON_MAX_DAILY_LOSS)

        clock.set(ist(2026, 11, 28, 8, 0))
        h.tick()
        state = h.state()
        assert state.state == ACTIVE
        assert state.realized_pnl == 0.0
        assert breaker(state, "max_daily_loss_rupees").value == 0.0
        assert not breaker(state, "max_daily_loss_rupees").tripped
        assert state.peak_equity == state.equity == 1_000_000.0
        assert_accepted(h.mkt("BUY", 1))


def test_a_carried_position_does_not_bring_yesterdays_loss_into_today(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Day PnL starts at zero each day: an NRML position carried over counts only today's move.

    Closing the position yesterday would have realized -500 and the rollover would have
    forgotten it; holding it must not make today start 500 rupees down instead.
    """
    overrides = {"execution": {"circuit_breakers": {"max_daily_loss_rupees": 600.0}}}
    with Harness(tmp_path, clock, **overrides) as h:
        h.publish(INFY, 1000.0)
        assert_accepted(h.mkt("BUY", 10))
        h.publish(INFY, 950.0)  # yesterday: -500, inside the 600 limit
        assert not breaker(h.state(), "max_daily_loss_rupees").tripped

        clock.set(ist(2026, 11, 28, 9, 15))
        h.tick()
        h.publish(INFY, 940.0)  # today: 10 x (940 - 950) = -100
        loss = breaker(h.state(), "max_daily_loss_rupees")
        assert not loss.tripped, loss.message
        assert loss.value == 100.0
        assert_accepted(h.mkt("BUY", 1))


def test_day_orders_expire_when_the_trading_day_ends(tmp_path: Path, clock: ManualClock) -> None:
    """VALIDITY_DAY: "Rests until filled, cancelled or the trading day ends"."""
    with Harness(tmp_path, clock) as h:
        h.publish(INFY, 1000.0)
        resting = h.lmt("BUY", 1, 990.0, product="NRML")
        assert_accepted(resting, PLACED)
        clock.set(ist(2026, 11, 28, 8, 0))
        h.tick()
        assert h.state().trading_day == "2026-11-28"
        assert h.client.get_order(resting.order_id).status == CANCELLED
        h.publish(INFY, 990.0)  # must not fill yesterday's order today
        assert h.net_qty("S1") == 0


def test_preview_after_the_rollover_time_agrees_with_submit(
    tmp_path: Path, clock: ManualClock
) -> None:
    """PreviewOrder is "True when SubmitOrder would accept the intent now"."""
    overrides = {"execution": {"circuit_breakers": {"max_trades_per_day": 1}}}
    with Harness(tmp_path, clock, **overrides) as h:
        h.publish(INFY, 1000.0)
        assert_accepted(h.mkt("BUY", 1))
        intent = market(INFY, "BUY", 1, strategy_code="S1", product="NRML")
        assert not h.client.preview(intent).accepted
        clock.set(ist(2026, 11, 28, 8, 0, 0.5))  # no tick yet
        preview = h.client.preview(intent)
        result = h.submit(intent)  # the submit rolls the day over first
        assert_accepted(result)
        assert preview.accepted, preview.message


def test_mis_square_off_at_1520_ist(tmp_path: Path, clock: ManualClock) -> None:
    with Harness(tmp_path, clock) as h:
        h.publish(INFY, 1000.0)
        h.publish(TCS, 500.0)
        assert_accepted(h.mkt("BUY", 10, strategy="S1", product="MIS"))
        assert_accepted(h.mkt("SELL", 5, symbol=TCS, strategy="S2", product="MIS"))
        assert_accepted(h.mkt("BUY", 3, strategy="S1", product="NRML"))
        mis_rest = h.lmt("BUY", 1, 990.0, strategy="S1", product="MIS")
        nrml_rest = h.lmt("BUY", 1, 990.0, strategy="S1", product="NRML")
        mis_stop = h.submit(stop(INFY, "SELL", 10, 950.0, strategy_code="S1", product="MIS"))
        for order in (mis_rest, nrml_rest, mis_stop):
            assert_accepted(order, PLACED)
        h.publish(INFY, 1010.0)

        clock.set(ist(2026, 11, 27, 15, 19, 59.999))
        h.tick()
        assert not h.state().mis_entries_closed
        assert_accepted(h.mkt("BUY", 1, strategy="S3", product="MIS"))  # last MIS entry

        with h.stream(include_risk_events=True) as events:
            clock.set(ist(2026, 11, 27, 15, 20))
            h.tick()
            square_off = events.risk_events(RiskEventKind.RISK_EVENT_KIND_MIS_SQUARE_OFF)[-1]
        assert square_off.risk_event.trading_day == "2026-11-27"

        state = h.state()
        assert state.mis_entries_closed
        positions = {(p.strategy_code, p.symbol, p.product): p for p in h.client.positions()}
        assert positions[("S1", INFY, Product.PRODUCT_MIS)].net_qty == 0
        assert positions[("S2", TCS, Product.PRODUCT_MIS)].net_qty == 0
        assert positions[("S3", INFY, Product.PRODUCT_MIS)].net_qty == 0
        assert positions[("S1", INFY, Product.PRODUCT_NRML)].net_qty == 3
        # S1 bought 10 @ 1000 and was flattened @ 1010: +100.
        assert positions[("S1", INFY, Product.PRODUCT_MIS)].realized_pnl == 100.0

        flattening = [o for o in h.client.list_orders() if o.tag == SQUARE_OFF_TAG]
        summary = sorted(
            (o.strategy_code, o.symbol, o.side, o.qty, o.status, o.avg_price) for o in flattening
        )
        assert summary == [
            ("S1", INFY, Side.SIDE_SELL, 10, FILLED, 1010.0),
            ("S2", TCS, Side.SIDE_BUY, 5, FILLED, 500.0),
            ("S3", INFY, Side.SIDE_SELL, 1, FILLED, 1010.0),
        ]
        for order in flattening:
            assert order.order_type == OrderType.ORDER_TYPE_MARKET
            assert order.product == Product.PRODUCT_MIS

        for order in (mis_rest, mis_stop):
            cancelled = h.client.get_order(order.order_id)
            assert cancelled.status == CANCELLED
            assert cancelled.message == "cancelled at MIS square-off"
        assert h.client.get_order(nrml_rest.order_id).status == PLACED

        # New MIS entries are refused, on either side; NRML and CNC still trade.
        assert_rejected(
            h.mkt("BUY", 1, strategy="S1", product="MIS"),
            R.REJECT_REASON_MIS_SQUARE_OFF,
            MIS_CLOSED_MESSAGE,
        )
        assert_rejected(
            h.mkt("SELL", 1, strategy="S4", product="MIS"), R.REJECT_REASON_MIS_SQUARE_OFF
        )
        assert_accepted(h.mkt("BUY", 1, strategy="S1", product="NRML"))
        assert_accepted(h.mkt("BUY", 1, strategy="S1", product="CNC"))

        # The square-off orders are journaled like any other.
        h.restart()
        again = [o for o in h.client.list_orders() if o.tag == SQUARE_OFF_TAG]
        assert sorted(o.order_id for o in again) == sorted(o.order_id for o in flattening)
        assert {o.status for o in again} == {FILLED}
        assert h.state().mis_entries_closed
        assert_rejected(
            h.mkt("BUY", 1, strategy="S1", product="MIS"), R.REJECT_REASON_MIS_SQUARE_OFF
        )


def test_mis_reductions_stay_open_after_square_off(tmp_path: Path, clock: ManualClock) -> None:
    """Only MIS *entries* close at 15:20: an order that reduces an MIS position passes the
    rule. To see that, the square-off must not have flattened the position yet, which
    happens when the gateway restarts after 15:20 with no quote to flatten at."""
    h = Harness(tmp_path, clock)
    try:
        h.publish(INFY, 1000.0)
        assert_accepted(h.mkt("BUY", 10, strategy="S1", product="MIS"))
        clock.set(ist(2026, 11, 27, 15, 25))
        h.restart()  # quotes are not journaled: the new gateway has no INFY price
        h.tick()
        assert h.state().mis_entries_closed
        assert h.net_qty("S1") == 10  # no price to flatten at yet

        def verdict(side: str, qty: int) -> tuple[int, dict[str, bool]]:
            preview = h.client.preview(market(INFY, side, qty, strategy_code="S1", product="MIS"))
            return preview.reject_reason, {c.name: c.passed for c in preview.checks}

        reason, checks = verdict("SELL", 10)
        assert checks["mis_square_off"]
        assert not checks["market_data"]
        assert reason == R.REJECT_REASON_NO_MARKET_DATA
        assert verdict("SELL", 4)[1]["mis_square_off"]
        assert verdict("BUY", 1)[0] == R.REJECT_REASON_MIS_SQUARE_OFF
        assert verdict("SELL", 11)[0] == R.REJECT_REASON_MIS_SQUARE_OFF  # would go short
        assert_rejected(
            h.mkt("BUY", 1, strategy="S1", product="MIS"),
            R.REJECT_REASON_MIS_SQUARE_OFF,
            MIS_CLOSED_MESSAGE,
        )

        # Once there is a price, the next tick flattens the position.
        h.publish(INFY, 1005.0)
        h.tick()
        assert h.net_qty("S1") == 0
        flattening = [o for o in h.client.list_orders() if o.tag == SQUARE_OFF_TAG]
        assert [(o.side, o.qty, o.status, o.avg_price) for o in flattening] == [
            (Side.SIDE_SELL, 10, FILLED, 1005.0)
        ]
    finally:
        h.close()
