"""The gateway core: the single writer that owns all state.

Commands arrive on one queue and are executed one at a time by one asyncio task,
so the domain code needs no locks and every state change has a total order. The
task drains whatever is queued into a batch, executes it, makes the batch's events
durable together (group commit), and only then answers callers and publishes the
events. A caller is never told about a state change that could still be lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from execgw.server.bus import BusEvent, EventBus
from execgw.server.clock import Clock
from execgw.server.domain import (
    Order,
    OrderIntent,
    OrderStatus,
    PositionView,
    Quote,
    RejectReason,
)
from execgw.server.events import (
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderTriggered,
    QuoteApplied,
)
from execgw.server.ledger import Ledger
from execgw.server.quotes import QuoteBook
from execgw.server.simulator import SmartFillSimulator

log = logging.getLogger(__name__)

MAX_BATCH = 512


class GatewayError(Exception):
    """A command the core refused; the API layer maps each subclass to a gRPC status."""


class IdempotencyConflict(GatewayError):
    pass


class OrderNotFound(GatewayError):
    pass


class OrderNotCancellable(GatewayError):
    pass


class GatewayUnavailable(GatewayError):
    pass


class IdSource:
    """Deterministic ids: a restart continues the counters from the journal."""

    def __init__(self, next_order: int = 1, next_fill: int = 1) -> None:
        self.next_order = next_order
        self.next_fill = next_fill

    def order_id(self) -> str:
        value = f"O{self.next_order:010d}"
        self.next_order += 1
        return value

    def fill_id(self) -> str:
        value = f"F{self.next_fill:010d}"
        self.next_fill += 1
        return value


EventSink = Callable[[list[Event]], Awaitable[None]]


async def _discard(events: list[Event]) -> None:
    return None


@dataclass(slots=True)
class _Command:
    kind: str
    args: tuple[Any, ...]
    future: asyncio.Future[Any] = field(repr=False)


_STOP = object()


class GatewayCore:
    def __init__(
        self,
        *,
        clock: Clock,
        ledger: Ledger,
        quotes: QuoteBook,
        simulator: SmartFillSimulator,
        bus: EventBus,
        ids: IdSource,
        persist: EventSink = _discard,
    ) -> None:
        self._clock = clock
        self._ledger = ledger
        self._quotes = quotes
        self._simulator = simulator
        self._bus = bus
        self._ids = ids
        self._persist = persist
        self._inbox: asyncio.Queue[_Command | object] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._accepting = False
        self._unpublished: list[BusEvent] = []

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._accepting = True
            self._task = asyncio.create_task(self._run(), name="gateway-core")

    async def stop(self) -> None:
        """Finish every queued command, then stop."""
        self._accepting = False
        if self._task is not None:
            self._inbox.put_nowait(_STOP)
            await self._task
            self._task = None
        self._bus.close()

    # -- commands (the only way state changes) ------------------------------

    async def submit(self, intent: OrderIntent, client_order_id: str) -> Order:
        result: Order = await self._call("submit", intent, client_order_id)
        return result

    async def cancel(self, order_id: str) -> Order:
        result: Order = await self._call("cancel", order_id)
        return result

    async def apply_quotes(self, quotes: list[Quote]) -> int:
        result: int = await self._call("quotes", quotes)
        return result

    # -- reads ------------------------------------------------------------

    def get_order(self, order_id: str) -> Order:
        order = self._ledger.order(order_id)
        if order is None:
            raise OrderNotFound(f"order {order_id!r} not found")
        return self._ledger.snapshot(order_id)

    def list_orders(
        self,
        *,
        strategy_code: str = "",
        status: OrderStatus | None = None,
        symbol: str = "",
    ) -> list[Order]:
        return [
            self._ledger.snapshot(o.order_id)
            for o in self._ledger.orders()
            if (not strategy_code or o.intent.strategy_code == strategy_code)
            and (status is None or o.status is status)
            and (not symbol or o.intent.symbol == symbol)
        ]

    def positions(self, strategy_code: str = "") -> list[PositionView]:
        return self._ledger.positions(self._quotes.ltp, strategy_code or None)

    def quote(self, symbol: str) -> Quote | None:
        return self._quotes.get(symbol)

    @property
    def bus(self) -> EventBus:
        return self._bus

    # -- the single writer ----------------------------------------------------

    async def _call(self, kind: str, *args: Any) -> Any:
        if not self._accepting:
            raise GatewayUnavailable("gateway is shutting down")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(_Command(kind, args, future))
        # Shielded: a caller that goes away must not cancel a command mid-batch.
        return await asyncio.shield(future)

    async def _run(self) -> None:
        while True:
            first = await self._inbox.get()
            if first is _STOP:
                return
            batch = [first]
            stop_after = False
            while len(batch) < MAX_BATCH and not self._inbox.empty():
                item = self._inbox.get_nowait()
                if item is _STOP:
                    stop_after = True
                    break
                batch.append(item)
            await self._execute_batch([c for c in batch if isinstance(c, _Command)])
            if stop_after:
                return

    async def _execute_batch(self, batch: list[_Command]) -> None:
        events: list[Event] = []
        outcomes: list[tuple[_Command, Any, BaseException | None]] = []
        for command in batch:
            emitted: list[Event] = []
            try:
                value = self._execute(command, emitted)
                outcomes.append((command, value, None))
            except GatewayError as e:
                outcomes.append((command, None, e))
            except Exception as e:  # a bug: fail the command, keep the gateway up
                log.exception("command %s failed", command.kind)
                outcomes.append((command, None, e))
            events.extend(emitted)
        published, self._unpublished = self._unpublished, []
        if events:
            try:
                await self._persist(events)
            except Exception:
                log.exception("persisting %d events failed", len(events))
                failure = GatewayUnavailable("journal write failed; nothing was acknowledged")
                outcomes = [(c, None, failure) for c, _, _ in outcomes]
                published = []
        for event in published:
            self._bus.publish(event)
        for command, value, error in outcomes:
            if command.future.done():
                continue
            if error is None:
                command.future.set_result(value)
            else:
                command.future.set_exception(error)

    def _execute(self, command: _Command, emitted: list[Event]) -> Any:
        if command.kind == "submit":
            return self._submit(*command.args, emitted=emitted)
        if command.kind == "cancel":
            return self._cancel(*command.args, emitted=emitted)
        if command.kind == "quotes":
            return self._quotes_in(*command.args, emitted=emitted)
        raise AssertionError(f"unknown command {command.kind}")

    def _emit(self, event: Event, emitted: list[Event]) -> None:
        self._ledger.apply(event)
        emitted.append(event)
        # Snapshot now: subscribers must see the order as this event left it.
        self._unpublished.extend(self._bus_events(event))

    def _submit(self, intent: OrderIntent, client_order_id: str, *, emitted: list[Event]) -> Order:
        if client_order_id:
            existing = self._ledger.order_for_client_id(client_order_id)
            if existing is not None:
                if existing.intent.fingerprint() != intent.fingerprint():
                    raise IdempotencyConflict(
                        f"client_order_id {client_order_id!r} was already used for a different "
                        f"order ({existing.order_id}); use a new id for a new order"
                    )
                return self._ledger.snapshot(existing.order_id)
        order_id = self._ids.order_id()
        client_order_id = client_order_id or f"auto-{order_id}"
        now = self._clock.now()
        quote = self._quotes.get(intent.symbol)
        if quote is None:
            self._emit(
                OrderRejected(
                    order_id,
                    client_order_id,
                    intent,
                    now,
                    RejectReason.NO_MARKET_DATA,
                    f"no quote for {intent.symbol}; the venue cannot price the order",
                ),
                emitted,
            )
            return self._ledger.snapshot(order_id)
        self._emit(OrderAccepted(order_id, client_order_id, intent, now), emitted)
        order = self._ledger.order(order_id)
        assert order is not None
        for event in self._simulator.on_new_order(order, quote, now):
            self._emit(event, emitted)
        return self._ledger.snapshot(order_id)

    def _cancel(self, order_id: str, *, emitted: list[Event]) -> Order:
        order = self._ledger.order(order_id)
        if order is None:
            raise OrderNotFound(f"order {order_id!r} not found")
        if not order.status.is_open:
            raise OrderNotCancellable(
                f"order {order_id} is {order.status.value} and can no longer be cancelled"
            )
        self._simulator.cancel(order_id, order.intent.symbol)
        self._emit(OrderCancelled(order_id, self._clock.now(), "cancelled by client"), emitted)
        return self._ledger.snapshot(order_id)

    def _quotes_in(self, quotes: Iterable[Quote], *, emitted: list[Event]) -> int:
        count = 0
        for quote in quotes:
            self._quotes.update(quote)
            count += 1
            caused = self._simulator.on_quote(quote, self._clock.now())
            if caused:
                self._emit(QuoteApplied(quote), emitted)
                for event in caused:
                    self._emit(event, emitted)
        return count

    def _bus_events(self, event: Event) -> list[BusEvent]:
        now = self._clock.now()
        match event:
            case OrderFilled(fill=fill):
                return [
                    BusEvent(self._bus.next_sequence(), fill.timestamp, fill),
                    self._order_update(fill.order_id, now),
                ]
            case OrderAccepted() | OrderRejected() | OrderTriggered() | OrderCancelled():
                return [self._order_update(event.order_id, now)]
            case QuoteApplied():
                return []
        return []

    def _order_update(self, order_id: str, now: Any) -> BusEvent:
        return BusEvent(self._bus.next_sequence(), now, self._ledger.snapshot(order_id))
