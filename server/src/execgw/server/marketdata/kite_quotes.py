"""A Kite tick as the gateway's Quote: LTP, best bid and ask with their quantities from
the depth, the day's volume, and the exchange's time."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from execgw.server.domain import Quote
from execgw.server.marketdata.kite_binary import DepthLevel, KiteTick
from execgw.server.validation import MAX_QUOTE_PRICE

ZERO = Decimal(0)
_EPOCH = datetime.fromtimestamp(0, UTC)


class UnusableTick(ValueError):
    """A tick that cannot be a quote (no trade yet, a price beyond the ceiling)."""


def tick_to_quote(tick: KiteTick, symbol: str, received_at: datetime) -> Quote:
    """The tick as a Quote; `received_at` stands in for a missing exchange time (modes
    ltp and quote carry none).

    The exchange's prices are not snapped or tick-checked: they define the tick. A
    crossed book (bid above ask, as in a call auction) is no book: bid and ask are then
    reported unknown (0), the LTP stands."""
    ltp = tick.last_price
    if ltp <= 0:
        raise UnusableTick(f"{symbol}: last price {ltp} (no trade yet)")
    if ltp > MAX_QUOTE_PRICE:
        raise UnusableTick(f"{symbol}: last price {ltp} is above the ceiling {MAX_QUOTE_PRICE:f}")
    bid, bid_qty = _best(tick.depth_buy)
    ask, ask_qty = _best(tick.depth_sell)
    if bid > MAX_QUOTE_PRICE or ask > MAX_QUOTE_PRICE or (bid and ask and bid > ask):
        bid, bid_qty, ask, ask_qty = ZERO, 0, ZERO, 0
    when = tick.exchange_timestamp
    return Quote(
        symbol=symbol,
        ltp=ltp,
        bid=bid,
        ask=ask,
        bid_qty=bid_qty,
        ask_qty=ask_qty,
        volume=tick.volume_traded or 0,
        timestamp=received_at if when is None or when == _EPOCH else when,
    )


def _best(levels: tuple[DepthLevel, ...]) -> tuple[Decimal, int]:
    """The best level's price and quantity; (0, 0) for an empty side (Kite fills empty
    levels with zeros)."""
    if levels and levels[0].price > 0 and levels[0].quantity > 0:
        return levels[0].price, levels[0].quantity
    return ZERO, 0
