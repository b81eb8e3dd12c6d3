"""The ticker's binary format: our parser against the official SDK's, packet for packet.

The same frames go through `KiteTicker._parse_binary` (kiteconnect 5.2.2) and through
`parse_frame`; every field the SDK reports must be equal, for ltp, quote and full
packets, of indices too, in every segment (CDS and BCD/NCO have their own divisors).
The SDK's `change` is left out: it is not in the packet but computed from the LTP and
close in floats, and our parser reports the exact LTP and close it comes from.
"""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kiteconnect import KiteTicker

from execgw.server.marketdata.kite_binary import (
    KiteTick,
    MalformedFrame,
    parse_frame,
    price_exponent,
)
from execgw.server.marketdata.kite_quotes import tick_to_quote

if TYPE_CHECKING:
    from tests.kite_ticker_standin import (
        FIXTURES,
        INFY_TOKEN,
        SENSEX_TOKEN,
        USDINR_BCD_TOKEN,
        USDINR_CDS_TOKEN,
        Level,
        TickSpec,
        encode_frame,
        encode_packet,
        malformed_frame,
        tick_from_fixture,
    )
else:
    from kite_ticker_standin import (
        FIXTURES,
        INFY_TOKEN,
        SENSEX_TOKEN,
        USDINR_BCD_TOKEN,
        USDINR_CDS_TOKEN,
        Level,
        TickSpec,
        encode_frame,
        encode_packet,
        malformed_frame,
        tick_from_fixture,
    )

D = Decimal
SDK = KiteTicker("key", "token")
U32 = st.integers(min_value=0, max_value=2**32 - 1)
# Segments 1-12 (NSE ... NCO), indices (9), CDS (3), BCD (6), NCO (12) among them.
TOKENS = st.builds(lambda n, seg: (n << 8) | seg, st.integers(1, 2**24 - 1), st.integers(1, 12))


def _sdk_time(value: datetime | None) -> datetime | None:
    """Ours in the SDK's form: naive local time (datetime.fromtimestamp)."""
    return None if value is None else value.astimezone().replace(tzinfo=None)


def as_sdk(tick: KiteTick) -> dict[str, Any]:
    """Our tick with the SDK's keys and float prices."""
    out: dict[str, Any] = {
        "tradable": tick.tradable,
        "mode": tick.mode.value,
        "instrument_token": tick.instrument_token,
        "last_price": float(tick.last_price),
    }
    if tick.ohlc is not None:
        out["ohlc"] = {
            name: float(getattr(tick.ohlc, name)) for name in ("open", "high", "low", "close")
        }
    for name in (
        "last_traded_quantity",
        "volume_traded",
        "total_buy_quantity",
        "total_sell_quantity",
        "oi",
        "oi_day_high",
        "oi_day_low",
    ):
        value = getattr(tick, name)
        if value is not None:
            out[name] = value
    if tick.average_traded_price is not None:
        out["average_traded_price"] = float(tick.average_traded_price)
    if tick.last_trade_time is not None:
        out["last_trade_time"] = _sdk_time(tick.last_trade_time)
    if tick.exchange_timestamp is not None:
        out["exchange_timestamp"] = _sdk_time(tick.exchange_timestamp)
    if tick.depth_buy or tick.depth_sell:
        out["depth"] = {
            side: [
                {"quantity": lv.quantity, "price": float(lv.price), "orders": lv.orders}
                for lv in levels
            ]
            for side, levels in (("buy", tick.depth_buy), ("sell", tick.depth_sell))
        }
    return out


def sdk_parse(frame: bytes) -> list[dict[str, Any]]:
    ticks: list[dict[str, Any]] = SDK._parse_binary(frame)
    for tick in ticks:
        tick.pop("change", None)
    return ticks


def assert_same(frame: bytes) -> list[KiteTick]:
    ours = parse_frame(frame).ticks
    assert [as_sdk(t) for t in ours] == sdk_parse(frame)
    return ours


# -- generated packets ------------------------------------------------------------


@st.composite
def packets(draw: st.DrawFn) -> bytes:
    token = draw(TOKENS)
    index = token & 0xFF == 9
    kind = draw(st.sampled_from(["ltp", "quote", "full"]))
    if kind == "ltp":
        return struct.pack(">II", token, draw(U32))
    if index:
        body = struct.pack(">II", token, draw(U32)) + b"".join(
            struct.pack(">I", draw(U32)) for _ in range(5)
        )
        return body if kind == "quote" else body + struct.pack(">I", draw(U32))
    body = struct.pack(">II", token, draw(U32)) + b"".join(
        struct.pack(">I", draw(U32)) for _ in range(9)
    )
    if kind == "quote":
        return body
    body += b"".join(struct.pack(">I", draw(U32)) for _ in range(5))
    for _ in range(10):
        body += struct.pack(">IIH2x", draw(U32), draw(U32), draw(st.integers(0, 2**16 - 1)))
    return body


@settings(max_examples=300, deadline=None)
@given(st.lists(packets(), max_size=6))
def test_generated_frames_parse_as_the_sdk_parses_them(frame_packets: list[bytes]) -> None:
    ours = assert_same(encode_frame(frame_packets))
    assert len(ours) == len(frame_packets)


@settings(max_examples=100, deadline=None)
@given(TOKENS, U32)
def test_prices_are_exact_units_over_the_segments_divisor(token: int, units: int) -> None:
    (tick,) = parse_frame(encode_frame([struct.pack(">II", token, units)])).ticks
    divisor = {3: 10_000_000, 6: 10_000, 12: 10_000}.get(token & 0xFF, 100)
    assert tick.last_price * divisor == units  # exact: no float on the way
    assert D(10) ** price_exponent(token) == divisor


# -- the published ticks ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["ltp", "quote", "full"])
def test_the_published_ticks_parse_as_the_sdk_parses_them(mode: str) -> None:
    body = json.loads((FIXTURES / f"ticker_{mode}.json").read_text(encoding="utf-8"))
    (tick,) = assert_same(encode_frame([encode_packet(tick_from_fixture(mode), mode)]))
    assert tick.mode.value == body["mode"] == mode
    assert tick.instrument_token == body["instrument_token"] == INFY_TOKEN
    assert tick.last_price == D(str(body["last_price"]))
    if mode != "ltp":
        assert tick.volume_traded == body["volume"]
        assert tick.average_traded_price == D(str(body["average_price"]))
        assert tick.ohlc is not None
        assert tick.ohlc.high == D("1575")
        assert tick.ohlc.low == D("1561.05")
    if mode == "full":
        assert tick.exchange_timestamp == datetime.fromisoformat(body["timestamp"])
        assert [(lv.price, lv.quantity, lv.orders) for lv in tick.depth_buy] == [
            (D(str(d["price"])), d["quantity"], d["orders"]) for d in body["depth"]["buy"]
        ]
        assert tick.depth_sell[4].price == D("1573.95")


def test_a_full_tick_becomes_a_quote_with_the_best_levels() -> None:
    (tick,) = parse_frame(encode_frame([encode_packet(tick_from_fixture("full"), "full")])).ticks
    received = datetime(2026, 11, 27, 4, 30, tzinfo=UTC)
    quote = tick_to_quote(tick, "NSE:INFY", received)
    assert (quote.ltp, quote.bid, quote.bid_qty, quote.ask, quote.ask_qty) == (
        D("1573.7"),
        D("1573.4"),
        5,
        D("1573.7"),
        172,
    )
    assert quote.volume == 1192471
    assert quote.timestamp == datetime.fromisoformat("2021-07-05T10:41:27+05:30")
    # Modes without a time take the time of receipt.
    (ltp,) = parse_frame(encode_frame([encode_packet(tick_from_fixture("ltp"), "ltp")])).ticks
    assert tick_to_quote(ltp, "NSE:INFY", received).timestamp == received


@pytest.mark.parametrize(
    ("token", "price", "units"),
    [
        (INFY_TOKEN, "1573.70", 157370),
        (USDINR_CDS_TOKEN, "84.1225", 841_225_000),
        (USDINR_BCD_TOKEN, "84.1225", 841_225),
        ((77 << 8) | 12, "6512.5", 65_125_000),  # NCO
        (SENSEX_TOKEN, "81234.56", 8_123_456),
    ],
)
def test_each_segment_has_its_divisor(token: int, price: str, units: int) -> None:
    at = D(price)
    level = (Level(at, 10, 1),) if token & 0xFF != 9 else ()
    spec = TickSpec(
        token, at, 1, at, 100, 10, 10, at, at, at, at, 1, 0, 0, 0, 1, buy=level, sell=level
    )
    for mode in ("ltp", "quote", "full"):
        frame = encode_frame([encode_packet(spec, mode)])
        (tick,) = assert_same(frame)
        assert tick.last_price == D(price)
        assert struct.unpack_from(">I", frame, 8)[0] == units
        assert tick.tradable is (token & 0xFF != 9)


def test_index_packets_have_their_own_layout() -> None:
    spec = tick_from_fixture("full", token=SENSEX_TOKEN, last_price=D("81234.56"), buy=(), sell=())
    assert len(encode_packet(spec, "quote")) == 28
    assert len(encode_packet(spec, "full")) == 32
    (tick,) = assert_same(encode_frame([encode_packet(spec, "full")]))
    assert tick.depth_buy == ()
    assert tick.exchange_timestamp == datetime.fromisoformat("2021-07-05T10:41:27+05:30")


# -- what is not a tick -------------------------------------------------------------


def test_a_heartbeat_is_no_tick() -> None:
    assert parse_frame(b"\x00").ticks == [] == sdk_parse(b"\x00")
    assert parse_frame(b"").ticks == []


def test_a_packet_of_unknown_length_is_skipped_like_the_sdk_skips_it() -> None:
    known = encode_packet(tick_from_fixture("ltp"), "ltp")
    frame = encode_frame([b"\x00" * 12, known])
    parsed = parse_frame(frame)
    assert parsed.unknown_packets == 1
    assert [as_sdk(t) for t in parsed.ticks] == sdk_parse(frame)


def test_a_frame_that_ends_inside_a_packet_is_malformed() -> None:
    with pytest.raises(MalformedFrame, match="packet 1 of 2 declares 44 bytes"):
        parse_frame(malformed_frame())
    truncated = encode_frame([encode_packet(tick_from_fixture("full"), "full")])[:-1]
    with pytest.raises(MalformedFrame):
        parse_frame(truncated)
    one_of_two = struct.pack(">H", 2) + encode_frame([struct.pack(">II", INFY_TOKEN, 1)])[2:]
    with pytest.raises(MalformedFrame, match="ends before the length of packet 2"):
        parse_frame(one_of_two)
