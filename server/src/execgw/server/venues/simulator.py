"""SmartFillSimulator: the paper venue. Fills orders against the latest quote.

Pricing rules (all exact, in Decimal):
- MARKET fills at LTP moved by slippage against the trader, snapped to the tick in
  the direction that is worse for the trader.
- A marketable LIMIT fills at once at that slipped price, capped at the limit.
- A resting DAY LIMIT fills at its limit when a later LTP reaches it; IOC is cancelled.
- SL / SL_M rest until LTP reaches the trigger, then act as LIMIT / MARKET.

The simulator owns only its book of working orders. It decides, and returns events;
the core applies them to the ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from execgw.server.domain import Fill, Order, OrderType, Quote, Side, Validity
from execgw.server.events import Event, OrderCancelled, OrderFilled, OrderTriggered
from execgw.server.instruments import InstrumentRegistry

_BPS = Decimal(10_000)


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
    ) -> None:
        if slippage_bps < 0:
            raise ValueError("slippage_bps must be >= 0")
        self._slippage = slippage_bps / _BPS
        self._instruments = instruments
        self._working: dict[str, dict[str, _Working]] = {}

    def reset(self) -> None:
        self._working.clear()

    def working_order_ids(self) -> list[str]:
        return [oid for book in self._working.values() for oid in book]

    def restore(self, orders: Iterable[Order]) -> None:
        """Put open orders back in the book, e.g. after a restart."""
        for order in orders:
            if order.status.is_open:
                is_stop = order.intent.order_type in (OrderType.SL, OrderType.SL_M)
                self._rest(order, triggered=order.triggered or not is_stop)

    def market_price(self, side: Side, symbol: str, ltp: Decimal) -> Decimal:
        instrument = self._instruments.get(symbol)
        if side is Side.BUY:
            return instrument.snap_up(ltp * (1 + self._slippage))
        # Never below one tick: a penny stock sold at market must not fill at zero.
        return max(instrument.snap_down(ltp * (1 - self._slippage)), instrument.tick_size)

    def on_new_order(
        self, order: Order, quote: Quote, now: datetime, next_fill_id: Callable[[], str]
    ) -> list[Event]:
        """The immediate outcome of an accepted order: fill, rest, trigger or cancel."""
        intent = order.intent
        if intent.order_type in (OrderType.SL, OrderType.SL_M):
            if not self._trigger_crossed(order, quote.ltp):
                self._rest(order, triggered=False)
                return []
            triggered: list[Event] = [OrderTriggered(order.order_id, now, quote.ltp)]
            return triggered + self._execute(order, quote, now, next_fill_id, resting_allowed=True)
        return self._execute(
            order, quote, now, next_fill_id, resting_allowed=intent.validity is Validity.DAY
        )

    def on_quote(self, quote: Quote, now: datetime, next_fill_id: Callable[[], str]) -> list[Event]:
        book = self._working.get(quote.symbol)
        if not book:
            return []
        events: list[Event] = []
        # Oldest first: time priority among orders the same quote reaches.
        for order_id, working in list(book.items()):
            order = working.order
            if not working.triggered:
                if not self._trigger_crossed(order, quote.ltp):
                    continue
                working.triggered = True
                events.append(OrderTriggered(order_id, now, quote.ltp))
                if order.intent.order_type is OrderType.SL_M:
                    self._remove(order)
                    events.append(
                        self._fill(next_fill_id, order, self._slipped(order, quote), quote, now)
                    )
                    continue
                if self._limit_marketable(order, quote.ltp):
                    self._remove(order)
                    events.append(
                        self._fill(next_fill_id, order, self._capped(order, quote), quote, now)
                    )
                continue
            if self._limit_marketable(order, quote.ltp):
                self._remove(order)
                assert order.intent.price is not None
                events.append(self._fill(next_fill_id, order, order.intent.price, quote, now))
        return events

    def cancel(self, order_id: str, symbol: str) -> bool:
        book = self._working.get(symbol)
        if book is None or order_id not in book:
            return False
        del book[order_id]
        return True

    def _execute(
        self,
        order: Order,
        quote: Quote,
        now: datetime,
        next_fill_id: Callable[[], str],
        *,
        resting_allowed: bool,
    ) -> list[Event]:
        intent = order.intent
        if intent.order_type in (OrderType.MARKET, OrderType.SL_M):
            return [self._fill(next_fill_id, order, self._slipped(order, quote), quote, now)]
        if self._limit_marketable(order, quote.ltp):
            return [self._fill(next_fill_id, order, self._capped(order, quote), quote, now)]
        if resting_allowed:
            self._rest(order, triggered=True)
            return []
        return [
            OrderCancelled(
                order.order_id,
                now,
                f"IOC limit {intent.price} not marketable against LTP {quote.ltp}",
            )
        ]

    def _slipped(self, order: Order, quote: Quote) -> Decimal:
        return self.market_price(order.intent.side, order.intent.symbol, quote.ltp)

    def _capped(self, order: Order, quote: Quote) -> Decimal:
        """Slipped price, never worse than the limit."""
        limit = order.intent.price
        assert limit is not None
        slipped = self._slipped(order, quote)
        return min(slipped, limit) if order.intent.side is Side.BUY else max(slipped, limit)

    @staticmethod
    def _limit_marketable(order: Order, ltp: Decimal) -> bool:
        limit = order.intent.price
        assert limit is not None
        return ltp <= limit if order.intent.side is Side.BUY else ltp >= limit

    @staticmethod
    def _trigger_crossed(order: Order, ltp: Decimal) -> bool:
        trigger = order.intent.trigger_price
        assert trigger is not None
        return ltp >= trigger if order.intent.side is Side.BUY else ltp <= trigger

    def _fill(
        self,
        next_fill_id: Callable[[], str],
        order: Order,
        price: Decimal,
        quote: Quote,
        now: datetime,
    ) -> OrderFilled:
        intent = order.intent
        return OrderFilled(
            Fill(
                fill_id=next_fill_id(),
                order_id=order.order_id,
                client_order_id=order.client_order_id,
                strategy_code=intent.strategy_code,
                symbol=intent.symbol,
                side=intent.side,
                product=intent.product,
                qty=order.remaining_qty,
                price=price,
                timestamp=now,
            ),
            quote,
        )

    def _rest(self, order: Order, *, triggered: bool) -> None:
        self._working.setdefault(order.intent.symbol, {})[order.order_id] = _Working(
            order, triggered
        )

    def _remove(self, order: Order) -> None:
        book = self._working.get(order.intent.symbol)
        if book is not None:
            book.pop(order.order_id, None)
