"""Quotes are checked before they move anything (issue 8, defect 3).

A malformed quote is INVALID_ARGUMENT naming `quotes[i].<field>` and changes nothing:
not the quote book, not a resting order, not the journal. A well-formed quote too far
from the symbol's last accepted LTP (market_data.price_band_pct) is refused, logged
and reported back, and the stream goes on.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from execgw.client import InvalidArgument, NotFound, Quote, RejectReason, TradingState, stop
from execgw.server.clock import ManualClock

if TYPE_CHECKING:
    from tests.risk_helpers import (
        FILLED,
        INFY,
        PLACED,
        TCS,
        Harness,
        assert_accepted,
        tripped,
    )
else:
    from risk_helpers import (
        FILLED,
        INFY,
        PLACED,
        TCS,
        Harness,
        assert_accepted,
        tripped,
    )

ACTIVE_STATE = TradingState.TRADING_STATE_ACTIVE
BASE: dict[str, Any] = {
    "symbol": INFY,
    "ltp": 1500.0,
    "bid": 1499.95,
    "ask": 1500.05,
    "bid_qty": 10,
    "ask_qty": 12,
    "volume": 1_000,
}


def names_field(details: str, field: str) -> bool:
    """True when `field` appears in `details` as a whole dotted name."""
    return re.search(rf"(?<![\w.\]]){re.escape(field)}(?![\w.\[])", details) is not None


def make_quote(**fields: Any) -> Quote:
    values = {**BASE, **fields}
    when = values.pop("timestamp", None)
    msg = Quote(**values)
    if when is not None:
        msg.timestamp.seconds, msg.timestamp.nanos = when
    return msg


def q(ltp: float, symbol: str = INFY) -> Quote:
    return Quote(symbol=symbol, ltp=ltp)


def head(h: Harness) -> int:
    sequence: int = h.running.gateway.core.head_sequence
    return sequence


# Each one was accepted before (or answered INTERNAL, for the timestamps).
BAD_QUOTES: list[tuple[str, dict[str, Any], str]] = [
    ("ltp_1e308", {"ltp": 1e308}, "ltp"),
    ("ltp_denormal", {"ltp": 5e-324}, "ltp"),
    ("ltp_off_tick", {"ltp": 1500.03}, "ltp"),
    ("ltp_above_ceiling", {"ltp": 10_000_000.05}, "ltp"),
    ("bid_1e308", {"bid": 1e308}, "bid"),
    ("bid_off_tick", {"bid": 1499.93}, "bid"),
    ("ask_off_tick", {"ask": 1500.07}, "ask"),
    ("ask_denormal", {"ask": 5e-324}, "ask"),
    ("bid_above_ask", {"bid": 1500.10, "ask": 1500.05}, "bid"),
    ("bid_qty_negative", {"bid_qty": -1}, "bid_qty"),
    ("ask_qty_negative", {"ask_qty": -5}, "ask_qty"),
    ("volume_negative", {"volume": -1}, "volume"),
    ("symbol_trailing_newline", {"symbol": "NSE:INFY\n"}, "symbol"),
    ("symbol_too_long", {"symbol": "NSE:" + "A" * 200}, "symbol"),
    ("timestamp_nanos_1e9", {"timestamp": (1_795_753_800, 1_000_000_000)}, "timestamp.nanos"),
    ("timestamp_nanos_negative", {"timestamp": (1_795_753_800, -1)}, "timestamp.nanos"),
    ("timestamp_seconds_huge", {"timestamp": (2**62, 0)}, "timestamp.seconds"),
    ("timestamp_before_epoch", {"timestamp": (-1, 0)}, "timestamp.seconds"),
]


@pytest.mark.parametrize(
    ("fields", "field"), [c[1:] for c in BAD_QUOTES], ids=[c[0] for c in BAD_QUOTES]
)
def test_a_malformed_quote_is_invalid_argument_and_moves_nothing(
    tmp_path: Path, clock: ManualClock, fields: dict[str, Any], field: str
) -> None:
    # INVALID_ARGUMENT comes from validation alone: the price band refuses without one.
    with Harness(tmp_path, clock) as h:
        assert h.client.publish_quotes([make_quote()]) == 1
        # Resting stops on both sides: a huge price triggers the BUY, a tiny one the SELL.
        buy_stop = h.submit(stop(INFY, "BUY", 5, 1510.0, strategy_code="S1"))
        sell_stop = h.submit(stop(INFY, "SELL", 5, 1490.0, strategy_code="S1"))
        assert (buy_stop.status, sell_stop.status) == (PLACED, PLACED)
        before, sequence = h.client.get_quote(INFY), head(h)

        # One request per quote: the first (unchanged) quote is applied, the second is bad.
        with pytest.raises(InvalidArgument) as info:
            h.client.publish_quotes([make_quote(), make_quote(**fields)], batch_size=1)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert names_field(info.value.details, f"quotes[1].{field}"), info.value.details

        assert h.client.get_quote(INFY) == before
        assert h.client.get_order(buy_stop.order_id).status == PLACED
        assert h.client.get_order(sell_stop.order_id).status == PLACED
        assert h.client.positions() == []
        assert head(h) == sequence, "the bad quote was journaled or moved something"


def test_a_bad_quote_keeps_its_whole_request_out(tmp_path: Path, clock: ManualClock) -> None:
    with Harness(tmp_path, clock) as h:
        h.publish(INFY, 1500.0)
        # Requests of two: [0, 1] is applied, [2, 3] holds the bad quote at index 3.
        with pytest.raises(InvalidArgument) as info:
            h.client.publish_quotes(
                [q(1500.05), q(1500.10), q(1500.15), make_quote(bid_qty=-1)], batch_size=2
            )
        assert names_field(info.value.details, "quotes[3].bid_qty"), info.value.details
        assert h.client.get_quote(INFY).ltp == 1500.10


def test_a_1e308_quote_fills_nothing_and_trips_nothing(tmp_path: Path, clock: ManualClock) -> None:
    with Harness(tmp_path, clock) as h:
        h.publish(INFY, 1500.0)
        assert_accepted(h.mkt("BUY", 10))
        resting = h.submit(stop(INFY, "BUY", 5, 1510.0, strategy_code="S2"))
        before = h.state()
        with pytest.raises(InvalidArgument):
            h.client.publish_quotes([q(1e308)])
        for _ in range(2):
            state = h.state()
            assert tripped(state) == set()
            assert state.state == ACTIVE_STATE
            assert (state.equity, state.peak_equity) == (before.equity, before.peak_equity)
            assert h.client.get_order(resting.order_id).status == PLACED
            h.restart()  # tripped breakers would survive it


# -- the price band ------------------------------------------------------------------


def test_a_quote_outside_the_band_is_refused_logged_and_fills_nothing(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    with Harness(tmp_path, clock, market_data={"price_band_pct": 0.10}) as h:
        h.publish(INFY, 1500.0)
        buy_stop = h.submit(stop(INFY, "BUY", 5, 1600.0, strategy_code="S1"))
        sell_limit = h.lmt("SELL", 5, 1640.0)
        assert (buy_stop.status, sell_limit.status) == (PLACED, PLACED)
        sequence = head(h)

        with caplog.at_level(logging.WARNING, logger="execgw.server.engine"):
            report = h.client.publish_quotes_report(
                [q(1500.0), q(1700.0), q(1505.0), q(1800.0)], batch_size=1
            )
        assert (report.accepted, report.refused_count) == (2, 2)
        # Indexes count from the stream's start, across requests; the reference is the
        # last accepted LTP (1505 for the second refusal, not the refused 1700).
        assert [(r.index, r.symbol) for r in report.refused] == [(1, INFY), (3, INFY)]
        assert "1700" in report.refused[0].reason
        assert "1500" in report.refused[0].reason
        assert "1800" in report.refused[1].reason
        assert "1505" in report.refused[1].reason
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(INFY in m and "1700" in m and "1500" in m for m in warnings), warnings

        assert h.client.get_quote(INFY).ltp == 1505.0
        assert h.client.get_order(buy_stop.order_id).status == PLACED
        assert h.client.get_order(sell_limit.order_id).status == PLACED
        assert h.client.positions() == []
        assert head(h) == sequence
        # The plain call counts applied quotes only.
        assert h.client.publish_quotes([q(1800.0)]) == 0


def test_a_stuck_feed_is_logged_without_flooding_the_log(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    # No automatic re-anchoring: 150 agreeing quotes would otherwise move the band.
    with Harness(tmp_path, clock, market_data={"price_band_confirm_quotes": 0}) as h:
        h.publish(INFY, 1000.0)
        with caplog.at_level(logging.WARNING, logger="execgw.server.engine"):
            report = h.client.publish_quotes_report([q(2000.0)] * 150 + [q(1001.0)])
        assert (report.accepted, report.refused_count, len(report.refused)) == (1, 150, 100)
        assert [r.index for r in report.refused] == list(range(100))
        logged = [r.getMessage() for r in caplog.records if INFY in r.getMessage()]
        assert len(logged) == 4, logged  # the 1st, 10th and 100th refusal, then the recovery
        assert "(100 in a row)" in logged[2]
        assert "after 150 refused" in logged[3]


def test_the_band_is_inclusive_and_follows_the_last_accepted_ltp(
    tmp_path: Path, clock: ManualClock
) -> None:
    with Harness(tmp_path, clock, market_data={"price_band_pct": 0.10}) as h:
        report = h.client.publish_quotes_report([q(1500.0), q(1650.0), q(1815.0), q(1500.0)])
        # 1650 is exactly 10% above 1500, 1815 exactly 10% above 1650; 1500 is 17% below.
        assert (report.accepted, report.refused_count) == (3, 1)
        assert report.refused[0].index == 3
        assert h.client.get_quote(INFY).ltp == 1815.0
        # Each symbol has its own reference; a symbol's first quote has none.
        assert h.client.publish_quotes([q(4100.0, TCS), q(4500.0, TCS)]) == 2


@pytest.mark.parametrize("band", [0, None])
def test_a_band_of_zero_or_null_is_off(tmp_path: Path, clock: ManualClock, band: Any) -> None:
    with Harness(tmp_path, clock, market_data={"price_band_pct": band}) as h:
        assert h.client.publish_quotes([q(1500.0), q(3000.0), q(300.0)]) == 3
        assert h.client.get_quote(INFY).ltp == 300.0


def test_a_band_breaking_quote_does_not_fill_a_marketable_order(
    tmp_path: Path, clock: ManualClock
) -> None:
    with Harness(tmp_path, clock) as h:  # the default band: 20%
        h.publish(INFY, 1000.0)
        sell_stop = h.submit(stop(INFY, "SELL", 5, 900.0, strategy_code="S1"))
        report = h.client.publish_quotes_report([q(0.05)])
        assert (report.accepted, report.refused_count) == (0, 1)
        assert h.client.get_order(sell_stop.order_id).status == PLACED
        h.publish(INFY, 899.0)  # a real fall reaches it
        assert h.client.get_order(sell_stop.order_id).status == FILLED


def test_the_first_quote_after_a_restart_is_banded_against_the_journaled_mark(
    tmp_path: Path, clock: ManualClock
) -> None:
    with Harness(tmp_path, clock, market_data={"price_band_pct": 0.10}) as h:
        h.publish(INFY, 1500.0)
        assert_accepted(h.mkt("BUY", 10))
        clock.advance(timedelta(seconds=10))  # past marks_every_s: the mark is journaled
        h.tick()
        h.restart()
        with pytest.raises(NotFound):
            h.client.get_quote(INFY)  # quotes themselves are not state
        report = h.client.publish_quotes_report([q(1700.0)])
        assert (report.accepted, report.refused_count) == (0, 1)
        assert "1500" in report.refused[0].reason
        with pytest.raises(NotFound):
            h.client.get_quote(INFY)
        h.publish(INFY, 1520.0)
        assert h.client.get_quote(INFY).ltp == 1520.0
        assert h.state().state == ACTIVE_STATE
        assert h.mkt("SELL", 10).reject_reason == RejectReason.REJECT_REASON_UNSPECIFIED


def test_quote_prices_are_snapped_to_the_tick(tmp_path: Path, clock: ManualClock) -> None:
    """Float noise within a millionth of a tick is that tick, as for order prices."""
    with Harness(tmp_path, clock) as h:
        assert h.client.publish_quotes([make_quote(ltp=30001 * 0.05, bid=0.0, ask=0.0)]) == 1
        quote = h.client.get_quote(INFY)
        assert (quote.ltp, quote.bid, quote.ask) == (1500.05, 0.0, 0.0)


def test_a_real_gap_moves_the_band_after_agreeing_quotes_and_a_glitch_does_not(
    tmp_path: Path, clock: ManualClock
) -> None:
    """A glitch first quote (41 for a 4100 stock) must not freeze the symbol: five quotes
    in a row that agree with each other are a real level, and the band moves to it. Two
    stray quotes that disagree never do."""
    with Harness(tmp_path, clock) as h:
        assert h.client.publish_quotes([q(41.0, TCS)]) == 1
        report = h.client.publish_quotes_report([q(4100.0, TCS)] * 4)
        assert (report.accepted, report.refused_count) == (0, 4)
        assert h.client.publish_quotes([q(4100.05, TCS)]) == 1
        assert h.client.get_quote(TCS).ltp == 4100.05
        # Stray quotes that jump about never agree: the band holds.
        stray = [q(9000.0, TCS), q(100.0, TCS), q(9000.0, TCS), q(100.0, TCS), q(20.0, TCS)]
        assert h.client.publish_quotes(stray) == 0
        assert h.client.get_quote(TCS).ltp == 4100.05


def test_the_band_is_never_narrower_than_its_minimum_ticks(
    tmp_path: Path, clock: ManualClock
) -> None:
    """A ₹0.20 option moving a tick is 25%: the band must let it move."""
    with Harness(tmp_path, clock, market_data={"price_band_confirm_quotes": 0}) as h:
        option = "NFO:NIFTY26DEC30000CE"
        assert h.client.publish_quotes([q(0.20, option)]) == 1
        assert h.client.publish_quotes([q(0.25, option), q(0.15, option), q(1.0, option)]) == 3
        # 20 ticks of 0.05 is ₹1.00: from 1.00, 2.05 is beyond both 20% and 20 ticks.
        assert h.client.publish_quotes([q(2.05, option)]) == 0
