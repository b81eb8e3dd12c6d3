"""Delivery shares the loop with the order path (issue 15, fan-out): the event bus's
pump, driven directly on an event loop with fake subscribers.

Nothing here is timed or sleeps on wall time. The tests count, turn by turn of the
event loop (`await asyncio.sleep(0)` is one turn), how many stream writes subscribers
make: a commit to many subscribers must not put them all on the loop at once, and while
an order is in the core only a few sends may be in progress. Every subscriber still gets
every event once, in order, and one that falls behind is still dropped with its resume
point. Where the loop's time matters (how long the limit outlasts an order, when a send
counts as stuck), the loop's clock is a manual one. (Through the real gateway,
tests/test_stream*.py and tests/test_orders_first.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import pytest

from execgw.server.bus import (
    BUSY_SENDS,
    DELIVERY_BATCH,
    LAG_SHARE,
    ORDER_LINGER_S,
    SEND_STUCK_S,
    BusEvent,
    EventBus,
    SubscriberOverflow,
    Subscription,
)

if TYPE_CHECKING:
    pass
else:
    pass

WHEN = datetime(2026, 11, 27, 4, 30, tzinfo=UTC)
# A slow reader's write, in loop time: longer than a send may take before it is stuck.
SLOW_WRITE_S = 2 * SEND_STUCK_S


def events(first: int, count: int) -> list[BusEvent]:
    """`count` events from sequence `first`; what they are does not matter to the bus."""
    return [
        BusEvent(sequence, WHEN, cast(Any, None), None) for sequence in range(first, first + count)
    ]


class Subscribers:
    """Fake StreamFills handlers: each takes its next event and 'writes' it, the write
    taking one turn of the loop (as a gRPC write's completion comes back later), then
    asks for the next. `writes` logs (subscriber, sequence) in the order written."""

    def __init__(self, bus: EventBus, count: int, stuck: int = 0, slow: int = 0) -> None:
        """The first `stuck` never finish their first write (their client stopped
        reading); the `slow` after them take SLOW_WRITE_S of loop time for each write."""
        self.subs: list[Subscription] = [bus.subscribe(lambda _: True) for _ in range(count)]
        self.writes: list[tuple[int, int]] = []
        self.ended: dict[int, BaseException] = {}
        # Writes begun and not finished now by the quick ones, and the most at once.
        self.in_progress = 0
        self.most_in_progress = 0
        self._stuck = stuck
        self._slow = stuck + slow
        self.tasks = [asyncio.create_task(self._run(i, sub)) for i, sub in enumerate(self.subs)]

    async def _run(self, i: int, sub: Subscription) -> None:
        try:
            while True:
                event = await sub.next()
                assert event is not None  # no idle timeout was asked for
                self.writes.append((i, event.sequence))
                if i < self._stuck:
                    await asyncio.get_running_loop().create_future()  # never completes
                if i < self._slow:
                    await asyncio.sleep(SLOW_WRITE_S)
                    continue
                self.in_progress += 1
                self.most_in_progress = max(self.most_in_progress, self.in_progress)
                await asyncio.sleep(0)  # the write's completion, a turn later
                await asyncio.sleep(0)  # (two: completions overlap as they do in gRPC)
                self.in_progress -= 1
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
    bus = EventBus()
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
    bus = EventBus()
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


async def test_a_subscriber_that_stops_reading_is_still_dropped() -> None:
    """The bound is unchanged: one that takes nothing overflows with the rest untouched."""
    bus = EventBus(queue_size=16)
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
    bus = EventBus()
    sub = bus.subscribe(lambda _: True)
    assert await sub.next(idle_s=0) is None
    bus.publish(events(1, 1))
    event = await sub.next(idle_s=0)
    assert event is not None
    assert event.sequence == 1


class ManualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when told: timers (call_later, sleep) fire
    once it passes their time, so nothing waits on the wall clock."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    def time(self) -> float:
        return self.now


def on_manual_time(scenario: Callable[[ManualTimeLoop], Any]) -> None:
    loop = ManualTimeLoop()
    try:
        loop.run_until_complete(scenario(loop))
    finally:
        loop.close()


async def spin(turns: int) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


def test_while_an_order_is_in_the_core_only_a_few_sends_are_in_progress() -> None:
    """300 subscribers, a commit of three events, an order in the core: never more than
    BUSY_SENDS writes in progress at once (without the limit, a turn's budget starts
    more every turn while the earlier ones complete), and everyone gets everything."""

    async def scenario(loop: ManualTimeLoop) -> None:
        bus = EventBus()
        subscribers = Subscribers(bus, 300)
        await asyncio.sleep(0)
        bus.order_started()
        bus.publish(events(1, 3))
        between_steps: list[int] = []
        for _ in range(60):
            before = len(subscribers.writes)
            await asyncio.sleep(0)  # the order's next step
            between_steps.append(len(subscribers.writes) - before)
        assert subscribers.most_in_progress <= BUSY_SENDS
        assert max(between_steps) <= BUSY_SENDS, between_steps
        assert sum(between_steps) > 0  # streams move meanwhile, never held
        assert bus.held > 0
        bus.order_finished()
        loop.now += ORDER_LINGER_S
        await turns_until(subscribers, lambda: len(subscribers.writes) == 900)
        for i in range(300):
            assert subscribers.received(i) == [1, 2, 3]
        await subscribers.stop()

    on_manual_time(scenario)


async def test_without_an_order_sends_are_not_limited() -> None:
    """The same commit with no order about: the turn budget alone paces the sends, and
    more than BUSY_SENDS are in progress at once."""
    bus = EventBus(order_linger_s=0)
    subscribers = Subscribers(bus, 300)
    await asyncio.sleep(0)
    bus.order_started()
    bus.order_finished()  # done, and no linger: as if none had come
    bus.publish(events(1, 3))
    await turns_until(subscribers, lambda: len(subscribers.writes) == 900)
    assert subscribers.most_in_progress > BUSY_SENDS
    assert bus.held == 0
    await subscribers.stop()


def test_the_limit_outlasts_the_order_by_the_linger_then_lifts() -> None:
    """A caller's next order comes right after its answer: the limit holds for
    ORDER_LINGER_S of loop time after an order, then sends go at the turn budget."""

    async def scenario(loop: ManualTimeLoop) -> None:
        bus = EventBus()
        subscribers = Subscribers(bus, 200)
        await asyncio.sleep(0)
        bus.order_started()
        bus.order_finished()
        bus.publish(events(1, 2))
        await spin(30)
        assert 0 < len(subscribers.writes) < 400
        assert subscribers.most_in_progress <= BUSY_SENDS
        loop.now += ORDER_LINGER_S
        await turns_until(subscribers, lambda: len(subscribers.writes) == 400)
        assert subscribers.most_in_progress > BUSY_SENDS
        for i in range(200):
            assert subscribers.received(i) == [1, 2]
        await subscribers.stop()

    on_manual_time(scenario)


def test_a_subscriber_a_quarter_queue_behind_is_no_longer_held_for_orders() -> None:
    """Orders first puts streams behind by at most a LAG_SHARE of their queue: under a
    steady flow of orders, a subscriber that far behind sends as if no order were about,
    so it keeps up (the orders would slow down instead) and is never cut off for it.
    Here events come faster than BUSY_SENDS sends at a time can carry them, and slower
    than the turn budget can."""

    async def scenario(loop: ManualTimeLoop) -> None:
        queue = 40
        lag = queue // LAG_SHARE
        bus = EventBus(queue_size=queue)
        subscribers = Subscribers(bus, 20)
        await asyncio.sleep(0)
        bus.order_started()  # and it never leaves: orders keep coming
        sequence = 1
        caught_up = 0  # times a subscriber unheld for its lag was let go to the end
        for _ in range(150):  # an event every 10 turns, 20 sends wanted
            bus.publish(events(sequence, 1))
            sequence += 1
            catching_up = [sub.catching_up for sub in subscribers.subs]
            await spin(10)
            caught_up += sum(
                was and not sub.catching_up and not sub.backlog
                for was, sub in zip(catching_up, subscribers.subs, strict=True)
            )
            assert bus.overflowed == 0
            assert all(sub.backlog <= lag + 1 for sub in subscribers.subs)
        assert subscribers.most_in_progress > BUSY_SENDS  # the laggards went unheld
        assert caught_up > 0  # until they had caught up
        assert bus.held > 0  # and the others were held
        bus.order_finished()
        loop.now += ORDER_LINGER_S
        expected = list(range(1, sequence))
        await turns_until(subscribers, lambda: len(subscribers.writes) == 20 * len(expected))
        for i in range(20):
            assert subscribers.received(i) == expected
        await subscribers.stop()

    on_manual_time(scenario)


def test_subscribers_that_stop_reading_do_not_hold_the_others_back() -> None:
    """BUSY_SENDS subscribers whose first write never completes (their clients stopped
    reading), an order in the core: the others wait only until those sends count as
    stuck (SEND_STUCK_S of loop time, a timer with nothing else to wake the line), then
    get every event. While blocked, the line does not spin the loop."""

    async def scenario(loop: ManualTimeLoop) -> None:
        bus = EventBus()
        subscribers = Subscribers(bus, 20, stuck=BUSY_SENDS)
        await asyncio.sleep(0)
        bus.order_started()
        bus.publish(events(1, 2))
        await spin(20)
        # The stuck ones took the room; the rest wait for it, with no turn spinning.
        assert {i for i, _ in subscribers.writes} == set(range(BUSY_SENDS))
        turns = bus.turns
        await spin(200)
        assert bus.turns == turns
        loop.now += SEND_STUCK_S
        await turns_until(
            subscribers, lambda: len(subscribers.writes) == BUSY_SENDS + 2 * (20 - BUSY_SENDS)
        )
        assert subscribers.most_in_progress <= BUSY_SENDS  # the limit still holds
        for i in range(BUSY_SENDS, 20):
            assert subscribers.received(i) == [1, 2]
        bus.order_finished()
        await subscribers.stop()

    on_manual_time(scenario)


def test_slow_readers_hold_the_others_back_a_quarter_queue_at_most() -> None:
    """BUSY_SENDS subscribers whose writes take longer than SEND_STUCK_S (clients reading
    slowly) take the room while an order lasts (the clock stands still, so they keep
    it); the quick ones are held only until they are a LAG_SHARE of their queue behind,
    then catch up, and nobody is cut off."""

    async def scenario(loop: ManualTimeLoop) -> None:
        queue = 40
        bus = EventBus(queue_size=queue)
        subscribers = Subscribers(bus, 12, slow=BUSY_SENDS)
        await asyncio.sleep(0)
        bus.order_started()
        bus.publish(events(1, queue // LAG_SHARE - 1))  # not yet far enough behind
        await spin(50)
        assert {i for i, _ in subscribers.writes} == set(range(BUSY_SENDS))  # they took it
        bus.publish(events(queue // LAG_SHARE, 1))  # now they are
        await spin(400)
        expected = list(range(1, queue // LAG_SHARE + 1))
        for i in range(BUSY_SENDS, 12):
            assert subscribers.received(i) == expected
        assert bus.overflowed == 0
        for _ in range(len(expected)):
            loop.now += SLOW_WRITE_S
            await spin(5)
        for i in range(BUSY_SENDS):
            assert subscribers.received(i) == expected
        bus.order_finished()
        await subscribers.stop()

    on_manual_time(scenario)


def test_a_subscriber_that_leaves_mid_send_frees_its_room() -> None:
    """Unsubscribing ends its send: with the room full of stuck sends, one leaving lets
    the next go at once (on a clock that never moves, so not by the stuck timer)."""

    async def scenario(loop: ManualTimeLoop) -> None:
        bus = EventBus()
        subscribers = Subscribers(bus, 10, stuck=BUSY_SENDS)
        await asyncio.sleep(0)
        bus.order_started()
        bus.publish(events(1, 1))
        await spin(50)
        assert len(subscribers.writes) == BUSY_SENDS  # the room is full, and stays so
        subscribers.tasks[0].cancel()
        subscribers.subs[0].unsubscribe()
        await spin(10)
        assert len(subscribers.writes) > BUSY_SENDS
        bus.order_finished()
        loop.now += SEND_STUCK_S + ORDER_LINGER_S
        await turns_until(subscribers, lambda: len(subscribers.writes) == 10)
        assert sorted(i for i, _ in subscribers.writes) == list(range(10))
        await subscribers.stop()

    on_manual_time(scenario)
