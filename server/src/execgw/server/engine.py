"""The execution engine: what each command does to state.

Plain synchronous code with no I/O: the core's single writer calls it one command at
a time, then makes the records it produced durable. Every state change goes through
`_emit`, which folds the event into the state (the same fold recovery replays) and
queues the journal record with the order as the event left it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Context, Decimal, DivisionByZero, InvalidOperation, Overflow

from opentelemetry import context as otel_context
from opentelemetry import trace

from execgw.server import autoslice
from execgw.server import risk_checks as rules
from execgw.server.breakers import ACCOUNT, Breaker
from execgw.server.clock import Clock
from execgw.server.closed_orders import ClosedOrder
from execgw.server.domain import (
    Caller,
    Fill,
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    PositionKey,
    PositionView,
    Product,
    Quote,
    RejectReason,
    Side,
    TradingState,
    Validity,
)
from execgw.server.errors import (
    Forbidden,
    IdempotencyConflict,
    OrderNotCancellable,
    OrderNotFound,
)
from execgw.server.events import (
    ORDER_EVENTS,
    AccessDenied,
    BaselineMarked,
    BreakerTripped,
    DayRolledOver,
    Event,
    MarksRecorded,
    MisSquareOffStarted,
    OrderAmbiguous,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    QuotesRecorded,
    TradingHalted,
    TradingResumed,
    VenueAccepted,
    VenueRejected,
    VenueUpdated,
    event_order_id,
)
from execgw.server.instruments import Instrument
from execgw.server.journal import JournalRecord
from execgw.server.quotes import QuoteBook
from execgw.server.recovery import GatewayState
from execgw.server.risk import RiskEngine, RiskReport
from execgw.server.risk_checks import Check, reduces
from execgw.server.telemetry.spans import tracer
from execgw.server.trading_calendar import TradingCalendar
from execgw.server.venues import base as venue_reports
from execgw.server.venues.base import Venue, VenueReport

log = logging.getLogger(__name__)

STAGE_RISK = "execgw.stage.risk"
STAGE_VENUE = "execgw.stage.venue"
FILL_SPAN = "execgw.fill"
# A breaker at this fraction of its limit or more is reported on the order's risk span.
NEAR_LIMIT = Decimal("0.8")
SQUARE_OFF_TAG = "MIS_SQUAREOFF"
# A venue that refuses a square-off this often in a day is not asked again: each
# attempt is a new order, and the daily order cap is shared with everything else.
MAX_SQUARE_OFF_REFUSALS = 3
ZERO = Decimal(0)
# Sums of money values without rounding: far more digits than a book's values span
# (about 50 at most), with the default context's traps.
_EXACT = Context(prec=200, traps=[InvalidOperation, DivisionByZero, Overflow])


@dataclass(frozen=True, slots=True)
class HaltOutcome:
    state: TradingState
    cancelled_orders: int


@dataclass(frozen=True, slots=True)
class ResumeOutcome:
    state: TradingState
    still_tripped: list[Breaker]


@dataclass(frozen=True, slots=True)
class RefusedQuote:
    """A quote kept out (price band, full quote book); `position` is its index in the batch."""

    position: int
    symbol: str
    reason: str


@dataclass(frozen=True, slots=True)
class QuotesOutcome:
    accepted: int
    refused: list[RefusedQuote]


@dataclass(frozen=True, slots=True)
class Preview:
    checks: list[Check]

    @property
    def first_failure(self) -> Check | None:
        return next((c for c in self.checks if not c.passed), None)


class ExecutionEngine:
    def __init__(
        self,
        *,
        state: GatewayState,
        clock: Clock,
        quotes: QuoteBook,
        venue: Venue,
        risk: RiskEngine,
        record_quotes: bool = False,
    ) -> None:
        """`record_quotes`: journal each batch's accepted quotes (QuotesRecorded)."""
        self._clock = clock
        self._record_quotes = record_quotes
        self._quotes = quotes
        self._venue = venue
        self._risk = risk
        self._pending: list[JournalRecord] = []
        # Set by anything that changes state, the quote book or the simulator's book, so a
        # command that fails before changing anything can be dropped without a recovery.
        self._dirty = False
        self._ids_before = (state.ids.next_order, state.ids.next_fill)
        # Marks are journaled at most once per quotes.marks_every (unless a breaker or
        # the peak moves on them); counted from start-up, so a fresh gateway does not
        # journal marks for every first order it sees.
        self._marks_due = clock.now() + quotes.marks_every
        # The span that placed each resting order (to link its later fills to) and the
        # telemetry scope (session, mode) it ran in.
        self._order_spans: dict[str, tuple[trace.SpanContext, otel_context.Context]] = {}
        # Positions whose square-off the venue refused too often, by trading day: logged
        # once, and never counted again that day.
        self._square_off_given_up: set[tuple[date | None, str, str]] = set()
        # Open positions' symbols with no mark, as last reported in the log.
        self._unmarked: tuple[str, ...] = ()
        # The valuation the breakers were last evaluated on, and the sequence it was
        # taken at: an order's risk span reuses it while no event has been emitted
        # since (positions, realized PnL and quotes change only through events).
        self._evaluated_on: tuple[int, Decimal, tuple[str, ...]] | None = None
        self.state = state
        self.reload(state)

    def reload(self, state: GatewayState) -> None:
        """Adopt state rebuilt from the journal, dropping anything not yet durable."""
        self.state = state
        self._evaluated_on = None
        self._risk.adopt(state.risk)
        self._pending.clear()
        self._order_spans.clear()
        # Counted again from what is durable: a refusal in a dropped batch must not count.
        self._square_off_given_up.clear()
        self._venue.reset()
        self._venue.restore(state.ledger.open_orders(), state.liquidity.values())

    def recover(self, durable: GatewayState, keep: list[JournalRecord]) -> None:
        """Drop a failed command's half-applied effects: adopt the durable state plus
        `keep`, the records that earlier commands of the batch emitted and that are not
        durable yet. Unlike `reload`, the rate buckets and duplicate window stay: those
        earlier commands still stand."""
        for record in keep:
            durable.apply(record.event)
            durable.sequence = record.sequence
        self.state = durable
        self._evaluated_on = None
        self._risk.adopt(durable.risk, keep_transient=True)
        self._pending = list(keep)
        # Ids may be drawn again: no link may point a new order at an old trace.
        self._order_spans.clear()
        self._square_off_given_up.clear()
        self._venue.reset()
        self._venue.restore(durable.ledger.open_orders(), durable.liquidity.values())

    def begin_command(self) -> int:
        """Mark the start of one command; returns where its records will start."""
        self._dirty = False
        ids = self.state.ids
        self._ids_before = (ids.next_order, ids.next_fill)
        self._risk.begin_command()
        self._quotes.begin_command()
        return len(self._pending)

    def undo_transient(self) -> None:
        """Take back what the current command left outside the journaled state: the ids
        it drew, its rate token and duplicate-window entry, the quotes it applied."""
        self.state.ids.next_order, self.state.ids.next_fill = self._ids_before
        self._risk.undo_command()
        self._quotes.undo_command()

    @property
    def dirty(self) -> bool:
        """Whether the current command has changed anything yet."""
        return self._dirty

    def pending(self) -> list[JournalRecord]:
        return list(self._pending)

    @property
    def calendar(self) -> TradingCalendar:
        return self._risk.calendar

    def take_pending(self) -> list[JournalRecord]:
        pending, self._pending = self._pending, []
        return pending

    # -- commands ---------------------------------------------------------

    def submit(
        self, intent: OrderIntent, client_order_id: str, caller: Caller | None = None
    ) -> Order:
        """`caller`: the authenticated token placing it (journaled as placed_by, held to
        its own order rate); None with auth off."""
        ledger = self.state.ledger
        now = self._advance_time()
        if client_order_id:
            # Keys belong to a strategy and to a trading day: another strategy's key, or
            # yesterday's, is free.
            existing = ledger.order_for_client_id(intent.strategy_code, client_order_id)
            if existing is not None and self._today(existing):
                if existing.intent.fingerprint() != intent.fingerprint():
                    raise IdempotencyConflict(
                        f"client_order_id {client_order_id!r} was already used for a different "
                        f"order ({existing.order_id}); use a new id for a new order"
                    )
                return ledger.snapshot(existing.order_id)
        if self._risk.autoslice:
            sizes = autoslice.slice_sizes(intent.qty, self._quotes.instruments.get(intent.symbol))
            if sizes is not None:
                return self._submit_sliced(intent, client_order_id, sizes, now, caller)
        order_id = self._place(intent, client_order_id, now, caller=caller)
        self._after_change(now)
        return ledger.snapshot(order_id)

    def _submit_sliced(
        self,
        intent: OrderIntent,
        client_order_id: str,
        sizes: list[int],
        now: datetime,
        caller: Caller | None,
    ) -> Order:
        """execution.autoslice: slice (autoslice.py). A retry of the parent key returns
        the children placed the first time, never new ones."""
        ledger = self.state.ledger
        code = intent.strategy_code
        keyless = not client_order_id
        if keyless:
            # Keyed as its first child alone would have been, its children by that key as
            # any parent's: a replay then finds them one parent's (autoslice.sliced_runs),
            # which children keyed "auto-<each one's order id>" hid.
            client_order_id = f"auto-{self.state.ids.peek_order_id()}{self._venue.order_id_suffix}"
        keys = [
            autoslice.child_client_order_id(client_order_id, i) for i in range(1, 1 + len(sizes))
        ]
        if not keyless:
            found = [ledger.order_for_client_id(code, key) for key in keys]
            existing = [o for o in found if o is not None and self._today(o)]
            if existing:
                same = len(existing) == len(sizes) and all(
                    o.intent.fingerprint() == replace(intent, qty=qty).fingerprint()
                    for o, qty in zip(existing, sizes, strict=True)
                )
                if not same:
                    raise IdempotencyConflict(
                        f"client_order_id {client_order_id!r} was already used for a different "
                        f"order, or its child keys {keys[0]!r}... are taken; use a new id"
                    )
                return autoslice.aggregate(
                    client_order_id, [ledger.snapshot(o.order_id) for o in existing]
                )
        quote = self._quotes.get(intent.symbol)
        checks = self._risk.check(
            intent,
            ltp=None if quote is None else quote.ltp,
            position_qty=self._position_qty(intent),
            pending_qty=self._pending_qty(intent),
            now=now,
            caller=caller,
            stale=self._quotes.staleness(intent.symbol),
            orders=len(sizes),
        )
        if quote is None or any(not c.passed for c in checks):
            # Rejected whole, as one order under the parent's own key, for the first
            # check that failed (the trade count included: each child is one trade).
            failed = next((c for c in checks if not c.passed), None)
            order_id = self._place(intent, client_order_id, now, caller=caller, failed=failed)
            self._after_change(now)
            return ledger.snapshot(order_id)
        ids = [
            self._place(replace(intent, qty=qty), key, now, caller=caller, prechecked=True)
            for qty, key in zip(sizes, keys, strict=True)
        ]
        # One order's rate token and duplicate window: risk saw one order.
        self._risk.record_accepted(intent, now, caller)
        self._after_change(now)
        return autoslice.aggregate(client_order_id, [ledger.snapshot(i) for i in ids])

    def cancel(self, order_id: str, scope: frozenset[str] | None = None) -> Order:
        """`scope`: the strategy codes the caller may act for (None: any)."""
        # Time first: a rollover may just have expired the order.
        now = self._advance_time()
        ledger = self.state.ledger
        order = self._order_in_scope(order_id, scope)
        if not order.status.is_open:
            raise OrderNotCancellable(
                f"order {order_id} is {order.status.value} and can no longer be cancelled"
            )
        # A cancel already on its way to the venue is not sent twice: a retry gets the
        # order as it stands, PENDING_CANCEL until the venue confirms.
        if order.status is not OrderStatus.PENDING_CANCEL:
            # The venue stage of a cancel, as of an order: the simulator, the broker's
            # cancel (sent once the cancel is durable) or the dry run's would-be call.
            with tracer.start_as_current_span(
                STAGE_VENUE,
                attributes={
                    "execgw.order_id": order_id,
                    "execgw.venue": self._venue.name,
                    "execgw.dry_run": self._venue.dry_run,
                },
            ) as venue_span:
                self._cancel_resting(order, now, "cancelled by client")
                venue_span.set_attribute("execgw.status", order.status.value)
        return ledger.snapshot(order_id)

    def apply_quotes(self, quotes: list[Quote]) -> QuotesOutcome:
        """Apply well-formed quotes in order; one too far from its symbol's last accepted
        LTP (the price band) is refused and changes nothing."""
        now = self._advance_time()
        refused: list[RefusedQuote] = []
        accepted: list[Quote] = []
        for position, quote in enumerate(quotes):
            full = self._quotes.full_for(quote.symbol)
            if full is not None and not self._has_exposure(quote.symbol):
                refused.append(RefusedQuote(position, quote.symbol, full))
                continue
            why = self._quotes.outside_band(quote.symbol, quote.ltp, self._mark(quote.symbol))
            if why is not None:
                streak = self._quotes.refused(quote.symbol)
                # The 1st, 10th, 100th... in a row: a stuck feed must not flood the log.
                if _is_power_of_ten(streak):
                    log.warning("quote for %s refused (%d in a row): %s", quote.symbol, streak, why)
                refused.append(RefusedQuote(position, quote.symbol, why))
                continue
            self._dirty = True
            accepted.append(quote)
            streak = self._quotes.update(quote)
            if streak:
                log.warning(
                    "quotes for %s accepted again at %s after %d refused by the price band",
                    quote.symbol,
                    quote.ltp,
                    streak,
                )
            if self._risk.book.unmarked:
                self._mark_baseline(quote, now)
            for event in self._venue.on_quote(quote, now, self.state.ids.fill_id):
                self._emit(event, now)
        if self._record_quotes and accepted:
            # After the fills they caused: a replay applies them as one batch, as here.
            self._emit(QuotesRecorded(tuple(accepted), now), now)
        self._after_change(now)
        return QuotesOutcome(len(quotes) - len(refused), refused)

    def tick(self) -> None:
        """Time passing: day rollover, MIS square-off, breakers on moved marks."""
        now = self._advance_time()
        self._after_change(now)

    def apply_venue_reports(self, reports: list[VenueReport]) -> None:
        """The venue's answers, in the order it saw them. A report about an order that is
        closed already, or a trade applied already, is a late duplicate (postback and
        poll both tell): it changes nothing."""
        now = self._advance_time()
        for report in reports:
            order = self.state.ledger.order(report.order_id)
            if order is None or not order.status.is_open:
                continue
            self._apply_venue_report(order, report, now)
        self._after_change(now)

    def _apply_venue_report(self, order: Order, report: VenueReport, now: datetime) -> None:
        awaiting = order.status in (OrderStatus.SUBMITTED, OrderStatus.AMBIGUOUS)
        match report:
            case venue_reports.Acked():
                if awaiting or order.venue_order_id != report.venue_order_id:
                    self._emit(
                        VenueAccepted(order.order_id, report.venue_order_id, now, report.raw), now
                    )
            case venue_reports.Refused():
                self._emit(VenueRejected(order.order_id, now, report.message, report.raw), now)
            case venue_reports.Unknown():
                if order.status is OrderStatus.SUBMITTED:
                    self._emit(OrderAmbiguous(order.order_id, now, report.message), now)
            case venue_reports.Traded():
                self._apply_trade(order, report, now)
            case venue_reports.StatusSeen():
                self._apply_status(order, report, now)
            case venue_reports.CancelFailed():
                if order.status is OrderStatus.PENDING_CANCEL:
                    self._emit(
                        VenueUpdated(order.order_id, now, report.message, cancel_refused=True),
                        now,
                    )

    def _apply_trade(self, order: Order, trade: venue_reports.Traded, now: datetime) -> None:
        if trade.trade_id in order.venue_trade_ids:
            return
        if trade.qty <= 0 or trade.qty > order.remaining_qty:
            log.error(
                "venue trade %s of %d for order %s does not fit its %d remaining; not applied",
                trade.trade_id,
                trade.qty,
                order.order_id,
                order.remaining_qty,
            )
            return
        intent = order.intent
        fill = Fill(
            fill_id=self.state.ids.fill_id(),
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            strategy_code=intent.strategy_code,
            symbol=intent.symbol,
            side=intent.side,
            product=intent.product,
            qty=trade.qty,
            price=trade.price,
            timestamp=trade.timestamp,
            venue_trade_id=trade.trade_id,
        )
        # The trade's own price is the freshest mark the venue gives.
        self._emit(OrderFilled(fill, Quote(intent.symbol, trade.price, trade.timestamp)), now)

    def _apply_status(self, order: Order, seen: venue_reports.StatusSeen, now: datetime) -> None:
        awaiting = order.status in (OrderStatus.SUBMITTED, OrderStatus.AMBIGUOUS)
        if seen.state == venue_reports.REJECTED:
            self._emit(VenueRejected(order.order_id, now, seen.message, seen.raw), now)
            return
        if awaiting or (seen.venue_order_id and order.venue_order_id != seen.venue_order_id):
            self._emit(
                VenueAccepted(order.order_id, seen.venue_order_id, now, seen.raw, seen.message),
                now,
            )
        if seen.state == venue_reports.CANCELLED:
            self._emit(
                OrderCancelled(order.order_id, now, seen.message or "cancelled", seen.raw), now
            )
        elif seen.raw and seen.raw != order.raw:
            # DONE with quantity still open means its trades are not all in yet: the
            # order stays open until they are (the link fetches them).
            self._emit(VenueUpdated(order.order_id, now, seen.message, seen.raw), now)

    def halt(self, strategy_code: str, actor: str, reason: str) -> HaltOutcome:
        now = self._advance_time()
        self._emit(TradingHalted(strategy_code, actor, reason, now), now)
        cancelled = self._cancel_scope(strategy_code, now, f"cancelled by halt: {reason}")
        return HaltOutcome(self._risk.book.state(strategy_code), cancelled)

    def resume(self, strategy_code: str, actor: str, reason: str) -> ResumeOutcome:
        now = self._advance_time()
        self._emit(TradingResumed(strategy_code, actor, reason, now), now)
        self._after_change(now)
        still = sorted(
            breaker for (breaker, code) in self._risk.book.trips if code == strategy_code
        )
        return ResumeOutcome(self._risk.book.state(strategy_code), still)

    # -- reads ------------------------------------------------------------

    def get_order(self, order_id: str, scope: frozenset[str] | None = None) -> Order:
        return self.state.ledger.snapshot(self._order_in_scope(order_id, scope).order_id)

    def _order_in_scope(self, order_id: str, scope: frozenset[str] | None) -> Order:
        """The order, if the caller's scope (strategy codes; None: any) covers it.

        Out of scope, a missing order and another strategy's order get the same refusal,
        so that a caller learns nothing about orders that are not its own."""
        order = self.state.ledger.order(order_id)
        if scope is not None and (order is None or order.intent.strategy_code not in scope):
            raise Forbidden(
                f"order {order_id!r} is not an order of this caller's strategies "
                f"({', '.join(sorted(scope))})"
            )
        if order is None:
            raise OrderNotFound(f"order {order_id!r} not found")
        return order

    def record_denial(self, principal: str, rpc: str, reason: str, suppressed: int) -> None:
        """Journal a refused call (audit only: no state changes, no time-driven events)."""
        now = self._clock.now()
        self._emit(AccessDenied(principal, rpc, reason, now, suppressed), now)

    def list_orders(
        self,
        strategy_code: str,
        status: OrderStatus | None,
        symbol: str,
        after: str = "",
        limit: int | None = None,
        max_examined: int | None = None,
    ) -> tuple[list[Order], bool]:
        """Today's matching orders placed after order `after`, oldest first, at most
        `limit` of them; and whether more may match.

        Looks at `max_examined` orders at most (default: ledger.MAX_ORDERS_EXAMINED), so a
        page costs the single writer a bounded time however long the day and however few
        orders match: the page may then be short, even empty, with more=True. The page is
        an OrderPage whose `scanned_to` is the order id the next page starts after.

        Order ids are fixed-width and grow with placement (as does the ledger's order),
        so `after` stays a valid cursor while orders arrive and after it rolls out of memory.
        """
        # Imported here, not at the top: this method is the only user.
        from execgw.server.ledger import MAX_ORDERS_EXAMINED, OrderPage

        budget = MAX_ORDERS_EXAMINED if max_examined is None else max_examined
        ledger = self.state.ledger
        found: list[Order | ClosedOrder] = []
        scanned_to = after
        examined = 0
        more = False
        # The ledger's index skips the orders before the cursor, and those of other
        # strategies or symbols; the cheap tests come before _today (a time zone
        # conversion).
        for o in ledger.orders_after(after, strategy_code=strategy_code, symbol=symbol):
            if examined == budget:
                more = True
                break
            if (
                (not strategy_code or o.intent.strategy_code == strategy_code)
                and (not symbol or o.intent.symbol == symbol)
                and (status is None or o.status is status)
                and self._today(o)
            ):
                if limit is not None and len(found) == limit:
                    more = True
                    break
                found.append(o)
            examined += 1
            scanned_to = o.order_id
        # Copies for the page only: a snapshot costs far more than a look during the scan.
        page = OrderPage(
            (ledger.snapshot(o.order_id) for o in found), scanned_to=scanned_to, examined=examined
        )
        return page, more

    def preview(self, intent: OrderIntent, caller: Caller | None = None) -> Preview:
        # Time-driven events first, exactly as a submit now would see them.
        now = self._advance_time()
        sizes = (
            autoslice.slice_sizes(intent.qty, self._quotes.instruments.get(intent.symbol))
            if self._risk.autoslice
            else None
        )
        checks = self._risk.check(
            intent,
            ltp=self._quotes.ltp(intent.symbol),
            position_qty=self._position_qty(intent),
            pending_qty=self._pending_qty(intent),
            now=now,
            caller=caller,
            stale=self._quotes.staleness(intent.symbol),
            orders=1 if sizes is None else len(sizes),
        )
        quoted = self._quotes.get(intent.symbol) is not None
        checks.append(rules.market_data(intent.symbol, quoted=quoted))
        return Preview(checks)

    def risk_report(self, strategy_code: str = "") -> RiskReport:
        now = self._advance_time()
        unrealized, unmarked = self._valuation()
        return self._risk.report(
            now,
            unrealized,
            strategy_code,
            unmarked=unmarked,
            stale=self._quotes.stale_symbols(self.exposure_symbols()),
        )

    def exposure_symbols(self) -> frozenset[str]:
        """Symbols with an open position or a resting order: their quotes must keep coming."""
        ledger = self.state.ledger
        symbols = {symbol for (_, symbol, _), _ in ledger.open_position_items()}
        symbols.update(o.intent.symbol for o in ledger.open_orders())
        return frozenset(symbols)

    def positions(self, strategy_code: str = "") -> list[PositionView]:
        return self.state.ledger.positions(self._mark, strategy_code or None)

    # -- the order path -----------------------------------------------------

    def _place(
        self,
        intent: OrderIntent,
        client_order_id: str,
        now: datetime,
        *,
        internal: bool = False,
        caller: Caller | None = None,
        prechecked: bool = False,
        failed: Check | None = None,
    ) -> str:
        """Risk, then the venue (`prechecked`: risk saw the whole order already, an
        autoslice child; `failed`: risk refused it already, with this check). Returns the
        new order's id, accepted or rejected.

        Internal orders (the gateway's own MIS square-off) skip the pre-trade checks:
        they only ever flatten, and must go through even when trading is restricted."""
        order_id = self.state.ids.order_id() + self._venue.order_id_suffix
        client_order_id = client_order_id or f"auto-{order_id}"
        with tracer.start_as_current_span(
            "execgw.order",
            attributes={
                "execgw.order_id": order_id,
                "execgw.client_order_id": client_order_id,
                "execgw.strategy_code": intent.strategy_code,
                "execgw.symbol": intent.symbol,
                "execgw.side": intent.side.value,
                "execgw.qty": intent.qty,
                "execgw.order_type": intent.order_type.value,
                "execgw.product": intent.product.value,
                "execgw.internal": internal,
                "execgw.venue": self._venue.name,
                "execgw.dry_run": self._venue.dry_run,
            },
        ) as span:
            self._route(
                order_id, client_order_id, intent, now, internal, caller, prechecked, failed
            )
            order = self.state.ledger.order(order_id)
            assert order is not None
            span.set_attribute("execgw.status", order.status.value)
            span.set_attribute("execgw.filled_qty", order.filled_qty)
            if order.reject_reason is not None:
                span.set_attribute("execgw.reject_reason", order.reject_reason.value)
        return order_id

    def _route(
        self,
        order_id: str,
        client_order_id: str,
        intent: OrderIntent,
        now: datetime,
        internal: bool,
        caller: Caller | None,
        prechecked: bool = False,
        failed: Check | None = None,
    ) -> None:
        quote = self._quotes.get(intent.symbol)
        placed_by = "" if caller is None else caller.name
        order_span = trace.get_current_span()
        if not internal and not prechecked and failed is None:
            with tracer.start_span(STAGE_RISK) as risk_span:
                checks = self._risk.check(
                    intent,
                    ltp=None if quote is None else quote.ltp,
                    position_qty=self._position_qty(intent),
                    pending_qty=self._pending_qty(intent),
                    now=now,
                    caller=caller,
                    stale=self._quotes.staleness(intent.symbol),
                )
                failed = next((c for c in checks if not c.passed), None)
                if risk_span.is_recording():
                    self._trace_risk(risk_span, checks, intent)
        if failed is None and quote is None:
            failed = rules.market_data(intent.symbol, quoted=False)
        if failed is not None:
            assert failed.reason is not None
            self._emit(
                OrderRejected(
                    order_id,
                    client_order_id,
                    intent,
                    now,
                    failed.reason,
                    failed.message,
                    internal=internal,
                    placed_by=placed_by,
                ),
                now,
            )
            return
        assert quote is not None
        with tracer.start_span(
            STAGE_VENUE,
            attributes={"execgw.venue": self._venue.name, "execgw.dry_run": self._venue.dry_run},
        ) as venue_span:
            opening = self._venue.open(
                order_id, client_order_id, intent, now, internal=internal, placed_by=placed_by
            )
            if isinstance(opening, OrderSubmitted):
                # The venue call as made (or, in a dry run, as it would have been), field
                # by field, on the order's span as in the journal.
                for key, value in opening.request.items():
                    order_span.set_attribute(f"execgw.venue.request.{key}", str(value))
            self._emit(opening, now)
            if not internal and not prechecked:
                self._risk.record_accepted(intent, now, caller)
            order = self.state.ledger.order(order_id)
            assert order is not None
            for event in self._venue.on_new_order(order, quote, now, self.state.ids.fill_id):
                self._emit(event, now)
            venue_span.set_attribute("execgw.status", order.status.value)
        if order.status.is_open and order_span.get_span_context().is_valid:
            # A later fill of this order gets its own span, linked to this one.
            self._order_spans[order_id] = (
                order_span.get_span_context(),
                # The placing call's context without its span: the fill's own trace
                # keeps the session and mode the order was placed in.
                trace.set_span_in_context(trace.INVALID_SPAN, otel_context.get_current()),
            )

    def _trace_risk(self, span: trace.Span, checks: list[Check], intent: OrderIntent) -> None:
        """Failed checks and breakers near their limit, as events on the risk span."""
        for check in checks:
            if not check.passed:
                span.add_event(
                    "execgw.risk.failed",
                    {
                        "execgw.rule": check.name.value,
                        "execgw.reject_reason": "" if check.reason is None else check.reason.value,
                    },
                )
        unrealized, unmarked = self._current_valuation()
        for row in self._risk.near_limit(
            unrealized, NEAR_LIMIT, intent.strategy_code, complete=not unmarked
        ):
            span.add_event(
                "execgw.risk.near_limit",
                {
                    "execgw.breaker": row.breaker.value,
                    "execgw.scope": row.strategy_code or "account",
                    "execgw.value": str(row.value),
                    "execgw.limit": str(row.limit),
                },
            )

    @contextmanager
    def _fill_span(self, order_id: str) -> Iterator[None]:
        """A fill of a resting order: its own span, linked to the span that placed it."""
        found = self._order_spans.get(order_id)
        if found is None:
            yield
            return
        placed, scope = found
        with tracer.start_as_current_span(
            FILL_SPAN,
            context=scope,
            links=[trace.Link(placed)],
            attributes={"execgw.order_id": order_id},
        ) as span:
            yield
            order = self.state.ledger.order(order_id)
            if order is not None:
                span.set_attribute("execgw.status", order.status.value)
                span.set_attribute("execgw.filled_qty", order.filled_qty)

    def _emit(self, event: Event, now: datetime) -> None:
        if isinstance(event, OrderFilled) and event.fill.order_id in self._order_spans:
            with self._fill_span(event.fill.order_id):
                self._append(event, now)
            return
        self._append(event, now)

    def _append(self, event: Event, now: datetime) -> None:
        self._dirty = True
        state = self.state
        state.apply(event)
        state.sequence += 1
        after = (
            state.ledger.snapshot(event_order_id(event))
            if isinstance(event, ORDER_EVENTS)
            else None
        )
        self._pending.append(JournalRecord(state.sequence, now, event, after))
        if after is not None and not after.status.is_open:
            self._order_spans.pop(after.order_id, None)

    def advance_time(self) -> None:
        """Time passing alone: what the venue has due and the time-driven events, with
        no breaker evaluation (replay: the moments the journal shows them happening)."""
        self._advance_time()

    def _advance_time(self) -> datetime:
        now = self._clock.now()
        # What the venue's latency held until now (fill reports above all) lands first:
        # at a rollover it belongs to the day that ends, not to the next.
        for event in self._venue.on_time(now, self.state.ids.fill_id):
            self._emit(event, now)
        book_day = self._risk.book.day
        if book_day is not None and self._risk.calendar.trading_day(now) > book_day:
            # Fills the exchange made before the day ended belong to that day: reports
            # still on their way (fill latency) are taken now, before the rollover closes
            # the day's books, not after it.
            for order in self.state.ledger.open_orders():
                self._land_reports_in_flight(order, now)
            # The new day's baseline values positions at these marks: journal them first,
            # so a restart values them the same way (a fill's price becomes a real mark).
            self._record_marks(now, force=True)
        for event in self._risk.due(now, self._baseline):
            self._emit(event, now)
            if isinstance(event, DayRolledOver):
                # DAY validity ends with the trading day.
                self._cancel_where(
                    lambda o: True,
                    now,
                    f"expired: trading day ended before {event.trading_day}",
                    expire=True,
                )
            elif isinstance(event, MisSquareOffStarted):
                self._cancel_where(
                    lambda o: o.intent.product is Product.MIS, now, "cancelled at MIS square-off"
                )
        if self._risk.calendar.mis_closed(now) and self._risk.book.squared_off_day is not None:
            self._flatten_mis(now)
        return now

    def _after_change(self, now: datetime) -> None:
        """Trip any breaker whose condition now holds, and enforce what it trips to."""
        unrealized, unmarked = self._valuation()
        self._evaluated_on = (self.state.sequence, unrealized, unmarked)
        if unmarked != self._unmarked:
            if unmarked:
                log.warning(
                    "no mark for open positions in %s: equity breakers wait for their quotes",
                    ", ".join(unmarked),
                )
            else:
                log.info("every open position has a mark again: equity breakers evaluate")
            self._unmarked = unmarked
        events = self._risk.evaluate(now, unrealized, unmarked)
        # A journaled peak or trip must be reproducible after a restart: the marks it
        # was computed from go to the journal with it.
        self._record_marks(now, force=bool(events))
        for event in events:
            self._emit(event, now)
            if not isinstance(event, BreakerTripped) or not event.breaker.exposure:
                continue  # trade-count limits stop new orders; accepted ones stand
            why = f"cancelled: {event.message}"
            if event.state is TradingState.HALTED:
                self._cancel_scope(event.strategy_code, now, why)
            else:
                self._cancel_where(self._adds_exposure_in(event.strategy_code), now, why)

    def _adds_exposure_in(self, strategy_code: str) -> Callable[[Order], bool]:
        """Resting orders that, taken oldest first, would not just shrink their position."""
        keep: dict[tuple[str, str, Product, Side], int] = {}

        def adds_exposure(order: Order) -> bool:
            if not _in_scope(order, strategy_code):
                return False
            intent = order.intent
            key = (intent.strategy_code, intent.symbol, intent.product, intent.side)
            pending = keep.get(key, 0)
            position = self._position_qty(intent)
            remaining = replace(intent, qty=order.remaining_qty)
            if reduces(remaining, position, pending):
                keep[key] = pending + order.remaining_qty
                return False
            return True

        return adds_exposure

    def _flatten_mis(self, now: datetime) -> None:
        ledger = self.state.ledger
        working = {
            (o.intent.strategy_code, o.intent.symbol) for o in ledger.open_orders() if o.internal
        }
        for (code, symbol, product), position in ledger.position_items():
            if product is not Product.MIS or position.net_qty == 0 or (code, symbol) in working:
                continue
            if self._quotes.get(symbol) is None:
                continue  # retried on a later tick, once there is a price to flatten at
            # Given up on already today: not counted again (counting reads every order
            # of the symbol, archived ones too, on every command until the rollover).
            given_up = (self._risk.book.day, code, symbol)
            if given_up in self._square_off_given_up:
                continue
            if self._square_off_refusals(code, symbol) >= MAX_SQUARE_OFF_REFUSALS:
                self._square_off_given_up.add(given_up)
                log.error(
                    "MIS square-off of %s %s refused by the venue %d times today: no "
                    "more attempts; flatten it by hand",
                    code,
                    symbol,
                    MAX_SQUARE_OFF_REFUSALS,
                )
                continue
            intent = OrderIntent(
                symbol=symbol,
                strategy_code=code,
                side=Side.SELL if position.net_qty > 0 else Side.BUY,
                # No more than the exchange takes in one order: the rest goes in the
                # next slice, on a later tick, once this one has filled.
                qty=_square_off_qty(abs(position.net_qty), self._quotes.instruments.get(symbol)),
                order_type=OrderType.MARKET,
                product=Product.MIS,
                validity=Validity.DAY,
                tag=SQUARE_OFF_TAG,
                reason=f"MIS square-off at {self._risk.calendar.square_off_text()}",
            )
            order_id = self._place(intent, "", now, internal=True)
            log.info("MIS square-off %s %s %s: order %s", code, symbol, intent.qty, order_id)

    def _square_off_refusals(self, strategy_code: str, symbol: str) -> int:
        """Today's square-off orders of this position the venue refused."""
        return sum(
            1
            for o in self.state.ledger.orders_after("", symbol=symbol)
            if o.internal
            and o.intent.strategy_code == strategy_code
            and o.intent.symbol == symbol
            and o.reject_reason is RejectReason.BROKER
            and self._today(o)
        )

    def _cancel_scope(self, strategy_code: str, now: datetime, message: str) -> int:
        return self._cancel_where(lambda o: _in_scope(o, strategy_code), now, message)

    def _cancel_where(
        self,
        wanted: Callable[[Order], bool],
        now: datetime,
        message: str,
        *,
        expire: bool = False,
    ) -> int:
        """Cancel the open orders `wanted` picks; with `expire`, the venue has ended them
        already (DAY validity at the rollover), so no cancel goes to it."""
        doomed = [
            o
            for o in self.state.ledger.open_orders()
            if o.status is not OrderStatus.PENDING_CANCEL or expire
            if wanted(o)
        ]
        for order in doomed:
            if expire:
                self._dirty = True
                # Fills the venue made before the day ended stand: reports still on their
                # way (fill latency, at most a minute) are taken now, then what is left
                # expires.
                self._land_reports_in_flight(order, now)
                self._venue.forget(order)
                if order.status.is_open:
                    self._emit(OrderCancelled(order.order_id, now, message), now)
            else:
                self._cancel_resting(order, now, message)
        return len(doomed)

    def _land_reports_in_flight(self, order: Order, now: datetime) -> None:
        """The fills the venue made for `order` whose reports are still on their way
        (fill latency), taken now: the day closing or the order expiring cannot undo
        them."""
        for flight in order.fills_in_flight:
            self._emit(OrderFilled(flight.fill, flight.quote, raw=flight.raw), now)

    def _cancel_resting(self, order: Order, now: datetime, message: str) -> None:
        self._dirty = True
        for event in self._venue.cancel(order, now, message):
            self._emit(event, now)

    def _today(self, order: Order | ClosedOrder) -> bool:
        return self._risk.calendar.trading_day(order.created_at) == self._risk.book.day

    def _pending_qty(self, intent: OrderIntent) -> int:
        """Quantity the strategy's open orders already work on this side of this position."""
        return sum(
            o.remaining_qty
            for o in self.state.ledger.open_orders()
            if o.intent.strategy_code == intent.strategy_code
            and o.intent.symbol == intent.symbol
            and o.intent.product is intent.product
            and o.intent.side is intent.side
        )

    def _position_qty(self, intent: OrderIntent) -> int:
        position = self.state.ledger.position((intent.strategy_code, intent.symbol, intent.product))
        return 0 if position is None else position.net_qty

    def _baseline(self) -> tuple[Decimal, tuple[tuple[str, str, str], ...]]:
        """Unrealized PnL of open positions that have a mark, and those that have none."""
        marked, unmarked = self._marked_value()
        return marked, tuple(sorted((code, symbol, kind.value) for code, symbol, kind in unmarked))

    def _mark_baseline(self, quote: Quote, now: datetime) -> None:
        for code, symbol, product in sorted(self._risk.book.unmarked):
            if symbol != quote.symbol:
                continue
            position = self.state.ledger.position((code, symbol, Product(product)))
            unrealized = ZERO if position is None else position.unrealized(quote.ltp)
            self._emit(BaselineMarked(code, symbol, product, unrealized, now), now)

    def _has_exposure(self, symbol: str) -> bool:
        """A position or resting order in `symbol`: its quotes are always taken, however
        full the quote book is with other symbols."""
        ledger = self.state.ledger
        return (
            symbol in self.state.marks
            or ledger.has_open_position(symbol)
            or any(o.intent.symbol == symbol for o in ledger.open_orders())
        )

    def _mark(self, symbol: str) -> Decimal | None:
        """What a position in `symbol` is worth per unit: the last accepted LTP, else the
        journaled mark (after a restart, until the first quote); None when unknown."""
        ltp = self._quotes.ltp(symbol)
        return ltp if ltp is not None else self.state.marks.get(symbol)

    def _current_valuation(self) -> tuple[Decimal, tuple[str, ...]]:
        """_valuation(), reusing the breakers' last one when nothing happened since."""
        cached = self._evaluated_on
        if cached is not None and cached[0] == self.state.sequence:
            return cached[1], cached[2]
        return self._valuation()

    def _valuation(self) -> tuple[Decimal, tuple[str, ...]]:
        """Unrealized PnL of the open positions that have a mark, and the symbols of
        those that have none: those are unknown, never counted as zero."""
        total, unmarked = self._marked_value()
        return total, tuple(sorted({symbol for _, symbol, _ in unmarked}))

    def _marked_value(self) -> tuple[Decimal, list[PositionKey]]:
        """What the day's baseline and the breakers' valuation both add up: the unrealized
        PnL of the open positions that have a mark, and the positions that have none.
        Summed exactly and rounded once, so the total is the same whatever order the
        positions come in (the order they last opened, which a restart does not keep),
        and a baseline taken with no price moved equals the valuation after it."""
        total = ZERO
        unmarked: list[PositionKey] = []
        add = _EXACT.add
        for key, position in self.state.ledger.open_position_items():
            ltp = self._mark(key[1])
            if ltp is None:
                unmarked.append(key)
            else:
                total = add(total, position.unrealized(ltp))
        return +total, unmarked

    def _record_marks(self, now: datetime, *, force: bool) -> None:
        """Journal the marks of symbols with an open position or resting order, when
        they changed: at most once per marks_every, or now when `force`."""
        if not force and now < self._marks_due:
            return
        self._marks_due = now + self._quotes.marks_every
        marks: dict[str, Decimal] = {}
        for symbol in sorted(self.exposure_symbols()):
            ltp = self._mark(symbol)
            if ltp is not None:
                marks[symbol] = ltp
        if marks != self.state.marks:
            self._emit(MarksRecorded(marks, now), now)


def _square_off_qty(open_qty: int, instrument: Instrument) -> int:
    freeze = instrument.freeze_qty
    return open_qty if freeze is None else min(open_qty, freeze)


def _is_power_of_ten(n: int) -> bool:
    if n < 1:
        return False
    while n % 10 == 0:
        n //= 10
    return n == 1


def _in_scope(order: Order, strategy_code: str) -> bool:
    return strategy_code == ACCOUNT or order.intent.strategy_code == strategy_code
