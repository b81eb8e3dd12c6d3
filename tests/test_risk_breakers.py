"""Circuit breakers and the kill switch, end to end through the real client.

Slippage is 0 (see risk_helpers), so a MARKET order fills at the LTP and every PnL
below is (LTP - entry) x qty, worked out by hand in the comments. Each breaker is
driven to its edge: the last order that passes, then the first that is rejected.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from execgw.client import (
    AsyncExecutionClient,
    ExecutionResult,
    FailedPrecondition,
    RejectReason,
    RiskEventKind,
    TradingState,
    limit,
    market,
)
from execgw.server.clock import ManualClock

if TYPE_CHECKING:
    from tests.risk_helpers import (
        CANCELLED,
        FILLED,
        INFY,
        PLACED,
        REJECTED,
        TCS,
        TIMEOUT_S,
        Harness,
        assert_accepted,
        assert_rejected,
        breaker,
        strategy_state,
        tripped,
    )
else:
    from risk_helpers import (
        CANCELLED,
        FILLED,
        INFY,
        PLACED,
        REJECTED,
        TCS,
        TIMEOUT_S,
        Harness,
        assert_accepted,
        assert_rejected,
        breaker,
        strategy_state,
        tripped,
    )

ACTIVE = TradingState.TRADING_STATE_ACTIVE
REDUCING = TradingState.TRADING_STATE_REDUCING
HALTED = TradingState.TRADING_STATE_HALTED
R = RejectReason


def _loss_limit(limit_rupees: float, trip_to: str = "REDUCING") -> dict[str, Any]:
    return {
        "execution": {
            "circuit_breakers": {
                "max_daily_loss_rupees": limit_rupees,
                "trip_to": {"max_daily_loss_rupees": trip_to},
            }
        }
    }


# -- max_daily_loss_rupees ----------------------------------------------------------


@pytest.mark.parametrize("trip_to", ["REDUCING", "HALTED"])
def test_daily_loss_trips_on_a_quote_at_the_limit(
    tmp_path: Path, clock: ManualClock, trip_to: str
) -> None:
    with Harness(tmp_path, clock, **_loss_limit(500.0, trip_to)) as h:
        h.publish(INFY, 1000.0)
        h.publish(TCS, 500.0)
        assert_accepted(h.mkt("BUY", 10, strategy="S1"))  # long 10 @ 1000.00
        # 10 x (950.05 - 1000) = -499.50: one tick short of the limit.
        h.publish(INFY, 950.05)
        before = h.state()
        assert before.state == ACTIVE
        loss = breaker(before, "max_daily_loss_rupees")
        assert (loss.tripped, loss.value, loss.limit) == (False, 499.5, 500.0)
        assert before.unrealized_pnl == -499.5
        # The last order that passes: another strategy adding exposure (TCS stays flat).
        assert_accepted(h.mkt("BUY", 1, symbol=TCS, strategy="S2"))

        with h.stream(include_risk_events=True) as events:
            clock.advance(timedelta(seconds=3))
            # 10 x (950.00 - 1000) = -500.00: the quote itself trips the breaker.
            h.publish(INFY, 950.0)
            tripped_event = events.next().risk_event
        assert tripped_event.kind == RiskEventKind.RISK_EVENT_KIND_BREAKER_TRIPPED
        assert tripped_event.breaker == "max_daily_loss_rupees"
        assert tripped_event.strategy_code == ""
        assert tripped_event.reason == R.REJECT_REASON_MAX_DAILY_LOSS
        assert tripped_event.state == TradingState.Value(f"TRADING_STATE_{trip_to}")
        assert tripped_event.message == "max_daily_loss_rupees 500.0 reached: day loss 500.00"

        after = h.state()
        assert after.state == TradingState.Value(f"TRADING_STATE_{trip_to}")
        loss = breaker(after, "max_daily_loss_rupees")
        assert loss.tripped
        assert loss.value == 500.0
        assert loss.tripped_at.ToDatetime().replace(tzinfo=clock.now().tzinfo) == clock.now()
        assert loss.message == "max_daily_loss_rupees 500.0 reached: day loss 500.00"
        assert tripped(after) == {("max_daily_loss_rupees", "")}

        # The first order rejected: any new exposure, in any strategy.
        assert_rejected(
            h.mkt("BUY", 1, symbol=TCS, strategy="S2"),
            R.REJECT_REASON_MAX_DAILY_LOSS,
            "max_daily_loss_rupees 500.0",
            "day loss 500.00",
        )
        assert_rejected(h.mkt("BUY", 1, strategy="S1"), R.REJECT_REASON_MAX_DAILY_LOSS)
        # Selling more than the position would flip it short: never "reducing".
        assert_rejected(h.mkt("SELL", 11, strategy="S1"), R.REJECT_REASON_MAX_DAILY_LOSS)

        closing = h.mkt("SELL", 10, strategy="S1")
        if trip_to == "REDUCING":
            assert_accepted(closing)
            assert closing.avg_price == 950.0
            assert h.net_qty("S1") == 0
            assert h.state().realized_pnl == -500.0
        else:
            assert_rejected(closing, R.REJECT_REASON_MAX_DAILY_LOSS, "HALTED")
            assert h.net_qty("S1") == 10
        assert h.state().trades_today == (3 if trip_to == "REDUCING" else 2)


def test_loss_breaker_latches_until_resume(tmp_path: Path, clock: ManualClock) -> None:
    with Harness(tmp_path, clock, **_loss_limit(500.0)) as h:
        h.publish(INFY, 1000.0)
        assert_accepted(h.mkt("BUY", 10))
        h.publish(INFY, 950.0)  # loss 500.00: tripped
        first_trip = breaker(h.state(), "max_daily_loss_rupees").tripped_at.ToDatetime()

        # Resuming while the loss still stands re-trips at once and says so.
        clock.advance(timedelta(seconds=5))
        resumed = h.client.resume("try again", actor="ops")
        assert list(resumed.still_tripped) == ["max_daily_loss_rupees"]
        assert resumed.state == REDUCING
        retrip = breaker(h.state(), "max_daily_loss_rupees")
        assert retrip.tripped
        assert retrip.tripped_at.ToDatetime() == first_trip + timedelta(seconds=5)

        # The price recovers completely: the loss is gone but the breaker stays latched.
        h.publish(INFY, 1000.0)
        state = h.state()
        assert breaker(state, "max_daily_loss_rupees").value == 0.0
        assert breaker(state, "max_daily_loss_rupees").tripped
        assert state.state == REDUCING
        assert_rejected(h.mkt("BUY", 1), R.REJECT_REASON_MAX_DAILY_LOSS)

        resumed = h.client.resume("loss recovered", actor="ops")
        assert list(resumed.still_tripped) == []
        assert resumed.state == ACTIVE
        assert h.state().state == ACTIVE
        assert tripped(h.state()) == set()
        assert_accepted(h.mkt("BUY", 1))


# -- max_daily_drawdown_pct -----------------------------------------------------------


def test_drawdown_is_measured_from_the_days_peak_equity(tmp_path: Path, clock: ManualClock) -> None:
    overrides = {
        "execution": {
            "capital_rupees": 100_000.0,
            "circuit_breakers": {
                "max_daily_drawdown_pct": 0.01,
                "max_daily_loss_rupees": 50_000.0,
            },
        }
    }
    with Harness(tmp_path, clock, **overrides) as h:
        h.publish(INFY, 1000.0)
        h.publish(TCS, 500.0)
        assert_accepted(h.mkt("BUY", 10))
        h.publish(INFY, 1100.0)  # equity 100000 + 1000 = 101000: the day's peak
        assert h.state().peak_equity == 101_000.0
        # Equity 100000 - 9.50 = 99990.50; (101000 - 99990.50) / 101000 = 0.009995...
        # (from capital alone the drawdown would be a mere 0.000095).
        h.publish(INFY, 999.05)
        state = h.state()
        assert state.equity == 99_990.5
        assert state.peak_equity == 101_000.0
        assert state.drawdown_pct == pytest.approx(1009.5 / 101_000, abs=1e-12)
        dd = breaker(state, "max_daily_drawdown_pct")
        assert not dd.tripped
        assert dd.limit == 0.01
        assert_accepted(h.mkt("BUY", 1, symbol=TCS, strategy="S2"))  # last one through

        h.publish(INFY, 999.0)  # (101000 - 99990) / 101000 = 0.0100 exactly
        state = h.state()
        assert state.state == REDUCING
        dd = breaker(state, "max_daily_drawdown_pct")
        assert dd.tripped
        assert dd.message == "max_daily_drawdown_pct 0.01 reached: drawdown 0.0100"
        assert not breaker(state, "max_daily_loss_rupees").tripped  # the day is still up
        assert_rejected(
            h.mkt("BUY", 1, symbol=TCS, strategy="S2"),
            R.REJECT_REASON_MAX_DAILY_DRAWDOWN,
            "max_daily_drawdown_pct 0.01",
            "drawdown 0.0100",
        )


# -- trade counters --------------------------------------------------------------------


def test_max_trades_per_day_counts_accepted_orders_only(tmp_path: Path, clock: ManualClock) -> None:
    overrides = {"execution": {"circuit_breakers": {"max_trades_per_day": 3}}}
    with Harness(tmp_path, clock, **overrides) as h:
        # Rejected orders are not trades: no quote for TCS yet.
        assert_rejected(h.mkt("BUY", 1, symbol=TCS), R.REJECT_REASON_NO_MARKET_DATA)
        assert h.state().trades_today == 0
        h.publish(INFY, 1000.0)
        assert_accepted(h.mkt("BUY", 2, strategy="S1"))
        assert_accepted(h.mkt("BUY", 1, strategy="S2"))
        assert breaker(h.state(), "max_trades_per_day").value == 2
        assert not breaker(h.state(), "max_trades_per_day").tripped
        assert_accepted(h.mkt("BUY", 1, strategy="S1"))  # the 3rd: last that passes

        state = h.state()
        assert state.trades_today == 3
        trades = breaker(state, "max_trades_per_day")
        assert (trades.tripped, trades.value, trades.limit) == (True, 3.0, 3.0)
        assert trades.trips_to == REDUCING
        assert trades.message == "max_trades_per_day 3 reached"
        assert state.state == REDUCING

        assert_rejected(
            h.mkt("BUY", 1, strategy="S2"),
            R.REJECT_REASON_MAX_TRADES_PER_DAY,
            "max_trades_per_day 3 reached",
        )
        assert_rejected(h.mkt("BUY", 1, strategy="S3"), R.REJECT_REASON_MAX_TRADES_PER_DAY)
        assert h.state().trades_today == 3  # rejections are not counted
        # REDUCING (the default trip_to): closing S1's long 3 still passes.
        assert_accepted(h.mkt("SELL", 3, strategy="S1"))
        assert h.net_qty("S1") == 0


def test_max_trades_per_strategy_is_scoped_to_the_strategy(
    tmp_path: Path, clock: ManualClock
) -> None:
    overrides = {"execution": {"circuit_breakers": {"max_trades_per_strategy_per_day": 3}}}
    with Harness(tmp_path, clock, **overrides) as h:
        h.publish(INFY, 1000.0)
        for _ in range(3):
            assert_accepted(h.mkt("BUY", 1, strategy="S1"))
        assert_accepted(h.mkt("BUY", 1, strategy="S2"))

        state = h.state()
        s1 = breaker(state, "max_trades_per_strategy_per_day", "S1")
        s2 = breaker(state, "max_trades_per_strategy_per_day", "S2")
        assert (s1.tripped, s1.value, s1.limit) == (True, 3.0, 3.0)
        assert s1.message == "max_trades_per_strategy_per_day 3 reached for strategy S1"
        assert (s2.tripped, s2.value) == (False, 1.0)
        assert state.state == ACTIVE  # the account is not restricted
        assert strategy_state(state, "S1").state == REDUCING
        assert strategy_state(state, "S1").trades_today == 3
        assert strategy_state(state, "S2").state == ACTIVE

        assert_rejected(
            h.mkt("BUY", 1, strategy="S1"),
            R.REJECT_REASON_MAX_TRADES_PER_STRATEGY_PER_DAY,
            "max_trades_per_strategy_per_day 3 reached for strategy S1",
        )
        # Other strategies keep trading, up to their own limit.
        assert_accepted(h.mkt("BUY", 1, strategy="S2"))
        assert_accepted(h.mkt("BUY", 1, strategy="S2"))
        assert_rejected(
            h.mkt("BUY", 1, strategy="S2"),
            R.REJECT_REASON_MAX_TRADES_PER_STRATEGY_PER_DAY,
            "for strategy S2",
        )
        assert_accepted(h.mkt("BUY", 1, strategy="S3"))
        assert h.state().trades_today == 7


# -- max_loss_streak -----------------------------------------------------------------


def test_loss_streak_halts_only_that_strategy_and_a_win_resets_it(
    tmp_path: Path, clock: ManualClock
) -> None:
    overrides = {"execution": {"circuit_breakers": {"max_loss_streak": 3}}}
    with Harness(tmp_path, clock, **overrides) as h:

        def round_trip(strategy: str, entry: float, exit_: float) -> None:
            h.publish(INFY, entry)
            assert_accepted(h.mkt("BUY", 1, strategy=strategy))
            h.publish(INFY, exit_)
            assert_accepted(h.mkt("SELL", 1, strategy=strategy))

        def streak(strategy: str) -> int:
            return int(strategy_state(h.state(), strategy).loss_streak)

        round_trip("S1", 1000.0, 999.0)
        round_trip("S1", 1000.0, 999.0)
        assert streak("S1") == 2
        round_trip("S2", 1000.0, 990.0)  # another strategy's loss does not count for S1
        assert (streak("S1"), streak("S2")) == (2, 1)
        round_trip("S1", 1000.0, 1000.5)  # a winning round trip resets the count
        assert streak("S1") == 0
        round_trip("S1", 1000.0, 999.0)
        round_trip("S1", 1000.0, 999.0)
        assert streak("S1") == 2
        assert not breaker(h.state(), "max_loss_streak", "S1").tripped

        h.publish(INFY, 1000.0)
        assert_accepted(h.mkt("BUY", 1, strategy="S1"))  # the last S1 order that passes
        h.publish(INFY, 999.0)
        assert_accepted(h.mkt("SELL", 1, strategy="S1"))  # third consecutive loss

        state = h.state()
        s1_streak = breaker(state, "max_loss_streak", "S1")
        assert (s1_streak.tripped, s1_streak.value, s1_streak.limit) == (True, 3.0, 3.0)
        assert s1_streak.trips_to == HALTED
        assert s1_streak.message == "max_loss_streak 3 reached for strategy S1"
        assert strategy_state(state, "S1").state == HALTED
        assert strategy_state(state, "S2").state == ACTIVE
        assert state.state == ACTIVE

        assert_rejected(
            h.mkt("BUY", 1, strategy="S1"),
            R.REJECT_REASON_MAX_LOSS_STREAK,
            "max_loss_streak 3 reached for strategy S1",
        )
        assert_accepted(h.mkt("BUY", 1, strategy="S2"))
        # A strategy resume clears the trip and the streak.
        resumed = h.client.resume("reviewed", actor="risk", strategy_code="S1")
        assert resumed.state == ACTIVE
        assert list(resumed.still_tripped) == []
        assert streak("S1") == 0
        assert_accepted(h.mkt("BUY", 1, strategy="S1"))


# -- REDUCING vs HALTED ----------------------------------------------------------------


def test_reducing_trip_cancels_resting_exposure_and_passes_only_reductions(
    tmp_path: Path, clock: ManualClock
) -> None:
    with Harness(tmp_path, clock, **_loss_limit(500.0)) as h:
        h.publish(INFY, 1000.0)
        h.publish(TCS, 500.0)
        assert_accepted(h.mkt("BUY", 10, strategy="S1"))
        add_s1 = h.lmt("BUY", 5, 900.0, strategy="S1")
        reduce_s1 = h.lmt("SELL", 5, 1100.0, strategy="S1")
        add_s2 = h.lmt("BUY", 1, 450.0, symbol=TCS, strategy="S2")
        for order in (add_s1, reduce_s1, add_s2):
            assert_accepted(order, PLACED)

        h.publish(INFY, 950.0)  # loss 500.00 -> REDUCING

        add_s1_now = h.client.get_order(add_s1.order_id)
        assert add_s1_now.status == CANCELLED
        assert "max_daily_loss_rupees 500.0 reached" in add_s1_now.message
        assert h.client.get_order(add_s2.order_id).status == CANCELLED
        assert h.client.get_order(reduce_s1.order_id).status == PLACED

        reason = R.REJECT_REASON_MAX_DAILY_LOSS
        assert_rejected(h.mkt("BUY", 1, strategy="S1"), reason, "REDUCING")
        assert_rejected(h.mkt("SELL", 11, strategy="S1"), reason)  # would flip short
        assert_rejected(h.mkt("SELL", 10, strategy="S1", product="MIS"), reason)  # no MIS pos
        assert_rejected(h.mkt("SELL", 1, strategy="S2"), reason)  # S2 holds no INFY
        assert_rejected(h.lmt("BUY", 1, 950.0, symbol=TCS, strategy="S2"), reason)

        # Cancels still work while REDUCING.
        assert h.client.cancel(reduce_s1.order_id).status == CANCELLED
        closing = h.mkt("SELL", 10, strategy="S1")
        assert_accepted(closing)
        assert closing.avg_price == 950.0
        assert h.net_qty("S1") == 0
        # Flat now, so the same sell would open a short: refused.
        assert_rejected(h.mkt("SELL", 10, strategy="S1"), reason)


def test_reducing_never_lets_resting_orders_flip_the_position(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Two resting sells, each "reducing" a long 10 on its own, together open a short 10.

    Whether the gateway rejects the second order or cancels it once the first fills,
    REDUCING must never end with a position the account did not have.
    """
    with Harness(tmp_path, clock, **_loss_limit(500.0)) as h:
        h.publish(INFY, 1000.0)
        assert_accepted(h.mkt("BUY", 10, strategy="S1"))
        h.publish(INFY, 950.0)  # REDUCING
        assert h.state().state == REDUCING
        assert_accepted(h.lmt("SELL", 10, 960.0, strategy="S1"), PLACED)
        h.lmt("SELL", 10, 970.0, strategy="S1")
        h.publish(INFY, 960.0, 970.0)
        assert h.net_qty("S1") == 0, "a REDUCING account was allowed to open a short position"


@pytest.mark.parametrize("trip_to", ["REDUCING", "HALTED"])
def test_trip_to_decides_whether_the_trade_limit_allows_reductions(
    tmp_path: Path, clock: ManualClock, trip_to: str
) -> None:
    overrides = {
        "execution": {
            "circuit_breakers": {
                "max_trades_per_day": 3,
                "trip_to": {"max_trades_per_day": trip_to},
            }
        }
    }
    with Harness(tmp_path, clock, **overrides) as h:
        h.publish(INFY, 1000.0)
        assert_accepted(h.mkt("BUY", 5))
        resting = h.lmt("SELL", 1, 1050.0, strategy="S2")  # S2 flat: adds exposure
        assert_accepted(resting, PLACED)
        assert_accepted(h.mkt("BUY", 1, strategy="S3"))  # the 3rd trade trips the breaker
        # A trade-count limit stops new orders only: S2's resting sell was an accepted
        # trade and stands (loss breakers are the ones that cancel resting exposure).
        assert h.client.get_order(resting.order_id).status == PLACED
        result = h.mkt("SELL", 5)
        if trip_to == "REDUCING":
            assert_accepted(result)
            assert h.state().state == REDUCING
        else:
            assert_rejected(result, R.REJECT_REASON_MAX_TRADES_PER_DAY, "HALTED")
            assert h.state().state == HALTED
        # Cancels still work in every state, and a second cancel is refused for its own
        # reason, not the breaker's.
        assert h.client.cancel(resting.order_id).status == CANCELLED
        with pytest.raises(FailedPrecondition, match="CANCELLED"):
            h.client.cancel(resting.order_id)


# -- kill switch -------------------------------------------------------------------------


def test_kill_switch_cancels_everything_and_records_who_and_why(
    tmp_path: Path, clock: ManualClock
) -> None:
    with Harness(tmp_path, clock) as h:
        h.publish(INFY, 1000.0)
        h.publish(TCS, 500.0)
        assert_accepted(h.mkt("BUY", 10, strategy="S1"))  # filled: nothing to cancel
        rest_1 = h.lmt("BUY", 2, 990.0, strategy="S1")
        rest_2 = h.lmt("SELL", 1, 510.0, symbol=TCS, strategy="S2")
        assert_accepted(rest_1, PLACED)
        assert_accepted(rest_2, PLACED)

        with h.stream(include_risk_events=True) as events:
            clock.advance(timedelta(seconds=1))
            halted = h.client.halt("fat finger storm", actor="alice")
            event = events.risk_events(RiskEventKind.RISK_EVENT_KIND_HALTED)[-1]
            assert halted.state == HALTED
            assert halted.cancelled_orders == 2
            for order_id in (rest_1.order_id, rest_2.order_id):
                cancelled = h.client.get_order(order_id)
                assert cancelled.status == CANCELLED
                assert cancelled.message == "cancelled by halt: fat finger storm"
            assert h.client.list_orders(status="PLACED") == []

            halt_event = event.risk_event
            assert halt_event.breaker == "kill_switch"
            assert halt_event.actor == "alice"
            assert halt_event.message == "fat finger storm"
            assert halt_event.state == HALTED
            assert halt_event.reason == R.REJECT_REASON_HALTED
            assert halt_event.strategy_code == ""
            assert halt_event.trading_day == "2026-11-27"

            state = h.state()
            assert state.state == HALTED
            switch = breaker(state, "kill_switch")
            assert switch.tripped
            assert switch.trips_to == HALTED
            assert switch.message == "halted by alice: fat finger storm"
            assert switch.tripped_at.ToDatetime().replace(tzinfo=clock.now().tzinfo) == (
                clock.now()
            )

            # Nothing new passes, not even a reduction.
            for result in (
                h.mkt("BUY", 1, strategy="S1"),
                h.mkt("SELL", 10, strategy="S1"),
                h.mkt("BUY", 1, symbol=TCS, strategy="S9"),
            ):
                assert_rejected(result, R.REJECT_REASON_HALTED, "halted by alice: fat finger storm")
            preview = h.client.preview(market(INFY, "SELL", 10, strategy_code="S1", product="NRML"))
            assert not preview.accepted
            assert preview.reject_reason == R.REJECT_REASON_HALTED

            resumed = h.client.resume("storm over", actor="bob")
            event = events.risk_events(RiskEventKind.RISK_EVENT_KIND_RESUMED)[-1]
        assert resumed.state == ACTIVE
        assert list(resumed.still_tripped) == []
        assert event.risk_event.actor == "bob"
        assert event.risk_event.message == "storm over"
        assert event.risk_event.state == ACTIVE
        assert h.state().state == ACTIVE
        assert [b for b in h.state().breakers if b.name == "kill_switch"] == []
        assert_accepted(h.mkt("BUY", 1, strategy="S1"))


def test_strategy_halt_leaves_other_strategies_trading(tmp_path: Path, clock: ManualClock) -> None:
    with Harness(tmp_path, clock) as h:
        h.publish(INFY, 1000.0)
        s1_rest = h.lmt("BUY", 1, 990.0, strategy="S1")
        s2_rest = h.lmt("BUY", 1, 990.0, strategy="S2")

        halted = h.client.halt("misbehaving", strategy_code="S1")  # no actor: the peer
        assert halted.state == HALTED
        assert halted.cancelled_orders == 1
        assert h.client.get_order(s1_rest.order_id).status == CANCELLED
        assert h.client.get_order(s2_rest.order_id).status == PLACED

        state = h.state()
        assert state.state == ACTIVE
        assert strategy_state(state, "S1").state == HALTED
        switch = breaker(state, "kill_switch", "S1")
        assert switch.tripped
        assert switch.message.startswith("halted by ")
        assert "127.0.0.1" in switch.message
        assert switch.message.endswith(": misbehaving")

        assert_rejected(
            h.mkt("BUY", 1, strategy="S1"), R.REJECT_REASON_STRATEGY_HALTED, "misbehaving"
        )
        assert_accepted(h.mkt("BUY", 1, strategy="S2"))

        # Resuming the account scope does not release a strategy's own halt...
        assert h.client.resume("account only").state == ACTIVE
        assert_rejected(h.mkt("BUY", 1, strategy="S1"), R.REJECT_REASON_STRATEGY_HALTED)
        # ...resuming the strategy does.
        assert h.client.resume("fixed", strategy_code="S1").state == ACTIVE
        assert strategy_state(h.state(), "S1").state == ACTIVE
        assert_accepted(h.mkt("BUY", 1, strategy="S1"))


# -- GetRiskState --------------------------------------------------------------------------


def test_risk_state_reports_every_counter_next_to_its_limit(
    tmp_path: Path, clock: ManualClock
) -> None:
    overrides = {
        "execution": {
            "capital_rupees": 100_000.0,
            "circuit_breakers": {
                "max_daily_loss_rupees": 2000.0,
                "max_daily_drawdown_pct": 0.05,
                "max_trades_per_day": 20,
                "max_trades_per_strategy_per_day": 10,
                "max_loss_streak": 4,
            },
        }
    }
    with Harness(tmp_path, clock, **overrides) as h:
        h.publish(INFY, 1000.0)
        assert_accepted(h.mkt("BUY", 10, strategy="S1"))
        h.publish(INFY, 1010.0)  # equity 100100: the peak
        assert_accepted(h.mkt("SELL", 10, strategy="S1"))  # realized +100
        h.publish(TCS, 500.0)
        assert_accepted(h.mkt("BUY", 5, symbol=TCS, strategy="S2"))
        h.publish(TCS, 490.0)  # unrealized -50

        state = h.state()
        assert state.trading_day == "2026-11-27"
        assert state.state == ACTIVE
        assert (state.realized_pnl, state.unrealized_pnl) == (100.0, -50.0)
        assert (state.equity, state.peak_equity) == (100_050.0, 100_100.0)
        assert state.drawdown_pct == pytest.approx(50 / 100_100, abs=1e-12)
        assert state.trades_today == 3
        assert not state.mis_entries_closed

        rows = {
            (b.name, b.strategy_code): (b.value, b.limit, b.trips_to, b.tripped)
            for b in state.breakers
        }
        assert rows == {
            ("max_daily_loss_rupees", ""): (-50.0, 2000.0, REDUCING, False),
            ("max_daily_drawdown_pct", ""): (pytest.approx(50 / 100_100), 0.05, REDUCING, False),
            ("max_trades_per_day", ""): (3.0, 20.0, REDUCING, False),
            ("max_trades_per_strategy_per_day", "S1"): (2.0, 10.0, REDUCING, False),
            ("max_trades_per_strategy_per_day", "S2"): (1.0, 10.0, REDUCING, False),
            ("max_loss_streak", "S1"): (0.0, 4.0, HALTED, False),
            ("max_loss_streak", "S2"): (0.0, 4.0, HALTED, False),
        }
        for b in state.breakers:
            assert not b.HasField("tripped_at")
            assert b.message == ""

        strategies = {
            s.strategy_code: (s.state, s.trades_today, s.loss_streak, s.realized_pnl)
            for s in state.strategies
        }
        assert strategies == {"S1": (ACTIVE, 2, 0, 100.0), "S2": (ACTIVE, 1, 0, 0.0)}
        only_s2 = h.state("S2")
        assert [s.strategy_code for s in only_s2.strategies] == ["S2"]


# -- concurrency -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("breaker_name", "reason"),
    [
        ("max_trades_per_day", R.REJECT_REASON_MAX_TRADES_PER_DAY),
        ("max_trades_per_strategy_per_day", R.REJECT_REASON_MAX_TRADES_PER_STRATEGY_PER_DAY),
    ],
)
async def test_fifty_concurrent_orders_for_the_last_trade_slot(
    tmp_path: Path, clock: ManualClock, breaker_name: str, reason: int
) -> None:
    overrides = {"execution": {"circuit_breakers": {breaker_name: 5}}}
    with Harness(tmp_path, clock, **overrides) as h:
        h.publish(INFY, 1000.0)
        for _ in range(4):
            assert_accepted(h.mkt("BUY", 1))
        async with AsyncExecutionClient(h.running.target, timeout=TIMEOUT_S) as client:
            results = await asyncio.gather(
                *(
                    client.submit(market(INFY, "BUY", 1, strategy_code="S1", product="NRML"))
                    for _ in range(50)
                )
            )
        accepted = [r for r in results if r.status == FILLED]
        rejected = [r for r in results if r.status == REJECTED]
        assert len(accepted) == 1
        assert len(rejected) == 49
        assert {r.reject_reason for r in rejected} == {reason}
        assert all(f"{breaker_name} 5 reached" in r.message for r in rejected)
        state = h.state()
        assert state.trades_today == 5
        assert strategy_state(state, "S1").trades_today == 5
        assert len(h.client.list_orders(status="FILLED")) == 5
        assert h.net_qty("S1") == 5


def test_no_order_is_accepted_after_the_halt_is_acknowledged(
    tmp_path: Path, clock: ManualClock
) -> None:
    workers = 8
    with Harness(tmp_path, clock) as h:
        h.publish(INFY, 1000.0)
        warmed_up = threading.Event()
        halt_acknowledged = threading.Event()
        lock = threading.Lock()
        before: list[ExecutionResult] = []  # submitted before halt() returned
        after: list[ExecutionResult] = []  # submitted after halt() returned

        def worker(n: int) -> None:
            post_halt = 0
            while post_halt < 5:
                acknowledged = halt_acknowledged.is_set()
                result = h.client.submit(
                    limit(INFY, "BUY", 1, 990.0, strategy_code=f"S{n}", product="NRML")
                )
                with lock:
                    (after if acknowledged else before).append(result)
                    if len(before) >= 40:
                        warmed_up.set()
                if acknowledged:
                    post_halt += 1

        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(worker, n) for n in range(workers)]
            assert warmed_up.wait(TIMEOUT_S)
            halted = h.client.halt("burst", actor="ops")
            halt_acknowledged.set()
            for future in futures:
                future.result(timeout=TIMEOUT_S)

        assert len(after) == 5 * workers
        for result in after:
            assert_rejected(result, R.REJECT_REASON_HALTED)
        accepted = [r for r in before + after if r.status == PLACED]
        halted_rejections = [r for r in before + after if r.status == REJECTED]
        assert len(accepted) >= 40 - workers
        assert halted.cancelled_orders == len(accepted)
        # The single writer's order: every accepted order got its id before the halt,
        # every refused one after it.
        assert max(r.order_id for r in accepted) < min(r.order_id for r in halted_rejections)
        book = h.client.list_orders()
        assert len(book) == len(before) + len(after)
        assert {o.status for o in book} == {CANCELLED, REJECTED}
        for order in book:
            if order.status == CANCELLED:
                assert order.message == "cancelled by halt: burst"
            else:
                assert order.reject_reason == R.REJECT_REASON_HALTED


# -- restart ----------------------------------------------------------------------------------


@pytest.mark.parametrize("snapshot_every", [1, 10_000])
def test_tripped_breakers_and_counters_survive_a_restart(
    tmp_path: Path, clock: ManualClock, snapshot_every: int
) -> None:
    overrides = {
        "journal": {"snapshot_every": snapshot_every},
        "execution": {"circuit_breakers": {"max_trades_per_day": 4, "max_loss_streak": 1}},
    }
    h = Harness(tmp_path, clock, **overrides)
    try:
        h.publish(INFY, 1000.0)
        assert_accepted(h.mkt("BUY", 1, strategy="S1"))
        h.publish(INFY, 990.0)
        assert_accepted(h.mkt("SELL", 1, strategy="S1"))  # a loss: S1 streak 1 -> HALTED
        assert_accepted(h.mkt("BUY", 1, strategy="S2"))
        h.client.halt("manual", actor="carol", strategy_code="S2")
        clock.advance(timedelta(minutes=1))
        assert_accepted(h.mkt("BUY", 1, strategy="S3"))  # 4th trade: account REDUCING
        before = h.state()
        expected = {
            ("max_loss_streak", "S1"),
            ("kill_switch", "S2"),
            ("max_trades_per_day", ""),
        }
        assert tripped(before) == expected

        clock.advance(timedelta(minutes=5))
        h.restart()

        after = h.state()
        assert tripped(after) == expected
        assert after.trading_day == before.trading_day
        assert after.state == REDUCING
        assert after.trades_today == 4
        assert after.realized_pnl == -10.0
        for name, code in expected:
            b_before, b_after = breaker(before, name, code), breaker(after, name, code)
            assert b_after.message == b_before.message
            assert b_after.tripped_at == b_before.tripped_at
        assert strategy_state(after, "S1").loss_streak == 1
        assert strategy_state(after, "S1").state == HALTED
        assert strategy_state(after, "S2").state == HALTED

        assert_rejected(h.mkt("BUY", 1, strategy="S1"), R.REJECT_REASON_MAX_LOSS_STREAK)
        assert_rejected(h.mkt("BUY", 1, strategy="S2"), R.REJECT_REASON_STRATEGY_HALTED)
        assert_rejected(
            h.mkt("BUY", 1, strategy="S3"),
            R.REJECT_REASON_MAX_TRADES_PER_DAY,
            "max_trades_per_day 4 reached",
        )
        h.publish(INFY, 995.0)
        assert_accepted(h.mkt("SELL", 1, strategy="S3"))  # REDUCING: a reduction passes
        assert h.state().trades_today == 5
    finally:
        h.close()


def test_drawdown_peak_survives_a_restart(tmp_path: Path, clock: ManualClock) -> None:
    """The day's peak equity is breaker state: a restart must not lower it."""
    overrides = {
        "execution": {
            "capital_rupees": 100_000.0,
            "circuit_breakers": {"max_daily_drawdown_pct": 0.01},
        }
    }
    h = Harness(tmp_path, clock, **overrides)
    try:
        h.publish(INFY, 1000.0)
        assert_accepted(h.mkt("BUY", 10))
        h.publish(INFY, 1100.0)  # peak equity 101000
        assert h.state().peak_equity == 101_000.0
        h.restart()
        h.publish(INFY, 1000.0)  # equity 100000: 0.0099 below the peak
        assert h.state().peak_equity == 101_000.0, "the day's peak equity was lost on restart"
        h.publish(INFY, 999.0)  # 0.0100 below the peak
        assert breaker(h.state(), "max_daily_drawdown_pct").tripped
    finally:
        h.close()
