"""The drawdown breaker measures from *today's* peak equity, in a gateway that runs
through the rollover: yesterday's peak must not carry into the new day."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from execgw.client import TradingState
from execgw.server.clock import ManualClock

if TYPE_CHECKING:
    from tests.risk_helpers import INFY, Harness, assert_accepted, ist, tripped
else:
    from risk_helpers import INFY, Harness, assert_accepted, ist, tripped


def test_yesterdays_peak_does_not_become_todays(tmp_path: Path, clock: ManualClock) -> None:
    # 0.15%: yesterday's 2000 gain over capital would be a 0.2% "drawdown" today.
    overrides = {"execution": {"circuit_breakers": {"max_daily_drawdown_pct": 0.0015}}}
    with Harness(tmp_path, clock, **overrides) as h:
        h.publish(INFY, 100.0)
        assert_accepted(h.mkt("BUY", 100, product="CNC"))
        h.publish(INFY, 120.0)  # up 2000: the day's peak is 1,002,000
        assert h.state().peak_equity == 1_002_000.0

        clock.set(ist(2026, 11, 28, 9, 15))
        h.tick()
        h.publish(INFY, 120.0)  # the next day, no move
        state = h.state()
        assert (state.day_pnl, state.equity) == (0.0, 1_000_000.0)
        assert state.peak_equity == 1_000_000.0, "yesterday's peak carried into today"
        assert state.drawdown_pct == 0.0
        assert tripped(state) == set()
        assert state.state == TradingState.TRADING_STATE_ACTIVE
