"""The quote book: the latest quote per symbol."""

from __future__ import annotations

from decimal import Decimal

from execgw.server.domain import Quote


class QuoteBook:
    def __init__(self) -> None:
        self._latest: dict[str, Quote] = {}

    def update(self, quote: Quote) -> None:
        self._latest[quote.symbol] = quote

    def get(self, symbol: str) -> Quote | None:
        return self._latest.get(symbol)

    def ltp(self, symbol: str) -> Decimal | None:
        quote = self._latest.get(symbol)
        return None if quote is None else quote.ltp

    def symbols(self) -> list[str]:
        return sorted(self._latest)
