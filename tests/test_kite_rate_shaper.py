"""OrderRateShaper: a call holds its place in Kite's windows from when it leaves until a
window after its answer (Kite counts arrivals, which fall anywhere in between), so
calls delayed on their way cannot arrive bunched with later ones. Clock and sleep are
fakes: nothing waits on wall time."""

from __future__ import annotations

import asyncio

import pytest

from execgw.server.venues.kite.rate_limit import (
    WINDOW_MARGIN_S,
    DailyCapReached,
    OrderRateShaper,
)

SECOND = 1.0 + WINDOW_MARGIN_S


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def shaper(time: FakeTime, per_second: int = 2, per_day: int = 100) -> OrderRateShaper:
    return OrderRateShaper(
        per_second=per_second,
        per_minute=1000,
        per_day=per_day,
        monotonic=time.monotonic,
        sleep=time.sleep,
    )


async def test_a_call_still_on_its_way_holds_its_place_until_a_window_after_its_answer() -> None:
    time = FakeTime()
    limits = shaper(time)
    departures: list[float] = []
    answer_first = asyncio.Event()

    async def call(hold: asyncio.Event | None) -> None:
        async with limits.slot():
            departures.append(time.now)
            if hold is not None:
                await hold.wait()

    answer_second = asyncio.Event()
    first = asyncio.create_task(call(answer_first))  # both delayed on their way
    second = asyncio.create_task(call(answer_second))
    third = asyncio.create_task(call(None))
    for _ in range(20):
        await asyncio.sleep(0)
    # Counting departures only, the third would leave at 1.1 s: while the first two are
    # unanswered they may still arrive at Kite as late as the third does.
    assert not third.done()
    assert departures == [0.0, 0.0]
    time.now = 3.0
    answer_first.set()
    await first
    await third
    assert departures[2] == pytest.approx(3.0 + SECOND)  # a window after that answer
    answer_second.set()
    await second


async def test_answered_calls_free_their_places_a_window_after_their_answers() -> None:
    time = FakeTime()
    limits = shaper(time, per_second=2)
    departures = []
    for _ in range(5):
        async with limits.slot():
            departures.append(time.now)
            time.now += 0.05  # each answer takes 50 ms
    assert departures[:2] == [0.0, 0.05]
    # The third waits for the first's answer (0.05) plus a window.
    assert departures[2] == pytest.approx(0.05 + SECOND)
    assert departures[3] == pytest.approx(0.10 + SECOND)
    for earlier, later in zip(departures, departures[2:], strict=False):
        assert later - earlier > SECOND  # never 3 in any window, wherever they arrive


async def test_the_daily_cap_refuses_orders_but_not_cancels() -> None:
    time = FakeTime()
    limits = shaper(time, per_second=100, per_day=2)
    for _ in range(2):
        async with limits.slot():
            pass
    with pytest.raises(DailyCapReached):
        async with limits.slot():
            pass
    async with limits.slot(count_daily=False):
        pass
    assert limits.sent_today == 2
