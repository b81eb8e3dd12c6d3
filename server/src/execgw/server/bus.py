"""Fan-out of gateway events to stream subscribers.

Publishing never blocks the order path: each subscriber has a bounded queue, and a
subscriber whose queue is full is dropped with the sequence it should resume from.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from execgw.server.domain import Fill, Order
from execgw.server.events import Event, OrderFilled

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BusEvent:
    """One journaled event as subscribers see it: the event and the order it left behind
    (None for risk events, which are about trading, not an order)."""

    sequence: int
    timestamp: datetime
    event: Event
    order: Order | None
    # What subscribers send for this event, built by the first one to send it and reused,
    # unchanged, by the others: one conversion per event, not one per subscriber. Opaque
    # here (the API layer owns the wire form).
    wire: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

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
    """The subscriber fell too far behind and was dropped; it must resume from the journal."""


_CLOSED = object()


class Subscription:
    def __init__(self, bus: EventBus, sid: int, accepts: Callable[[BusEvent], bool], size: int):
        self._bus = bus
        self.sid = sid
        self._accepts = accepts
        # Unbounded as a container; `offer` enforces the bound per commit.
        self._queue: asyncio.Queue[BusEvent | object] = asyncio.Queue()
        self._size = size
        self.overflowed = False

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def offer(self, events: list[BusEvent]) -> bool:
        """Queue the wanted events of one commit; False means drop this subscriber.

        The bound applies to what was already waiting: a subscriber that keeps up is
        never cut off because a single commit carried more events than its queue."""
        if self._queue.qsize() >= self._size:
            return False
        for event in events:
            if self._accepts(event):
                self._queue.put_nowait(event)
        return True

    def close(self, *, overflow: bool = False) -> None:
        self.overflowed = overflow
        if overflow:
            # What is queued is lost to this stream anyway: free it now.
            while not self._queue.empty():
                self._queue.get_nowait()
        self._queue.put_nowait(_CLOSED)

    async def next(self, idle_s: float | None = None) -> BusEvent | None:
        """The next event; None after idle_s without one. Raises SubscriberOverflow or BusClosed."""
        try:
            async with asyncio.timeout(idle_s):
                item = await self._queue.get()
        except TimeoutError:
            return None
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)  # stay closed for any later call
            if self.overflowed:
                raise SubscriberOverflow()
            raise BusClosed()
        assert isinstance(item, BusEvent)
        return item

    def unsubscribe(self) -> None:
        self._bus._remove(self.sid)


class BusClosed(Exception):
    """The gateway is shutting down."""


class EventBus:
    def __init__(self, *, queue_size: int = 4096, head: int = 0) -> None:
        self._queue_size = queue_size
        self._subscribers: dict[int, Subscription] = {}
        self._ids = itertools.count(1)
        # The last published sequence: every event up to it is durable and was offered
        # to every subscriber registered at the time.
        self.head = head
        # Called with every commit's events before subscribers see them (telemetry).
        self._observers: list[Callable[[list[BusEvent]], None]] = []
        # Subscribers cut off so far for falling behind (SubscriberOverflow).
        self.overflowed = 0

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def backlogs(self) -> list[int]:
        """Events waiting in each subscriber's queue: how far behind each one is."""
        # list() first: a metrics reader may ask from its own thread.
        return [sub.backlog for sub in list(self._subscribers.values())]

    def observe(self, observer: Callable[[list[BusEvent]], None]) -> None:
        """Call `observer` with every published commit; it must be quick. It is no
        subscriber: it has no queue, cannot fall behind and is never dropped."""
        self._observers.append(observer)

    def subscribe(self, accepts: Callable[[BusEvent], bool]) -> Subscription:
        sid = next(self._ids)
        sub = Subscription(self, sid, accepts, self._queue_size)
        self._subscribers[sid] = sub
        return sub

    def publish(self, events: list[BusEvent]) -> None:
        """Offer one commit's events to every subscriber, in order."""
        if not events:
            return
        self.head = events[-1].sequence
        for observer in self._observers:
            try:
                observer(events)
            except Exception:  # an observer's bug must not stop the events
                log.exception("event bus observer failed")
        for sid, sub in list(self._subscribers.items()):
            try:
                taken = sub.offer(events)
            except Exception:
                # A bug for one subscriber ends its stream with a resume point, as an
                # overflow does: it resumes from the journal and misses nothing.
                log.exception("offering events to a subscriber failed")
                taken = False
            if not taken:
                del self._subscribers[sid]
                self.overflowed += 1
                sub.close(overflow=True)

    def close(self) -> None:
        for sub in self._subscribers.values():
            sub.close()
        self._subscribers.clear()

    def _remove(self, sid: int) -> None:
        self._subscribers.pop(sid, None)
