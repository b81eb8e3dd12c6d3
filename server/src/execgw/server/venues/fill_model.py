"""How much of an order a quote can fill, and at what price: the simulator's market model.

Pure and exact (Decimal); no I/O, no clock. The defaults reproduce the seed simulator:
every fill at LTP moved by a fixed slippage, for the whole remaining quantity.

- Price source. `ltp` prices every fill off the last traded price. `touch` prices a
  BUY off the ask and a SELL off the bid (the side a taker really pays), falling back
  to LTP when that side of the book is empty (a zero price).
- Liquidity. A quote offers a budget per side: the displayed quantity at the touch
  (`cap_to_displayed_qty`) and a share of the volume traded since the symbol's
  previous quote (`volume_limit`, zipline's VolumeShareSlippage). Quote.volume is the
  day's cumulative volume (Kite's volume_traded), so the volume of one quote is the
  difference from the one before; the first quote of a symbol has none, and a cap on
  volume then allows no fill until traded volume is seen (conservative, never a guess).
  Fills consume the budget, so an order after another within one quote sees only what
  is left; the next quote brings a fresh budget.
- Slippage. `fixed_bps` moves the reference price by a fixed fraction against the
  trader; `volume_share` by impact = k * participation^2 as zipline's
  VolumeShareSlippage does, where participation is what the quote has given so far,
  this fill included, as a share of its traded volume (fills on both sides count, as
  zipline's volume_for_bar); of the displayed quantity of the fill's side when no
  volume was seen (that side's fills count); 1, the worst, when neither is known; at
  most 1. Counting what went before, not the fill alone, keeps an order split into
  pieces within one quote from paying less impact than the whole would. Prices are
  snapped to the tick in the direction worse for the trader.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from execgw.server.domain import Quote, Side
from execgw.server.instruments import Instrument

_BPS = Decimal(10_000)

PriceSource = Literal["ltp", "touch"]
SlippageModel = Literal["fixed_bps", "volume_share"]


@dataclass(frozen=True, slots=True)
class FillModel:
    slippage_bps: Decimal = Decimal(5)
    price_source: PriceSource = "ltp"
    cap_to_displayed_qty: bool = False
    # Largest share of a quote's traded volume one symbol's fills may take; None: no cap.
    volume_limit: Decimal | None = None
    slippage_model: SlippageModel = "fixed_bps"
    # zipline's price_impact: the price moves by k at 100% participation.
    impact_k: Decimal = Decimal("0.1")
    # A resting limit's chance of a fill when LTP only touches its price (queue position,
    # as NautilusTrader's FillModel prob_fill_on_limit): 1 fills, 0 needs a trade-through.
    touch_fill_probability: Decimal = Decimal(1)
    # Seeds every random draw, so that a run can be repeated fill for fill.
    seed: int = 0

    def __post_init__(self) -> None:
        if self.slippage_bps < 0:
            raise ValueError("slippage_bps must be >= 0")
        if self.volume_limit is not None and not 0 < self.volume_limit <= 1:
            raise ValueError("volume_limit must be in (0, 1]")
        if self.impact_k < 0:
            raise ValueError("impact_k must be >= 0")
        if not 0 <= self.touch_fill_probability <= 1:
            raise ValueError("touch_fill_probability must be in [0, 1]")

    @property
    def tracks_liquidity(self) -> bool:
        """False for the seed model: no budgets kept, every fill takes all that remains."""
        return (
            self.cap_to_displayed_qty
            or self.volume_limit is not None
            or self.slippage_model == "volume_share"
        )

    def reference(self, side: Side, quote: Quote) -> Decimal:
        """The price a taker on `side` trades off before slippage."""
        if self.price_source == "touch":
            touch = quote.ask if side is Side.BUY else quote.bid
            if touch > 0:
                return touch
        return quote.ltp

    def taker_price(
        self, instrument: Instrument, side: Side, reference: Decimal, participation: Decimal
    ) -> Decimal:
        """The reference moved against the trader, on the tick, never below one tick."""
        if self.slippage_model == "volume_share":
            move = self.impact_k * participation * participation
        else:
            move = self.slippage_bps / _BPS
        if side is Side.BUY:
            return instrument.snap_up(reference * (1 + move))
        # Never below one tick: a penny stock sold at market must not fill at zero.
        return max(instrument.snap_down(reference * (1 - move)), instrument.tick_size)


@dataclass(slots=True)
class Liquidity:
    """What one quote of one symbol still offers to takers, per side.

    None means unlimited on that count (the cap is off)."""

    quote: Quote
    # The volume traded between the previous quote and this one (0 if unknown).
    traded: int
    buy_displayed: int | None
    sell_displayed: int | None
    volume_left: int | None
    # What fills took of this quote per side, capped or not: the base of impact.
    taken_buy: int = 0
    taken_sell: int = 0

    @classmethod
    def of(cls, model: FillModel, quote: Quote, previous_volume: int | None) -> Liquidity:
        traded = 0 if previous_volume is None else max(0, quote.volume - previous_volume)
        displayed = model.cap_to_displayed_qty
        volume_left = None
        if model.volume_limit is not None:
            # Rounded down: a participation cap must never be exceeded.
            volume_left = int(model.volume_limit * traded)
        return cls(
            quote,
            traded,
            quote.ask_qty if displayed else None,
            quote.bid_qty if displayed else None,
            volume_left,
        )

    def available(self, side: Side, wanted: int) -> int:
        displayed = self.buy_displayed if side is Side.BUY else self.sell_displayed
        qty = wanted
        if displayed is not None:
            qty = min(qty, displayed)
        if self.volume_left is not None:
            qty = min(qty, self.volume_left)
        return max(qty, 0)

    def take(self, side: Side, qty: int) -> None:
        if side is Side.BUY:
            self.taken_buy += qty
            if self.buy_displayed is not None:
                self.buy_displayed -= qty
        else:
            self.taken_sell += qty
            if self.sell_displayed is not None:
                self.sell_displayed -= qty
        if self.volume_left is not None:
            # Traded volume is shared by both sides: a fill on either uses it up.
            self.volume_left -= qty

    def participation(self, side: Side, qty: int) -> Decimal:
        """The share of the market this quote has given, a fill of `qty` (not yet
        taken) included, in [0, 1]."""
        if self.traded > 0:
            base = self.traded
            before = self.taken_buy + self.taken_sell
        elif side is Side.BUY:
            base, before = self.quote.ask_qty, self.taken_buy
        else:
            base, before = self.quote.bid_qty, self.taken_sell
        if base <= 0:
            return Decimal(1)
        return min(Decimal(before + qty) / Decimal(base), Decimal(1))
