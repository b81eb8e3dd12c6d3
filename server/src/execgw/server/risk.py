"""Breakers and pre-trade checks over the journaled risk state.

Like NautilusTrader's RiskEngine: RiskEngine owns a RiskBook (risk_state.py, the
journaled fold) plus transient state (the live peak, rate buckets, the duplicate
window) and answers two questions: does this order pass (`check`, running the rules
of risk_checks.py in order), and has a breaker's condition just become true
(`evaluate`)? The trading calendar is in trading_calendar.py, breaker names in
breakers.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import partial

from execgw.server import risk_checks as rules
from execgw.server.breakers import ACCOUNT, Breaker
from execgw.server.config import ExecutionConfig, StrategyLimits
from execgw.server.domain import Caller, OrderIntent, TradingState
from execgw.server.events import (
    BreakerTripped,
    DayRolledOver,
    EquityPeak,
    Event,
    MisSquareOffStarted,
)
from execgw.server.ledger import FillOutcome
from execgw.server.risk_checks import Check, reduces
from execgw.server.risk_state import RiskBook, Trip
from execgw.server.trading_calendar import TradingCalendar

# Check, RiskBook, TradingCalendar and reduces lived here before risk was split by
# job; they stay importable from here for code written against that.
__all__ = [
    "BreakerReport",
    "Check",
    "RiskBook",
    "RiskEngine",
    "RiskReport",
    "StrategyReport",
    "TradingCalendar",
    "reduces",
]

ZERO = Decimal(0)
# A strategy without overrides (frozen: one shared, not one built per order).
_NO_OVERRIDES = StrategyLimits()


@dataclass(frozen=True, slots=True)
class _Equity:
    """Day PnL, equity, the day's peak equity and the drawdown from it."""

    pnl: Decimal
    equity: Decimal
    peak: Decimal
    drawdown: Decimal


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: datetime


@dataclass(frozen=True, slots=True)
class BreakerReport:
    breaker: Breaker
    strategy_code: str
    trips_to: TradingState
    value: Decimal
    limit: Decimal
    trip: Trip | None


@dataclass(frozen=True, slots=True)
class StrategyReport:
    strategy_code: str
    state: TradingState
    trades_today: int
    loss_streak: int
    realized_pnl: Decimal


@dataclass(frozen=True, slots=True)
class RiskReport:
    state: TradingState
    trading_day: date | None
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    day_pnl: Decimal
    equity: Decimal
    peak_equity: Decimal
    drawdown_pct: Decimal
    trades_today: int
    breakers: list[BreakerReport]
    strategies: list[StrategyReport]
    mis_entries_closed: bool
    # Symbols of open positions with no mark: PnL and equity above leave them out.
    unmarked_symbols: tuple[str, ...] = ()
    # Watched symbols whose quote is older than market_data.stale_after_s.
    stale_symbols: tuple[str, ...] = ()


class RiskEngine:
    def __init__(self, config: ExecutionConfig, calendar: TradingCalendar) -> None:
        self.calendar = calendar
        self.book = RiskBook()
        # execution.autoslice: slice (the engine splits orders above the freeze quantity).
        self.autoslice = config.autoslice == "slice"
        self._cb = config.circuit_breakers
        self._pre = config.pre_trade
        self._capital = Decimal(repr(config.capital_rupees))
        self._max_loss = Decimal(repr(self._cb.max_daily_loss_rupees))
        self._max_drawdown = Decimal(repr(self._cb.max_daily_drawdown_pct))
        self._collar = Decimal(repr(self._pre.price_collar_pct))
        trip_to = self._cb.trip_to
        # The state each breaker puts its scope in; an operator's kill switch halts.
        self._trip_to = {
            Breaker.MAX_DAILY_LOSS_RUPEES: TradingState(trip_to.max_daily_loss_rupees),
            Breaker.MAX_DAILY_DRAWDOWN_PCT: TradingState(trip_to.max_daily_drawdown_pct),
            Breaker.MAX_TRADES_PER_DAY: TradingState(trip_to.max_trades_per_day),
            Breaker.MAX_TRADES_PER_STRATEGY_PER_DAY: TradingState(
                trip_to.max_trades_per_strategy_per_day
            ),
            Breaker.MAX_LOSS_STREAK: TradingState(trip_to.max_loss_streak),
            Breaker.KILL_SWITCH: TradingState.HALTED,
        }
        self._buckets: dict[str, _Bucket] = {}
        # Per calling token (auth), on top of the per-strategy buckets.
        self._caller_buckets: dict[str, _Bucket] = {}
        self._recent: dict[tuple[object, ...], datetime] = {}
        # The exact intraday peak; the book keeps a journaled copy, refreshed whenever
        # the live peak gets ahead of it by a step, so a restart loses less than a step.
        self._live_peak: Decimal | None = None
        # How to take back the current command's rate token and duplicate-window entry.
        self._undo: list[Callable[[], object]] = []
        self._peak_before: Decimal | None = None
        # A tenth of the drawdown limit: a restart can understate the peak by less than
        # that, and the journal gets at most one peak (with its marks) per such rise, not
        # one per uptick of a trending market.
        self._peak_step = self._capital * self._max_drawdown / 10
        # The strategies at a per-strategy limit (see _strategies_at_limit), and the book
        # they were found in.
        self._at_limit: tuple[set[str], ...] = ()
        self._at_limit_of: RiskBook | None = None

    # -- the fold ---------------------------------------------------------

    def apply(self, event: Event, outcome: FillOutcome | None) -> None:
        self.book.apply(event, outcome)
        if isinstance(event, DayRolledOver):
            self._live_peak = None

    def adopt(self, book: RiskBook, *, keep_transient: bool = False) -> None:
        """Take a book rebuilt from the journal; transient state restarts with it.

        The rate buckets and duplicate window may remember orders that a failed commit
        just dropped; forgetting them lets the client's retry through, as promised.
        keep_transient keeps them when the orders they remember still stand."""
        self.book = book
        if not keep_transient:
            self._live_peak = None
            self._buckets.clear()
            self._caller_buckets.clear()
            self._recent.clear()

    def due(
        self,
        now: datetime,
        baseline: Callable[[], tuple[Decimal, tuple[tuple[str, str, str], ...]]],
    ) -> list[Event]:
        """Time-driven events: the day rolling over, then MIS square-off. `baseline`
        (the marked unrealized PnL and the positions with no mark) is only taken when
        the day rolls."""
        events: list[Event] = []
        day = self.calendar.trading_day(now)
        if self.book.day is not None and day < self.book.day:
            # The wall clock stepped back: days only ever roll forward.
            return events
        if self.book.day != day:
            marked, unmarked = baseline()
            events.append(DayRolledOver(day, now, marked, unmarked))
            # The new day's peak starts from its own equity. `apply` is not on the
            # engine's path (it folds events into the book itself), so reset here.
            self._live_peak = None
        if self.calendar.mis_closed(now) and self.book.squared_off_day != day:
            events.append(MisSquareOffStarted(day, now))
        return events

    # -- breakers ---------------------------------------------------------

    def _limits(self, code: str) -> StrategyLimits:
        return self._pre.strategies.get(code) or _NO_OVERRIDES

    def _equity(self, unrealized: Decimal, *, complete: bool = True) -> _Equity:
        """`complete` is False while an open position has no mark: the equity is then a
        partial sum, which must not become the day's peak."""
        pnl = self.book.day_pnl(unrealized)
        equity = self._capital + pnl
        known = [p for p in (self._live_peak, self.book.peak_equity) if p is not None]
        peak = max([*known, equity]) if complete or not known else max(known)
        drawdown = max((peak - equity) / peak, ZERO) if peak > 0 else ZERO
        return _Equity(pnl, equity, peak, drawdown)

    def breaker_values(self, unrealized: Decimal, *, complete: bool = True) -> list[BreakerReport]:
        """Every breaker's value and limit."""
        rows = self._account_rows(unrealized, complete)
        for code in self._strategies_in_the_book():
            rows.extend(self._strategy_rows(code))
        return [self._report(*row) for row in rows]

    def near_limit(
        self, unrealized: Decimal, fraction: Decimal, strategy_code: str, *, complete: bool = True
    ) -> list[BreakerReport]:
        """The account's breakers and `strategy_code`'s with a limit whose value has
        reached `fraction` of it. An order's risk span asks on every order, so only
        those become reports."""
        rows = self._account_rows(unrealized, complete)
        rows.extend(self._strategy_rows(strategy_code))
        return [self._report(*row) for row in rows if row[3] > 0 and row[2] >= row[3] * fraction]

    def _strategies_in_the_book(self) -> list[str]:
        """The strategies with a per-strategy breaker count today, in order."""
        return sorted(set(self.book.trades_by_strategy) | set(self.book.loss_streak))

    def _account_rows(
        self, unrealized: Decimal, complete: bool
    ) -> list[tuple[Breaker, str, Decimal | int, Decimal | int]]:
        now = self._equity(unrealized, complete=complete)
        return [
            (Breaker.MAX_DAILY_LOSS_RUPEES, ACCOUNT, -now.pnl, self._max_loss),
            (Breaker.MAX_DAILY_DRAWDOWN_PCT, ACCOUNT, now.drawdown, self._max_drawdown),
            (
                Breaker.MAX_TRADES_PER_DAY,
                ACCOUNT,
                self.book.trades_total,
                self._cb.max_trades_per_day,
            ),
        ]

    def _strategy_counts(self) -> tuple[tuple[Breaker, dict[str, int], int], ...]:
        """Each per-strategy breaker with today's counts by strategy and its limit."""
        book, cb = self.book, self._cb
        return (
            (
                Breaker.MAX_TRADES_PER_STRATEGY_PER_DAY,
                book.trades_by_strategy,
                cb.max_trades_per_strategy_per_day,
            ),
            (Breaker.MAX_LOSS_STREAK, book.loss_streak, cb.max_loss_streak),
        )

    def _strategy_trips(self) -> list[tuple[Breaker, str, Decimal | int, Decimal | int]]:
        """The rows of per-strategy breakers at their limit and not tripped yet, in the
        order of `_strategies_in_the_book` (then the order of `_strategy_rows`), without
        sorting or building the rows of every strategy on every change."""
        trips = self.book.trips
        counted = self._strategy_counts()
        at_limit = self._strategies_at_limit(counted)
        found = [
            (code, index, breaker, counts.get(code, 0), limit)
            for index, (breaker, counts, limit) in enumerate(counted)
            for code in at_limit[index]
            if (breaker, code) not in trips
        ]
        found.sort(key=lambda row: (row[0], row[1]))
        return [(breaker, code, value, limit) for code, _, breaker, value, limit in found]

    def _strategies_at_limit(
        self, counted: tuple[tuple[Breaker, dict[str, int], int], ...]
    ) -> tuple[set[str], ...]:
        """Per per-strategy breaker, the strategies whose count is at its limit or past
        it, kept up to date from the strategies the book says changed: the whole day's
        strategies are compared only when the book is new (a start, a rebuild)."""
        book = self.book
        if self._at_limit_of is not book:
            self._at_limit = tuple(
                {code for code, count in counts.items() if count >= limit}
                for _, counts, limit in counted
            )
            self._at_limit_of = book
        else:
            for code in book.touched:
                for found, (_, counts, limit) in zip(self._at_limit, counted, strict=True):
                    if counts.get(code, 0) >= limit:
                        found.add(code)
                    else:
                        found.discard(code)
        book.touched.clear()
        return self._at_limit

    def _strategy_rows(self, code: str) -> list[tuple[Breaker, str, Decimal | int, Decimal | int]]:
        return [
            (breaker, code, counts.get(code, 0), limit)
            for breaker, counts, limit in self._strategy_counts()
        ]

    def _report(
        self, breaker: Breaker, code: str, value: Decimal | int, limit: Decimal | int
    ) -> BreakerReport:
        return BreakerReport(
            breaker,
            code,
            self._trip_to[breaker],
            Decimal(value),
            Decimal(limit),
            self.book.trips.get((breaker, code)),
        )

    def evaluate(
        self,
        now: datetime,
        unrealized: Decimal,
        unmarked: tuple[str, ...] = (),
    ) -> list[BreakerTripped | EquityPeak]:
        """A journaled EquityPeak when the peak moved a step, then BreakerTripped for every
        breaker whose condition holds and that is not tripped yet.

        `unmarked` names open positions' symbols with no mark: until it is empty the
        equity is unknown, so the peak stays put and the drawdown breaker waits. The
        loss breaker still trips on the day's realized loss alone: that part is known.

        It runs after every change, so a strategy's breakers are compared as the counts
        they are, and only one that trips becomes a report: the cost per change stays
        small however many strategies traded today."""
        book = self.book
        complete = not unmarked
        events: list[BreakerTripped | EquityPeak] = []
        if complete:
            self._live_peak = self._equity(unrealized).peak
            if book.peak_equity is None or self._live_peak - book.peak_equity >= self._peak_step:
                events.append(EquityPeak(self._live_peak, now))
        rows = self._account_rows(unrealized, complete)
        trips = book.trips
        rows.extend(self._strategy_trips())
        for breaker, code, value, limit in rows:
            if not complete:
                if breaker is Breaker.MAX_DAILY_LOSS_RUPEES and trips.get((breaker, code)) is None:
                    value = -book.realized_total  # the known part: the realized loss
                elif breaker.equity:
                    continue
            # Compared as they are; a report is made only for a breaker that trips.
            if value < limit or trips.get((breaker, code)) is not None:
                continue
            b = self._report(breaker, code, value, limit)
            events.append(
                BreakerTripped(
                    breaker=b.breaker,
                    strategy_code=b.strategy_code,
                    state=b.trips_to,
                    reason=b.breaker.reason(b.strategy_code),
                    message=_trip_message(b),
                    timestamp=now,
                )
            )
        return events

    # -- pre-trade --------------------------------------------------------

    def check(
        self,
        intent: OrderIntent,
        *,
        ltp: Decimal | None,
        position_qty: int,
        pending_qty: int,
        now: datetime,
        caller: Caller | None = None,
        stale: str | None = None,
        orders: int = 1,
    ) -> list[Check]:
        """Every rule in Rule order, changing nothing; `record_accepted` once the venue
        took the order.

        orders: how many orders the gateway places for it (the child orders of an
        autoslice); each counts against the trade-count breakers.

        pending_qty: what the strategy's open orders on the same side of the same
        position already ask for, so resting orders cannot add up to a flip.
        caller: the authenticated token sending the order, held to its own order rate.
        stale: why the symbol's quote is stale, None when it is fresh (or staleness is off)."""
        code = intent.strategy_code
        limits = self._limits(code)
        pre = self._pre
        reducing = reduces(intent, position_qty, pending_qty)
        # A list display evaluates in order: the rate bucket refills, and the duplicate
        # window is pruned, exactly once per check, after the rules before them.
        breakers = rules.circuit_breakers(self.book, code, reducing)
        if breakers.passed and orders > 1:
            breakers = rules.trade_count_room(
                self.book,
                code,
                reducing,
                orders,
                [
                    (
                        Breaker.MAX_TRADES_PER_DAY,
                        self._cb.max_trades_per_day,
                        self._trip_to[Breaker.MAX_TRADES_PER_DAY],
                    ),
                    (
                        Breaker.MAX_TRADES_PER_STRATEGY_PER_DAY,
                        self._cb.max_trades_per_strategy_per_day,
                        self._trip_to[Breaker.MAX_TRADES_PER_STRATEGY_PER_DAY],
                    ),
                ],
            )
        return [
            breakers,
            rules.mis_square_off(intent, self.calendar, now, reducing),
            rules.allowed_symbols(intent, limits),
            rules.allowed_products(intent, limits),
            rules.min_confidence(intent, limits, pre),
            rules.max_order_qty(intent, limits, pre),
            rules.fresh_quote(stale),
            rules.max_order_notional(intent, limits, pre, ltp),
            rules.price_collar(intent, ltp, self._collar),
            rules.order_rate(
                intent,
                self._bucket(code, limits, now).tokens,
                self._rate(limits),
                caller,
                0.0 if caller is None else self._caller_bucket(caller, now).tokens,
            ),
            rules.duplicate_order(
                intent, self._last_accepted(intent, now), now, pre.duplicate_window_s
            ),
        ]

    def record_accepted(
        self, intent: OrderIntent, now: datetime, caller: Caller | None = None
    ) -> None:
        """The order was accepted: it uses a rate token (of its strategy, and of its caller)
        and opens its duplicate window."""
        code = intent.strategy_code
        buckets = [self._bucket(code, self._limits(code), now)]
        if caller is not None:
            buckets.append(self._caller_bucket(caller, now))
        for bucket in buckets:
            self._undo.append(partial(setattr, bucket, "tokens", bucket.tokens))
            bucket.tokens -= 1.0
        if self._pre.duplicate_window_s > 0:
            key = rules.duplicate_key(intent)
            before = self._recent.get(key)
            self._undo.append(
                partial(self._recent.pop, key, None)
                if before is None
                else partial(self._recent.__setitem__, key, before)
            )
            self._recent[key] = now

    def begin_command(self) -> None:
        self._undo.clear()
        self._peak_before = self._live_peak

    def undo_command(self) -> None:
        """Forget the transient traces of a command that failed: nothing of it stands."""
        while self._undo:
            self._undo.pop()()
        self._live_peak = self._peak_before

    def _rate(self, limits: StrategyLimits) -> float:
        return limits.orders_per_second or self._pre.orders_per_second

    def _bucket(self, code: str, limits: StrategyLimits, now: datetime) -> _Bucket:
        """The strategy's token bucket, refilled up to `now`."""
        rate = self._rate(limits)
        burst = float(limits.order_burst or self._pre.order_burst)
        bucket = self._buckets.get(code)
        if bucket is None:
            bucket = self._buckets[code] = _Bucket(burst, now)
        elapsed = max((now - bucket.at).total_seconds(), 0.0)
        bucket.tokens = min(burst, bucket.tokens + elapsed * rate)
        bucket.at = now
        return bucket

    def _caller_bucket(self, caller: Caller, now: datetime) -> _Bucket:
        """The calling token's bucket, refilled up to `now`."""
        burst = float(caller.order_burst)
        bucket = self._caller_buckets.get(caller.name)
        if bucket is None:
            bucket = self._caller_buckets[caller.name] = _Bucket(burst, now)
        elapsed = max((now - bucket.at).total_seconds(), 0.0)
        bucket.tokens = min(burst, bucket.tokens + elapsed * caller.orders_per_second)
        bucket.at = now
        return bucket

    def _last_accepted(self, intent: OrderIntent, now: datetime) -> datetime | None:
        """When an identical order was last accepted, if the duplicate window is on."""
        window = self._pre.duplicate_window_s
        if window <= 0:
            return None
        if len(self._recent) > 10_000:
            horizon = now - timedelta(seconds=window)
            self._recent = {k: t for k, t in self._recent.items() if t > horizon}
        return self._recent.get(rules.duplicate_key(intent))

    # -- reporting --------------------------------------------------------

    def report(
        self,
        now: datetime,
        unrealized: Decimal,
        strategy_code: str = "",
        *,
        unmarked: tuple[str, ...] = (),
        stale: tuple[str, ...] = (),
    ) -> RiskReport:
        book = self.book
        complete = not unmarked
        now_equity = self._equity(unrealized, complete=complete)
        codes = sorted(
            set(book.trades_by_strategy) | set(book.loss_streak) | {c for _, c in book.trips if c}
        )
        if strategy_code:
            codes = [strategy_code]
        switch = Breaker.KILL_SWITCH
        return RiskReport(
            state=book.state(),
            trading_day=book.day,
            realized_pnl=book.realized_total,
            unrealized_pnl=unrealized,
            day_pnl=now_equity.pnl,
            equity=now_equity.equity,
            peak_equity=now_equity.peak,
            drawdown_pct=now_equity.drawdown,
            trades_today=book.trades_total,
            breakers=self.breaker_values(unrealized, complete=complete)
            + [
                BreakerReport(switch, code, self._trip_to[switch], ZERO, ZERO, trip)
                for (breaker, code), trip in sorted(book.trips.items())
                if breaker is switch
            ],
            strategies=[
                StrategyReport(
                    code,
                    book.state(code),
                    book.trades_by_strategy.get(code, 0),
                    book.loss_streak.get(code, 0),
                    book.realized_by_strategy.get(code, ZERO),
                )
                for code in codes
            ],
            mis_entries_closed=self.calendar.mis_closed(now),
            unmarked_symbols=unmarked,
            stale_symbols=stale,
        )


def _trip_message(b: BreakerReport) -> str:
    scope = f" for strategy {b.strategy_code}" if b.strategy_code else ""
    name = b.breaker.value
    if b.breaker == Breaker.MAX_DAILY_LOSS_RUPEES:
        return f"{name} {b.limit} reached{scope}: day loss {b.value:.2f}"
    if b.breaker == Breaker.MAX_DAILY_DRAWDOWN_PCT:
        return f"{name} {b.limit} reached{scope}: drawdown {b.value:.4f}"
    return f"{name} {b.limit} reached{scope}"
