"""The quote book: the latest accepted quote per symbol, and the rules for accepting one.

Only quotes from the live feed live here: the venue prices orders against them. A
restart starts with an empty book; positions are valued meanwhile at their journaled
marks (GatewayState.marks), which never price an order.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

from execgw.server.config import MarketDataConfig
from execgw.server.domain import Quote

DEFAULT_PRICE_BAND = Decimal("0.20")
DEFAULT_MARKS_EVERY = timedelta(seconds=5)


class QuoteBook:
    def __init__(
        self,
        *,
        price_band_pct: Decimal | None = DEFAULT_PRICE_BAND,
        marks_every: timedelta = DEFAULT_MARKS_EVERY,
        max_symbols: int = 10_000,
    ) -> None:
        self._latest: dict[str, Quote] = {}
        self._max_symbols = max_symbols
        # How to take back the current command's changes, should it fail halfway.
        self._undo: list[tuple[str, Quote | None, int | None]] = []
        # Consecutive band refusals per symbol, so a stuck feed is logged in a bounded
        # way; only symbols with a reference price can be refused, which bounds it too.
        self._refused: dict[str, int] = {}
        # 0 and None both mean "no band".
        self.price_band_pct = price_band_pct or None
        self.marks_every = marks_every

    def update(self, quote: Quote) -> int:
        """Take an accepted quote; returns how many of its symbol's quotes the band had
        refused in a row just before it."""
        self._remember(quote.symbol)
        self._latest[quote.symbol] = quote
        return self._refused.pop(quote.symbol, 0)

    def refused(self, symbol: str) -> int:
        """Count a band refusal; returns the symbol's refusals in a row, this one included."""
        self._remember(symbol)
        count = self._refused.get(symbol, 0) + 1
        self._refused[symbol] = count
        return count

    def full_for(self, symbol: str) -> str | None:
        """Why a quote for `symbol` cannot be held, or None when it can."""
        if symbol in self._latest or len(self._latest) < self._max_symbols:
            return None
        return f"the quote book already holds its maximum of {self._max_symbols} symbols"

    def begin_command(self) -> None:
        self._undo.clear()

    def undo_command(self) -> None:
        """Put back what the current command changed: it failed, so none of it stands."""
        while self._undo:
            symbol, quote, refusals = self._undo.pop()
            if quote is None:
                self._latest.pop(symbol, None)
            else:
                self._latest[symbol] = quote
            if refusals is None:
                self._refused.pop(symbol, None)
            else:
                self._refused[symbol] = refusals

    def _remember(self, symbol: str) -> None:
        self._undo.append((symbol, self._latest.get(symbol), self._refused.get(symbol)))

    def get(self, symbol: str) -> Quote | None:
        return self._latest.get(symbol)

    def ltp(self, symbol: str) -> Decimal | None:
        quote = self._latest.get(symbol)
        return None if quote is None else quote.ltp

    def symbols(self) -> list[str]:
        return sorted(self._latest)

    def outside_band(self, ltp: Decimal, reference: Decimal | None) -> str | None:
        """Why `ltp` is too far from the last accepted LTP, or None if it may be applied.

        With no reference (a symbol never quoted since start-up and with no journaled
        mark) there is nothing to compare with: validation's ceiling is the only bound."""
        band = self.price_band_pct
        if band is None or reference is None or reference <= 0:
            return None
        away = abs(ltp - reference) / reference
        if away <= band:
            return None
        shown = (away * 100).quantize(Decimal("0.01"), ROUND_HALF_UP)
        return (
            f"ltp {ltp} is {shown}% from the last accepted LTP {reference}, "
            f"beyond price_band_pct {band}"
        )


def quote_book(config: MarketDataConfig) -> QuoteBook:
    band = config.price_band_pct
    return QuoteBook(
        price_band_pct=None if band is None else Decimal(repr(band)),
        marks_every=timedelta(seconds=config.marks_every_s),
        max_symbols=config.max_symbols,
    )
