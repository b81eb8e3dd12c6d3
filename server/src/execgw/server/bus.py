"""Fan-out of gateway events to stream subscribers.

Publishing never blocks the order path: each subscriber has a bounded queue, and a
subscriber whose queue is full is dropped with the sequence it should resume from.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from execgw.server.domain import Fill, Order
from execgw.server.events import Event, OrderFilled


@dataclass(frozen=True, slots=True)
class BusEvent:
    """One journaled event as subscribers see it: the event and the order it left behind
    (None for risk events, which are about trading, not an order)."""

    sequence: int
    timestamp: datetime
    event: Event
    order: Order | None

    @property
    def fill(self) -> Fill | None:
        return self.event.fill if isinstance(self.event, OrderFilled) else None

    @property
    def strategy_code(self) -> str:
        """The strategy the event concerns; empty for account-wide risk events."""
        if self.order is not None:
            return self.order.intent.strategy_code
        return getattr(self.event, "strategy_code", "")

    @property
    def symbol(self) -> str:
        return "" if self.order is None else self.order.intent.symbol


class SubscriberOverflow(Exception):
    """The subscriber fell too far behind; it should resume from `resume_from`."""

    def __init__(self, resume_from: int) -> None:
        super().__init__(f"subscriber fell behind; resume from sequence {resume_from}")
        self.resume_from = resume_from


_CLOSED = object()


class Subscription:
    def __init__(self, bus: EventBus, sid: int, accepts: Callable[[BusEvent], bool], size: int):
        self._bus = bus
        self.sid = sid
        self._accepts = accepts
        self._queue: asyncio.Queue[BusEvent | object] = asyncio.Queue(maxsize=size)
        self._overflow_at: int | None = None
        self.last_sequence = 0

    def offer(self, event: BusEvent) -> bool:
        """Queue the event if wanted; False means this subscriber must be dropped."""
        if not self._accepts(event):
            return True
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._overflow_at = event.sequence
            return False
        return True

    def close(self) -> None:
        # Room is always left for the sentinel: it is sent at most once, after draining.
        while True:
            try:
                self._queue.put_nowait(_CLOSED)
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()

    async def next(self) -> BusEvent | None:
        """The next event, or None when the bus shut down."""
        item = await self._queue.get()
        if item is _CLOSED:
            if self._overflow_at is not None:
                raise SubscriberOverflow(self.last_sequence + 1)
            return None
        assert isinstance(item, BusEvent)
        self.last_sequence = item.sequence
        return item

    def unsubscribe(self) -> None:
        self._bus._remove(self.sid)


class EventBus:
    def __init__(self, *, queue_size: int = 10_000) -> None:
        self._queue_size = queue_size
        self._subscribers: dict[int, Subscription] = {}
        self._ids = itertools.count(1)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def subscribe(self, accepts: Callable[[BusEvent], bool]) -> Subscription:
        sid = next(self._ids)
        sub = Subscription(self, sid, accepts, self._queue_size)
        self._subscribers[sid] = sub
        return sub

    def publish(self, event: BusEvent) -> None:
        for sid, sub in list(self._subscribers.items()):
            if not sub.offer(event):
                del self._subscribers[sid]
                sub.close()

    def close(self) -> None:
        for sub in self._subscribers.values():
            sub.close()
        self._subscribers.clear()

    def _remove(self, sid: int) -> None:
        self._subscribers.pop(sid, None)
