"""Risk domain objects without a server: TradingCalendar, the RiskBook fold, and
RiskEngine's check / evaluate / due."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from execgw.server.breakers import ACCOUNT, Breaker
from execgw.server.config import ExecutionConfig, TradingDayConfig
from execgw.server.domain import (
    Fill,
    OrderIntent,
    OrderType,
    Product,
    Quote,
    RejectReason,
    Side,
    TradingState,
    Validity,
)
from execgw.server.events import (
    BreakerTripped,
    DayRolledOver,
    EquityPeak,
    Event,
    MisSquareOffStarted,
    OrderAccepted,
    OrderFilled,
    OrderRejected,
    TradingHalted,
    TradingResumed,
)
from execgw.server.ledger import FillOutcome, Ledger
from execgw.server.recovery import GatewayState, IdSource, RiskEntry
from execgw.server.risk import Check, RiskBook, RiskEngine, TradingCalendar, reduces
from execgw.server.risk_checks import Rule
from execgw.server.risk_state import Trip

IST = ZoneInfo("Asia/Kolkata")
NOW = datetime(2026, 11, 27, 4, 30, tzinfo=UTC)  # 10:00 IST
DAY = date(2026, 11, 27)
D = Decimal


def evaluate(risk: RiskEngine, now: datetime, unrealized: Decimal) -> list[BreakerTripped]:
    """The breakers evaluate() trips. Its EquityPeak events are folded in, as the
    engine's emit does, and not returned."""
    events = risk.evaluate(now, unrealized)
    for event in events:
        if isinstance(event, EquityPeak):
            risk.apply(event, None)
    return [e for e in events if isinstance(e, BreakerTripped)]


def check(
    risk: RiskEngine,
    order: OrderIntent,
    *,
    ltp: Decimal | None,
    position_qty: int,
    now: datetime,
    consume: bool,
) -> list[Check]:
    """check(), then record_accepted() when everything passed and consume is set, the
    way the engine does once the venue accepts the order."""
    checks = risk.check(order, ltp=ltp, position_qty=position_qty, pending_qty=0, now=now)
    if consume and all(c.passed for c in checks):
        risk.record_accepted(order, now)
    return checks


def calendar(**settings: Any) -> TradingCalendar:
    return TradingCalendar(TradingDayConfig.model_validate(settings))


def engine(**execution: Any) -> RiskEngine:
    return RiskEngine(ExecutionConfig.model_validate(execution), calendar())


def intent(
    side: Side = Side.BUY,
    qty: int = 1,
    *,
    strategy: str = "S1",
    symbol: str = "NSE:INFY",
    order_type: OrderType = OrderType.MARKET,
    product: Product = Product.NRML,
    price: str | None = None,
    confidence: float | None = None,
) -> OrderIntent:
    return OrderIntent(
        symbol=symbol,
        strategy_code=strategy,
        side=side,
        qty=qty,
        order_type=order_type,
        product=product,
        validity=Validity.DAY,
        price=None if price is None else D(price),
        confidence=confidence,
    )


# -- TradingCalendar --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("utc", "day"),
    [
        (datetime(2026, 11, 27, 2, 29, 59, 999_999, tzinfo=UTC), date(2026, 11, 26)),  # 07:59:59
        (datetime(2026, 11, 27, 2, 30, tzinfo=UTC), date(2026, 11, 27)),  # 08:00 IST
        (datetime(2026, 11, 27, 18, 29, 59, tzinfo=UTC), date(2026, 11, 27)),  # 23:59:59 IST
        (datetime(2026, 11, 27, 18, 30, tzinfo=UTC), date(2026, 11, 27)),  # 00:00 IST 28th
        (datetime(2026, 11, 28, 0, 0, tzinfo=UTC), date(2026, 11, 27)),  # UTC midnight
        (datetime(2026, 11, 28, 2, 30, tzinfo=UTC), date(2026, 11, 28)),
        # No DST in Asia/Kolkata: the same UTC boundary in summer and winter.
        (datetime(2026, 7, 15, 2, 29, tzinfo=UTC), date(2026, 7, 14)),
        (datetime(2026, 7, 15, 2, 30, tzinfo=UTC), date(2026, 7, 15)),
        (datetime(2026, 1, 15, 2, 29, tzinfo=UTC), date(2026, 1, 14)),
        (datetime(2026, 1, 15, 2, 30, tzinfo=UTC), date(2026, 1, 15)),
    ],
)
def test_trading_day_rolls_at_0800_ist(utc: datetime, day: date) -> None:
    assert calendar().trading_day(utc) == day


def test_one_calendar_asked_across_the_rollover_answers_each_time_afresh() -> None:
    """The calendar remembers its last answer (a command asks about its `now` several
    times); a later time, or an equal one in another zone, is never answered stale."""
    cal = calendar()
    before = datetime(2026, 11, 27, 2, 29, 59, tzinfo=UTC)
    after = datetime(2026, 11, 27, 2, 30, tzinfo=UTC)
    for _ in range(2):
        assert cal.trading_day(before) == date(2026, 11, 26)
        assert cal.trading_day(before) == date(2026, 11, 26)
        assert cal.trading_day(after) == date(2026, 11, 27)
    assert cal.trading_day(after.astimezone(IST)) == date(2026, 11, 27)
    assert cal.trading_day(before.astimezone(IST)) == date(2026, 11, 26)


def test_a_passed_check_is_shared_and_a_failed_one_is_not() -> None:
    assert Check.ok(Rule.PRICE_COLLAR) is Check.ok(Rule.PRICE_COLLAR)
    assert Check.ok(Rule.PRICE_COLLAR) == Check(Rule.PRICE_COLLAR, True)
    assert Check.fail(Rule.PRICE_COLLAR, "x") is not Check.fail(Rule.PRICE_COLLAR, "x")


def test_trading_day_accepts_any_aware_datetime() -> None:
    cal = calendar()
    local = datetime(2026, 11, 27, 7, 59, tzinfo=IST)
    assert cal.trading_day(local) == date(2026, 11, 26)
    assert cal.trading_day(local.astimezone(ZoneInfo("America/New_York"))) == date(2026, 11, 26)


def test_rollover_follows_a_zone_with_dst() -> None:
    cal = calendar(timezone="Europe/London", rollover="08:00")
    # 08:00 BST is 07:00 UTC in summer; 08:00 GMT is 08:00 UTC in winter.
    assert cal.trading_day(datetime(2026, 7, 1, 7, 0, tzinfo=UTC)) == date(2026, 7, 1)
    assert cal.trading_day(datetime(2026, 7, 1, 6, 59, tzinfo=UTC)) == date(2026, 6, 30)
    assert cal.trading_day(datetime(2026, 1, 15, 7, 59, tzinfo=UTC)) == date(2026, 1, 14)
    assert cal.trading_day(datetime(2026, 1, 15, 8, 0, tzinfo=UTC)) == date(2026, 1, 15)


def test_square_off_at_is_1520_ist_of_the_trading_day() -> None:
    cal = calendar()
    at = cal.square_off_at(DAY)
    assert at == datetime(2026, 11, 27, 9, 50, tzinfo=UTC)
    assert at.utcoffset() == timedelta(hours=5, minutes=30)
    assert cal.square_off_at(date(2026, 7, 1)) == datetime(2026, 7, 1, 9, 50, tzinfo=UTC)


def test_square_off_before_the_rollover_time_is_on_the_next_calendar_day() -> None:
    # A day that rolls at 18:00 runs 18:00 -> 18:00; its 15:20 is on the following date.
    cal = calendar(rollover="18:00", mis_square_off="15:20")
    assert cal.trading_day(datetime(2026, 11, 27, 12, 30, tzinfo=UTC)) == DAY  # 18:00 IST
    assert cal.square_off_at(DAY) == datetime(2026, 11, 28, 15, 20, tzinfo=IST)
    assert not cal.mis_closed(datetime(2026, 11, 28, 15, 19, tzinfo=IST))
    assert cal.mis_closed(datetime(2026, 11, 28, 15, 20, tzinfo=IST))
    assert not cal.mis_closed(datetime(2026, 11, 28, 18, 0, tzinfo=IST))  # the next day


@pytest.mark.parametrize(
    ("local", "closed"),
    [
        (datetime(2026, 11, 27, 8, 0, tzinfo=IST), False),
        (datetime(2026, 11, 27, 15, 19, 59, 999_999, tzinfo=IST), False),
        (datetime(2026, 11, 27, 15, 20, tzinfo=IST), True),
        (datetime(2026, 11, 27, 23, 0, tzinfo=IST), True),
        (datetime(2026, 11, 28, 7, 59, tzinfo=IST), True),  # still the 27th's trading day
        (datetime(2026, 11, 28, 8, 0, tzinfo=IST), False),
    ],
)
def test_mis_closed_from_square_off_until_rollover(local: datetime, closed: bool) -> None:
    assert calendar().mis_closed(local) is closed


# -- RiskBook fold ------------------------------------------------------------------------


def _fill(strategy: str = "S1", side: Side = Side.BUY) -> OrderFilled:
    fill = Fill(
        fill_id="F1",
        order_id="O1",
        client_order_id="c1",
        strategy_code=strategy,
        symbol="NSE:INFY",
        side=side,
        product=Product.NRML,
        qty=1,
        price=D("1000"),
        timestamp=NOW,
    )
    return OrderFilled(fill, Quote("NSE:INFY", D("1000"), NOW))


def _outcome(realized: str, round_trip: str | None) -> FillOutcome:
    return FillOutcome(
        ("S1", "NSE:INFY", Product.NRML), D(realized), None if round_trip is None else D(round_trip)
    )


def test_book_counts_accepted_orders_only() -> None:
    book = RiskBook()
    book.apply(DayRolledOver(DAY, NOW), None)
    book.apply(OrderAccepted("O1", "c1", intent(strategy="S1"), NOW), None)
    book.apply(OrderAccepted("O2", "c2", intent(strategy="S2"), NOW), None)
    book.apply(OrderAccepted("O3", "c3", intent(strategy="S1"), NOW), None)
    rejected = OrderRejected("O4", "c4", intent(), NOW, RejectReason.ORDER_RATE, "x")
    book.apply(rejected, None)
    assert book.trades_total == 3
    assert book.trades_by_strategy == {"S1": 2, "S2": 1}


def test_book_realized_pnl_and_loss_streak() -> None:
    book = RiskBook()
    book.apply(_fill(), _outcome("0", None))  # an opening fill
    assert (book.realized_total, book.loss_streak) == (D(0), {})
    book.apply(_fill(side=Side.SELL), _outcome("-7.5", "-7.5"))
    book.apply(_fill(side=Side.SELL), _outcome("-2", None))  # partial close: no round trip
    assert book.loss_streak == {"S1": 1}
    book.apply(_fill(side=Side.SELL), _outcome("-1", "-3"))
    assert book.loss_streak == {"S1": 2}
    assert book.realized_total == D("-10.5")
    assert book.realized_by_strategy == {"S1": D("-10.5")}
    book.apply(_fill(side=Side.SELL), _outcome("4", "4"))  # a win resets
    assert book.loss_streak == {"S1": 0}
    assert book.realized_total == D("-6.5")
    book.apply(_fill(), None)  # a fill the ledger did not apply changes nothing
    assert book.realized_total == D("-6.5")


def test_book_fold_through_the_real_ledger() -> None:
    """OrderAccepted + OrderFilled events folded by GatewayState, as live and on replay."""
    state = GatewayState(Ledger(), RiskBook(), IdSource(), 0, "")
    events: list[Event] = [DayRolledOver(DAY, NOW)]
    for n, (side, price) in enumerate(
        [(Side.BUY, "1000"), (Side.SELL, "990"), (Side.BUY, "1000"), (Side.SELL, "985.5")]
    ):
        order_id = f"O{n + 1:010d}"
        events.append(OrderAccepted(order_id, f"c{n}", intent(side, 2), NOW))
        fill = Fill(
            f"F{n + 1:010d}",
            order_id,
            f"c{n}",
            "S1",
            "NSE:INFY",
            side,
            Product.NRML,
            2,
            D(price),
            NOW,
        )
        events.append(OrderFilled(fill, Quote("NSE:INFY", D(price), NOW)))
    for event in events:
        state.apply(event)
    book = state.risk
    assert book.trades_total == 4
    assert book.realized_total == D("-49.0")  # 2 x -10 + 2 x -14.5
    assert book.loss_streak == {"S1": 2}
    replayed = GatewayState(Ledger(), RiskBook(), IdSource(), 0, "")
    for event in events:
        replayed.apply(event)
    assert replayed.risk == book


def test_book_trips_halts_and_resumes_by_scope() -> None:
    book = RiskBook()
    book.apply(
        BreakerTripped(
            Breaker.MAX_DAILY_LOSS_RUPEES,
            "",
            TradingState.REDUCING,
            RejectReason.MAX_DAILY_LOSS,
            "loss",
            NOW,
        ),
        None,
    )
    book.apply(TradingHalted("S1", "alice", "bad fills", NOW), None)
    book.loss_streak["S1"] = 4
    book.loss_streak["S2"] = 2
    assert book.state() is TradingState.REDUCING
    assert book.state("S1") is TradingState.HALTED
    assert book.state("S2") is TradingState.REDUCING  # account trips bind everyone
    halt = book.trips[(Breaker.KILL_SWITCH, "S1")]
    assert halt.message == "halted by alice: bad fills"
    assert halt.reason is RejectReason.STRATEGY_HALTED
    book.apply(TradingHalted("", "bob", "all", NOW), None)
    assert book.trips[(Breaker.KILL_SWITCH, "")].reason is RejectReason.HALTED

    book.apply(TradingResumed("S1", "alice", "ok", NOW), None)
    assert ("kill_switch", "S1") not in book.trips
    assert book.loss_streak == {"S1": 0, "S2": 2}
    assert book.state("S1") is TradingState.HALTED  # the account halt still binds
    book.apply(TradingResumed("", "bob", "ok", NOW), None)
    assert book.trips == {}
    assert book.loss_streak == {"S1": 0, "S2": 2}  # an account resume keeps streaks
    assert book.state("S2") is TradingState.ACTIVE


def test_day_rollover_resets_the_day_but_not_the_square_off_marker_or_kill_switch() -> None:
    book = RiskBook()
    book.apply(DayRolledOver(DAY, NOW), None)
    book.apply(OrderAccepted("O1", "c1", intent(), NOW), None)
    book.apply(_fill(side=Side.SELL), _outcome("-5", "-5"))
    book.apply(TradingHalted("", "ops", "stop", NOW), None)
    book.apply(MisSquareOffStarted(DAY, NOW), None)
    book.peak_equity = D("1000100")
    nxt = DAY + timedelta(days=1)
    halt = book.trips[(Breaker.KILL_SWITCH, "")]
    book.apply(DayRolledOver(nxt, NOW + timedelta(days=1), D("-250")), None)
    # An operator's halt outlives the day: only an operator releases it.
    assert book == RiskBook(
        day=nxt,
        squared_off_day=DAY,
        trips={(Breaker.KILL_SWITCH, ""): halt},
        baseline_unrealized=D("-250"),
    )


# -- RiskEngine.due ---------------------------------------------------------------------


def test_due_rolls_the_day_then_squares_off_once() -> None:
    risk = engine()
    assert risk.due(NOW, lambda: (D(0), ())) == [DayRolledOver(DAY, NOW)]
    risk.apply(DayRolledOver(DAY, NOW), None)
    assert risk.due(NOW, lambda: (D(0), ())) == []
    at = datetime(2026, 11, 27, 15, 20, tzinfo=IST)
    assert risk.due(at, lambda: (D(0), ())) == [MisSquareOffStarted(DAY, at)]
    risk.apply(MisSquareOffStarted(DAY, at), None)
    assert risk.due(at + timedelta(hours=3), lambda: (D(0), ())) == []
    # Started after a night down: both, in that order.
    late = datetime(2026, 11, 28, 16, 0, tzinfo=IST)
    assert risk.due(late, lambda: (D(0), ())) == [
        DayRolledOver(date(2026, 11, 28), late),
        MisSquareOffStarted(date(2026, 11, 28), late),
    ]


# -- RiskEngine.check ---------------------------------------------------------------------


def _names(checks: list[Any]) -> list[tuple[str, bool]]:
    return [(c.name, c.passed) for c in checks]


def test_check_runs_every_rule_in_order_and_reports_all_failures() -> None:
    risk = engine(
        pre_trade={
            "price_collar_pct": 0.05,
            "strategies": {
                "S1": {
                    "allowed_symbols": ["NSE:TCS"],
                    "allowed_products": ["CNC"],
                    "min_confidence": 0.5,
                    "max_order_qty": 5,
                    "max_order_notional_rupees": 1000.0,
                }
            },
        }
    )
    risk.apply(TradingHalted("", "ops", "stop", NOW), None)
    bad = intent(
        qty=10,
        order_type=OrderType.LIMIT,
        product=Product.MIS,
        price="1100",
        confidence=0.1,
    )
    checks = check(
        risk,
        bad,
        ltp=D("1000"),
        position_qty=0,
        now=datetime(2026, 11, 27, 16, 0, tzinfo=IST),
        consume=True,
    )
    assert _names(checks) == [
        ("circuit_breakers", False),
        ("mis_square_off", False),
        ("allowed_symbols", False),
        ("allowed_products", False),
        ("min_confidence", False),
        ("max_order_qty", False),
        ("fresh_quote", True),
        ("max_order_notional", False),
        ("price_collar", False),
        ("order_rate", True),
        ("duplicate_order", True),
    ]
    reasons = [c.reason for c in checks if not c.passed]
    assert reasons == [
        RejectReason.HALTED,
        RejectReason.MIS_SQUARE_OFF,
        RejectReason.SYMBOL_NOT_ALLOWED,
        RejectReason.PRODUCT_NOT_ALLOWED,
        RejectReason.LOW_CONFIDENCE,
        RejectReason.MAX_ORDER_QTY,
        RejectReason.MAX_ORDER_NOTIONAL,
        RejectReason.PRICE_COLLAR,
    ]
    assert checks[0].message == "account is HALTED (kill_switch): halted by ops: stop"
    assert "max_order_notional_rupees 1000.0 exceeded by notional 11000" in checks[7].message


def test_check_consumes_a_token_only_when_everything_passes() -> None:
    risk = engine(pre_trade={"orders_per_second": 10.0, "order_burst": 3, "max_order_qty": 5})
    ok, too_big = intent(qty=1), intent(qty=6)
    for _ in range(20):
        assert all(
            c.passed for c in check(risk, ok, ltp=D(1000), position_qty=0, now=NOW, consume=False)
        )
        check(risk, too_big, ltp=D(1000), position_qty=0, now=NOW, consume=True)
    passed = [
        all(c.passed for c in check(risk, ok, ltp=D(1000), position_qty=0, now=NOW, consume=True))
        for _ in range(4)
    ]
    assert passed == [True, True, True, False]


def test_check_duplicate_window_is_keyed_on_the_order_not_its_tag() -> None:
    risk = engine(pre_trade={"duplicate_window_s": 2.0})
    first = intent(qty=1)

    def dup(i: OrderIntent, now: datetime) -> bool:
        checks = check(risk, i, ltp=D(1000), position_qty=0, now=now, consume=True)
        return not next(c for c in checks if c.name == "duplicate_order").passed

    assert not dup(first, NOW)
    assert dup(replace(first, tag="other", reason="again"), NOW + timedelta(seconds=1))
    assert not dup(replace(first, qty=2), NOW + timedelta(seconds=1))
    assert not dup(replace(first, strategy_code="S2"), NOW + timedelta(seconds=1))
    assert dup(first, NOW + timedelta(seconds=1.999))
    assert not dup(first, NOW + timedelta(seconds=2))


@pytest.mark.parametrize(
    ("side", "qty", "position", "expected"),
    [
        (Side.SELL, 10, 10, True),
        (Side.SELL, 1, 10, True),
        (Side.SELL, 11, 10, False),  # flips short
        (Side.BUY, 1, 10, False),
        (Side.BUY, 5, -5, True),
        (Side.BUY, 6, -5, False),
        (Side.SELL, 1, -5, False),
        (Side.SELL, 1, 0, False),
        (Side.BUY, 1, 0, False),
    ],
)
def test_reduces(side: Side, qty: int, position: int, expected: bool) -> None:
    assert reduces(intent(side, qty), position) is expected


def test_reducing_trip_passes_reductions_and_halted_passes_nothing() -> None:
    risk = engine()
    risk.apply(
        BreakerTripped(
            Breaker.MAX_DAILY_LOSS_RUPEES,
            "",
            TradingState.REDUCING,
            RejectReason.MAX_DAILY_LOSS,
            "loss",
            NOW,
        ),
        None,
    )

    def breaker_check(i: OrderIntent, position: int) -> Any:
        return check(risk, i, ltp=D(1000), position_qty=position, now=NOW, consume=False)[0]

    assert breaker_check(intent(Side.SELL, 10), 10).passed
    blocked = breaker_check(intent(Side.BUY, 1), 10)
    assert not blocked.passed
    assert blocked.reason is RejectReason.MAX_DAILY_LOSS
    assert blocked.message == "account is REDUCING (max_daily_loss_rupees): loss"
    risk.apply(
        BreakerTripped(
            Breaker.MAX_LOSS_STREAK,
            "S1",
            TradingState.HALTED,
            RejectReason.MAX_LOSS_STREAK,
            "streak",
            NOW,
        ),
        None,
    )
    halted = breaker_check(intent(Side.SELL, 10), 10)
    assert not halted.passed
    assert halted.reason is RejectReason.MAX_LOSS_STREAK
    assert breaker_check(intent(Side.SELL, 10, strategy="S2"), 10).passed


# -- RiskEngine.evaluate --------------------------------------------------------------------


def test_evaluate_trips_at_the_limit_once() -> None:
    risk = engine(
        capital_rupees=100_000.0,
        circuit_breakers={
            "max_daily_loss_rupees": 500.0,
            "max_daily_drawdown_pct": 0.5,
            "trip_to": {"max_daily_loss_rupees": "HALTED"},
        },
    )
    risk.apply(DayRolledOver(DAY, NOW), None)
    assert evaluate(risk, NOW, D("-499.99")) == []
    events = evaluate(risk, NOW, D("-500"))
    assert events == [
        BreakerTripped(
            breaker=Breaker.MAX_DAILY_LOSS_RUPEES,
            strategy_code="",
            state=TradingState.HALTED,
            reason=RejectReason.MAX_DAILY_LOSS,
            message="max_daily_loss_rupees 500.0 reached: day loss 500.00",
            timestamp=NOW,
        )
    ]
    for event in events:
        risk.apply(event, None)
    assert evaluate(risk, NOW, D("-900")) == []  # already tripped: no second event


def test_evaluate_tracks_the_peak_for_drawdown() -> None:
    risk = engine(
        capital_rupees=100_000.0,
        circuit_breakers={"max_daily_drawdown_pct": 0.01, "max_daily_loss_rupees": 90_000.0},
    )
    risk.apply(DayRolledOver(DAY, NOW), None)
    assert evaluate(risk, NOW, D("1000")) == []
    assert risk.book.peak_equity == D("101000")
    assert evaluate(risk, NOW, D("-9.99")) == []  # 1009.99 / 101000 < 0.01
    assert risk.book.peak_equity == D("101000")  # the peak never falls
    [event] = evaluate(risk, NOW, D("-10"))  # 1010 / 101000 = 0.01
    assert event.breaker == "max_daily_drawdown_pct"
    assert event.reason is RejectReason.MAX_DAILY_DRAWDOWN
    assert event.message == "max_daily_drawdown_pct 0.01 reached: drawdown 0.0100"


def test_evaluate_trade_and_streak_breakers_are_per_strategy() -> None:
    risk = engine(
        circuit_breakers={
            "max_trades_per_day": 10,
            "max_trades_per_strategy_per_day": 2,
            "max_loss_streak": 2,
        }
    )
    risk.apply(DayRolledOver(DAY, NOW), None)
    for code in ("S1", "S1", "S2"):
        risk.apply(OrderAccepted("O", "c", intent(strategy=code), NOW), None)
    risk.book.loss_streak["S2"] = 2
    tripped = {(e.breaker, e.strategy_code, e.state, e.reason) for e in evaluate(risk, NOW, D(0))}
    assert tripped == {
        (
            "max_trades_per_strategy_per_day",
            "S1",
            TradingState.REDUCING,
            RejectReason.MAX_TRADES_PER_STRATEGY_PER_DAY,
        ),
        ("max_loss_streak", "S2", TradingState.HALTED, RejectReason.MAX_LOSS_STREAK),
    }


def _evaluate_as_every_breaker_was_reported(
    risk: RiskEngine, now: datetime, unrealized: Decimal, unmarked: tuple[str, ...]
) -> list[Any]:
    """evaluate() as it was written before it compared counts directly: a report for
    every breaker of every strategy, then the same tests."""
    complete = not unmarked
    events: list[Any] = []
    if complete:
        peak = risk._equity(unrealized).peak
        if risk.book.peak_equity is None or peak - risk.book.peak_equity >= risk._peak_step:
            events.append(("peak", peak))
    book, cb = risk.book, risk._cb
    equity = risk._equity(unrealized, complete=complete)
    rows = [
        (Breaker.MAX_DAILY_LOSS_RUPEES, "", -equity.pnl, risk._max_loss),
        (Breaker.MAX_DAILY_DRAWDOWN_PCT, "", equity.drawdown, risk._max_drawdown),
        (
            Breaker.MAX_TRADES_PER_DAY,
            "",
            Decimal(book.trades_total),
            Decimal(cb.max_trades_per_day),
        ),
    ]
    for code in sorted(set(book.trades_by_strategy) | set(book.loss_streak)):
        rows.append(
            (
                Breaker.MAX_TRADES_PER_STRATEGY_PER_DAY,
                code,
                Decimal(book.trades_by_strategy.get(code, 0)),
                Decimal(cb.max_trades_per_strategy_per_day),
            )
        )
        rows.append(
            (
                Breaker.MAX_LOSS_STREAK,
                code,
                Decimal(book.loss_streak.get(code, 0)),
                Decimal(cb.max_loss_streak),
            )
        )
    for breaker, code, value, limit in rows:
        tripped = book.trips.get((breaker, code))
        if not complete and breaker == Breaker.MAX_DAILY_LOSS_RUPEES and tripped is None:
            value = -book.realized_total
        elif not complete and breaker.equity:
            continue
        if tripped is not None or value < limit:
            continue
        events.append((breaker, code, risk._trip_to[breaker]))
    return events


def test_evaluate_trips_what_a_report_of_every_breaker_would() -> None:
    rng = random.Random(7)
    now = datetime(2026, 11, 27, 5, 0, tzinfo=UTC)
    for _ in range(300):
        risk = engine(
            circuit_breakers={
                "max_trades_per_strategy_per_day": rng.randint(1, 4),
                "max_loss_streak": rng.randint(1, 3),
                "max_trades_per_day": rng.randint(3, 12),
                "max_daily_loss_rupees": 1000.0,
            }
        )
        book = risk.book
        for code in rng.sample(["A", "B", "C", "D", "E"], rng.randint(0, 5)):
            if rng.random() < 0.8:
                book.trades_by_strategy[code] = rng.randint(0, 5)
            if rng.random() < 0.6:
                book.loss_streak[code] = rng.randint(0, 4)
            for breaker in (Breaker.MAX_TRADES_PER_STRATEGY_PER_DAY, Breaker.MAX_LOSS_STREAK):
                if rng.random() < 0.3:
                    book.trips[(breaker, code)] = Trip(
                        breaker, code, TradingState.HALTED, RejectReason.HALTED, "", now
                    )
        book.trades_total = sum(book.trades_by_strategy.values())
        # The account's own breakers tripped already, and a peak from earlier in the day.
        for breaker in (
            Breaker.MAX_DAILY_LOSS_RUPEES,
            Breaker.MAX_DAILY_DRAWDOWN_PCT,
            Breaker.MAX_TRADES_PER_DAY,
        ):
            if rng.random() < 0.2:
                book.trips[(breaker, ACCOUNT)] = Trip(
                    breaker, ACCOUNT, TradingState.HALTED, RejectReason.HALTED, "", now
                )
        if rng.random() < 0.5:
            book.peak_equity = Decimal(rng.choice(["100000", "101500", "99000"]))
        book.realized_total = Decimal(rng.choice(["0", "-400", "-1100", "250"]))
        unrealized = Decimal(rng.choice(["0", "-500", "-1200", "300"]))
        unmarked = rng.choice([(), ("NSE:INFY",)])
        expected = _evaluate_as_every_breaker_was_reported(risk, now, unrealized, unmarked)
        got = [
            ("peak", e.equity)
            if isinstance(e, EquityPeak)
            else (e.breaker, e.strategy_code, e.state)
            for e in risk.evaluate(now, unrealized, unmarked)
        ]
        assert got == expected


def test_evaluate_after_each_event_trips_what_a_report_of_every_breaker_would() -> None:
    """The per-strategy breakers are compared only for the strategies the book says
    changed since the last evaluate (a new book: all of them). Held, event by event, to
    comparing every strategy: trades, losing and winning round trips, resumes, day
    rollovers, trips fed back to the book as the engine journals them, and a rebuilt
    book adopted in the middle."""
    rng = random.Random(19)
    codes = ["A", "B", "C", "D"]
    for _ in range(60):
        risk = engine(
            circuit_breakers={
                "max_trades_per_strategy_per_day": rng.randint(1, 4),
                "max_loss_streak": rng.randint(1, 3),
                "max_trades_per_day": 10_000,
                "max_daily_loss_rupees": 1_000_000.0,
            }
        )
        number = 0
        earlier = RiskEntry.of(risk.book).restore()
        for step in range(40):
            if step % 7 == 3:
                earlier = RiskEntry.of(risk.book).restore()
            code = rng.choice(codes)
            roll = rng.random()
            event: Any
            outcome = None
            if roll < 0.45:
                number += 1
                event = OrderAccepted(f"O{number}", f"c{number}", intent(strategy=code), NOW)
            elif roll < 0.8:
                event = _fill(strategy=code)
                pnl = rng.choice(["-5", "3"])
                outcome = FillOutcome((code, "NSE:INFY", Product.NRML), D(pnl), D(pnl))
            elif roll < 0.9:
                event = TradingResumed(rng.choice([code, ""]), "ops", "again", NOW)
            elif roll < 0.95:
                event = DayRolledOver(DAY, NOW)
            else:
                # A rebuild, as after a failed command: the engine adopts the book as the
                # journal had it some events ago (counts unlike the ones in memory).
                risk.adopt(earlier)
                event = None
            if event is not None:
                risk.book.apply(event, outcome)
            expected = _evaluate_as_every_breaker_was_reported(risk, NOW, D(0), ())
            got = risk.evaluate(NOW, D(0), ())
            assert [
                ("peak", e.equity)
                if isinstance(e, EquityPeak)
                else (e.breaker, e.strategy_code, e.state)
                for e in got
            ] == expected
            for tripped in got:
                if isinstance(tripped, BreakerTripped):
                    risk.book.apply(tripped, None)


def test_an_adopted_book_is_compared_whole() -> None:
    """A book from the journal (a start, or a rebuild after a failed command) can hold
    counts the engine never saw change: its strategies at a limit trip all the same."""
    risk = engine(circuit_breakers={"max_trades_per_strategy_per_day": 2})
    assert not any(isinstance(e, BreakerTripped) for e in risk.evaluate(NOW, D(0), ()))
    journaled = RiskBook()
    for number in (1, 2):
        journaled.apply(OrderAccepted(f"O{number}", f"c{number}", intent(strategy="A"), NOW), None)
    risk.adopt(RiskEntry.of(journaled).restore())  # its own notes of changes: none
    tripped = [e for e in risk.evaluate(NOW, D(0), ()) if isinstance(e, BreakerTripped)]
    assert [(e.breaker, e.strategy_code) for e in tripped] == [
        (Breaker.MAX_TRADES_PER_STRATEGY_PER_DAY, "A")
    ]


def test_near_limit_reports_what_filtering_every_breaker_would() -> None:
    """The risk span's near-limit events come from `near_limit`, which builds reports
    only for the account's and the order's strategy's breakers at or past the fraction;
    held to filtering the report of every breaker, on random books."""
    rng = random.Random(11)
    fraction = Decimal("0.8")
    for _ in range(300):
        risk = engine(
            circuit_breakers={
                "max_trades_per_strategy_per_day": rng.choice([1, 4, 5]),
                "max_loss_streak": rng.choice([1, 2, 5]),
                "max_trades_per_day": rng.choice([5, 12]),
                "max_daily_loss_rupees": rng.choice([600.0, 1000.0]),
            }
        )
        book = risk.book
        for code in rng.sample(["A", "B", "C"], rng.randint(0, 3)):
            book.trades_by_strategy[code] = rng.randint(0, 6)
            if rng.random() < 0.6:
                book.loss_streak[code] = rng.randint(0, 5)
        book.trades_total = sum(book.trades_by_strategy.values()) + rng.randint(0, 4)
        unrealized = Decimal(rng.choice(["0", "-500", "-900", "-1200", "300"]))
        complete = rng.random() < 0.7
        strategy = rng.choice(["A", "B", "C", "Z"])
        expected = [
            row
            for row in risk.breaker_values(unrealized, complete=complete)
            if row.strategy_code in (ACCOUNT, strategy)
            and row.limit > 0
            and row.value >= row.limit * fraction
        ]
        assert risk.near_limit(unrealized, fraction, strategy, complete=complete) == expected
