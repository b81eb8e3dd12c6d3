"""The quote book: the latest accepted quote per symbol, and the rules for accepting one.

Only quotes from the live feed live here: the venue prices orders against them. A
restart starts with an empty book; positions are valued meanwhile at their journaled
marks (GatewayState.marks), which never price an order.

Staleness is measured from when a quote was accepted, on the gateway's clock, not from
the quote's exchange time: a feed that stops delivering is what it detects, and the
exchange's clock is not ours to compare with.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import TypeVar

from execgw.server.clock import Clock
from execgw.server.config import MarketDataConfig
from execgw.server.domain import Quote
from execgw.server.instruments import InstrumentRegistry

DEFAULT_PRICE_BAND = Decimal("0.20")
DEFAULT_MARKS_EVERY = timedelta(seconds=5)
DEFAULT_BAND_MIN_TICKS = 20
DEFAULT_BAND_CONFIRM_QUOTES = 5

log = logging.getLogger(__name__)


class QuoteBook:
    def __init__(
        self,
        *,
        price_band_pct: Decimal | None = DEFAULT_PRICE_BAND,
        marks_every: timedelta = DEFAULT_MARKS_EVERY,
        max_symbols: int = 10_000,
        band_min_ticks: int = DEFAULT_BAND_MIN_TICKS,
        band_confirm_quotes: int = DEFAULT_BAND_CONFIRM_QUOTES,
        instruments: InstrumentRegistry | None = None,
        clock: Clock | None = None,
        stale_after: timedelta | None = None,
        watch: Iterable[str] = (),
    ) -> None:
        self._latest: dict[str, Quote] = {}
        # When each quote was accepted, on the gateway clock (staleness is age since then).
        self._received: dict[str, datetime] = {}
        # None: staleness is off (no clock to measure with, or no stale_after).
        self._stale_after = stale_after if clock is not None else None
        self._clock = clock
        # The feed's own symbols: watched for staleness whether or not they have a quote.
        self._watch = frozenset(watch)
        # A watched symbol with no quote yet is stale once stale_after has passed since
        # the book began: after a restart, a feed that never delivers is reported too.
        self._since = clock.now() if clock is not None else None
        self._max_symbols = max_symbols
        # Consecutive band refusals per symbol, so a stuck feed is logged in a bounded
        # way; only symbols with a reference price can be refused, which bounds it too.
        self._refused: dict[str, int] = {}
        # A level the band refused, and how many quotes in a row agreed with it: enough
        # of them is a real gap, not a glitch, and the band moves to it.
        self._candidate: dict[str, tuple[Decimal, int]] = {}
        # How to take back the current command's changes, should it fail halfway.
        self._undo: list[
            tuple[str, Quote | None, int | None, tuple[Decimal, int] | None, datetime | None]
        ] = []
        # 0 and None both mean "no band".
        self.price_band_pct = price_band_pct or None
        self.marks_every = marks_every
        self._band_min_ticks = band_min_ticks
        self._band_confirm = band_confirm_quotes
        self._instruments = InstrumentRegistry() if instruments is None else instruments

    @property
    def instruments(self) -> InstrumentRegistry:
        return self._instruments

    def update(self, quote: Quote) -> int:
        """Take an accepted quote; returns how many of its symbol's quotes the band had
        refused in a row just before it."""
        self._remember(quote.symbol)
        self._latest[quote.symbol] = quote
        if self._clock is not None:
            self._received[quote.symbol] = self._clock.now()
        self._candidate.pop(quote.symbol, None)
        return self._refused.pop(quote.symbol, 0)

    def refused(self, symbol: str) -> int:
        """Count a band refusal; returns the symbol's refusals in a row, this one included."""
        self._remember(symbol)
        count = self._refused.get(symbol, 0) + 1
        self._refused[symbol] = count
        return count

    def full_for(self, symbol: str) -> str | None:
        """Why a quote for a new `symbol` cannot be held, or None when it can."""
        if symbol in self._latest or len(self._latest) < self._max_symbols:
            return None
        return f"the quote book already holds its maximum of {self._max_symbols} symbols"

    def begin_command(self) -> None:
        self._undo.clear()

    def undo_command(self) -> None:
        """Put back what the current command changed: it failed, so none of it stands."""
        while self._undo:
            symbol, quote, refusals, candidate, received = self._undo.pop()
            _restore(self._latest, symbol, quote)
            _restore(self._received, symbol, received)
            _restore(self._refused, symbol, refusals)
            _restore(self._candidate, symbol, candidate)

    def _remember(self, symbol: str) -> None:
        self._undo.append(
            (
                symbol,
                self._latest.get(symbol),
                self._refused.get(symbol),
                self._candidate.get(symbol),
                self._received.get(symbol),
            )
        )

    def get(self, symbol: str) -> Quote | None:
        return self._latest.get(symbol)

    def ltp(self, symbol: str) -> Decimal | None:
        quote = self._latest.get(symbol)
        return None if quote is None else quote.ltp

    def symbols(self) -> list[str]:
        return sorted(self._latest)

    @property
    def stale_after(self) -> timedelta | None:
        """How old a quote may get before orders stop trusting it; None: never."""
        return self._stale_after

    def staleness(self, symbol: str) -> str | None:
        """Why `symbol`'s quote is too old to price or collar an order, or None when it
        is fresh, staleness is off, or there is no quote (that is NO_MARKET_DATA's case)."""
        limit = self._stale_after
        received = self._received.get(symbol)
        if limit is None or received is None or self._clock is None:
            return None
        age = self._clock.now() - received
        if age <= limit:
            return None
        return (
            f"the quote of {symbol} is stale: no tick for {age.total_seconds():.1f}s "
            f"(market_data.stale_after_s {limit.total_seconds():g})"
        )

    def watched_symbols(self, exposure: Iterable[str] = ()) -> tuple[str, ...]:
        """What staleness is reported for: the feed's own symbols, plus `exposure` (open
        positions and resting orders), in order; none while staleness is off."""
        if self._stale_after is None:
            return ()
        return tuple(sorted(self._watch.union(exposure)))

    def stale_symbols(self, exposure: Iterable[str] = ()) -> tuple[str, ...]:
        """The watched symbols with no quote for longer than stale_after, in order."""
        limit = self._stale_after
        if limit is None or self._clock is None or self._since is None:
            return ()
        now, since = self._clock.now(), self._since
        return tuple(
            symbol
            for symbol in self.watched_symbols(exposure)
            if now - self._received.get(symbol, since) > limit
        )

    def outside_band(self, symbol: str, ltp: Decimal, reference: Decimal | None) -> str | None:
        """Why `ltp` is too far from the last accepted LTP, or None if it may be applied.

        The band is price_band_pct of the reference, but never narrower than
        band_min_ticks ticks: a ₹0.20 option must be able to move. With no reference (a
        symbol never quoted since start-up and with no journaled mark) there is nothing
        to compare with: validation's ceiling is the only bound. A level the band
        refused `band_confirm_quotes` times in a row, each quote agreeing with the one
        before, is a real gap: it is accepted and becomes the new reference."""
        band = self.price_band_pct
        if band is None or reference is None or reference <= 0:
            return None
        if self._within(symbol, ltp, reference):
            return None
        self._remember(symbol)
        level = self._candidate.get(symbol)
        agreeing = 1
        if level is not None and self._within(symbol, ltp, level[0]):
            agreeing = level[1] + 1
        if self._band_confirm and agreeing >= self._band_confirm:
            log.warning(
                "price band for %s moves from %s to %s: %d quotes in a row agreed on it",
                symbol,
                reference,
                ltp,
                agreeing,
            )
            return None
        self._candidate[symbol] = (ltp, agreeing)
        away = abs(ltp - reference) / reference
        shown = (away * 100).quantize(Decimal("0.01"), ROUND_HALF_UP)
        return (
            f"ltp {ltp} is {shown}% from the last accepted LTP {reference}, "
            f"beyond price_band_pct {band}"
        )

    def _within(self, symbol: str, ltp: Decimal, reference: Decimal) -> bool:
        assert self.price_band_pct is not None
        tick = self._instruments.get(symbol).tick_size
        width = max(self.price_band_pct * reference, tick * self._band_min_ticks)
        return abs(ltp - reference) <= width


_K = TypeVar("_K")
_V = TypeVar("_V")


def _restore(values: dict[_K, _V], key: _K, value: _V | None) -> None:
    if value is None:
        values.pop(key, None)
    else:
        values[key] = value


def quote_book(
    config: MarketDataConfig, instruments: InstrumentRegistry, clock: Clock | None = None
) -> QuoteBook:
    band = config.price_band_pct
    stale_after = config.effective_stale_after_s()
    return QuoteBook(
        clock=clock,
        stale_after=None if stale_after is None else timedelta(seconds=stale_after),
        watch=config.feed_symbols(),
        price_band_pct=None if band is None else Decimal(repr(band)),
        marks_every=timedelta(seconds=config.marks_every_s),
        max_symbols=config.max_symbols,
        band_min_ticks=config.price_band_min_ticks,
        band_confirm_quotes=config.price_band_confirm_quotes,
        instruments=instruments,
    )
