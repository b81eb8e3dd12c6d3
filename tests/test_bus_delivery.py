"""Delivery yields to the order path (issue 15, fan-out): the event bus's pump, driven
directly on an event loop with fake subscribers, and through the real gateway.

Nothing here is timed or sleeps on wall time. The unit tests count, turn by turn of the
event loop (`await asyncio.sleep(0)` is one turn), how many stream writes subscribers
make: a commit to many subscribers must not put them all on the loop at once, and
while an order is in flight (EventBus.hold) only HELD_SHARE sends per published event
may happen. Every subscriber still gets every event once, in order, and one that falls
behind is still dropped with its resume point. The gateway test counts the events
StreamFills sends between a SubmitOrder's arrival and the end of its call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from execgw.client import AsyncExecutionClient, ExecgwError, Quote, limit, market
from execgw.server.api.streaming import FillStream
from execgw.server.bus import (
    DELIVERY_BATCH,
    HELD_SHARE,
    BusEvent,
    EventBus,
    SubscriberOverflow,
    Subscription,
)
from execgw.server.clock import ManualClock

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.stream_helpers import INFY, TIMEOUT_S
else:
    from conftest import RunningGateway, make_config
    from stream_helpers import INFY, TIMEOUT_S

WHEN = datetime(2026, 11, 27, 4, 30, tzinfo=UTC)


def events(first: int, count: int) -> list[BusEvent]:
    """`count` events from sequence `first`; what they are does not matter to the bus."""
    return [
        BusEvent(sequence, WHEN, cast(Any, None), None) for sequence in range(first, first + count)
    ]


class Subscribers:
    """Fake StreamFills handlers: each takes its next event and 'writes' it, the write
    taking one turn of the loop (as a gRPC write's completion comes back later), then
    asks for the next. `writes` logs (subscriber, sequence) in the order written."""

    def __init__(self, bus: EventBus, count: int) -> None:
        self.subs: list[Subscription] = [bus.subscribe(lambda _: True) for _ in range(count)]
        self.writes: list[tuple[int, int]] = []
        self.ended: dict[int, BaseException] = {}
        self.tasks = [asyncio.create_task(self._run(i, sub)) for i, sub in enumerate(self.subs)]

    async def _run(self, i: int, sub: Subscription) -> None:
        try:
            while True:
                event = await sub.next()
                assert event is not None  # no idle timeout was asked for
                self.writes.append((i, event.sequence))
                await asyncio.sleep(0)  # the write's completion, a turn later
        except SubscriberOverflow as e:
            self.ended[i] = e

    def received(self, i: int) -> list[int]:
        return [sequence for sub, sequence in self.writes if sub == i]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def turns_until(
    subscribers: Subscribers, done: Callable[[], bool], limit: int = 10_000
) -> list[int]:
    """Turn the loop until `done()`; the writes made in each turn (a guard, not a wait)."""
    per_turn: list[int] = []
    while not done():
        assert len(per_turn) < limit, "delivery stalled"
        before = len(subscribers.writes)
        await asyncio.sleep(0)
        per_turn.append(len(subscribers.writes) - before)
    return per_turn


async def test_a_commit_to_many_subscribers_goes_out_a_few_writes_per_loop_turn() -> None:
    """500 subscribers, one commit of two events (an order accepted and filled): before,
    all 500 woke at once and an order's next step waited behind 500 writes; now no
    turn of the loop carries more than a turn's budget, and everyone gets both events."""
    bus = EventBus(hold_linger_s=0)
    subscribers = Subscribers(bus, 500)
    await asyncio.sleep(0)  # every subscriber waits for its first event
    bus.publish(events(1, 2))
    per_turn = await turns_until(subscribers, lambda: len(subscribers.writes) == 1000)
    # A turn's budget, plus what the next turn's budget let go before the turn ended.
    assert max(per_turn) <= 2 * DELIVERY_BATCH, per_turn
    assert len(per_turn) >= 1000 // (2 * DELIVERY_BATCH)
    for i in range(500):
        assert subscribers.received(i) == [1, 2]
    await subscribers.stop()


async def test_an_order_step_waits_behind_at_most_one_turn_of_writes() -> None:
    """An 'order' awaiting the loop step by step while a big fan-out is going on: between
    any two of its steps, at most a turn's budget of subscriber writes ran."""
    bus = EventBus(hold_linger_s=0)
    subscribers = Subscribers(bus, 300)
    await asyncio.sleep(0)
    bus.publish(events(1, 3))
    between_steps: list[int] = []
    for _ in range(40):
        before = len(subscribers.writes)
        await asyncio.sleep(0)  # the order's next step: back on the loop's queue
        between_steps.append(len(subscribers.writes) - before)
    assert 0 < max(between_steps) <= 2 * DELIVERY_BATCH, between_steps
    await turns_until(subscribers, lambda: len(subscribers.writes) == 900)
    for i in range(300):
        assert subscribers.received(i) == [1, 2, 3]
    await subscribers.stop()


async def test_while_an_order_is_in_flight_delivery_is_held_to_its_share() -> None:
    """While held, a commit of n events lets out HELD_SHARE * n sends in all, however
    many subscribers there are; the rest goes once released, in order, once each."""
    bus = EventBus(hold_linger_s=0)
    subscribers = Subscribers(bus, 100)
    await asyncio.sleep(0)
    hold = bus.hold()
    assert bus.held
    bus.publish(events(1, 2))
    for _ in range(200):  # plenty of turns: held, nothing more goes out
        await asyncio.sleep(0)
    assert len(subscribers.writes) == HELD_SHARE * 2
    bus.publish(events(3, 2))
    for _ in range(200):
        await asyncio.sleep(0)
    assert len(subscribers.writes) == HELD_SHARE * 4
    hold.release()
    hold.release()  # a second release changes nothing
    assert not bus.held
    assert bus.holding == 0
    await turns_until(subscribers, lambda: len(subscribers.writes) == 400)
    for i in range(100):
        assert subscribers.received(i) == [1, 2, 3, 4]
    await subscribers.stop()


async def test_a_call_waiting_on_its_broker_does_not_hold_delivery() -> None:
    """A hold paused (SubmitOrder waiting for a broker's answer) lets delivery go at
    the usual pace; it holds again after, and a release while paused is final."""
    bus = EventBus(hold_linger_s=0)
    subscribers = Subscribers(bus, 50)
    await asyncio.sleep(0)
    hold = bus.hold()
    with hold.paused():
        assert not bus.held
        bus.publish(events(1, 1))
        await turns_until(subscribers, lambda: len(subscribers.writes) == 50)
    assert bus.held
    bus.publish(events(2, 1))
    for _ in range(100):
        await asyncio.sleep(0)
    assert len(subscribers.writes) == 50 + HELD_SHARE
    with hold.paused():
        hold.release()
    assert not bus.held
    assert bus.holding == 0
    await turns_until(subscribers, lambda: len(subscribers.writes) == 100)
    await subscribers.stop()


async def test_a_subscriber_half_way_to_its_bound_is_served_while_held() -> None:
    """Held for a long burst of commits: a subscriber that would be dropped for having
    yielded to orders is served at the usual pace once half its queue is used, so it
    never overflows, and gets every event in order."""
    bus = EventBus(queue_size=16, hold_linger_s=0)
    many = HELD_SHARE + 4  # more streams that want every event than the share serves
    subscribers = Subscribers(bus, many)
    await asyncio.sleep(0)
    hold = bus.hold()
    sequence = 1
    deepest = 0
    for _ in range(200):  # 400 events, 25 queues' worth, all while held
        bus.publish(events(sequence, 2))
        sequence += 2
        deepest = max(deepest, *(sub.backlog for sub in subscribers.subs))
        for _ in range(4):
            await asyncio.sleep(0)
    # The share is less than these subscribers need: they fell behind to the half-way
    # mark, and no further.
    assert 8 <= deepest < 16
    assert not subscribers.ended
    assert bus.overflowed == 0
    hold.release()
    await turns_until(subscribers, lambda: len(subscribers.writes) == many * 400)
    for i in range(many):
        assert subscribers.received(i) == list(range(1, 401))
    await subscribers.stop()


async def test_up_to_the_share_of_streams_keep_pace_under_a_steady_flow_of_orders() -> None:
    """The usual deployment: a few streams that each want every event. Held by orders
    that never stop, they are not left behind: what each commit lets out covers them."""
    bus = EventBus(queue_size=4096, hold_linger_s=0)
    subscribers = Subscribers(bus, 8)
    await asyncio.sleep(0)
    hold = bus.hold()
    sequence = 1
    deepest = 0
    for _ in range(300):
        bus.publish(events(sequence, 2))
        sequence += 2
        for _ in range(4):
            await asyncio.sleep(0)
        deepest = max(deepest, *(sub.backlog for sub in subscribers.subs))
    assert deepest <= 2  # one commit's events at most, never a growing backlog
    assert len(subscribers.writes) == 8 * 600
    hold.release()
    await subscribers.stop()


async def test_a_subscriber_that_stops_reading_is_still_dropped() -> None:
    """The bound is unchanged: one that takes nothing overflows with the rest untouched."""
    bus = EventBus(queue_size=16, hold_linger_s=0)
    subscribers = Subscribers(bus, 2)
    stuck = bus.subscribe(lambda _: True)  # never reads
    await asyncio.sleep(0)
    for sequence in range(1, 21):
        bus.publish(events(sequence, 1))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    assert bus.overflowed == 1
    assert bus.subscriber_count == 2
    with pytest.raises(SubscriberOverflow):
        await stuck.next()
    await turns_until(subscribers, lambda: len(subscribers.writes) == 40)
    assert subscribers.received(0) == subscribers.received(1) == list(range(1, 21))
    await subscribers.stop()


async def test_an_idle_subscriber_still_times_out_for_its_heartbeat() -> None:
    """next(idle_s) with nothing pending returns None when idle_s passes (a heartbeat);
    0 makes it deterministic: the timer fires on the next turns of the loop."""
    bus = EventBus(hold_linger_s=0)
    sub = bus.subscribe(lambda _: True)
    assert await sub.next(idle_s=0) is None
    bus.publish(events(1, 1))
    event = await sub.next(idle_s=0)
    assert event is not None
    assert event.sequence == 1


# -- through the gateway ----------------------------------------------------------------

SUBSCRIBERS = 40
ORDERS = 12


@pytest.fixture
def running(tmp_path: Path) -> Any:
    config = make_config(tmp_path)
    gateway = RunningGateway(config, ManualClock(WHEN))
    try:
        yield gateway
    finally:
        gateway.stop()


def test_submits_are_not_made_to_wait_for_many_subscribers(
    running: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 live StreamFills subscribers (order updates included), then SubmitOrder calls
    one at a time, each once every subscriber has the previous order's events. Between a
    call's arrival (its hold) and its end (the hold released once its answer is written),
    StreamFills sends at most HELD_SHARE per event published meanwhile: a handful, where
    all 80 of a filled order's sends used to go out in the call's way. Afterwards every
    subscriber has every event once, in order, and no hold is left behind, by refused
    calls either."""
    bus = running.gateway.core.bus
    lock = threading.Condition()
    sends = published = 0
    # Per call: (events sent by StreamFills, events published) while it was in flight.
    during: list[tuple[int, int]] = []

    original_send = FillStream._send

    def counted_send(stream: FillStream, event: BusEvent) -> Any:
        nonlocal sends
        with lock:
            sends += 1
        return original_send(stream, event)

    original_publish = bus.publish

    def counted_publish(events: list[BusEvent]) -> None:
        nonlocal published
        with lock:
            published += len(events)
        original_publish(events)

    original_hold = bus.hold

    class WatchedHold:
        def __init__(self) -> None:
            self.hold = original_hold()
            with lock:
                self.at_hold = (sends, published)

        def release(self) -> None:
            self.hold.release()
            with lock:
                during.append((sends - self.at_hold[0], published - self.at_hold[1]))
                lock.notify_all()

        def paused(self) -> Any:
            return self.hold.paused()

        def __enter__(self) -> WatchedHold:
            return self

        def __exit__(self, *_: object) -> None:
            self.release()

    monkeypatch.setattr(FillStream, "_send", counted_send)
    monkeypatch.setattr(bus, "publish", counted_publish)
    monkeypatch.setattr(bus, "hold", WatchedHold)

    async def scenario() -> list[list[int]]:
        async with AsyncExecutionClient(running.target, timeout=TIMEOUT_S) as client:
            await client.wait_ready(TIMEOUT_S)
            assert await client.publish_quotes([Quote(symbol=INFY, ltp=1500.0)]) == 1
            received: list[list[int]] = [[] for _ in range(SUBSCRIBERS)]
            live = asyncio.Barrier(SUBSCRIBERS + 1)
            changed = asyncio.Condition()

            async def subscribe(i: int) -> None:
                went_live = False
                stream = client.stream_fills(include_order_updates=True, heartbeats=True)
                async for event in stream:
                    if event.HasField("heartbeat"):
                        if not went_live:
                            went_live = True
                            await live.wait()
                        continue
                    received[i].append(event.sequence)
                    async with changed:
                        changed.notify_all()

            tasks = [asyncio.create_task(subscribe(i)) for i in range(SUBSCRIBERS)]
            await asyncio.wait_for(live.wait(), TIMEOUT_S)
            for n in range(ORDERS):
                result = await client.submit(
                    market(INFY, "BUY", 1, strategy_code="fan"), f"fan-{n}"
                )
                assert result.status
                count = 2 * (n + 1)  # accepted + filled per order
                async with changed:
                    await asyncio.wait_for(
                        changed.wait_for(partial(caught_up, received, count)), TIMEOUT_S
                    )
            # Refused calls (qty 0 is invalid) release their holds too.
            for n in range(3):
                with pytest.raises(ExecgwError):
                    await client.submit(
                        limit(INFY, "BUY", 0, 1500.0, strategy_code="fan"), f"bad-{n}"
                    )
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return received

    received = asyncio.run(scenario())
    with lock:
        # Every call's hold is released, refused calls' too.
        assert lock.wait_for(lambda: len(during) == ORDERS + 3, TIMEOUT_S)
        calls = list(during)
    assert running.call(_holding(bus)) == 0
    for sent, committed in calls[:ORDERS]:
        assert committed >= 2  # the order's own events were published while it was held
        assert sent <= HELD_SHARE * committed, calls
        assert sent < SUBSCRIBERS, calls
    first = received[0]
    assert first == sorted(set(first))
    assert len(first) == 2 * ORDERS
    assert all(r == first for r in received)


def caught_up(received: list[list[int]], count: int) -> bool:
    """Whether every subscriber has `count` events."""
    return all(len(r) == count for r in received)


async def _holding(bus: EventBus) -> int:
    return bus.holding
