"""Shaping order calls under Kite's documented limits, so a burst waits here instead
of being refused by Kite with HTTP 429.

Sliding windows over the times calls were let through: at most `per_second` in any
window of a second, `per_minute` in any minute, `per_day` in all. Each window is
padded by a small margin, because Kite counts arrivals and ours are departures.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

# Kite counts arrivals; network jitter can bunch two departures a window apart.
WINDOW_MARGIN_S = 0.1


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
        # Departure times within the widest window, oldest first.
        self._sent: collections.deque[float] = collections.deque()
        self._sent_today = 0
        # One waiter shapes at a time, so calls leave in the order they asked.
        self._lock = asyncio.Lock()

    @property
    def sent_today(self) -> int:
        return self._sent_today

    def new_day(self) -> None:
        self._sent_today = 0

    async def acquire(self, *, count_daily: bool = True) -> None:
        """Wait until one more call fits every window, and count it as sent; with
        count_daily False it is not held to (nor counted in) the daily cap."""
        async with self._lock:
            if count_daily and self._sent_today >= self._per_day:
                raise DailyCapReached(
                    f"Kite's daily cap of {self._per_day} orders is reached; no more today"
                )
            while (wait := self._wait_needed()) > 0:
                await self._sleep(wait)
            self._sent.append(self._monotonic())
            if count_daily:
                self._sent_today += 1

    def _wait_needed(self) -> float:
        now = self._monotonic()
        widest = max(window for _, window in self._limits)
        while self._sent and now - self._sent[0] >= widest:
            self._sent.popleft()
        wait = 0.0
        for limit, window in self._limits:
            in_window = [t for t in self._sent if now - t < window]
            if len(in_window) >= limit:
                # The call that frees a slot is the limit-th newest.
                wait = max(wait, in_window[-limit] + window - now)
        return wait
