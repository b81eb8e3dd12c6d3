"""The ledger: orders, fills and positions, as a fold over events.

Accounting is exact. A position keeps its open cost (signed, in rupees) rather than
an average price, so unrealized PnL is `ltp * net_qty - open_cost` with no division,
and closing a whole position realizes `proceeds - open_cost` exactly.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from execgw.server import codec
from execgw.server.closed_orders import (
    EMPTY_ARCHIVE,
    Archive,
    ClientKeyFilter,
    ClosedOrder,
    ListedKey,
)
from execgw.server.domain import (
    Fill,
    FillInFlight,
    Order,
    OrderStatus,
    PositionKey,
    PositionView,
    RejectReason,
)
from execgw.server.events import (
    CancelRequested,
    DayRolledOver,
    Event,
    FillExecuted,
    OrderAccepted,
    OrderAmbiguous,
    OrderArrived,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    OrderTriggered,
    VenueAccepted,
    VenueRejected,
    VenueUpdated,
)

log = logging.getLogger(__name__)

ZERO = Decimal(0)
# Orders one ListOrders page may look at, matching or not: the page ends there, short or
# empty, and the next one goes on from the last order looked at. Bounds the single
# writer's time per page whatever the day's size and the filters.
MAX_ORDERS_EXAMINED = 2_000


class OrderPage(list[Order]):
    """A page of orders, and how far the scan that found them got.

    `scanned_to` is the id of the last order the scan looked at, on the page or not:
    the next page starts right after it. `examined` counts the orders it looked at."""

    __slots__ = ("examined", "scanned_to")

    def __init__(
        self, orders: Iterable[Order] = (), scanned_to: str = "", examined: int = 0
    ) -> None:
        super().__init__(orders)
        self.scanned_to = scanned_to
        self.examined = examined


class LedgerError(RuntimeError):
    """An event that cannot apply to the current state: a bug or a corrupt journal."""


@dataclass(frozen=True, slots=True)
class FillOutcome:
    """What a fill did to its position, for the risk engine."""

    key: PositionKey
    realized: Decimal
    # Set when the fill closed the position (to flat or through it): the PnL of that
    # round trip, from the fill that opened it to this one.
    round_trip_pnl: Decimal | None


@dataclass(slots=True)
class PositionState:
    net_qty: int = 0
    open_cost: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    buy_qty: int = 0
    sell_qty: int = 0
    # Realized PnL since the position was last opened from flat.
    trip_pnl: Decimal = ZERO
    # Charges of its fills (Fill.charges), kept apart: realized_pnl stays gross.
    charges: Decimal = ZERO

    @property
    def avg_price(self) -> Decimal:
        return self.open_cost / self.net_qty if self.net_qty else ZERO

    def unrealized(self, ltp: Decimal | None) -> Decimal:
        if ltp is None or self.net_qty == 0:
            return ZERO
        return ltp * self.net_qty - self.open_cost

    def apply(self, signed_qty: int, price: Decimal) -> tuple[Decimal, Decimal | None]:
        """Apply a fill; returns the PnL it realized and, if it closed one, the round trip's."""
        if signed_qty > 0:
            self.buy_qty += signed_qty
        else:
            self.sell_qty -= signed_qty
        if self.net_qty == 0 or (self.net_qty > 0) == (signed_qty > 0):
            self.net_qty += signed_qty
            self.open_cost += price * signed_qty
            return ZERO, None
        closing = min(abs(signed_qty), abs(self.net_qty))
        direction = 1 if self.net_qty > 0 else -1
        if closing == abs(self.net_qty):
            removed_cost = self.open_cost
        else:
            removed_cost = self.open_cost * closing / abs(self.net_qty)
        realized = price * closing * direction - removed_cost
        self.realized_pnl += realized
        self.net_qty -= closing * direction
        self.open_cost -= removed_cost
        self.trip_pnl += realized
        round_trip: Decimal | None = None
        if self.net_qty == 0:
            round_trip, self.trip_pnl = self.trip_pnl, ZERO
        opening = abs(signed_qty) - closing
        if opening:
            self.net_qty = -direction * opening
            self.open_cost = price * self.net_qty
        return realized, round_trip


# Archived orders a listing reads from the archive at a time.
_ARCHIVE_PAGE = 256


class Ledger:
    def __init__(self, archive: Archive = EMPTY_ARCHIVE) -> None:
        # The day's orders in memory, in placement order: open ones live, finished ones
        # compact (see closed_orders.py) until a snapshot archives them. With the
        # archive they are all the day's orders: memory follows the open orders and
        # the traffic between snapshots, not the day.
        self._orders: dict[str, Order | ClosedOrder] = {}
        self._archive = archive
        # The trading day (ISO date; "" before the first rollover), as the risk book's:
        # the archive keeps past days, and the working day's orders are its own.
        self.day = ""
        # Orders the last event finished: compacted when the next event comes, so the
        # command that finished one may still read and amend it as a live Order.
        self._closing: list[str] = []
        self._listed_keys: dict[ListedKey, ListedKey] = {}
        # Open orders by id, oldest first: the order path asks for them on every submit,
        # so they must not cost a scan of the whole day's book.
        self._open_by_id: dict[str, Order] = {}
        # Idempotency keys are the strategy's own: one strategy can neither learn nor use
        # up another's keys.
        self._by_client_id: dict[tuple[str, str], str] = {}
        # The keys of the working day's archived orders, loaded from the archive when
        # first asked (None until then, and again after a rollover).
        self._archived_keys: ClientKeyFilter | None = None
        self._positions: dict[PositionKey, PositionState] = {}
        # The positions that are not flat, and how many per symbol: the breakers value
        # them after every change, and a day's flat positions (most of an intraday
        # book's) must not make every order and quote cost more as the day goes on.
        self._open_positions: dict[PositionKey, PositionState] = {}
        self._open_by_symbol: dict[str, int] = {}
        # Order ids in memory, ascending, in all and by strategy and by symbol: a listing
        # starts at its cursor by bisection and looks only at orders its filters can match.
        self._ids: list[str] = []
        self._ids_by_strategy: dict[str, list[str]] = {}
        self._ids_by_symbol: dict[str, list[str]] = {}
        # Each live order's snapshot encoding as it stood at the last snapshot (a finished
        # one carries its own, ClosedOrder.body), dropped when
        # an event changes the order: a snapshot encodes only the orders changed since
        # the previous one, so its cost on the writer follows the traffic between
        # snapshots, not the size of the day.
        self._encoded: dict[str, bytes] = {}

    def apply(self, event: Event) -> FillOutcome | None:
        """Fold one event in; events that are not about orders leave the ledger alone."""
        if self._closing:
            self.compact()
        order_id = getattr(event, "order_id", None)
        if isinstance(event, OrderFilled | FillExecuted):
            order_id = event.fill.order_id
        if order_id is not None:
            self._encoded.pop(order_id, None)
        match event:
            case DayRolledOver():
                # The journal keeps history; memory keeps the working day only. Orders
                # still open here are cancelled (DAY expiry) right after this event.
                for order_id in [o.order_id for o in self._orders.values() if not o.status.is_open]:
                    self._let_go(order_id)
                self.day = event.trading_day.isoformat()
                self._archived_keys = None
                self._index_ids()
            case OrderAccepted() | OrderRejected() | OrderSubmitted():
                self._open(event)
            case OrderFilled(fill=fill):
                outcome = self._fill(fill)
                if event.raw:
                    self._require(fill.order_id).raw = dict(event.raw)
                return outcome
            case FillExecuted(fill=fill):
                order = self._require_open(fill.order_id, "fill in flight")
                if fill.qty > order.remaining_qty - order.in_flight_qty:
                    raise LedgerError(
                        f"fill {fill.fill_id} of {fill.qty} does not fit order "
                        f"{order.order_id} ({order.remaining_qty - order.in_flight_qty} "
                        "remaining at the exchange)"
                    )
                flight = FillInFlight(fill, event.quote, event.reported_at, dict(event.raw))
                order.fills_in_flight = (*order.fills_in_flight, flight)
            case OrderArrived(order_id=order_id):
                self._require_open(order_id, "arrival").arrived = True
            case OrderTriggered(order_id=order_id, timestamp=ts):
                order = self._require(order_id)
                order.triggered = True
                order.updated_at = ts
            case OrderCancelled(order_id=order_id, timestamp=ts, message=message):
                order = self._require_open(order_id, "cancel")
                self._close(order, OrderStatus.CANCELLED, ts)
                order.message = message
                if event.raw:
                    order.raw = dict(event.raw)
            case VenueAccepted():
                order = self._require_open(event.order_id, "venue ack")
                order.venue_order_id = event.venue_order_id
                if order.status in (OrderStatus.SUBMITTED, OrderStatus.AMBIGUOUS):
                    order.status = OrderStatus.PARTIAL if order.filled_qty else OrderStatus.PLACED
                order.raw = dict(event.raw)
                order.message = event.message
                order.updated_at = event.timestamp
            case VenueRejected():
                order = self._require_open(event.order_id, "venue rejection")
                self._close(order, OrderStatus.REJECTED, event.timestamp)
                order.reject_reason = RejectReason.BROKER
                order.message = event.message
                if event.raw:
                    order.raw = dict(event.raw)
            case VenueUpdated():
                order = self._require_open(event.order_id, "venue update")
                if event.cancel_refused and order.status is OrderStatus.PENDING_CANCEL:
                    order.status = OrderStatus.PARTIAL if order.filled_qty else OrderStatus.PLACED
                if event.raw:
                    order.raw = dict(event.raw)
                order.message = event.message
                order.updated_at = event.timestamp
            case OrderAmbiguous():
                order = self._require_open(event.order_id, "ambiguous outcome")
                order.status = OrderStatus.AMBIGUOUS
                order.message = event.message
                order.updated_at = event.timestamp
            case CancelRequested():
                order = self._require_open(event.order_id, "cancel request")
                order.status = OrderStatus.PENDING_CANCEL
                order.message = event.message
                order.updated_at = event.timestamp
                order.cancel_requested_at = event.timestamp
        return None

    def reported_late(self, fill: Fill) -> bool:
        """Whether `fill` is the report of a fill already recorded as made at the
        exchange (FillExecuted, fill latency)."""
        order = self._open_by_id.get(fill.order_id)
        return order is not None and any(
            f.fill.fill_id == fill.fill_id for f in order.fills_in_flight
        )

    def order(self, order_id: str) -> Order | None:
        """The order, live if open; a finished one is decoded afresh (a copy)."""
        found = self._found(order_id)
        return found.decode() if isinstance(found, ClosedOrder) else found

    def _found(self, order_id: str) -> Order | ClosedOrder | None:
        found = self._orders.get(order_id)
        if found is None:
            return self._archive.get(self.day, order_id)
        return found

    def order_for_client_id(self, strategy_code: str, client_order_id: str) -> Order | None:
        if not client_order_id:
            return None  # not a key: keyless orders are nobody's retry
        key = (strategy_code, client_order_id)
        order_id = self._by_client_id.get(key)
        if order_id is None:
            if not self.archived_keys().might_hold(key):
                return None
            order_id = self._archive.order_id_for_client(self.day, strategy_code, client_order_id)
        return None if order_id is None else self.order(order_id)

    def archived_keys(self) -> ClientKeyFilter:
        """The working day's archived idempotency keys; read from the archive the first
        time (a gateway's start does it, so that its first order does not wait on it)."""
        if self._archived_keys is None:
            self._archived_keys = ClientKeyFilter(self._archive.client_keys(self.day))
        return self._archived_keys

    def orders(self) -> Iterator[Order]:
        """The working day's orders, in id order, archived ones included."""
        for found in self.orders_after(""):
            yield found.decode() if isinstance(found, ClosedOrder) else found

    def orders_after(
        self, after: str, *, strategy_code: str = "", symbol: str = ""
    ) -> Iterator[Order | ClosedOrder]:
        """Orders with ids above `after`, ascending. With a strategy_code or symbol, only
        (and all) orders of that strategy or symbol come, perhaps with others: filter
        again. Found by bisection, so the cost does not grow with the orders before
        `after`. Finished orders come compact: only the fields a listing filters on
        (ClosedOrder); ask order() for the whole one. Not for use while the ledger
        changes (the writer is single)."""
        ids = self._ids
        if strategy_code:
            # Always the strategy's own index when there is one: the scan position ends up
            # in a page token, and a strategy must not learn another's order ids from it.
            ids = self._ids_by_strategy.get(strategy_code, [])
        elif symbol:
            ids = self._ids_by_symbol.get(symbol, [])
        orders = self._orders
        held = (orders[ids[p]] for p in range(bisect.bisect_right(ids, after), len(ids)))
        archived = self._archived_after(after, strategy_code, symbol)
        # Both ascending: merged, the one in memory standing for an archived order that
        # an event brought back.
        next_held, next_archived = next(held, None), next(archived, None)
        while next_held is not None or next_archived is not None:
            if next_archived is not None and next_archived.order_id in orders:
                next_archived = next(archived, None)
            elif next_held is None or (
                next_archived is not None and next_archived.order_id < next_held.order_id
            ):
                assert next_archived is not None
                yield next_archived
                next_archived = next(archived, None)
            else:
                yield next_held
                next_held = next(held, None)

    def _archived_after(self, after: str, strategy_code: str, symbol: str) -> Iterator[ClosedOrder]:
        while True:
            page = self._archive.after(
                self.day,
                after,
                strategy_code=strategy_code,
                symbol=symbol if not strategy_code else "",
                limit=_ARCHIVE_PAGE,
            )
            yield from page
            if len(page) < _ARCHIVE_PAGE:
                return
            after = page[-1].order_id

    def open_orders(self) -> list[Order]:
        return list(self._open_by_id.values())

    def position(self, key: PositionKey) -> PositionState | None:
        return self._positions.get(key)

    def position_items(self) -> list[tuple[PositionKey, PositionState]]:
        return list(self._positions.items())

    def open_position_items(self) -> list[tuple[PositionKey, PositionState]]:
        """The positions that are not flat (in no particular order)."""
        return list(self._open_positions.items())

    def has_open_position(self, symbol: str) -> bool:
        return symbol in self._open_by_symbol

    def positions(
        self, mark: Callable[[str], Decimal | None], strategy_code: str | None = None
    ) -> list[PositionView]:
        views = []
        for (strategy, symbol, product), state in sorted(
            self._positions.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2].value)
        ):
            if strategy_code and strategy != strategy_code:
                continue
            ltp = mark(symbol)
            views.append(
                PositionView(
                    strategy_code=strategy,
                    symbol=symbol,
                    product=product,
                    net_qty=state.net_qty,
                    avg_price=state.avg_price,
                    realized_pnl=state.realized_pnl,
                    unrealized_pnl=state.unrealized(ltp),
                    last_price=ltp,
                    buy_qty=state.buy_qty,
                    sell_qty=state.sell_qty,
                    charges=state.charges,
                )
            )
        return views

    def export(self) -> tuple[list[Order], list[tuple[PositionKey, PositionState]]]:
        return list(self.orders()), list(self._positions.items())

    def encoded_orders(
        self, encode: Callable[[Order], bytes], *, archiving: bool = False
    ) -> tuple[list[bytes], list[ClosedOrder]]:
        """The encodings of the working day's orders, in id order: kept ones reused, the
        others encoded now and kept. The bytes are immutable, so another thread may join
        them while the ledger goes on changing.

        With `archiving`, only the orders in memory: the finished ones come back apart,
        for the archive (see evict), and those archived already are left where they are.
        Without, every order of the day, archived ones read back: the whole state."""
        cache = self._encoded
        parts = []
        finished = []
        held = self._orders
        for order in self.orders_after("") if not archiving else held.values():
            if isinstance(order, ClosedOrder):
                if archiving:
                    finished.append(order)
                else:
                    parts.append(order.body)
                continue
            body = cache.get(order.order_id)
            if body is None:
                body = cache[order.order_id] = encode(order)
            parts.append(body)
        return parts, finished

    def evict(self, finished: list[ClosedOrder], day: str) -> int:
        """The snapshot that archived `finished` (from encoded_orders) is stored: let
        them go from memory, all but those an event changed since (archived again by
        the next snapshot). None when a rollover came between (it let the day's finished
        orders go already), nor from a ledger rebuilt since (its objects are others).
        Returns how many went."""
        if day != self.day:
            return 0
        gone = 0
        # Not loaded yet: it will be, from the archive that holds these now.
        archived = self._archived_keys
        for order in finished:
            order_id = order.order_id
            if self._orders.get(order_id) is not order:
                continue
            self._let_go(order_id)
            if archived is not None and order.client_order_id:
                archived.add((order.intent.strategy_code, order.client_order_id))
            gone += 1
        if gone:
            self._index_ids()
        return gone

    def _let_go(self, order_id: str) -> None:
        """Drop a finished order from memory, with its idempotency key (the caller
        re-indexes the ids once it is done)."""
        self._encoded.pop(order_id, None)
        order = self._orders.pop(order_id)
        key = (order.intent.strategy_code, order.client_order_id)
        if self._by_client_id.get(key) == order_id:
            del self._by_client_id[key]

    @classmethod
    def restore(
        cls,
        orders: Sequence[Order | ClosedOrder],
        positions: list[tuple[PositionKey, PositionState]],
        encoded: list[bytes] | None = None,
        *,
        archive: Archive = EMPTY_ARCHIVE,
        day: str = "",
    ) -> Ledger:
        """`encoded`, when given, is each order's encoding as the snapshot held it:
        kept, so the first snapshot after a restart need not encode the whole day. A
        finished order may come compact already (a restart's, built as each order is
        decoded, so the day's orders are never all whole at once): the ledger takes it
        over, sharing its listing key with the others, so it must be nobody else's.
        `archive` holds the rest of the day: its orders of `day`."""
        ledger = cls(archive)
        ledger.day = day
        bodies = (
            {o.order_id: e for o, e in zip(orders, encoded, strict=True)}
            if encoded is not None
            else {}
        )
        for order in orders:
            if isinstance(order, ClosedOrder):
                order.intent = ledger._listed_keys.setdefault(order.intent, order.intent)
                ledger._orders[order.order_id] = order
            elif order.status.is_open:
                ledger._orders[order.order_id] = order
                ledger._open_by_id[order.order_id] = order
                if order.order_id in bodies:
                    ledger._encoded[order.order_id] = bodies[order.order_id]
            else:
                body = bodies.get(order.order_id) or codec.encode_bytes(order)
                ledger._orders[order.order_id] = ledger._closed(order, body)
            if order.client_order_id:
                key = (order.intent.strategy_code, order.client_order_id)
                ledger._by_client_id[key] = order.order_id
        ledger._positions = dict(positions)
        for position_key, state in ledger._positions.items():
            if state.net_qty:
                ledger._opened(position_key, state)
        ledger._index_ids()
        return ledger

    def _index_ids(self) -> None:
        self._ids = sorted(self._orders)
        self._ids_by_strategy = {}
        self._ids_by_symbol = {}
        for order_id in self._ids:
            intent = self._orders[order_id].intent
            self._ids_by_strategy.setdefault(intent.strategy_code, []).append(order_id)
            self._ids_by_symbol.setdefault(intent.symbol, []).append(order_id)

    def snapshot(self, order_id: str) -> Order:
        """A copy that later events will not change, for replies and subscribers."""
        found = self._found(order_id)
        if isinstance(found, ClosedOrder):
            return found.decode()
        if found is None:
            raise LedgerError(f"unknown order id {order_id}")
        return found.copy()

    def _closed(self, order: Order, body: bytes) -> ClosedOrder:
        key = ListedKey(order.intent.strategy_code, order.intent.symbol)
        return ClosedOrder(order, body, self._listed_keys.setdefault(key, key))

    def compact(self) -> None:
        """Turn the orders finished by the last event into their compact form."""
        for order_id in self._closing:
            order = self._orders.get(order_id)
            if isinstance(order, Order) and not order.status.is_open:
                body = self._encoded.pop(order_id, None) or codec.encode_bytes(order)
                self._orders[order_id] = self._closed(order, body)
        self._closing.clear()

    def _open(self, event: OrderAccepted | OrderRejected | OrderSubmitted) -> None:
        if event.order_id in self._orders:
            raise LedgerError(f"duplicate order id {event.order_id}")
        status = (
            OrderStatus.REJECTED
            if isinstance(event, OrderRejected)
            else OrderStatus.SUBMITTED
            if isinstance(event, OrderSubmitted)
            else OrderStatus.PLACED
        )
        order = Order(
            order_id=event.order_id,
            client_order_id=event.client_order_id,
            intent=event.intent,
            status=status,
            created_at=event.timestamp,
            updated_at=event.timestamp,
            dry_run=event.dry_run,
            internal=event.internal,
            placed_by=event.placed_by,
        )
        if isinstance(event, OrderRejected):
            order.reject_reason = event.reason
            order.message = event.message
        elif isinstance(event, OrderAccepted):
            order.raw = dict(event.raw)
        else:
            order.venue = event.venue
        self._orders[event.order_id] = order
        for ids in (
            self._ids,
            self._ids_by_strategy.setdefault(event.intent.strategy_code, []),
            self._ids_by_symbol.setdefault(event.intent.symbol, []),
        ):
            # Ids grow with placement, so this appends; insort keeps any order sorted.
            if ids and ids[-1] > event.order_id:
                bisect.insort(ids, event.order_id)
            else:
                ids.append(event.order_id)
        if order.status.is_open:
            self._open_by_id[event.order_id] = order
        else:
            self._closing.append(event.order_id)  # rejected at once
        if event.client_order_id:
            key = (event.intent.strategy_code, event.client_order_id)
            self._by_client_id[key] = event.order_id

    def _fill(self, fill: Fill) -> FillOutcome:
        order = self._require(fill.order_id)
        if not order.status.is_open or fill.qty > order.remaining_qty:
            raise LedgerError(
                f"fill {fill.fill_id} of {fill.qty} does not fit order {order.order_id} "
                f"({order.status.value}, {order.remaining_qty} remaining)"
            )
        if fill.venue_trade_id:
            if fill.venue_trade_id in order.venue_trade_ids:
                raise LedgerError(
                    f"trade {fill.venue_trade_id} already applied to {order.order_id}"
                )
            order.venue_trade_ids = (*order.venue_trade_ids, fill.venue_trade_id)
        # When the order learnt of the fill: at once, or (fill latency) when the report
        # of a fill the exchange made earlier lands, never before what it knew already.
        # The fill keeps the exchange's time.
        when = fill.timestamp
        if order.fills_in_flight:
            late = [f for f in order.fills_in_flight if f.fill.fill_id == fill.fill_id]
            if late:
                when = max(order.updated_at, late[0].reported_at)
                order.fills_in_flight = tuple(
                    f for f in order.fills_in_flight if f.fill.fill_id != fill.fill_id
                )
        order.filled_qty += fill.qty
        order.filled_value += fill.price * fill.qty
        if order.remaining_qty == 0:
            self._close(order, OrderStatus.FILLED, when)
        elif order.status is not OrderStatus.PENDING_CANCEL:
            # A fill is the venue's word that it has the order, acked or not yet.
            order.status = OrderStatus.PARTIAL
        order.updated_at = when
        key = (fill.strategy_code, fill.symbol, fill.product)
        state = self._positions.setdefault(key, PositionState())
        was_open = state.net_qty != 0
        realized, round_trip = state.apply(fill.side.sign * fill.qty, fill.price)
        if not was_open and state.net_qty:
            self._opened(key, state)
        elif was_open and not state.net_qty:
            self._flattened(key)
        if fill.charges is not None:
            order.charges += fill.charges.total
            order.brokerage += fill.charges.brokerage
            state.charges += fill.charges.total
        return FillOutcome(key, realized, round_trip)

    def _opened(self, key: PositionKey, state: PositionState) -> None:
        self._open_positions[key] = state
        symbol = key[1]
        self._open_by_symbol[symbol] = self._open_by_symbol.get(symbol, 0) + 1

    def _flattened(self, key: PositionKey) -> None:
        del self._open_positions[key]
        symbol = key[1]
        left = self._open_by_symbol[symbol] - 1
        if left:
            self._open_by_symbol[symbol] = left
        else:
            del self._open_by_symbol[symbol]

    def _require_open(self, order_id: str, what: str) -> Order:
        order = self._require(order_id)
        if not order.status.is_open:
            raise LedgerError(f"{what} of {order_id} in status {order.status.value}")
        return order

    def _close(self, order: Order, status: OrderStatus, when: datetime) -> None:
        order.status = status
        for flight in order.fills_in_flight:
            # Never expected: the engine takes every report before it closes an order
            # (the rollover's expiry included). A fill made at the exchange is lost here.
            log.error(
                "order %s closed (%s) with the report of its fill %s (%d at %s) still on "
                "its way: that fill is lost to positions",
                order.order_id,
                status.value,
                flight.fill.fill_id,
                flight.fill.qty,
                flight.fill.price,
            )
        order.fills_in_flight = ()
        del self._open_by_id[order.order_id]
        order.updated_at = when
        self._closing.append(order.order_id)

    def _require(self, order_id: str) -> Order:
        order = self._found(order_id)
        if order is None:
            raise LedgerError(f"unknown order id {order_id}")
        if order_id not in self._orders:
            # From the archive: back in memory until a snapshot archives it again.
            self._orders[order_id] = order
            self._index_ids()
        if isinstance(order, ClosedOrder):
            # An event about a finished order: it applies to the live order as before
            # (or is refused as before), and the order is compacted again after it.
            live = self._orders[order_id] = order.decode()
            self._closing.append(order_id)
            return live
        return order
