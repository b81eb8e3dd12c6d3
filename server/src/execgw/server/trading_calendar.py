"""Trading days in the exchange's time zone, and when MIS entries close.

Named trading_calendar, not calendar, so that running a file in this directory as a
script cannot shadow the standard library's calendar module.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from execgw.server.config import TradingDayConfig


def _hhmm(value: str) -> time:
    hours, _, minutes = value.partition(":")
    return time(int(hours), int(minutes))


class TradingCalendar:
    """Trading days in the exchange's time zone, rolling at a session boundary."""

    def __init__(self, config: TradingDayConfig) -> None:
        self.zone = ZoneInfo(config.timezone)
        self.rollover = _hhmm(config.rollover)
        self.square_off = None if config.mis_square_off is None else _hhmm(config.mis_square_off)
        # The last time asked about and its trading day (datetimes are immutable).
        self._last: tuple[datetime, date] | None = None

    def trading_day(self, now: datetime) -> date:
        last = self._last
        if last is not None and last[0] is now:  # a command asks ~5 times of its `now`
            return last[1]
        local = now.astimezone(self.zone)
        day = local.date() - timedelta(days=1) if local.time() < self.rollover else local.date()
        self._last = (now, day)
        return day

    def square_off_at(self, day: date) -> datetime | None:
        if self.square_off is None:
            return None
        at = datetime.combine(day, self.square_off, self.zone)
        if self.square_off < self.rollover:
            at += timedelta(days=1)
        return at

    def square_off_text(self) -> str:
        if self.square_off is None:
            return "no MIS square-off"
        return f"{self.square_off:%H:%M} {self.zone.key}"

    def mis_closed(self, now: datetime) -> bool:
        at = self.square_off_at(self.trading_day(now))
        return at is not None and now >= at
