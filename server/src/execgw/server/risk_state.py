"""The journaled part of risk state: a fold over events.

The trading day, trade counters, realized PnL, loss streaks and tripped breakers. It is
rebuilt from the journal (and the snapshot) on every start, so it must depend on
nothing but the events: no config, no clock, no prices.

A breaker latches: once tripped it stays tripped until the day rolls over or an
operator resumes its scope. A trade is an order the gateway accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from execgw.server.breakers import ACCOUNT, Breaker
from execgw.server.domain import RejectReason, TradingState
from execgw.server.events import (
    BaselineMarked,
    BreakerTripped,
    DayRolledOver,
    EquityPeak,
    Event,
    MisSquareOffStarted,
    OrderAccepted,
    OrderFilled,
    OrderSubmitted,
    TradingHalted,
    TradingResumed,
)
from execgw.server.ledger import FillOutcome

ZERO = Decimal(0)
# Marks a RiskBook field that is bookkeeping, not state: snapshots leave it out.
NOT_STATE = "not_state"


@dataclass(slots=True)
class Trip:
    breaker: Breaker
    strategy_code: str
    state: TradingState
    reason: RejectReason
    message: str
    at: datetime


@dataclass(slots=True)
class RiskBook:
    """The journaled part of risk state."""

    day: date | None = None
    trades_total: int = 0
    trades_by_strategy: dict[str, int] = field(default_factory=dict)
    realized_total: Decimal = ZERO
    realized_by_strategy: dict[str, Decimal] = field(default_factory=dict)
    loss_streak: dict[str, int] = field(default_factory=dict)
    trips: dict[tuple[Breaker, str], Trip] = field(default_factory=dict)
    squared_off_day: date | None = None
    # The journaled day's peak equity (EquityPeak events); may trail the live peak
    # by less than RiskEngine's peak step.
    peak_equity: Decimal | None = None
    baseline_unrealized: Decimal = ZERO
    # Carried positions still waiting for their first quote of the day.
    unmarked: set[tuple[str, str, str]] = field(default_factory=set)
    # Not journaled state: the strategies whose per-strategy counters (trades, loss
    # streak) changed since the risk engine last compared them with their limits, so it
    # compares those only, not every strategy of the day on every change.
    touched: set[str] = field(
        default_factory=set, init=False, repr=False, compare=False, metadata={NOT_STATE: True}
    )

    def apply(self, event: Event, outcome: FillOutcome | None) -> None:
        match event:
            case DayRolledOver(trading_day=day, baseline_unrealized=baseline, unmarked=unmarked):
                self.day = day
                self.trades_total = 0
                self.touched.update(self.trades_by_strategy)
                self.touched.update(self.loss_streak)
                self.trades_by_strategy.clear()
                self.realized_total = ZERO
                self.realized_by_strategy.clear()
                self.loss_streak.clear()
                # Breakers clear with the day; an operator's kill switch does not.
                self.trips = {
                    k: t for k, t in self.trips.items() if t.breaker == Breaker.KILL_SWITCH
                }
                self.peak_equity = None
                self.baseline_unrealized = baseline
                self.unmarked = set(unmarked)
            case BaselineMarked():
                self.baseline_unrealized += event.unrealized
                self.unmarked.discard((event.strategy_code, event.symbol, event.product))
            case EquityPeak(equity=equity):
                self.peak_equity = equity
            case OrderAccepted(intent=intent) | OrderSubmitted(intent=intent) if not event.internal:
                self.trades_total += 1
                code = intent.strategy_code
                self.trades_by_strategy[code] = self.trades_by_strategy.get(code, 0) + 1
                self.touched.add(code)
            case OrderFilled(fill=fill) if outcome is not None:
                code = fill.strategy_code
                self.realized_total += outcome.realized
                self.realized_by_strategy[code] = (
                    self.realized_by_strategy.get(code, ZERO) + outcome.realized
                )
                if outcome.round_trip_pnl is not None:
                    if outcome.round_trip_pnl < 0:
                        self.loss_streak[code] = self.loss_streak.get(code, 0) + 1
                    else:
                        self.loss_streak[code] = 0
                    self.touched.add(code)
            case BreakerTripped():
                self.trips[(event.breaker, event.strategy_code)] = Trip(
                    event.breaker,
                    event.strategy_code,
                    event.state,
                    event.reason,
                    event.message,
                    event.timestamp,
                )
            case TradingHalted(strategy_code=code, actor=actor, reason=why):
                switch = Breaker.KILL_SWITCH
                self.trips[(switch, code)] = Trip(
                    switch,
                    code,
                    TradingState.HALTED,
                    switch.reason(code),
                    f"halted by {actor}: {why}",
                    event.timestamp,
                )
            case TradingResumed(strategy_code=code):
                for key in [k for k in self.trips if k[1] == code]:
                    del self.trips[key]
                if code:
                    self.loss_streak[code] = 0
                    self.touched.add(code)
            case MisSquareOffStarted(trading_day=day):
                self.squared_off_day = day

    def day_pnl(self, unrealized: Decimal) -> Decimal:
        """Realized today plus what open positions moved since the day began."""
        return self.realized_total + unrealized - self.baseline_unrealized

    def state(self, strategy_code: str = ACCOUNT) -> TradingState:
        """The strictest state among the scope's trips (account trips bind every strategy)."""
        worst = TradingState.ACTIVE
        for (_, code), trip in self.trips.items():
            if (code in (ACCOUNT, strategy_code)) and trip.state.severity > worst.severity:
                worst = trip.state
        return worst
