"""Fan-out of gateway events to stream subscribers.

Publishing never blocks the order path: each subscriber has a bounded queue, and a
subscriber whose queue is full is dropped with the sequence it should resume from.

Nor does delivery crowd it out of the loop. A commit does not wake every subscriber at
once: each sends its next event on a budget of a few per turn of the event loop
(DELIVERY_BATCH), the others waiting in line.

A budget per turn is not enough on its own: each send's completion comes back to the
loop later, so with hundreds of subscribers the loop held hundreds of sends in progress,
and each step of an order waited behind their completions (500 subscribers made a
SubmitOrder 25-40 times slower). So orders go first, within bounds:
- while an order (or a cancel, or a halt) is in the core, and for ORDER_LINGER_S after,
  at most BUSY_SENDS sends are in progress at once; streams still move meanwhile, a few
  sends at a time;
- but a subscriber a quarter of its queue behind (LAG_SHARE) sends without that limit,
  as every subscriber did before, until it has caught up: under a steady flow of orders,
  streams fall behind by at most that much, the orders slow down instead, and no stream
  is cut off for it;
- a send counts from the subscriber's turn until it asks for its next event. One the
  network holds longer than SEND_STUCK_S (a client that stopped reading) stops
  counting, so stuck subscribers cannot keep the room from the others. Slow readers
  (each send a little longer than that) may take much of it; the others then catch up
  by the rule above. (Letting a subscriber's later sends go uncounted once one was
  slow let the whole fan-out loose whenever a busy machine made sends slow.)
(tests/test_bus_delivery.py, tests/test_orders_first.py)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections import deque
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


class Subscription:
    """One subscriber's events: a bounded backlog, and a turn in one of the bus's delivery
    lines whenever it waits for the next event while some are pending (the lagging line
    when it is far enough behind not to wait for orders)."""

    def __init__(self, bus: EventBus, sid: int, accepts: Callable[[BusEvent], bool], size: int):
        self._bus = bus
        self.sid = sid
        self._accepts = accepts
        # Unbounded as a container; `offer` enforces the bound per commit.
        self._pending: deque[BusEvent] = deque()
        self._size = size
        # Set while the subscriber waits in `next`: True when given its turn (or closed),
        # False when idle_s passed with nothing pending.
        self._waiter: asyncio.Future[bool] | None = None
        self._closed = False
        self.overflowed = False
        # Which of the bus's delivery lines it waits in (_LINE or _LAGGING_LINE), if any,
        # and its place there: a line's entry with another place is one left behind.
        self.lined_up = 0
        self.place = 0
        # The loop time of its turn while a send is in progress (EventBus.sent ends it).
        self.send_started: float | None = None
        # It fell a LAG_SHARE of its queue behind: it sends as if no order were about
        # until its queue is empty again.
        self.catching_up = False

    @property
    def backlog(self) -> int:
        return len(self._pending)

    @property
    def waiting(self) -> bool:
        """Whether the subscriber is parked in `next`, ready to take an event."""
        return self._waiter is not None and not self._waiter.done()

    def offer(self, events: list[BusEvent]) -> bool:
        """Queue the wanted events of one commit; False means drop this subscriber.

        The bound applies to what was already waiting: a subscriber that keeps up is
        never cut off because a single commit carried more events than its queue."""
        if len(self._pending) >= self._size:
            return False
        before = len(self._pending)
        for event in events:
            if self._accepts(event):
                self._pending.append(event)
        if len(self._pending) > before and self.waiting:
            if not self.lined_up and self._bus.take_turn(self):
                self.grant()
            else:
                # In line already (perhaps the lagging one now), or refused a turn.
                self._bus.line_up(self)
        return True

    def close(self, *, overflow: bool = False) -> None:
        self._closed = True
        self.overflowed = overflow
        if overflow:
            # What is queued is lost to this stream anyway: free it now.
            self._pending.clear()
        self.grant()  # no turn needed to hear of the end

    def grant(self) -> bool:
        """Let a waiting subscriber go on (the delivery line's turn); False if it was not
        waiting."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            return False
        waiter.set_result(True)
        return True

    def _idle(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(False)

    async def next(self, idle_s: float | None = None) -> BusEvent | None:
        """The next event; None after idle_s without one. Raises SubscriberOverflow or BusClosed.

        An event is sent on the bus's delivery budget: a few subscribers per turn of the
        loop (EventBus.take_turn), and while orders are in the core only as many as there
        is room for, unless it is far behind. One that finds the budget spent or no room
        waits in line, so a commit's fan-out to hundreds of subscribers is spread over
        many turns and the order path's steps run between them."""
        self._bus.sent(self)  # asking again: its previous send is done
        if not self._closed:
            if self._pending and self._bus.take_turn(self):
                return self._pop()
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[bool] = loop.create_future()
            self._waiter = waiter
            timer = None
            if self._pending:
                self._bus.line_up(self)
            elif idle_s is not None:
                timer = loop.call_later(idle_s, self._idle)
            try:
                granted = await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            if not granted:
                return None
        if self._pending:
            # Closed without overflow (the gateway stopping): what was queued still goes.
            return self._pop()
        if self._closed:
            if self.overflowed:
                raise SubscriberOverflow()
            raise BusClosed()
        return None  # the turn came with nothing left (cannot happen; harmless)

    def _pop(self) -> BusEvent:
        event = self._pending.popleft()
        if not self._pending:
            self.catching_up = False
        return event

    def unsubscribe(self) -> None:
        self._bus.sent(self)
        self._bus._remove(self.sid)


class BusClosed(Exception):
    """The gateway is shutting down."""


# Subscribers let go per turn of the delivery lines (tests/test_bus_delivery.py).
DELIVERY_BATCH = 8
# The delivery lines a subscriber may wait in: the one held for room while orders are
# in the core, and the one of subscribers far enough behind not to be (served first).
_LINE = 1
_LAGGING_LINE = 2
# Sends in progress at once while an order is in the core. With 500 subscribers receiving,
# 2 kept SubmitOrder's median within 1.3-1.9 times its own without them (4: 1.3-3.1; no
# limit: 25-40), and fan-out to 100 subscribers at 30-36k events/s (2 cores, noisy).
BUSY_SENDS = 2
# A subscriber 1/LAG_SHARE of its queue behind is no longer held for orders: how far
# orders first may put a stream behind (a quarter of stream.queue_size).
LAG_SHARE = 4
# How long after an order that limit holds: a caller's next order comes within it.
ORDER_LINGER_S = 0.002
# A send in progress this long is held by the network (its subscriber is not reading),
# not by the loop: it no longer counts against BUSY_SENDS.
SEND_STUCK_S = 0.005
# asyncio runs a timer up to its clock's resolution early: a send this close to stuck
# when the stuck timer runs counts as stuck, so the timer is not armed again at once.
_TIMER_SLACK_S = 1e-6


class EventBus:
    def __init__(
        self,
        *,
        queue_size: int = 4096,
        head: int = 0,
        delivery_batch: int = DELIVERY_BATCH,
        busy_sends: int = BUSY_SENDS,
        order_linger_s: float = ORDER_LINGER_S,
        send_stuck_s: float = SEND_STUCK_S,
    ) -> None:
        self._queue_size = queue_size
        self._lag_limit = max(1, queue_size // LAG_SHARE)
        self._delivery_batch = delivery_batch
        self._busy_sends = busy_sends
        self._order_linger_s = order_linger_s
        self._send_stuck_s = send_stuck_s
        # Orders in the core now, and the loop time until which the last one still counts.
        self._orders = 0
        self._orders_until = -math.inf
        # Sends in progress that count against the room, by subscriber id, in the order
        # they started (oldest first).
        self._counted: dict[int, Subscription] = {}
        self._stuck_timer: asyncio.TimerHandle | None = None
        # Times a send was refused for want of room (what tests can see of the limit).
        self.held = 0
        # Subscribers waiting for a turn with events pending (with their places), first
        # come first served; those far enough behind not to wait for orders in a line of
        # their own.
        self._line: deque[tuple[int, Subscription]] = deque()
        self._lagging_line: deque[tuple[int, Subscription]] = deque()
        self._turn_scheduled = False
        self._budget = delivery_batch
        # Turns so far, and events sent on their budgets: what tests can see of delivery.
        self.turns = 0
        self.granted = 0
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
        if self._stuck_timer is not None:
            self._stuck_timer.cancel()
            self._stuck_timer = None

    def _remove(self, sid: int) -> None:
        self._subscribers.pop(sid, None)

    # -- orders first ---------------------------------------------------------------

    def order_started(self) -> None:
        """An order (cancel, halt) entered the core: sends are limited until it is done."""
        self._orders += 1

    def order_finished(self) -> None:
        self._orders -= 1
        self._orders_until = asyncio.get_running_loop().time() + self._order_linger_s

    @property
    def orders_in_core(self) -> int:
        return self._orders

    def _orders_about(self, now: float) -> bool:
        return self._orders > 0 or now < self._orders_until

    def _lagging(self, sub: Subscription) -> bool:
        """Whether `sub` is far enough behind no longer to wait for orders: from a
        LAG_SHARE of its queue until it has caught up (all at once rather than a send
        now and then, which would cost the loop more: sends in progress together
        complete together)."""
        if not sub.catching_up and sub.backlog >= self._lag_limit:
            sub.catching_up = True
        return sub.catching_up

    def _room(self, now: float) -> bool:
        """Whether fewer than BUSY_SENDS counted sends are in progress (arming the stuck
        timer when not)."""
        counted = self._counted
        stuck_before = now - self._send_stuck_s + _TIMER_SLACK_S
        while counted:
            sub = next(iter(counted.values()))
            if sub.send_started is None or sub.send_started > stuck_before:
                break
            del counted[sub.sid]  # held by the network, not the loop: it stops counting
        if len(counted) < self._busy_sends:
            return True
        self.held += 1
        if self._stuck_timer is None:
            # Sends finishing give the line its next turn (sent); this one is for those
            # that never finish.
            oldest = next(iter(counted.values())).send_started
            assert oldest is not None  # counted sends are in progress
            self._stuck_timer = asyncio.get_running_loop().call_later(
                max(0.0, oldest + self._send_stuck_s - now), self._stuck_passed
            )
        return False

    def _stuck_passed(self) -> None:
        self._stuck_timer = None
        if self._line:
            self._schedule_turn()

    def _start_send(self, sub: Subscription, now: float) -> None:
        """`sub` sends now, on this turn's budget."""
        self._budget -= 1
        self.granted += 1
        sub.send_started = now
        self._counted[sub.sid] = sub

    def sent(self, sub: Subscription) -> None:
        """`sub`'s send is over (it asks for its next event, or it is gone)."""
        if sub.send_started is None:
            return
        sub.send_started = None
        if self._counted.pop(sub.sid, None) is not None and self._line:
            self._schedule_turn()

    # -- delivery: a few subscribers per turn of the loop ---------------------------

    def take_turn(self, sub: Subscription) -> bool:
        """Whether `sub`, with an event to send, may send it now: when this turn's budget
        is not spent and nobody waits ahead of it (a lagging subscriber has only the
        lagging line ahead of it), and orders leave it room. Otherwise it lines up."""
        if self._budget <= 0 or self._lagging_line:
            return False
        now = asyncio.get_running_loop().time()
        if not self._lagging(sub) and (
            self._line or (self._orders_about(now) and not self._room(now))
        ):
            return False
        self._start_send(sub, now)
        self._schedule_turn()
        return True

    def line_up(self, sub: Subscription) -> None:
        """Give `sub` (waiting, events pending) a place in a delivery line: the lagging
        one if it is far enough behind, moving it there if it waited in the other (its
        place there is left behind, and skipped)."""
        if self._lagging(sub):
            if sub.lined_up == _LAGGING_LINE:
                return
            sub.lined_up = _LAGGING_LINE
            line = self._lagging_line
        elif not sub.lined_up:
            sub.lined_up = _LINE
            line = self._line
        else:
            return
        sub.place += 1
        line.append((sub.place, sub))
        self._schedule_turn()

    def _schedule_turn(self) -> None:
        if not self._turn_scheduled:
            self._turn_scheduled = True
            asyncio.get_running_loop().call_soon(self._turn)

    def _turn(self) -> None:
        """A new turn: a fresh budget, first for the lagging line, then for the other
        as far as orders leave room, each in order.

        Scheduled with call_soon, a turn comes after everything the loop already has
        ready, so the subscribers let go in one turn (at most the budget) are all the
        stream writes an order's next step can find ahead of it. A subscriber has one
        send in progress at most (it asks for the next when its send is done), so its
        events stay in order."""
        self._turn_scheduled = False
        self.turns += 1
        self._budget = self._delivery_batch
        now = asyncio.get_running_loop().time()
        lagging = self._lagging_line
        while lagging and self._budget > 0:
            self._let_go(lagging.popleft(), _LAGGING_LINE, now)
        line = self._line
        held = self._orders_about(now)
        blocked = False
        while line and self._budget > 0:
            place, sub = line[0]
            if _holds_place(sub, place, _LINE) and sub.backlog and held and not self._room(now):
                blocked = True
                break
            self._let_go(line.popleft(), _LINE, now)
        if lagging or (line and not blocked) or self._budget < self._delivery_batch:
            # Spent some: the next turn renews it (and serves the lines). A line waiting
            # for room gets its turn when a send finishes (sent) or sticks (_room).
            self._schedule_turn()

    def _let_go(self, entry: tuple[int, Subscription], line: int, now: float) -> None:
        place, sub = entry
        if not _holds_place(sub, place, line):
            return  # a place left behind (moved to the lagging line, or let go from it)
        sub.lined_up = 0
        # One that stopped waiting (its stream ended) has nothing to be let go for.
        if sub.backlog and sub.grant():
            self._start_send(sub, now)


def _holds_place(sub: Subscription, place: int, line: int) -> bool:
    """Whether a line's entry (`place`, `sub`) is `sub`'s live place in that line."""
    return sub.lined_up == line and sub.place == place
