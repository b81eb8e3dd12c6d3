"""Shaping order calls under Kite's documented limits, so a burst waits here instead
of being refused by Kite with HTTP 429.

Sliding windows: at most `per_second` calls in any window of a second, `per_minute`
in any minute, `per_day` in all. Kite counts calls as they arrive, and we only know
when ours leave and when their answers come back: a call's arrival is after it left
and before its answer. So a call holds its place in a window from the moment it leaves
until a window's length after its answer. Counting from departures alone is not
enough: a call delayed on its way (a busy machine, the network) arrives bunched with
the next ones, and Kite refuses the one too many.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

# Slack on each window, for clocks: Kite's second and ours need not agree exactly.
WINDOW_MARGIN_S = 0.1


class _Call:
    """A call let through: when its answer came back, None while it is on its way."""

    __slots__ = ("answered",)

    def __init__(self) -> None:
        self.answered: float | None = None


class DailyCapReached(Exception):
    """No more orders may be sent today (Kite's daily cap)."""


class OrderRateShaper:
    def __init__(
        self,
        *,
        per_second: int,
        per_minute: int,
        per_day: int,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._limits = ((per_second, 1.0 + WINDOW_MARGIN_S), (per_minute, 60.0 + WINDOW_MARGIN_S))
        self._per_day = per_day
        self._monotonic = monotonic
        self._sleep = sleep
        # Calls let through whose place in the widest window has not ended, oldest first.
        self._calls: collections.deque[_Call] = collections.deque()
        # Set when an answer comes back: a call waiting on calls still on their way.
        self._answered = asyncio.Event()
        self._sent_today = 0
        # One waiter shapes at a time, so calls leave in the order they asked.
        self._lock = asyncio.Lock()

    @property
    def sent_today(self) -> int:
        return self._sent_today

    def new_day(self) -> None:
        self._sent_today = 0

    @asynccontextmanager
    async def slot(self, *, count_daily: bool = True) -> AsyncIterator[None]:
        """Wait until one more call fits every window, count it as sent, and make the
        call inside the block (its place in the windows runs from the block's start to
        a window after its end). With count_daily False it is not held to (nor counted
        in) the daily cap. DailyCapReached when the day's cap is reached."""
        call = await self._acquire(count_daily)
        try:
            yield
        finally:
            call.answered = self._monotonic()
            self._answered.set()

    async def _acquire(self, count_daily: bool) -> _Call:
        async with self._lock:
            if count_daily and self._sent_today >= self._per_day:
                raise DailyCapReached(
                    f"Kite's daily cap of {self._per_day} orders is reached; no more today"
                )
            while (wait := self._wait_needed()) != 0:
                if wait is None:
                    # Every place is held by calls still on their way: wait for an answer.
                    self._answered.clear()
                    await self._answered.wait()
                else:
                    await self._sleep(wait)
            call = _Call()
            self._calls.append(call)
            if count_daily:
                self._sent_today += 1
            return call

    def _wait_needed(self) -> float | None:
        """0 when a call may leave now; else seconds until one may, or None until an
        answer comes back."""
        now = self._monotonic()
        widest = max(window for _, window in self._limits)
        calls = self._calls
        while calls and calls[0].answered is not None and now - calls[0].answered >= widest:
            calls.popleft()
        wait: float | None = 0.0
        for limit, window in self._limits:
            holding = [c for c in calls if c.answered is None or now - c.answered < window]
            if len(holding) < limit:
                continue
            # Places free as answered calls' windows end; those on their way free none yet.
            ends = sorted(c.answered + window for c in holding if c.answered is not None)
            needed = len(holding) - limit + 1
            if len(ends) < needed:
                return None
            this = ends[needed - 1] - now
            wait = this if wait is None else max(wait, this)
        return wait
