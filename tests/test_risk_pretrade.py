"""Pre-trade controls and PreviewOrder, end to end through the real client.

Each control is driven to its edge: the last order that passes, then the first that
is rejected, with the exact RejectReason and a message naming the limit and the value.
Slippage is 0 (see risk_helpers), so a MARKET order fills at the LTP.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from execgw.client import RejectReason, limit, market, stop
from execgw.server.clock import ManualClock

if TYPE_CHECKING:
    from tests.risk_helpers import (
        FILLED,
        INFY,
        PLACED,
        TCS,
        Harness,
        assert_accepted,
        assert_rejected,
    )
else:
    from risk_helpers import (
        FILLED,
        INFY,
        PLACED,
        TCS,
        Harness,
        assert_accepted,
        assert_rejected,
    )

R = RejectReason
CHECK_ORDER = [
    "circuit_breakers",
    "mis_square_off",
    "allowed_symbols",
    "allowed_products",
    "min_confidence",
    "max_order_qty",
    "fresh_quote",
    "max_order_notional",
    "price_collar",
    "order_rate",
    "duplicate_order",
    "market_data",
]


def _pre_trade(**settings: Any) -> dict[str, Any]:
    return {"execution": {"pre_trade": settings}}


# -- size limits ------------------------------------------------------------------------


def test_max_order_qty_per_strategy_with_account_default(
    tmp_path: Path, clock: ManualClock
) -> None:
    overrides = _pre_trade(max_order_qty=100, strategies={"S1": {"max_order_qty": 10}})
    with Harness(tmp_path, clock, **overrides) as h:
        h.publish(INFY, 1000.0)
        assert_accepted(h.mkt("BUY", 10, strategy="S1"))
        assert_rejected(
            h.mkt("BUY", 11, strategy="S1"),
            R.REJECT_REASON_MAX_ORDER_QTY,
            "max_order_qty 10 exceeded by qty 11 for strategy S1",
        )
        # S2 has no override: the account default applies.
        assert_accepted(h.mkt("BUY", 100, strategy="S2"))
        assert_rejected(
            h.mkt("BUY", 101, strategy="S2"),
            R.REJECT_REASON_MAX_ORDER_QTY,
            "max_order_qty 100 exceeded by qty 101 for strategy S2",
        )
        # The limit is per order, not per position: S1 may do it again.
        assert_accepted(h.mkt("SELL", 10, strategy="S1"))
        assert h.state().trades_today == 3


def test_max_order_notional_uses_the_limit_price_or_the_ltp(
    tmp_path: Path, clock: ManualClock
) -> None:
    overrides = _pre_trade(
        max_order_notional_rupees=50_000.0,
        strategies={"S1": {"max_order_notional_rupees": 10_000.0}},
    )
    with Harness(tmp_path, clock, **overrides) as h:
        h.publish(INFY, 1000.0)
        assert_accepted(h.mkt("BUY", 10, strategy="S1"))  # 10 x 1000 = 10000: at the limit
        assert_rejected(
            h.mkt("BUY", 11, strategy="S1"),
            R.REJECT_REASON_MAX_ORDER_NOTIONAL,
            "max_order_notional_rupees 10000.0 exceeded by notional 11000.0 for strategy S1",
        )
        # A LIMIT order is valued at its own price: 10 x 1000.05 = 10000.50.
        assert_rejected(
            h.lmt("BUY", 10, 1000.05, strategy="S1"),
            R.REJECT_REASON_MAX_ORDER_NOTIONAL,
            "max_order_notional_rupees 10000.0",
            "notional 10000.50",
        )
        assert_accepted(h.lmt("BUY", 10, 999.95, strategy="S1"), PLACED)  # 9999.50
        assert_accepted(h.mkt("BUY", 50, strategy="S2"))  # account default: 50000.0
        assert_rejected(
            h.mkt("BUY", 51, strategy="S2"),
            R.REJECT_REASON_MAX_ORDER_NOTIONAL,
            "max_order_notional_rupees 50000.0 exceeded by notional 51000.0 for strategy S2",
        )


# -- price collar --------------------------------------------------------------------------


def test_price_collar_edges_on_both_sides(tmp_path: Path, clock: ManualClock) -> None:
    with Harness(tmp_path, clock, **_pre_trade(price_collar_pct=0.05)) as h:
        h.publish(INFY, 1000.0)
        # Exactly 5% away passes (and, being marketable, fills at the LTP).
        assert_accepted(h.lmt("BUY", 1, 1050.0))
        assert_accepted(h.lmt("SELL", 1, 950.0))
        above = h.lmt("BUY", 1, 1050.05)
        assert_rejected(
            above,
            R.REJECT_REASON_PRICE_COLLAR,
            "price_collar_pct 0.05",
            "price 1050.05",
            "LTP 1000.0",
        )
        assert_rejected(
            h.lmt("SELL", 1, 949.95),
            R.REJECT_REASON_PRICE_COLLAR,
            "price_collar_pct 0.05",
            "price 949.95",
        )
        # A resting (non-marketable) limit is collared the same way.
        assert_accepted(h.lmt("BUY", 1, 950.0), PLACED)
        assert_rejected(h.lmt("BUY", 1, 949.95), R.REJECT_REASON_PRICE_COLLAR)
        # The limit price of a stop-limit is collared too.
        assert_rejected(
            h.submit(stop(INFY, "BUY", 1, 1040.0, price=1060.0, strategy_code="S1")),
            R.REJECT_REASON_PRICE_COLLAR,
            "price 1060",
        )
        # The collar follows the LTP.
        h.publish(INFY, 1100.0)
        assert_accepted(h.lmt("BUY", 1, 1155.0))  # exactly 5% above 1100
        assert_accepted(h.lmt("BUY", 1, 1045.0), PLACED)  # exactly 5% below 1100
        assert_rejected(
            h.lmt("BUY", 1, 1044.95), R.REJECT_REASON_PRICE_COLLAR, "price 1044.95", "LTP 1100.0"
        )


def test_price_collar_message_shows_a_distance_beyond_the_limit(
    tmp_path: Path, clock: ManualClock
) -> None:
    """1050.05 is 0.05005 from 1000: the message must not round that to the limit itself."""
    with Harness(tmp_path, clock, **_pre_trade(price_collar_pct=0.05)) as h:
        h.publish(INFY, 1000.0)
        result = h.lmt("BUY", 1, 1050.05)
        assert_rejected(result, R.REJECT_REASON_PRICE_COLLAR, "price_collar_pct 0.05")
        match = re.search(r" is ([0-9.]+) away", result.message)
        assert match is not None, result.message
        assert Decimal(match.group(1)) > Decimal("0.05"), result.message


# -- order-rate throttle ----------------------------------------------------------------------


def test_order_rate_token_bucket(tmp_path: Path, clock: ManualClock) -> None:
    overrides = _pre_trade(
        orders_per_second=10.0,
        order_burst=10,
        max_order_qty=100,
        strategies={"S3": {"orders_per_second": 2.0, "order_burst": 2}},
    )
    with Harness(tmp_path, clock, **overrides) as h:
        h.publish(INFY, 1000.0)
        # Orders refused by another check take no token.
        for _ in range(5):
            assert_rejected(h.mkt("BUY", 101, strategy="S1"), R.REJECT_REASON_MAX_ORDER_QTY)
        for _ in range(10):
            assert_accepted(h.mkt("BUY", 1, strategy="S1"))
        assert_rejected(
            h.mkt("BUY", 1, strategy="S1"),
            R.REJECT_REASON_ORDER_RATE,
            "orders_per_second 10.0 exceeded for strategy S1",
        )
        # Each strategy has its own bucket.
        assert_accepted(h.mkt("BUY", 1, strategy="S2"))

        # 0.1 s at 10/s refills exactly one token; refused orders do not use it up.
        clock.advance(timedelta(milliseconds=100))
        assert_accepted(h.mkt("BUY", 1, strategy="S1"))
        assert_rejected(h.mkt("BUY", 1, strategy="S1"), R.REJECT_REASON_ORDER_RATE)
        assert_rejected(h.mkt("BUY", 1, strategy="S1"), R.REJECT_REASON_ORDER_RATE)
        clock.advance(timedelta(milliseconds=99))
        assert_rejected(h.mkt("BUY", 1, strategy="S1"), R.REJECT_REASON_ORDER_RATE)
        clock.advance(timedelta(milliseconds=1))
        assert_accepted(h.mkt("BUY", 1, strategy="S1"))
        assert_rejected(h.mkt("BUY", 1, strategy="S1"), R.REJECT_REASON_ORDER_RATE)

        # A long pause refills the burst, never more.
        clock.advance(timedelta(seconds=60))
        for _ in range(10):
            assert_accepted(h.mkt("BUY", 1, strategy="S1"))
        assert_rejected(h.mkt("BUY", 1, strategy="S1"), R.REJECT_REASON_ORDER_RATE)

        # Per-strategy override: 2/s with a burst of 2.
        for _ in range(2):
            assert_accepted(h.mkt("BUY", 1, strategy="S3"))
        assert_rejected(
            h.mkt("BUY", 1, strategy="S3"),
            R.REJECT_REASON_ORDER_RATE,
            "orders_per_second 2.0 exceeded for strategy S3",
        )
        clock.advance(timedelta(milliseconds=500))
        assert_accepted(h.mkt("BUY", 1, strategy="S3"))
        assert_rejected(h.mkt("BUY", 1, strategy="S3"), R.REJECT_REASON_ORDER_RATE)


# -- duplicate window -----------------------------------------------------------------------


def test_duplicate_window(tmp_path: Path, clock: ManualClock) -> None:
    with Harness(tmp_path, clock, **_pre_trade(duplicate_window_s=2.0)) as h:
        h.publish(INFY, 1000.0)
        assert_accepted(h.mkt("BUY", 1, strategy="S1"))
        assert_rejected(
            h.mkt("BUY", 1, strategy="S1"),
            R.REJECT_REASON_DUPLICATE_ORDER,
            "duplicate_window_s 2.0",
            "strategy S1 was accepted 0.000s ago",
        )
        # Anything that makes the order different is not a duplicate.
        assert_accepted(h.mkt("BUY", 2, strategy="S1"))
        assert_accepted(h.mkt("SELL", 1, strategy="S1"))
        assert_accepted(h.mkt("BUY", 1, strategy="S2"))
        assert_accepted(h.mkt("BUY", 1, strategy="S1", product="CNC"))

        clock.advance(timedelta(milliseconds=1999))
        assert_rejected(
            h.mkt("BUY", 1, strategy="S1"),
            R.REJECT_REASON_DUPLICATE_ORDER,
            "duplicate_window_s 2.0",
            "accepted 1.999s ago",
        )
        clock.advance(timedelta(milliseconds=1))  # 2.000 s after the original
        assert_accepted(h.mkt("BUY", 1, strategy="S1"))
        # ...and the window restarts from the order just accepted.
        assert_rejected(h.mkt("BUY", 1, strategy="S1"), R.REJECT_REASON_DUPLICATE_ORDER)


def test_duplicate_window_zero_is_off(tmp_path: Path, clock: ManualClock) -> None:
    with Harness(tmp_path, clock, **_pre_trade(duplicate_window_s=0.0)) as h:
        h.publish(INFY, 1000.0)
        for _ in range(3):
            assert_accepted(h.mkt("BUY", 1, strategy="S1"))


def test_an_order_the_venue_refused_does_not_open_a_duplicate_window(
    tmp_path: Path, clock: ManualClock
) -> None:
    """NO_MARKET_DATA means nothing was accepted: the retry is not a duplicate of anything."""
    with Harness(tmp_path, clock, **_pre_trade(duplicate_window_s=2.0)) as h:
        assert_rejected(h.mkt("BUY", 1, symbol=TCS), R.REJECT_REASON_NO_MARKET_DATA)
        h.publish(TCS, 500.0)
        assert_accepted(h.mkt("BUY", 1, symbol=TCS))


# -- strategy permissions ----------------------------------------------------------------------


def test_allowed_symbols_products_and_min_confidence(tmp_path: Path, clock: ManualClock) -> None:
    overrides = _pre_trade(
        min_confidence=0.3,
        strategies={
            "S1": {
                "allowed_symbols": [INFY],
                "allowed_products": ["NRML", "CNC"],
                "min_confidence": 0.6,
            },
            "S3": {"min_confidence": 0.0},
        },
    )
    with Harness(tmp_path, clock, **overrides) as h:
        h.publish(INFY, 1000.0)
        h.publish(TCS, 500.0)
        assert_accepted(h.mkt("BUY", 1, strategy="S1", confidence=0.6))
        assert_accepted(h.mkt("BUY", 1, strategy="S1", product="CNC", confidence=0.9))
        assert_rejected(
            h.mkt("BUY", 1, strategy="S1", confidence=0.59),
            R.REJECT_REASON_LOW_CONFIDENCE,
            "min_confidence 0.6 not met by confidence 0.59 for strategy S1",
        )
        assert_rejected(
            h.mkt("BUY", 1, strategy="S1"),
            R.REJECT_REASON_LOW_CONFIDENCE,
            "min_confidence 0.6 not met by confidence None",
        )
        assert_rejected(
            h.mkt("BUY", 1, symbol=TCS, strategy="S1", confidence=0.9),
            R.REJECT_REASON_SYMBOL_NOT_ALLOWED,
            "strategy S1 may not trade NSE:TCS",
            "NSE:INFY",
        )
        assert_rejected(
            h.mkt("BUY", 1, strategy="S1", product="MIS", confidence=0.9),
            R.REJECT_REASON_PRODUCT_NOT_ALLOWED,
            "strategy S1 may not use MIS",
            "NRML",
        )
        # S2 has no limits of its own: every symbol and product, the account's 0.3 floor.
        assert_accepted(h.mkt("BUY", 1, symbol=TCS, strategy="S2", product="MIS", confidence=0.3))
        assert_rejected(
            h.mkt("BUY", 1, symbol=TCS, strategy="S2", confidence=0.29),
            R.REJECT_REASON_LOW_CONFIDENCE,
            "min_confidence 0.3 not met by confidence 0.29 for strategy S2",
        )
        # An explicit 0.0 override turns the account floor off for S3.
        assert_accepted(h.mkt("BUY", 1, strategy="S3"))
        assert h.state().trades_today == 4


def test_the_first_failing_check_in_order_names_the_reject(
    tmp_path: Path, clock: ManualClock
) -> None:
    overrides = _pre_trade(
        price_collar_pct=0.05,
        strategies={"S1": {"allowed_symbols": [INFY], "max_order_qty": 5}},
    )
    with Harness(tmp_path, clock, **overrides) as h:
        h.publish(INFY, 1000.0)
        h.publish(TCS, 500.0)
        # Wrong symbol, too big and far off the LTP: the symbol rule comes first.
        bad = limit(TCS, "BUY", 50, 600.0, strategy_code="S1", product="NRML")
        assert_rejected(h.submit(bad), R.REJECT_REASON_SYMBOL_NOT_ALLOWED)
        preview = h.client.preview(bad)
        assert [c.name for c in preview.checks] == CHECK_ORDER
        failed = {c.name for c in preview.checks if not c.passed}
        assert failed == {"allowed_symbols", "max_order_qty", "price_collar"}
        assert preview.reject_reason == R.REJECT_REASON_SYMBOL_NOT_ALLOWED
        # Fix the symbol: the quantity is next.
        assert_rejected(
            h.submit(limit(INFY, "BUY", 50, 1200.0, strategy_code="S1", product="NRML")),
            R.REJECT_REASON_MAX_ORDER_QTY,
        )
        # Fix the quantity: the collar is next.
        assert_rejected(
            h.submit(limit(INFY, "BUY", 5, 1200.0, strategy_code="S1", product="NRML")),
            R.REJECT_REASON_PRICE_COLLAR,
        )


# -- PreviewOrder -------------------------------------------------------------------------------


def test_preview_reports_every_check_and_places_nothing(tmp_path: Path, clock: ManualClock) -> None:
    overrides = _pre_trade(
        orders_per_second=10.0, order_burst=10, duplicate_window_s=2.0, price_collar_pct=0.05
    )
    with Harness(tmp_path, clock, **overrides) as h:
        intent = market(INFY, "BUY", 1, strategy_code="S1", product="NRML")
        no_quote = h.client.preview(intent)
        assert not no_quote.accepted
        assert no_quote.reject_reason == R.REJECT_REASON_NO_MARKET_DATA
        assert [c.name for c in no_quote.checks] == CHECK_ORDER
        assert [c.name for c in no_quote.checks if not c.passed] == ["market_data"]

        h.publish(INFY, 1000.0)
        ok = h.client.preview(intent)
        assert ok.accepted
        assert ok.reject_reason == R.REJECT_REASON_UNSPECIFIED
        assert ok.message == ""
        assert [(c.name, c.passed, c.message) for c in ok.checks] == [
            (name, True, "") for name in CHECK_ORDER
        ]

        far = h.client.preview(limit(INFY, "BUY", 1, 1100.0, strategy_code="S1", product="NRML"))
        assert not far.accepted
        assert far.reject_reason == R.REJECT_REASON_PRICE_COLLAR
        assert "price_collar_pct 0.05" in far.message
        assert "price 1100" in far.message
        collar = next(c for c in far.checks if c.name == "price_collar")
        assert not collar.passed
        assert collar.message == far.message

        # Twenty previews use no rate token, open no duplicate window, count nothing.
        for _ in range(20):
            assert h.client.preview(intent).accepted
        state = h.state()
        assert state.trades_today == 0
        assert h.client.list_orders() == []
        assert h.client.positions() == []

        for n in range(10):
            assert_accepted(h.mkt("BUY", n + 1))  # distinct quantities: no duplicates
        assert h.state().trades_today == 10
        assert len(h.client.list_orders(status=FILLED)) == 10

        # The preview sees what a submit would now meet: no token, and a duplicate.
        exhausted = h.client.preview(market(INFY, "BUY", 99, strategy_code="S1", product="NRML"))
        assert exhausted.reject_reason == R.REJECT_REASON_ORDER_RATE
        assert "orders_per_second 10.0 exceeded for strategy S1" in exhausted.message
        clock.advance(timedelta(milliseconds=100))
        duplicate = h.client.preview(intent)
        assert duplicate.reject_reason == R.REJECT_REASON_DUPLICATE_ORDER
        assert [c.name for c in duplicate.checks if not c.passed] == ["duplicate_order"]
        assert_rejected(h.submit(intent), R.REJECT_REASON_DUPLICATE_ORDER)
        assert len(h.client.list_orders()) == 11  # the ten fills and that one reject


@pytest.mark.parametrize("trip_to", ["REDUCING", "HALTED"])
def test_preview_agrees_with_submit_under_a_tripped_breaker(
    tmp_path: Path, clock: ManualClock, trip_to: str
) -> None:
    overrides = {
        "execution": {
            "circuit_breakers": {
                "max_trades_per_day": 1,
                "trip_to": {"max_trades_per_day": trip_to},
            }
        }
    }
    with Harness(tmp_path, clock, **overrides) as h:
        h.publish(INFY, 1000.0)
        assert_accepted(h.mkt("BUY", 5))
        sell = market(INFY, "SELL", 5, strategy_code="S1", product="NRML")
        buy = market(INFY, "BUY", 5, strategy_code="S1", product="NRML")
        buy_preview = h.client.preview(buy)
        assert not buy_preview.accepted
        assert buy_preview.reject_reason == R.REJECT_REASON_MAX_TRADES_PER_DAY
        assert "max_trades_per_day 1 reached" in buy_preview.message
        sell_preview = h.client.preview(sell)
        assert sell_preview.accepted == (trip_to == "REDUCING")
        assert h.state().trades_today == 1
        result = h.submit(sell)
        assert (result.status == FILLED) == sell_preview.accepted
