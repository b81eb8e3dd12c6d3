"""SmartFillSimulator: the paper venue. Fills orders against the latest quote.

Pricing rules (all exact, in Decimal), with the market model of fill_model.py:
- MARKET fills at the reference price (LTP, or the touch) moved by slippage against
  the trader, snapped to the tick in the direction that is worse for the trader.
- A marketable LIMIT fills at once at that slipped price, capped at the limit.
- A resting DAY LIMIT fills at its limit when a later quote reaches it; IOC is cancelled.
- SL / SL_M rest until LTP reaches the trigger (Kite triggers on LTP), then act as
  LIMIT / MARKET.
- With liquidity caps on, a fill takes at most what the quote still offers; a DAY
  remainder stays working (PARTIAL) and fills on later quotes, an IOC remainder is
  cancelled. Without caps (the default), every fill takes all that remains.

The simulator owns only its book of working orders and what it saw of the market. It
decides, and returns events; the core applies them to the ledger.
"""

from __future__ import annotations

import heapq
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from execgw.server.domain import (
    Fill,
    FillInFlight,
    Order,
    OrderStatus,
    OrderType,
    Quote,
    QuoteLiquidity,
    Side,
    Validity,
)
from execgw.server.events import (
    CancelRequested,
    Event,
    FillExecuted,
    OrderArrived,
    OrderCancelled,
    OrderFilled,
    OrderTriggered,
    QuoteObserved,
    VenueRejected,
    VenueUpdated,
)
from execgw.server.instruments import InstrumentRegistry
from execgw.server.venues.charges import ChargeModel
from execgw.server.venues.fill_model import FillModel, Liquidity
from execgw.server.venues.latency import Kind, LatencyModel

log = logging.getLogger(__name__)

# Kite statuses after which nothing is pending.
_KITE_FINAL = frozenset({"COMPLETE", "CANCELLED", "REJECTED"})


@dataclass(frozen=True, slots=True)
class _Pending:
    """An order or a cancel on its way to the exchange; or, with fill latency, the
    report of a fill ("fill") or of a cancel ("cancelled") on its way back from it."""

    due: datetime
    seq: int  # ties at one due time go in the order sent
    kind: Kind | Literal["cancelled"]
    order: Order
    message: str
    report: FillInFlight | None = None


@dataclass(slots=True)
class _Working:
    order: Order
    # False only for a stop order still waiting for its trigger; a resting limit is live.
    triggered: bool


class SmartFillSimulator:
    def __init__(
        self,
        *,
        slippage_bps: Decimal,
        instruments: InstrumentRegistry,
        model: FillModel | None = None,
        charges: ChargeModel | None = None,
        latency: LatencyModel | None = None,
        kite_statuses: bool = False,
    ) -> None:
        if slippage_bps < 0:
            raise ValueError("slippage_bps must be >= 0")
        self._model = replace(model or FillModel(), slippage_bps=slippage_bps)
        self._instruments = instruments
        self._working: dict[str, dict[str, _Working]] = {}
        # Per symbol: the latest quote and the cumulative volume of the one before it,
        # so that a quote's traded volume is known. Kept only when liquidity is tracked.
        self._seen: dict[str, tuple[Quote, int | None]] = {}
        # Per symbol: what the latest quote still offers after the fills it gave.
        self._liquidity: dict[str, Liquidity] = {}
        # Quotes observed by this call, journaled (QuoteObserved) ahead of their fills so
        # that a restart gets _seen and _liquidity back (restore's `liquidity`).
        self._observed: list[Event] = []
        # Per symbol: the latest quote observed but not journaled. Only a symbol with an
        # order here (working or on its way) has its quotes journaled: one with none is
        # journaled lazily, when an order comes (see _journal_quote).
        self._unjournaled: dict[str, QuoteObserved] = {}
        # Per symbol with no open order: its journaled quote (budget, previous volume)
        # as restored. Perhaps stale, so used only for that very quote (the quote in
        # force after a rebuild that kept the quote book), never for the volume before
        # a new one.
        self._idle: dict[str, tuple[Liquidity, int | None]] = {}
        self._charges = charges
        self._latency = latency or LatencyModel()
        # Put Kite's status strings in each event's raw, as Kite's order updates have.
        self._kite_statuses = kite_statuses
        # Orders and cancels sent but not yet at the exchange, per symbol, by due time.
        self._pending: dict[str, list[_Pending]] = {}
        self._pending_seq = 0
        # The quote in force per symbol: what an order arriving between quotes meets.
        self._last_quote: dict[str, Quote] = {}
        # Quantity filled by events this call returns, which the ledger has not folded
        # into the orders yet: one quote may fill an order on arrival and again resting.
        self._unfolded: dict[str, int] = {}
        # Brokerage each working order paid so far: Zerodha caps it per executed order.
        self._brokerage: dict[str, Decimal] = {}
        # Orders whose rest the exchange cancelled while reports of their fills were on
        # their way (fill latency): nothing of them works there, though the gateway
        # still has them open until the cancel's confirmation lands.
        self._cancelled_at_exchange: dict[str, Order] = {}
        # Orders that deliveries of this call closed (rejected, cancelled): the ledger
        # sees those events only after the call, so the orders' statuses are stale here.
        self._closed: set[str] = set()

    @property
    def model(self) -> FillModel:
        return self._model

    def reset(self) -> None:
        self._working.clear()
        self._pending.clear()
        self._unfolded.clear()
        self._cancelled_at_exchange.clear()
        # Restored from the state's journaled liquidity (QuoteObserved and the fills
        # since): what the durable quotes offered, less what durable fills took.
        self._seen.clear()
        self._liquidity.clear()
        self._observed.clear()
        self._unjournaled.clear()
        self._idle.clear()
        self._brokerage.clear()

    def working_order_ids(self) -> list[str]:
        return [oid for book in self._working.values() for oid in book]

    def restore(self, orders: Iterable[Order], liquidity: Iterable[QuoteLiquidity] = ()) -> None:
        """Put open orders back in the book, e.g. after a restart, and each symbol's
        latest quote with what fills took from it (when liquidity is tracked).

        Only the symbols of open orders get theirs back in full: a symbol's quotes are
        journaled only while it has orders, so the journaled quote of any other may be
        stale (its volume would make the next quote's traded volume look larger than it
        was). Such a quote serves only an order that meets that very quote."""
        self._unfolded.clear()
        orders = list(orders)
        if self._model.tracks_liquidity:
            busy = {o.intent.symbol for o in orders if o.status.is_open}
            for entry in liquidity:
                quote = entry.quote
                budget = Liquidity.of(self._model, quote, entry.previous_volume)
                budget.take(Side.BUY, entry.taken_buy)
                budget.take(Side.SELL, entry.taken_sell)
                if quote.symbol not in busy:
                    self._idle[quote.symbol] = (budget, entry.previous_volume)
                    continue
                self._seen[quote.symbol] = (quote, entry.previous_volume)
                self._liquidity[quote.symbol] = budget
                # The quote in force at the exchange: orders on their way meet it.
                self._last_quote.setdefault(quote.symbol, quote)
        for order in orders:
            if order.status.is_open:
                brokerage = order.brokerage + sum(
                    (f.fill.charges.brokerage for f in order.fills_in_flight if f.fill.charges),
                    Decimal(0),
                )
                if brokerage:
                    self._brokerage[order.order_id] = brokerage
                for flight in order.fills_in_flight:
                    # Made by the exchange before the restart, reported when it was due.
                    self._schedule(flight.reported_at, "fill", order, "", report=flight)
                if not order.arrived and self._latency.active("insert"):
                    # Still on its way to the simulated exchange: it arrives as it would
                    # have (freeze check, IOC, first fill) once its latency has passed.
                    due = order.created_at + self._latency.delay("insert", order.order_id)
                    self._schedule(due, "insert", order, "")
                    if order.status is OrderStatus.PENDING_CANCEL:
                        # Its cancel was sent too: it reaches the exchange when it
                        # would have, before the order (which it then cancels) or after.
                        self._schedule(self._cancel_due(order), "cancel", order, order.message)
                    continue
                is_stop = order.intent.order_type in (OrderType.SL, OrderType.SL_M)
                left = self._remaining(order)
                ioc = order.intent.validity is Validity.IOC and not is_stop
                if ioc and order.fills_in_flight and left > 0:
                    # Its remainder was cancelled when it arrived; the confirmation comes
                    # behind the reports of its fills, as it would have.
                    due = max(f.reported_at for f in order.fills_in_flight)
                    self._schedule(due, "cancelled", order, self._ioc_remainder(order, left))
                    continue
                if left > 0:
                    # Not when the exchange filled it all: only the reports are to come.
                    self._rest(order, triggered=order.triggered or not is_stop)
                if order.status is OrderStatus.PENDING_CANCEL:
                    # Its cancel was on its way: it arrives when it would have, so a
                    # quote before then may still fill the order, as without a restart.
                    # A status update since (a trigger's) may have blanked its message.
                    message = order.message or "cancelled by client"
                    self._schedule(self._cancel_due(order), "cancel", order, message)

    def _cancel_due(self, order: Order) -> datetime:
        """When the cancel of a PENDING_CANCEL order reaches the exchange: sent plus
        the cancel latency, which depends only on the seed and the order id."""
        # A journal from before cancel_requested_at: CancelRequested was, at best, the
        # order's last update.
        sent = order.cancel_requested_at or order.updated_at
        return sent + self._latency.delay("cancel", order.order_id)

    def market_price(self, side: Side, symbol: str, ltp: Decimal) -> Decimal:
        """LTP moved by the fixed slippage against the trader (the seed's market price)."""
        model = replace(self._model, slippage_model="fixed_bps")
        return model.taker_price(self._instruments.get(symbol), side, ltp, Decimal(0))

    def on_new_order(
        self, order: Order, quote: Quote, now: datetime, next_fill_id: Callable[[], str]
    ) -> list[Event]:
        """The immediate outcome of an accepted order: fill, rest, trigger or cancel;
        with insert latency, nothing until it reaches the exchange (a later quote)."""
        self._unfolded.clear()
        self._last_quote[quote.symbol] = quote
        if self._latency.active("insert"):
            due = now + self._latency.delay("insert", order.order_id)
            self._schedule(due, "insert", order, "")
            # The quote it will meet, if no other comes first: a restart must know it.
            self._journal_quote(quote.symbol)
            observed, self._observed = self._observed, []
            return [*observed, *self._status(order, now, "OPEN PENDING")]
        return self._arrive(order, quote, now, next_fill_id)

    def cancel_now(self, order: Order, now: datetime, message: str) -> list[Event]:
        """A cancel with no cancel latency. With fill reports of the order on their way
        the exchange has filled it (in part or whole) already: the order is
        PENDING_CANCEL, the fills stand and are reported as they come, and the cancel of
        whatever is left (nothing, if it is filled) is confirmed after them."""
        self._unfolded.clear()
        if not order.fills_in_flight:
            self.cancel(order.order_id, order.intent.symbol)
            return [OrderCancelled(order.order_id, now, message, raw=self.kite_cancelled(order))]
        return [
            CancelRequested(order.order_id, now, message),
            *self.cancel_behind_reports(order, now, message),
        ]

    def cancel_behind_reports(self, order: Order, now: datetime, message: str) -> list[Event]:
        """The exchange cancels what is left of an order whose fill reports are on their
        way (order.fills_in_flight); the confirmation (OrderCancelled) comes after them,
        and none if the exchange had filled it all. The caller has the order
        PENDING_CANCEL meanwhile."""
        self._unfolded.clear()
        if self._at_exchange(order):
            return self._exchange_cancel(order, now, message)
        return []

    def request_cancel(self, order: Order, now: datetime, message: str) -> bool:
        """Send a cancel that reaches the exchange after the cancel latency; False (and
        nothing sent) when there is none: the caller cancels at once."""
        if not self._latency.active("cancel"):
            return False
        self._unfolded.clear()
        due = now + self._latency.delay("cancel", order.order_id)
        self._schedule(due, "cancel", order, message)
        return True

    def _arrive(
        self, order: Order, quote: Quote, now: datetime, next_fill_id: Callable[[], str]
    ) -> list[Event]:
        """An order reaches the exchange and meets `quote`."""
        met = self._meet(order, quote, now, next_fill_id)
        # The quote it met, if not journaled yet, goes ahead of the fills against it.
        self._journal_quote(order.intent.symbol)
        head, self._observed = self._observed, []
        if self._latency.active("insert"):
            head.append(OrderArrived(order.order_id, now))
        return [*head, *met]

    def _meet(
        self, order: Order, quote: Quote, now: datetime, next_fill_id: Callable[[], str]
    ) -> list[Event]:
        intent = order.intent
        freeze = self._instruments.get(intent.symbol).freeze_qty
        if freeze is not None and intent.qty > freeze:
            # The exchange refuses such an order outright (execution.autoslice: reject).
            # Nothing of it is left to deliver: a cancel on its way finds it gone.
            self._drop_pending(order)
            self._remove(order)
            return [
                VenueRejected(
                    order.order_id,
                    now,
                    f"qty {intent.qty} exceeds the freeze quantity {freeze} of {intent.symbol}",
                    raw=self._raw(order, "REJECTED"),
                )
            ]
        liquidity = self._liquidity_for(quote)
        if intent.order_type in (OrderType.SL, OrderType.SL_M):
            if not self._trigger_crossed(order, quote.ltp):
                self._rest(order, triggered=False)
                return self._status(order, now, "TRIGGER PENDING")
            triggered = [
                *self._status(order, now, "TRIGGER PENDING"),
                OrderTriggered(order.order_id, now, quote.ltp),
                *self._status(order, now, "OPEN"),
            ]
            return triggered + self._execute(
                order, quote, liquidity, now, next_fill_id, resting_allowed=True
            )
        return self._status(order, now, "OPEN") + self._execute(
            order,
            quote,
            liquidity,
            now,
            next_fill_id,
            resting_allowed=intent.validity is Validity.DAY,
        )

    def on_time(self, now: datetime, next_fill_id: Callable[[], str]) -> list[Event]:
        """Everything the latency model holds that is due by `now`, for every symbol, in
        due order: orders and cancels reaching the exchange, reports of its fills and
        cancels reaching the gateway. Time alone delivers them: a report must not wait
        for its symbol's next quote, which may never come (the day's last quote, then
        the rollover). An order that would reach the exchange with no quote known there
        (after a restart) waits for the first, and what of it is behind it with it;
        other orders' reports and cancels do not wait."""
        self._unfolded.clear()
        self._closed.clear()
        self._forget_closed_cancels()
        events: list[Event] = []
        # Per symbol with something due, its next item, by (due, seq): each delivery
        # changes only its own symbol's queue, which goes back in with its next one.
        heap: list[tuple[datetime, int, str]] = []
        for symbol in list(self._pending):
            if not self._pending[symbol]:
                del self._pending[symbol]
                continue
            self._push_due(heap, symbol, now)
        while heap:
            due, seq, symbol = heapq.heappop(heap)
            index = self._first_deliverable(symbol, now)
            if index is None:
                continue
            item = self._pending[symbol][index]
            if (item.due, item.seq) != (due, seq):
                # Not the item it was queued for (never expected): queue it again.
                heapq.heappush(heap, (item.due, item.seq, symbol))
                continue
            events += self._deliver_one(symbol, index, now, next_fill_id)
            self._push_due(heap, symbol, now)
        return events

    def _push_due(self, heap: list[tuple[datetime, int, str]], symbol: str, now: datetime) -> None:
        """Queue `symbol` by its next deliverable item, if one is due."""
        if not self._pending.get(symbol):
            return
        index = self._first_deliverable(symbol, now)
        if index is not None:
            item = self._pending[symbol][index]
            heapq.heappush(heap, (item.due, item.seq, symbol))

    def _first_deliverable(self, symbol: str, now: datetime) -> int | None:
        """The position of the first item due for `symbol` that can be delivered. With
        no quote known there (after a restart) an order cannot reach the exchange: it
        waits for the first quote, and what else of that order is behind it with it;
        the rest (other orders' reports and cancels) goes on as time passes."""
        pending = self._pending[symbol]
        if symbol in self._last_quote:
            return 0 if pending[0].due <= now else None
        waiting: set[str] = set()
        for index, item in enumerate(pending):
            if item.due > now:
                return None
            if item.kind == "insert" or item.order.order_id in waiting:
                waiting.add(item.order.order_id)
                continue
            return index
        return None

    def _forget_closed_cancels(self) -> None:
        if self._cancelled_at_exchange:
            self._cancelled_at_exchange = {
                k: o for k, o in self._cancelled_at_exchange.items() if o.status.is_open
            }

    def on_quote(self, quote: Quote, now: datetime, next_fill_id: Callable[[], str]) -> list[Event]:
        self._unfolded.clear()
        self._closed.clear()
        self._forget_closed_cancels()
        events: list[Event] = []
        # After a restart, what was on its way meets the first quote seen.
        self._last_quote.setdefault(quote.symbol, quote)
        if self._pending.get(quote.symbol):
            # What reached the exchange before this quote met the quote then in force.
            events += self._deliver(quote.symbol, now, next_fill_id)
        if self._latency.active("insert"):
            self._last_quote[quote.symbol] = quote
        liquidity = None
        if self._model.tracks_liquidity:
            seen = self._seen.get(quote.symbol)
            if seen is not None and seen[0] is quote:
                # An order on its way met this very quote first (after a restart, with
                # nothing restored): it is observed once.
                liquidity = self._liquidity[quote.symbol]
            else:
                liquidity = self._observe(quote)
            if self._working.get(quote.symbol) or self._pending.get(quote.symbol):
                # Orders here may fill against it, also after a restart: journal it.
                self._journal_quote(quote.symbol)
                events += self._observed
                self._observed = []
        book = self._working.get(quote.symbol)
        if not book:
            return events
        # Oldest first: time priority among orders the same quote reaches, and for the
        # liquidity it offers.
        for order_id, working in list(book.items()):
            order = working.order
            order_type = order.intent.order_type
            if not working.triggered:
                if not self._trigger_crossed(order, quote.ltp):
                    continue
                working.triggered = True
                events.append(OrderTriggered(order_id, now, quote.ltp))
                events += self._status(order, now, "OPEN")
                if order_type is OrderType.SL_M:
                    events += self._take(order, quote, liquidity, now, next_fill_id)
                elif self._limit_marketable(order, quote):
                    events += self._take(
                        order, quote, liquidity, now, next_fill_id, limit=order.intent.price
                    )
                continue
            if order_type in (OrderType.MARKET, OrderType.SL_M):
                # Only a remainder the liquidity caps left over rests at market.
                events += self._take(order, quote, liquidity, now, next_fill_id)
            elif self._resting_limit_fills(order, quote):
                # A resting limit is the passive side: it trades at its own price.
                assert order.intent.price is not None
                events += self._take(
                    order,
                    quote,
                    liquidity,
                    now,
                    next_fill_id,
                    limit=order.intent.price,
                    price=order.intent.price,
                )
        return events

    def cancel(self, order_id: str, symbol: str) -> bool:
        self._cancelled_at_exchange.pop(order_id, None)
        pending = self._pending.get(symbol)
        if pending:
            for p in pending:
                if p.order.order_id == order_id and p.kind == "fill":
                    self._lost(p)
            pending[:] = [p for p in pending if p.order.order_id != order_id]
        self._brokerage.pop(order_id, None)
        book = self._working.get(symbol)
        if book is None or order_id not in book:
            return False
        del book[order_id]
        return True

    def kite_cancelled(self, order: Order) -> dict[str, Any]:
        """The raw of an order cancelled at once by the venue."""
        return self._raw(order, "CANCELLED")

    def _raw(self, order: Order, status: str) -> dict[str, Any]:
        """Kite's view of the order (its order-update fields) with `status`, counting
        fills this call made; empty unless kite_statuses is on."""
        if not self._kite_statuses:
            return {}
        filled = order.intent.qty - self._remaining(order)
        return {
            "status": status,
            "filled_quantity": filled,
            "pending_quantity": 0 if status in _KITE_FINAL else order.intent.qty - filled,
        }

    def _status(self, order: Order, now: datetime, status: str) -> list[Event]:
        """An order update that only changes the Kite status; none when it is off."""
        if not self._kite_statuses:
            return []
        return [VenueUpdated(order.order_id, now, "", raw=self._raw(order, status))]

    def _remaining(self, order: Order) -> int:
        """What is left of the order at the exchange: neither reported (filled_qty), nor
        filled with its report on the way, nor filled by events of this call."""
        return order.remaining_qty - order.in_flight_qty - self._unfolded.get(order.order_id, 0)

    def _schedule(
        self,
        due: datetime,
        kind: Kind | Literal["cancelled"],
        order: Order,
        message: str,
        *,
        report: FillInFlight | None = None,
    ) -> None:
        self._pending_seq += 1
        if kind == "cancelled":
            self._cancelled_at_exchange[order.order_id] = order
        pending = self._pending.setdefault(order.intent.symbol, [])
        pending.append(_Pending(due, self._pending_seq, kind, order, message, report))
        pending.sort(key=lambda p: (p.due, p.seq))

    @staticmethod
    def _lost(item: _Pending) -> None:
        """A fill the exchange made whose report is dropped: never expected (the caller
        delivers the order's fills_in_flight before closing it), so said loudly."""
        report = item.report
        order = item.order
        if report is None:
            return
        if any(f.fill.fill_id == report.fill.fill_id for f in order.fills_in_flight):
            log.error(
                "the report of fill %s (%d of order %s at %s, made at %s) was dropped "
                "undelivered: the gateway's position misses it",
                report.fill.fill_id,
                report.fill.qty,
                order.order_id,
                report.fill.price,
                report.fill.timestamp.isoformat(),
            )

    def _deliver(self, symbol: str, now: datetime, next_fill_id: Callable[[], str]) -> list[Event]:
        """What is due by `now` for `symbol`, in due order."""
        pending = self._pending[symbol]
        events: list[Event] = []
        while pending and pending[0].due <= now:
            events += self._deliver_one(symbol, 0, now, next_fill_id)
        return events

    def _deliver_one(
        self, symbol: str, index: int, now: datetime, next_fill_id: Callable[[], str]
    ) -> list[Event]:
        """The item pending for `symbol` at `index`: an order or a cancel reaching the
        exchange, the report of a fill or of a cancel reaching the gateway."""
        item = self._pending[symbol].pop(index)
        order = item.order
        events: list[Event] = []
        if not order.status.is_open or order.order_id in self._closed:
            # Closed by the gateway: a report it still waited for was lost there (the
            # ledger says so loudly), never here.
            return events
        match item.kind:
            case "fill":
                assert item.report is not None
                report = item.report
                fill_id = report.fill.fill_id
                # Once: a report the gateway took already (e.g. at the rollover) is not
                # applied again.
                if any(f.fill.fill_id == fill_id for f in order.fills_in_flight):
                    events.append(OrderFilled(report.fill, report.quote, raw=report.raw))
            case "cancelled":
                raw = self._raw(order, "CANCELLED")
                events.append(OrderCancelled(order.order_id, now, item.message, raw=raw))
            case "insert":
                if self._remaining(order) > 0:
                    events += self._arrive(order, self._last_quote[symbol], now, next_fill_id)
            case "cancel":
                # Nothing left when the exchange filled it all (the fill stands, and
                # its report, on the way, closes the order) or cancelled the rest.
                if self._at_exchange(order):
                    events += self._exchange_cancel(order, now, item.message)
        self._closed.update(
            e.order_id for e in events if isinstance(e, VenueRejected | OrderCancelled)
        )
        return events

    def _at_exchange(self, order: Order) -> bool:
        """Whether some of the order still works at the exchange: not all filled there,
        and the rest not cancelled there already (its confirmation behind reports)."""
        return self._remaining(order) > 0 and order.order_id not in self._cancelled_at_exchange

    def _exchange_cancel(self, order: Order, now: datetime, message: str) -> list[Event]:
        """The exchange cancels what is left of the order (before it arrived, if the
        cancel overtook the insert). The confirmation travels behind the reports of the
        order's fills still on their way: none comes after it."""
        order_id = order.order_id
        pending = self._drop_pending(order)
        self._remove(order)
        self._brokerage.pop(order_id, None)
        reports = [p.due for p in pending if p.order.order_id == order_id]
        if reports:
            self._schedule(max(reports), "cancelled", order, message)
            return []
        return [OrderCancelled(order_id, now, message, raw=self._raw(order, "CANCELLED"))]

    def _drop_pending(self, order: Order) -> list[_Pending]:
        """Drop what of the order is on its way to the exchange, and any confirmation
        of a cancel: only the reports of fills the exchange made stay. The symbol's
        queue is returned."""
        order_id = order.order_id
        pending = self._pending.get(order.intent.symbol, [])
        pending[:] = [p for p in pending if p.order.order_id != order_id or p.kind == "fill"]
        return pending

    def _execute(
        self,
        order: Order,
        quote: Quote,
        liquidity: Liquidity | None,
        now: datetime,
        next_fill_id: Callable[[], str],
        *,
        resting_allowed: bool,
    ) -> list[Event]:
        intent = order.intent
        events: list[Event] = []
        marketable = True
        if intent.order_type in (OrderType.MARKET, OrderType.SL_M):
            events = self._take(order, quote, liquidity, now, next_fill_id)
        elif self._limit_marketable(order, quote):
            events = self._take(order, quote, liquidity, now, next_fill_id, limit=intent.price)
        else:
            marketable = False
        left = self._remaining(order)
        if left == 0:
            return events
        if resting_allowed:
            self._rest(order, triggered=True)
            return events
        if not marketable:
            message = (
                f"IOC limit {intent.price} not marketable against "
                f"{self._reference_name(intent.side)} {self._model.reference(intent.side, quote)}"
            )
        else:
            message = self._ioc_remainder(order, left)
        return [*events, *self._exchange_cancel(order, now, message)]

    @staticmethod
    def _ioc_remainder(order: Order, left: int) -> str:
        return (
            f"IOC remainder {left} of {order.intent.qty} cancelled: no more liquidity in the quote"
        )

    def _take(
        self,
        order: Order,
        quote: Quote,
        liquidity: Liquidity | None,
        now: datetime,
        next_fill_id: Callable[[], str],
        *,
        limit: Decimal | None = None,
        price: Decimal | None = None,
    ) -> list[Event]:
        """Fill what the quote offers of the order's remainder: at `price`, or as a taker
        at the slipped reference price, never worse than `limit`. Nothing when the quote
        has nothing left; the order leaves the book once complete."""
        side = order.intent.side
        remaining = self._remaining(order)
        qty = remaining if liquidity is None else liquidity.available(side, remaining)
        if qty <= 0:
            return []
        if price is None:
            participation = Decimal(0) if liquidity is None else liquidity.participation(side, qty)
            price = self._model.taker_price(
                self._instruments.get(order.intent.symbol),
                side,
                self._model.reference(side, quote),
                participation,
            )
            if limit is not None:
                price = min(price, limit) if side is Side.BUY else max(price, limit)
        if liquidity is not None:
            liquidity.take(side, qty)
        if qty == remaining:
            self._remove(order)
        return [self._fill(next_fill_id, order, qty, price, quote, now)]

    def _observe(self, quote: Quote) -> Liquidity:
        """A new quote of a symbol: a fresh budget of liquidity."""
        seen = self._seen.get(quote.symbol)
        previous_volume = None if seen is None else seen[0].volume
        self._idle.pop(quote.symbol, None)
        self._seen[quote.symbol] = (quote, previous_volume)
        liquidity = Liquidity.of(self._model, quote, previous_volume)
        self._liquidity[quote.symbol] = liquidity
        self._unjournaled[quote.symbol] = QuoteObserved(quote, previous_volume)
        return liquidity

    def _journal_quote(self, symbol: str) -> None:
        """Journal (QuoteObserved, ahead of the fills against it) the symbol's latest
        quote if it is not yet: when an order may fill against it. Quotes of symbols
        with no order here are never journaled: nothing depends on them after a
        restart, and a feed of many symbols must not cost a journal row per quote."""
        observed = self._unjournaled.pop(symbol, None)
        if observed is not None:
            self._observed.append(observed)

    def _liquidity_for(self, quote: Quote) -> Liquidity | None:
        """What `quote` still offers to a new order; None when liquidity is not tracked."""
        if not self._model.tracks_liquidity:
            return None
        liquidity = self._liquidity.get(quote.symbol)
        if liquidity is not None and liquidity.quote == quote:
            return liquidity
        seen = self._seen.get(quote.symbol)
        if seen is not None and seen[0] == quote:
            # Seen before a reset: its budget starts full again.
            liquidity = Liquidity.of(self._model, quote, seen[1])
            self._liquidity[quote.symbol] = liquidity
            return liquidity
        idle = self._idle.pop(quote.symbol, None)
        if idle is not None and idle[0].quote == quote:
            # The journaled quote, still in force: what fills took of it stays taken.
            self._seen[quote.symbol] = (quote, idle[1])
            self._liquidity[quote.symbol] = idle[0]
            return idle[0]
        return self._observe(quote)

    def _reference_name(self, side: Side) -> str:
        if self._model.price_source == "touch":
            return "ask" if side is Side.BUY else "bid"
        return "LTP"

    def _limit_marketable(self, order: Order, quote: Quote) -> bool:
        limit = order.intent.price
        assert limit is not None
        reference = self._model.reference(order.intent.side, quote)
        return reference <= limit if order.intent.side is Side.BUY else reference >= limit

    def _resting_limit_fills(self, order: Order, quote: Quote) -> bool:
        """Whether a quote reaches a resting limit. A trade through the limit fills it,
        and with touch so does the far side at or through it (the book crosses). LTP
        exactly at the limit is a touch: others may be ahead in the queue, so it fills
        with touch_fill_probability (1 fills on touch, 0 needs a trade-through), drawn
        from an RNG seeded by the seed, the order and the quote: the same quotes and
        orders give the same fills, also after a restart."""
        limit = order.intent.price
        assert limit is not None
        buy = order.intent.side is Side.BUY
        if quote.ltp < limit if buy else quote.ltp > limit:
            return True
        if self._model.price_source == "touch":
            far = quote.ask if buy else quote.bid
            if far > 0 and (far <= limit if buy else far >= limit):
                return True
        if quote.ltp != limit:
            return False
        probability = self._model.touch_fill_probability
        if probability >= 1:
            return True
        if probability <= 0:
            return False
        key = f"{self._model.seed}|{order.order_id}|{quote.timestamp.isoformat()}|{quote.ltp}"
        return Decimal(repr(random.Random(key).random())) < probability

    @staticmethod
    def _trigger_crossed(order: Order, ltp: Decimal) -> bool:
        trigger = order.intent.trigger_price
        assert trigger is not None
        return ltp >= trigger if order.intent.side is Side.BUY else ltp <= trigger

    def _fill(
        self,
        next_fill_id: Callable[[], str],
        order: Order,
        qty: int,
        price: Decimal,
        quote: Quote,
        now: datetime,
    ) -> OrderFilled | FillExecuted:
        """The fill; with fill latency, the exchange's record of it (FillExecuted), its
        report (the OrderFilled) scheduled to reach the gateway after the latency."""
        intent = order.intent
        charges = None
        if self._charges is not None:
            paid = self._brokerage.get(order.order_id, Decimal(0))
            charges = self._charges.for_fill(
                intent.symbol, intent.product, intent.side, qty, price, brokerage_so_far=paid
            )
            if charges is not None:
                if qty == self._remaining(order):
                    self._brokerage.pop(order.order_id, None)
                else:
                    self._brokerage[order.order_id] = paid + charges.brokerage
        self._unfolded[order.order_id] = self._unfolded.get(order.order_id, 0) + qty
        status = "OPEN" if self._remaining(order) else "COMPLETE"
        fill = Fill(
            fill_id=next_fill_id(),
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            strategy_code=intent.strategy_code,
            symbol=intent.symbol,
            side=intent.side,
            product=intent.product,
            qty=qty,
            price=price,
            timestamp=now,
            charges=charges,
        )
        raw = self._raw(order, status)
        if not self._latency.active("fill"):
            return OrderFilled(fill, quote, raw=raw)
        reported_at = now + self._latency.delay("fill", fill.fill_id)
        # An order's reports come in the order its fills were made, as an exchange sends
        # them: a fill with less jitter waits for the one before it.
        earlier = [
            p.due
            for p in self._pending.get(intent.symbol, ())
            if p.kind == "fill" and p.order.order_id == order.order_id
        ]
        reported_at = max([reported_at, *earlier])
        flight = FillInFlight(fill, quote, reported_at, raw)
        self._schedule(reported_at, "fill", order, "", report=flight)
        return FillExecuted(fill, quote, reported_at, raw=raw)

    def _rest(self, order: Order, *, triggered: bool) -> None:
        self._working.setdefault(order.intent.symbol, {})[order.order_id] = _Working(
            order, triggered
        )

    def _remove(self, order: Order) -> None:
        book = self._working.get(order.intent.symbol)
        if book is not None:
            book.pop(order.order_id, None)
