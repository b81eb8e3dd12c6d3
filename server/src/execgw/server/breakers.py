"""Circuit breakers by name: the one place a breaker's name is spelled.

A breaker's value is the name it has everywhere outside the code: the config keys of
its limit and of its `trip_to` state, the journal's BreakerTripped and snapshot trips,
and the API's RiskEvent, BreakerStatus and ResumeTrading replies. The journal stores
the value, so a value never changes once released.
"""

from __future__ import annotations

from enum import StrEnum

from execgw.server.domain import RejectReason

# The account scope: a trip with this strategy code binds every strategy.
ACCOUNT = ""


class Breaker(StrEnum):
    # The properties match every member without a default, so mypy --strict refuses a
    # new breaker until its reject reason and its kind are decided.

    MAX_DAILY_LOSS_RUPEES = "max_daily_loss_rupees"
    MAX_DAILY_DRAWDOWN_PCT = "max_daily_drawdown_pct"
    MAX_TRADES_PER_DAY = "max_trades_per_day"
    MAX_TRADES_PER_STRATEGY_PER_DAY = "max_trades_per_strategy_per_day"
    MAX_LOSS_STREAK = "max_loss_streak"
    # An operator's halt (HaltTrading); latched like a breaker, but only an operator
    # releases it, and it has no limit or trip_to in the config.
    KILL_SWITCH = "kill_switch"

    def reason(self, strategy_code: str) -> RejectReason:
        """Why orders in the scope are rejected while this breaker is tripped."""
        match self:
            case Breaker.MAX_DAILY_LOSS_RUPEES:
                return RejectReason.MAX_DAILY_LOSS
            case Breaker.MAX_DAILY_DRAWDOWN_PCT:
                return RejectReason.MAX_DAILY_DRAWDOWN
            case Breaker.MAX_TRADES_PER_DAY:
                return RejectReason.MAX_TRADES_PER_DAY
            case Breaker.MAX_TRADES_PER_STRATEGY_PER_DAY:
                return RejectReason.MAX_TRADES_PER_STRATEGY_PER_DAY
            case Breaker.MAX_LOSS_STREAK:
                return RejectReason.MAX_LOSS_STREAK
            case Breaker.KILL_SWITCH:
                return (
                    RejectReason.HALTED
                    if strategy_code == ACCOUNT
                    else RejectReason.STRATEGY_HALTED
                )

    @property
    def exposure(self) -> bool:
        """About losing money: tripping it also cancels resting orders that add exposure.
        The trade-count breakers only stop new orders; the kill switch cancels everything
        in its scope on its own."""
        match self:
            case (
                Breaker.MAX_DAILY_LOSS_RUPEES
                | Breaker.MAX_DAILY_DRAWDOWN_PCT
                | Breaker.MAX_LOSS_STREAK
            ):
                return True
            case (
                Breaker.MAX_TRADES_PER_DAY
                | Breaker.MAX_TRADES_PER_STRATEGY_PER_DAY
                | Breaker.KILL_SWITCH
            ):
                return False

    @property
    def equity(self) -> bool:
        """Watches equity, which needs a mark for every open position: a position with no
        mark is unknown, so these wait for it rather than value it at zero."""
        match self:
            case Breaker.MAX_DAILY_LOSS_RUPEES | Breaker.MAX_DAILY_DRAWDOWN_PCT:
                return True
            case (
                Breaker.MAX_TRADES_PER_DAY
                | Breaker.MAX_TRADES_PER_STRATEGY_PER_DAY
                | Breaker.MAX_LOSS_STREAK
                | Breaker.KILL_SWITCH
            ):
                return False
