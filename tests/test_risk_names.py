"""Breakers and pre-trade rules are declared once, as enums: every one names its reject
reason, and every configurable breaker has exactly one limit and one trip_to setting
and shows in the risk report, so a new one cannot be half added."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from execgw.server.breakers import ACCOUNT, Breaker
from execgw.server.config import (
    BreakerTripStates,
    CircuitBreakersConfig,
    ExecutionConfig,
    TradingDayConfig,
)
from execgw.server.domain import (
    OrderIntent,
    OrderType,
    Product,
    RejectReason,
    Side,
    TradingState,
    Validity,
)
from execgw.server.events import DayRolledOver, OrderAccepted, TradingHalted
from execgw.server.risk import RiskEngine
from execgw.server.risk_checks import Rule
from execgw.server.trading_calendar import TradingCalendar

NOW = datetime(2026, 11, 27, 4, 30, tzinfo=UTC)
CONFIGURABLE = [b for b in Breaker if b is not Breaker.KILL_SWITCH]


def test_names_are_the_strings_the_config_journal_and_api_use() -> None:
    # Journals store these values and clients match on them: a rename breaks both.
    assert [b.value for b in Breaker] == [
        "max_daily_loss_rupees",
        "max_daily_drawdown_pct",
        "max_trades_per_day",
        "max_trades_per_strategy_per_day",
        "max_loss_streak",
        "kill_switch",
    ]
    assert [r.value for r in Rule] == [
        "circuit_breakers",
        "mis_square_off",
        "allowed_symbols",
        "allowed_products",
        "min_confidence",
        "max_order_qty",
        "fresh_quote",
        "max_order_notional",
        "price_collar",
        "order_rate",
        "duplicate_order",
        "market_data",
    ]


def test_every_breaker_has_a_reject_reason_in_either_scope() -> None:
    for breaker in Breaker:
        for scope in (ACCOUNT, "S1"):
            assert isinstance(breaker.reason(scope), RejectReason)
    # One reason per breaker, so a rejection says which limit refused it.
    assert len({b.reason(ACCOUNT) for b in CONFIGURABLE}) == len(CONFIGURABLE)
    assert Breaker.KILL_SWITCH.reason(ACCOUNT) is RejectReason.HALTED
    assert Breaker.KILL_SWITCH.reason("S1") is RejectReason.STRATEGY_HALTED


def test_every_rule_has_a_reject_reason() -> None:
    for rule in Rule:
        if rule is Rule.CIRCUIT_BREAKERS:
            # It refuses with the reason of the breaker that tripped (checked above).
            assert rule.reason is None
        else:
            assert isinstance(rule.reason, RejectReason)
    reasons = [r.reason for r in Rule if r.reason is not None]
    assert len(set(reasons)) == len(reasons)


def test_exposure_and_equity_breakers() -> None:
    assert {b for b in Breaker if b.exposure} == {
        Breaker.MAX_DAILY_LOSS_RUPEES,
        Breaker.MAX_DAILY_DRAWDOWN_PCT,
        Breaker.MAX_LOSS_STREAK,
    }
    assert {b for b in Breaker if b.equity} == {
        Breaker.MAX_DAILY_LOSS_RUPEES,
        Breaker.MAX_DAILY_DRAWDOWN_PCT,
    }


def test_config_has_one_limit_and_one_trip_to_per_configurable_breaker() -> None:
    names = {b.value for b in CONFIGURABLE}
    assert set(BreakerTripStates.model_fields) == names
    assert set(CircuitBreakersConfig.model_fields) - {"trip_to"} == names


def test_the_risk_report_shows_every_breaker_with_its_configured_trip_state() -> None:
    trip_to = {b.value: "HALTED" for b in CONFIGURABLE}
    config = ExecutionConfig.model_validate({"circuit_breakers": {"trip_to": trip_to}})
    risk = RiskEngine(config, TradingCalendar(TradingDayConfig()))
    intent = OrderIntent(
        "NSE:INFY", "S1", Side.BUY, 1, OrderType.MARKET, Product.NRML, Validity.DAY
    )
    for event in (
        DayRolledOver(NOW.date(), NOW),
        OrderAccepted("O1", "c1", intent, NOW),
        TradingHalted(ACCOUNT, "ops", "test", NOW),
    ):
        risk.apply(event, None)
    report = risk.report(NOW, Decimal(0))
    assert {b.breaker for b in report.breakers} == set(Breaker)
    assert {b.trips_to for b in report.breakers} == {TradingState.HALTED}
