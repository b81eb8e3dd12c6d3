"""Indian transaction charges per fill: brokerage, STT, exchange transaction charges,
SEBI fees, stamp duty and GST, from a rate table (config.ChargesConfig).

The table's defaults are Zerodha's published rates (https://zerodha.com/charges, NSE
and BSE columns), as revised from 2024-10-01 (NSE/BSE uniform "true to label"
transaction charges, SEBI circular SEBI/HO/MRD/TPD-1/P/CIR/2024/84; STT on F&O from the
Finance (No. 2) Act 2024). Stamp duty is the Indian Stamp Act rate in force since
2020-07-01. BSE (BSE:) and BFO (BFO:) have rows of their own: they differ from NSE only
in the exchange transaction charge (config.py has the figures and their sources).
Rates change with budgets and circulars: check the page and override the table.

Approximations, each the conservative or the simple side:
- Each part is rounded to the paisa per fill, half up; a contract note rounds STT to
  the rupee and sums per order, so totals may differ by a few paise.
- Brokerage "per executed order" (0.03% or Rs 20, whichever is lower) is capped across
  the fills of one order; the flat-fee segments charge on the order's first fill.
- The stamp duty ceilings (Rs 1,500 a crore and so on) are not applied.
- Segments are told from the symbol as Kite spells it: NSE:/BSE: is equity (CNC and
  NRML delivery, MIS intraday), NFO:/BFO: a future when it ends in FUT, an option when
  it ends in CE or PE; BSE: and BFO: symbols take the bse_/bfo_ rows. Anything else
  (MCX, CDS) has no row and costs nothing here.
- A configured table that gives an NSE row but not its bse_/bfo_ row charges that
  exchange its own default row with the NSE row's brokerage, if given (brokerage is
  the broker's, transaction charges the exchange's); rows it leaves out keep their
  defaults (config.ChargesConfig).
- BFO options all pay the Sensex/Bankex rate; BSE charges Sensex 50 and stock options
  less (0.005% of premium): override bfo_options for those.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from execgw.server.domain import Charges, Product, Side

Segment = Literal[
    "equity_delivery",
    "equity_intraday",
    "futures",
    "options",
    "bse_equity_delivery",
    "bse_equity_intraday",
    "bfo_futures",
    "bfo_options",
]
# The NSE row whose brokerage a BSE/BFO row takes when the config gives it (config.py).
NSE_ROW: dict[Segment, Segment] = {
    "bse_equity_delivery": "equity_delivery",
    "bse_equity_intraday": "equity_intraday",
    "bfo_futures": "futures",
    "bfo_options": "options",
}

_PAISA = Decimal("0.01")
_PERCENT = Decimal(100)


@dataclass(frozen=True, slots=True)
class SegmentRates:
    """Rates of one segment. Percentages are of the fill's turnover (qty x price; for
    options, the premium)."""

    # None: a flat brokerage_max_rupees per executed order.
    brokerage_pct: Decimal | None
    brokerage_max_rupees: Decimal
    stt_buy_pct: Decimal
    stt_sell_pct: Decimal
    exchange_txn_pct: Decimal
    stamp_buy_pct: Decimal


@dataclass(frozen=True, slots=True)
class ChargeModel:
    segments: dict[Segment, SegmentRates]
    sebi_per_crore: Decimal
    gst_pct: Decimal

    def for_fill(
        self,
        symbol: str,
        product: Product,
        side: Side,
        qty: int,
        price: Decimal,
        *,
        brokerage_so_far: Decimal,
    ) -> Charges | None:
        """The charges of one fill; None for a segment the table has no row for.
        `brokerage_so_far` is what earlier fills of the same order paid."""
        segment = segment_of(symbol, product)
        rates = None if segment is None else self.segments.get(segment)
        if rates is None:
            return None
        turnover = price * qty
        if rates.brokerage_pct is None:
            brokerage = rates.brokerage_max_rupees if brokerage_so_far == 0 else Decimal(0)
        else:
            room = max(rates.brokerage_max_rupees - brokerage_so_far, Decimal(0))
            brokerage = min(_paisa(turnover * rates.brokerage_pct / _PERCENT), room)
        stt_pct = rates.stt_buy_pct if side is Side.BUY else rates.stt_sell_pct
        stt = _paisa(turnover * stt_pct / _PERCENT)
        exchange_txn = _paisa(turnover * rates.exchange_txn_pct / _PERCENT)
        sebi = _paisa(turnover * self.sebi_per_crore / Decimal(10_000_000))
        stamp = _paisa(turnover * rates.stamp_buy_pct / _PERCENT) if side is Side.BUY else _ZERO
        gst = _paisa((brokerage + exchange_txn + sebi) * self.gst_pct / _PERCENT)
        return Charges(
            brokerage=_paisa(brokerage),
            stt=stt,
            exchange_txn=exchange_txn,
            sebi=sebi,
            stamp_duty=stamp,
            gst=gst,
        )


_ZERO = Decimal("0.00")


def segment_of(symbol: str, product: Product) -> Segment | None:
    exchange, _, tradingsymbol = symbol.partition(":")
    if exchange == "NSE":
        return "equity_intraday" if product is Product.MIS else "equity_delivery"
    if exchange == "BSE":
        return "bse_equity_intraday" if product is Product.MIS else "bse_equity_delivery"
    if exchange in ("NFO", "BFO"):
        bfo = exchange == "BFO"
        if tradingsymbol.endswith("FUT"):
            return "bfo_futures" if bfo else "futures"
        if tradingsymbol.endswith(("CE", "PE")):
            return "bfo_options" if bfo else "options"
    return None


def _paisa(value: Decimal) -> Decimal:
    return value.quantize(_PAISA, rounding=ROUND_HALF_UP)
