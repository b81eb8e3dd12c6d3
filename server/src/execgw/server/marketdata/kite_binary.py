"""Kite's binary ticker format, parsed into exact values.

The layout is the one the official SDK reads (kiteconnect/ticker.py, `_parse_binary`):
a frame is a big-endian uint16 packet count, then per packet a uint16 length and the
packet. The length says the mode: 8 bytes LTP; 28/32 an index in quote/full mode; 44/184
a tradable instrument in quote/full mode (full adds times, open interest and five levels
of depth each side). Prices travel as integer paise (or smaller units), so they are
turned into rupees here with the segment's divisor as exact Decimals, never floats.

A frame of fewer than two bytes is Kite's heartbeat. A packet of a length not listed
above is skipped, as the SDK skips it; a frame that ends inside a packet is malformed
and raises, so the caller can drop it whole.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum

# Segments, the low byte of an instrument token (KiteTicker.EXCHANGE_MAP).
SEGMENT_CDS = 3
SEGMENT_BCD = 6
SEGMENT_INDICES = 9
SEGMENT_NCO = 12

# Packet lengths by mode.
LTP_LENGTH = 8
INDEX_QUOTE_LENGTH = 28
INDEX_FULL_LENGTH = 32
QUOTE_LENGTH = 44
FULL_LENGTH = 184
DEPTH_LEVELS = 5

_U16 = struct.Struct(">H")
_LTP = struct.Struct(">II")
_INDEX = struct.Struct(">7I")  # token, ltp, high, low, open, close, change (unused)
_INDEX_TIME = struct.Struct(">I")
_QUOTE = struct.Struct(">11I")  # token, ltp, ltq, atp, volume, buy qty, sell qty, o, h, l, c
_FULL_EXTRA = struct.Struct(">5I")  # last trade time, oi, oi day high, oi day low, timestamp
_DEPTH = struct.Struct(">IIH2x")  # quantity, price, orders, padding


class MalformedFrame(ValueError):
    """A frame whose packets do not fit in it; nothing of it should be used."""


class Mode(StrEnum):
    LTP = "ltp"
    QUOTE = "quote"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class Ohlc:
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal


@dataclass(frozen=True, slots=True)
class DepthLevel:
    quantity: int
    price: Decimal
    orders: int


@dataclass(frozen=True, slots=True)
class KiteTick:
    """One packet, with the SDK's field names; fields a mode does not carry are None."""

    instrument_token: int
    mode: Mode
    # False for indices, which cannot be traded.
    tradable: bool
    last_price: Decimal
    ohlc: Ohlc | None = None
    last_traded_quantity: int | None = None
    average_traded_price: Decimal | None = None
    volume_traded: int | None = None
    total_buy_quantity: int | None = None
    total_sell_quantity: int | None = None
    last_trade_time: datetime | None = None
    oi: int | None = None
    oi_day_high: int | None = None
    oi_day_low: int | None = None
    exchange_timestamp: datetime | None = None
    # Best first; empty outside mode full.
    depth_buy: tuple[DepthLevel, ...] = ()
    depth_sell: tuple[DepthLevel, ...] = ()


@dataclass(frozen=True, slots=True)
class ParsedFrame:
    ticks: list[KiteTick]
    # Packets of a length no mode has (skipped, as the SDK skips them).
    unknown_packets: int = 0


def price_exponent(instrument_token: int) -> int:
    """Rupees = units * 10^-exponent: CDS quotes in 1e-7, BCD and NCO in 1e-4, the rest
    in paise (the SDK's divisors 10,000,000, 10,000 and 100)."""
    segment = instrument_token & 0xFF
    if segment == SEGMENT_CDS:
        return 7
    if segment in (SEGMENT_BCD, SEGMENT_NCO):
        return 4
    return 2


def parse_frame(frame: bytes) -> ParsedFrame:
    """Every packet of a binary frame, in order; a heartbeat gives none."""
    if len(frame) < 2:
        return ParsedFrame([])
    (count,) = _U16.unpack_from(frame, 0)
    ticks: list[KiteTick] = []
    unknown = 0
    offset = 2
    for index in range(count):
        if offset + 2 > len(frame):
            raise MalformedFrame(
                f"declares {count} packets and ends before the length of packet {index + 1} "
                f"({len(frame)} bytes)"
            )
        (length,) = _U16.unpack_from(frame, offset)
        offset += 2
        if offset + length > len(frame):
            raise MalformedFrame(
                f"packet {index + 1} of {count} declares {length} bytes, "
                f"{len(frame) - offset} are left ({len(frame)} bytes)"
            )
        tick = parse_packet(memoryview(frame)[offset : offset + length])
        if tick is None:
            unknown += 1
        else:
            ticks.append(tick)
        offset += length
    return ParsedFrame(ticks, unknown)


def parse_packet(packet: memoryview | bytes) -> KiteTick | None:
    """One packet; None when its length is none of the known modes."""
    length = len(packet)
    if length == LTP_LENGTH:
        token, ltp = _LTP.unpack_from(packet, 0)
        exp = price_exponent(token)
        return KiteTick(token, Mode.LTP, _tradable(token), _rupees(ltp, exp))
    if length in (INDEX_QUOTE_LENGTH, INDEX_FULL_LENGTH):
        token, ltp, high, low, open_, close, _change = _INDEX.unpack_from(packet, 0)
        exp = price_exponent(token)
        timestamp = None
        if length == INDEX_FULL_LENGTH:
            timestamp = _time(_INDEX_TIME.unpack_from(packet, 28)[0])
        return KiteTick(
            token,
            Mode.QUOTE if length == INDEX_QUOTE_LENGTH else Mode.FULL,
            _tradable(token),
            _rupees(ltp, exp),
            ohlc=Ohlc(
                _rupees(open_, exp), _rupees(high, exp), _rupees(low, exp), _rupees(close, exp)
            ),
            exchange_timestamp=timestamp,
        )
    if length in (QUOTE_LENGTH, FULL_LENGTH):
        (token, ltp, ltq, atp, volume, buy_qty, sell_qty, open_, high, low, close) = (
            _QUOTE.unpack_from(packet, 0)
        )
        exp = price_exponent(token)
        quote = KiteTick(
            token,
            Mode.QUOTE if length == QUOTE_LENGTH else Mode.FULL,
            _tradable(token),
            _rupees(ltp, exp),
            ohlc=Ohlc(
                _rupees(open_, exp), _rupees(high, exp), _rupees(low, exp), _rupees(close, exp)
            ),
            last_traded_quantity=ltq,
            average_traded_price=_rupees(atp, exp),
            volume_traded=volume,
            total_buy_quantity=buy_qty,
            total_sell_quantity=sell_qty,
        )
        if length == QUOTE_LENGTH:
            return quote
        trade_time, oi, oi_high, oi_low, timestamp = _FULL_EXTRA.unpack_from(packet, 44)
        levels = [
            DepthLevel(quantity, _rupees(price, exp), orders)
            for quantity, price, orders in (
                _DEPTH.unpack_from(packet, 64 + 12 * i) for i in range(2 * DEPTH_LEVELS)
            )
        ]
        return replace(
            quote,
            last_trade_time=_time(trade_time),
            oi=oi,
            oi_day_high=oi_high,
            oi_day_low=oi_low,
            exchange_timestamp=_time(timestamp),
            depth_buy=tuple(levels[:DEPTH_LEVELS]),
            depth_sell=tuple(levels[DEPTH_LEVELS:]),
        )
    return None


def _rupees(units: int, exponent: int) -> Decimal:
    # scaleb is exact: 157370 at exponent 2 is 1573.70, never 1573.6999...
    return Decimal(units).scaleb(-exponent)


def _tradable(token: int) -> bool:
    return token & 0xFF != SEGMENT_INDICES


def _time(epoch_s: int) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)
