"""The synthetic quote feed: a seeded random walk, so `make run` has prices to trade.

Each step moves every symbol's LTP by a normal draw of `volatility_bps`, snapped to
the tick, with a one-tick spread around it. The same seed gives the same walk.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from decimal import Decimal

from execgw.server.clock import Clock
from execgw.server.domain import Quote
from execgw.server.instruments import InstrumentRegistry

log = logging.getLogger(__name__)


class SyntheticFeed:
    def __init__(
        self,
        *,
        start_prices: dict[str, float],
        instruments: InstrumentRegistry,
        clock: Clock,
        seed: int,
        volatility_bps: float,
    ) -> None:
        self._instruments = instruments
        self._clock = clock
        self._rng = random.Random(seed)
        self._sigma = volatility_bps / 10_000
        self._ltp = {
            symbol: instruments.get(symbol).nearest_tick(Decimal(repr(price)))
            for symbol, price in sorted(start_prices.items())
        }
        self._volume = dict.fromkeys(self._ltp, 0)

    def step(self) -> list[Quote]:
        """Advance the walk by one step and return a quote per symbol."""
        now = self._clock.now()
        quotes = []
        for symbol, ltp in self._ltp.items():
            instrument = self._instruments.get(symbol)
            move = Decimal(repr(self._rng.gauss(0.0, self._sigma)))
            new = max(instrument.nearest_tick(ltp * (1 + move)), instrument.tick_size)
            self._ltp[symbol] = new
            traded = self._rng.randint(1, 50) * instrument.lot_size
            self._volume[symbol] += traded
            quotes.append(
                Quote(
                    symbol=symbol,
                    ltp=new,
                    bid=new - instrument.tick_size,
                    ask=new + instrument.tick_size,
                    bid_qty=self._rng.randint(1, 500) * instrument.lot_size,
                    ask_qty=self._rng.randint(1, 500) * instrument.lot_size,
                    volume=self._volume[symbol],
                    timestamp=now,
                )
            )
        return quotes

    async def run(
        self, publish: Callable[[list[Quote]], Awaitable[object]], interval_s: float
    ) -> None:
        while True:
            try:
                await publish(self.step())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("synthetic feed could not publish; retrying next tick")
            await asyncio.sleep(interval_s)
