"""Orders end to end: the real client against a real gateway on loopback.

Every price is worked out by hand in a comment, to the paisa. Slippage is the
default 5 bps (x 1.0005 for a BUY, x 0.9995 for a SELL) and the tick is 0.05:
a BUY snaps UP to the tick, a SELL snaps DOWN, both against the trader.

The reference LTP 1234.55 is chosen so that every wrong rounding shows:
  BUY : 1234.55 x 1.0005 = 1235.167275 -> up 1235.20 (nearest would give 1235.15)
  SELL: 1234.55 x 0.9995 = 1233.932725 -> down 1233.90 (nearest would give 1233.95)
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest

from execgw.client import (
    AlreadyExists,
    ExecutionClient,
    ExecutionResult,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OrderIntent,
    OrderStatus,
    OrderType,
    Position,
    Product,
    RejectReason,
    Side,
    Validity,
    limit,
    market,
    stop,
)
from execgw.server.clock import ManualClock

if TYPE_CHECKING:
    from tests.conftest import MARKET_OPEN, RunningGateway
    from tests.e2e_helpers import INFY, TCS, TIMEOUT_S, publish, snapshot
else:
    from conftest import MARKET_OPEN, RunningGateway
    from e2e_helpers import INFY, TCS, TIMEOUT_S, publish, snapshot

PLACED = OrderStatus.ORDER_STATUS_PLACED
FILLED = OrderStatus.ORDER_STATUS_FILLED
CANCELLED = OrderStatus.ORDER_STATUS_CANCELLED
REJECTED = OrderStatus.ORDER_STATUS_REJECTED
LTP = 1234.55


@pytest.fixture
def client(gateway: RunningGateway) -> Iterator[ExecutionClient]:
    with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as c:
        yield c


@pytest.fixture
def quoted(client: ExecutionClient) -> ExecutionClient:
    """A client whose gateway has NSE:INFY at LTP 1234.55."""
    publish(client, INFY, LTP)
    return client


def assert_filled(result: ExecutionResult, qty: int, price: float) -> None:
    assert result.status == FILLED, result
    assert result.filled_qty == qty
    assert result.HasField("avg_price")
    assert result.avg_price == price
    assert result.reject_reason == RejectReason.REJECT_REASON_UNSPECIFIED


def assert_resting(result: ExecutionResult, qty: int) -> None:
    assert result.status == PLACED, result
    assert result.qty == qty
    assert result.filled_qty == 0
    assert not result.HasField("avg_price")


def position_map(positions: list[Position]) -> dict[tuple[str, str, int], Position]:
    return {(p.strategy_code, p.symbol, p.product): p for p in positions}


# -- MARKET -------------------------------------------------------------------


def test_market_buy_fills_at_slipped_ltp_snapped_up(quoted: ExecutionClient) -> None:
    # 1234.55 x 1.0005 = 1235.167275 -> up to the tick -> 1235.20
    result = quoted.submit(market(INFY, "BUY", 10, strategy_code="mkt"))
    assert_filled(result, 10, 1235.20)
    assert result.symbol == INFY
    assert result.strategy_code == "mkt"
    assert result.order_id


def test_market_sell_fills_at_slipped_ltp_snapped_down(quoted: ExecutionClient) -> None:
    # 1234.55 x 0.9995 = 1233.932725 -> down to the tick -> 1233.90
    result = quoted.submit(market(INFY, "SELL", 10, strategy_code="mkt"))
    assert_filled(result, 10, 1233.90)


def test_market_price_already_on_tick_is_not_moved(client: ExecutionClient) -> None:
    publish(client, INFY, 1500.00)
    # 1500.00 x 1.0005 = 1500.75, exactly on the tick: no further move
    assert_filled(client.submit(market(INFY, "BUY", 10, strategy_code="mkt")), 10, 1500.75)
    # 1500.00 x 0.9995 = 1499.25, exactly on the tick
    assert_filled(client.submit(market(INFY, "SELL", 10, strategy_code="mkt")), 10, 1499.25)


def test_market_uses_the_latest_ltp(client: ExecutionClient) -> None:
    publish(client, INFY, 1500.00, 1600.00)
    # 1600.00 x 1.0005 = 1600.80 (the older 1500.00 would give 1500.75)
    assert_filled(client.submit(market(INFY, "BUY", 3, strategy_code="mkt")), 3, 1600.80)


# -- marketable LIMIT ---------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "price", "expected"),
    [
        # BUY limit far above LTP: the slipped 1235.20 is better than the limit
        ("BUY", 1240.00, 1235.20),
        # BUY limit 1235.00 >= LTP but below the slipped 1235.20: capped at the limit
        ("BUY", 1235.00, 1235.00),
        # BUY limit == LTP is marketable; slipped 1235.20 capped at 1234.55
        ("BUY", 1234.55, 1234.55),
        # SELL limit far below LTP: the slipped 1233.90 is better than the limit
        ("SELL", 1230.00, 1233.90),
        # SELL limit 1234.00 <= LTP but above the slipped 1233.90: capped at the limit
        ("SELL", 1234.00, 1234.00),
        # SELL limit == LTP; slipped 1233.90 capped at 1234.55
        ("SELL", 1234.55, 1234.55),
    ],
)
@pytest.mark.parametrize("validity", ["DAY", "IOC"])
def test_marketable_limit_fills_at_once_never_worse_than_limit(
    quoted: ExecutionClient, side: str, price: float, expected: float, validity: str
) -> None:
    result = quoted.submit(limit(INFY, side, 10, price, strategy_code="lim", validity=validity))
    assert_filled(result, 10, expected)
    assert result.price == price
    [pos] = quoted.positions("lim")
    assert pos.net_qty == (10 if side == "BUY" else -10)
    assert pos.avg_price == expected


# -- resting DAY LIMIT --------------------------------------------------------


def test_resting_buy_limit_fills_at_its_limit_when_ltp_crosses(
    quoted: ExecutionClient,
) -> None:
    placed = quoted.submit(limit(INFY, "BUY", 10, 1230.00, strategy_code="rest"))
    assert_resting(placed, 10)
    assert quoted.positions("rest") == []

    publish(quoted, INFY, 1231.00)  # above the limit: still resting
    assert_resting(quoted.get_order(placed.order_id), 10)

    publish(quoted, INFY, 1229.35)  # through the limit: fills AT the limit, not at 1229.35
    filled = quoted.get_order(placed.order_id)
    assert_filled(filled, 10, 1230.00)
    [pos] = quoted.positions("rest")
    assert (pos.net_qty, pos.avg_price, pos.buy_qty) == (10, 1230.00, 10)
    # marked to the latest LTP: (1229.35 - 1230.00) x 10 = -6.50
    assert Decimal(pos.unrealized_pnl_decimal) == Decimal("-6.50")


def test_resting_sell_limit_fills_when_ltp_reaches_it(quoted: ExecutionClient) -> None:
    placed = quoted.submit(limit(INFY, "SELL", 4, 1240.00, strategy_code="rest"))
    assert_resting(placed, 4)
    publish(quoted, INFY, 1239.95)  # one tick short
    assert_resting(quoted.get_order(placed.order_id), 4)
    publish(quoted, INFY, 1240.00)  # reaches it: SELL limit <= LTP
    assert_filled(quoted.get_order(placed.order_id), 4, 1240.00)
    [pos] = quoted.positions("rest")
    assert (pos.net_qty, pos.sell_qty, pos.avg_price) == (-4, 4, 1240.00)


def test_resting_limit_for_another_symbol_is_not_touched(quoted: ExecutionClient) -> None:
    placed = quoted.submit(limit(INFY, "BUY", 10, 1230.00, strategy_code="rest"))
    publish(quoted, TCS, 1000.00)  # crosses 1230 numerically, but it is TCS
    assert_resting(quoted.get_order(placed.order_id), 10)


def test_ioc_limit_not_marketable_is_cancelled_and_never_fills(
    quoted: ExecutionClient,
) -> None:
    result = quoted.submit(limit(INFY, "BUY", 10, 1230.00, strategy_code="ioc", validity="IOC"))
    assert result.status == CANCELLED
    assert result.filled_qty == 0
    assert not result.HasField("avg_price")
    publish(quoted, INFY, 1225.00)  # would have crossed a resting order
    assert quoted.get_order(result.order_id).status == CANCELLED
    assert quoted.get_order(result.order_id).filled_qty == 0
    assert quoted.positions() == []


# -- SL / SL_M ----------------------------------------------------------------


def test_sl_buy_rests_until_trigger_then_fills_as_limit(quoted: ExecutionClient) -> None:
    placed = quoted.submit(
        stop(INFY, "BUY", 10, 1240.00, price=1242.00, strategy_code="stop"),
    )
    assert_resting(placed, 10)
    assert placed.trigger_price == 1240.00
    assert placed.price == 1242.00
    publish(quoted, INFY, 1239.95)  # below the trigger
    assert_resting(quoted.get_order(placed.order_id), 10)
    # LTP 1240.00 >= trigger: now a LIMIT 1242.00, marketable.
    # 1240.00 x 1.0005 = 1240.62 -> up 1240.65, better than the limit 1242.00
    publish(quoted, INFY, 1240.00)
    assert_filled(quoted.get_order(placed.order_id), 10, 1240.65)


def test_sl_buy_triggered_fill_is_capped_at_the_limit(quoted: ExecutionClient) -> None:
    placed = quoted.submit(
        stop(INFY, "BUY", 10, 1240.00, price=1240.50, strategy_code="stop"),
    )
    # Trigger at 1240.00; slipped 1240.65 is worse than the limit: fills at 1240.50
    publish(quoted, INFY, 1240.00)
    assert_filled(quoted.get_order(placed.order_id), 10, 1240.50)


def test_sl_triggered_but_not_marketable_rests_as_limit(quoted: ExecutionClient) -> None:
    placed = quoted.submit(
        stop(INFY, "BUY", 10, 1240.00, price=1240.00, strategy_code="stop"),
    )
    publish(quoted, INFY, 1245.00)  # triggers (>= 1240) but 1245 > limit 1240: rests
    assert_resting(quoted.get_order(placed.order_id), 10)
    publish(quoted, INFY, 1239.00)  # the limit is reached: fills at the limit
    assert_filled(quoted.get_order(placed.order_id), 10, 1240.00)


def test_sl_sell_triggers_on_ltp_at_or_below_trigger(quoted: ExecutionClient) -> None:
    placed = quoted.submit(
        stop(INFY, "SELL", 6, 1230.00, price=1229.00, strategy_code="stop"),
    )
    publish(quoted, INFY, 1230.05)  # above the trigger
    assert_resting(quoted.get_order(placed.order_id), 6)
    # 1230.00 <= trigger; SELL limit 1229.00 <= LTP: marketable.
    # 1230.00 x 0.9995 = 1229.385 -> down 1229.35, better than the limit 1229.00
    publish(quoted, INFY, 1230.00)
    assert_filled(quoted.get_order(placed.order_id), 6, 1229.35)


def test_sl_m_sell_rests_until_trigger_then_fills_as_market(quoted: ExecutionClient) -> None:
    placed = quoted.submit(stop(INFY, "SELL", 10, 1230.00, strategy_code="stop"))
    assert_resting(placed, 10)
    assert not placed.HasField("price")
    assert placed.trigger_price == 1230.00
    publish(quoted, INFY, 1230.05)
    assert_resting(quoted.get_order(placed.order_id), 10)
    # 1229.50 <= 1230.00 triggers a MARKET SELL:
    # 1229.50 x 0.9995 = 1228.88525 -> down 1228.85 (nearest would be 1228.90)
    publish(quoted, INFY, 1229.50)
    assert_filled(quoted.get_order(placed.order_id), 10, 1228.85)
    [pos] = quoted.positions("stop")
    assert (pos.net_qty, pos.avg_price) == (-10, 1228.85)


def test_sl_m_buy_fills_as_market_at_the_triggering_ltp(quoted: ExecutionClient) -> None:
    placed = quoted.submit(stop(INFY, "BUY", 2, 1240.00, strategy_code="stop"))
    assert_resting(placed, 2)
    # 1241.35 x 1.0005 = 1241.970675 -> up 1242.00
    publish(quoted, INFY, 1241.35)
    assert_filled(quoted.get_order(placed.order_id), 2, 1242.00)


def test_market_sell_at_one_tick_never_fills_at_zero(client: ExecutionClient) -> None:
    # NSE penny stocks trade at 0.05, one tick. 0.05 x 0.9995 = 0.049975 snaps DOWN to
    # 0.00: a fill at zero rupees gives the shares away. The worst price the venue can
    # give is one tick, 0.05 (or it must refuse), never 0.
    publish(client, "NSE:PENNY", 0.05)
    result = client.submit(market("NSE:PENNY", "SELL", 100, strategy_code="penny", product="CNC"))
    assert result.status != FILLED or result.avg_price >= 0.05, (
        f"MARKET SELL at LTP 0.05 filled at {result.avg_price:.2f}, below one tick"
    )
    for position in client.positions("penny"):
        assert position.net_qty == 0 or position.avg_price >= 0.05, position


def test_market_buy_at_one_tick_snaps_up_a_whole_tick(client: ExecutionClient) -> None:
    publish(client, "NSE:PENNY", 0.05)
    # 0.05 x 1.0005 = 0.050025 -> up to the next tick 0.10
    result = client.submit(market("NSE:PENNY", "BUY", 100, strategy_code="penny", product="CNC"))
    assert_filled(result, 100, 0.10)


def test_one_quote_fills_every_resting_order_it_crosses_at_each_limit(
    quoted: ExecutionClient,
) -> None:
    first = quoted.submit(limit(INFY, "BUY", 10, 1230.00, strategy_code="multi"))
    second = quoted.submit(limit(INFY, "BUY", 5, 1225.00, strategy_code="multi"))
    third = quoted.submit(limit(INFY, "BUY", 7, 1220.00, strategy_code="multi"))
    publish(quoted, INFY, 1224.00)  # crosses 1230 and 1225, not 1220
    assert_filled(quoted.get_order(first.order_id), 10, 1230.00)
    assert_filled(quoted.get_order(second.order_id), 5, 1225.00)
    assert_resting(quoted.get_order(third.order_id), 7)
    [pos] = quoted.positions("multi")
    # (10 x 1230.00 + 5 x 1225.00) / 15 = (12300.00 + 6125.00) / 15 = 1228.333...
    assert pos.net_qty == 15
    assert pos.avg_price == pytest.approx(18425 / 15, abs=1e-9)
    # marked at 1224.00: 18360.00 - 18425.00 = -65.00
    assert Decimal(pos.unrealized_pnl_decimal) == Decimal("-65.00")


# -- no market data -----------------------------------------------------------


@pytest.mark.parametrize(
    "intent",
    [
        market(TCS, "BUY", 1, strategy_code="nomd"),
        limit(TCS, "SELL", 1, 4100.00, strategy_code="nomd"),
        stop(TCS, "SELL", 1, 4000.00, strategy_code="nomd"),
    ],
    ids=["market", "limit", "sl_m"],
)
def test_no_quote_rejects_with_no_market_data(quoted: ExecutionClient, intent: OrderIntent) -> None:
    # INFY has a quote; TCS has none.
    result = quoted.submit(intent)
    assert result.status == REJECTED
    assert result.reject_reason == RejectReason.REJECT_REASON_NO_MARKET_DATA
    assert result.order_id  # recorded, so a retry returns this same result
    assert result.filled_qty == 0
    assert not result.HasField("avg_price")
    assert result.message
    assert [o.order_id for o in quoted.list_orders(status="REJECTED")] == [result.order_id]
    assert quoted.positions() == []


# -- cancel -------------------------------------------------------------------


def test_cancel_resting_order_then_crossing_quote_does_not_fill(
    quoted: ExecutionClient,
) -> None:
    placed = quoted.submit(limit(INFY, "BUY", 10, 1230.00, strategy_code="cxl"))
    cancelled = quoted.cancel(placed.order_id)
    assert cancelled.order_id == placed.order_id
    assert cancelled.status == CANCELLED
    assert cancelled.filled_qty == 0
    publish(quoted, INFY, 1220.00)
    after = quoted.get_order(placed.order_id)
    assert after.status == CANCELLED
    assert after.filled_qty == 0
    assert quoted.positions() == []


def test_cancel_waiting_stop_order_then_trigger_does_not_fill(quoted: ExecutionClient) -> None:
    placed = quoted.submit(stop(INFY, "SELL", 10, 1230.00, strategy_code="cxl"))
    assert quoted.cancel(placed.order_id).status == CANCELLED
    publish(quoted, INFY, 1200.00)
    assert quoted.get_order(placed.order_id).status == CANCELLED
    assert quoted.positions() == []


def test_cancel_filled_order_is_failed_precondition_and_changes_nothing(
    quoted: ExecutionClient,
) -> None:
    filled = quoted.submit(market(INFY, "BUY", 10, strategy_code="cxl"))
    assert filled.status == FILLED
    before = snapshot(quoted)
    with pytest.raises(FailedPrecondition) as info:
        quoted.cancel(filled.order_id)
    assert info.value.code.name == "FAILED_PRECONDITION"
    assert filled.order_id in info.value.details
    assert snapshot(quoted) == before
    assert quoted.get_order(filled.order_id).status == FILLED


def test_cancel_twice_is_failed_precondition(quoted: ExecutionClient) -> None:
    placed = quoted.submit(limit(INFY, "BUY", 10, 1230.00, strategy_code="cxl"))
    quoted.cancel(placed.order_id)
    before = snapshot(quoted)
    with pytest.raises(FailedPrecondition):
        quoted.cancel(placed.order_id)
    assert snapshot(quoted) == before


def test_cancel_rejected_order_is_failed_precondition(quoted: ExecutionClient) -> None:
    rejected = quoted.submit(market(TCS, "BUY", 1, strategy_code="cxl"))
    assert rejected.status == REJECTED
    before = snapshot(quoted)
    with pytest.raises(FailedPrecondition):
        quoted.cancel(rejected.order_id)
    assert snapshot(quoted) == before


def test_cancel_records_when_it_happened(quoted: ExecutionClient, clock: ManualClock) -> None:
    placed = quoted.submit(limit(INFY, "SELL", 10, 1240.00, strategy_code="cxl"))
    clock.advance(timedelta(seconds=42))
    cancelled = quoted.cancel(placed.order_id)
    assert cancelled.created_at == placed.created_at
    assert cancelled.timestamp.ToDatetime(tzinfo=UTC) == MARKET_OPEN + timedelta(seconds=42)
    assert cancelled.message  # the cancel cause


def test_empty_order_id_is_invalid_argument(client: ExecutionClient) -> None:
    with pytest.raises(InvalidArgument) as info:
        client.get_order("")
    assert "order_id" in info.value.details
    with pytest.raises(InvalidArgument) as info:
        client.cancel("")
    assert "order_id" in info.value.details


def test_cancel_unknown_order_is_not_found_and_changes_nothing(
    quoted: ExecutionClient,
) -> None:
    resting = quoted.submit(limit(INFY, "BUY", 10, 1230.00, strategy_code="cxl"))
    before = snapshot(quoted)
    with pytest.raises(NotFound) as info:
        quoted.cancel("O-does-not-exist")
    assert info.value.code.name == "NOT_FOUND"
    assert snapshot(quoted) == before
    # The resting order is still live: it fills when crossed.
    publish(quoted, INFY, 1229.00)
    assert_filled(quoted.get_order(resting.order_id), 10, 1230.00)


# -- GetOrder / ListOrders ------------------------------------------------------


def test_get_order_echoes_the_intent_and_tracks_time(
    quoted: ExecutionClient, clock: ManualClock
) -> None:
    placed = quoted.submit(
        limit(
            INFY,
            "BUY",
            25,
            1230.00,
            strategy_code="echo",
            product="NRML",
            tag="t-42",
            reason="mean reversion",
            confidence=0.7,
        ),
        client_order_id="echo-coid-1",
    )
    got = quoted.get_order(placed.order_id)
    assert got == placed
    assert got.client_order_id == "echo-coid-1"
    assert got.order_type == OrderType.ORDER_TYPE_LIMIT
    assert (got.symbol, got.strategy_code, got.tag) == (INFY, "echo", "t-42")
    assert got.product == Product.PRODUCT_NRML
    assert got.validity == Validity.VALIDITY_DAY
    assert got.side == Side.SIDE_BUY
    assert got.qty == 25
    assert got.price == 1230.00
    assert not got.HasField("trigger_price")
    assert not got.dry_run
    assert got.created_at.ToDatetime().replace(tzinfo=MARKET_OPEN.tzinfo) == MARKET_OPEN
    assert got.timestamp == got.created_at

    clock.advance(timedelta(seconds=90))
    publish(quoted, INFY, 1229.00)
    filled = quoted.get_order(placed.order_id)
    assert_filled(filled, 25, 1230.00)
    assert filled.created_at == got.created_at
    later = MARKET_OPEN + timedelta(seconds=90)
    assert filled.timestamp.ToDatetime().replace(tzinfo=MARKET_OPEN.tzinfo) == later


def test_get_unknown_order_is_not_found(client: ExecutionClient) -> None:
    with pytest.raises(NotFound):
        client.get_order("O9999999999")


def test_list_orders_filters(quoted: ExecutionClient) -> None:
    o1 = quoted.submit(market(INFY, "BUY", 10, strategy_code="A"))  # FILLED
    o2 = quoted.submit(limit(INFY, "BUY", 10, 1230.00, strategy_code="A"))  # PLACED
    o3 = quoted.submit(limit(INFY, "SELL", 10, 1240.00, strategy_code="B"))  # -> CANCELLED
    quoted.cancel(o3.order_id)
    o4 = quoted.submit(market(TCS, "BUY", 5, strategy_code="B"))  # REJECTED: no TCS quote
    o5 = quoted.submit(limit(TCS, "SELL", 5, 4100.00, strategy_code="A"))  # REJECTED
    o6 = quoted.submit(market(INFY, "SELL", 10, strategy_code="B"))  # FILLED
    assert [o1.status, o2.status, o4.status, o5.status, o6.status] == [
        FILLED,
        PLACED,
        REJECTED,
        REJECTED,
        FILLED,
    ]

    def ids(strategy_code: str = "", status: str | None = None, symbol: str = "") -> list[str]:
        found = quoted.list_orders(strategy_code=strategy_code, status=status, symbol=symbol)
        return [o.order_id for o in found]

    a, b, c, d, e, f = (o.order_id for o in (o1, o2, o3, o4, o5, o6))
    assert ids() == [a, b, c, d, e, f]  # oldest first
    assert ids(strategy_code="A") == [a, b, e]
    assert ids(strategy_code="B") == [c, d, f]
    assert ids(strategy_code="nobody") == []
    assert ids(status="FILLED") == [a, f]
    assert ids(status="PLACED") == [b]
    assert ids(status="CANCELLED") == [c]
    assert ids(status="REJECTED") == [d, e]
    assert ids(status="PARTIAL") == []
    assert ids(symbol=TCS) == [d, e]
    assert ids(symbol=INFY) == [a, b, c, f]
    assert ids(strategy_code="A", status="REJECTED", symbol=TCS) == [e]
    assert ids(strategy_code="A", status="FILLED", symbol=TCS) == []
    assert ids(strategy_code="B", symbol=INFY) == [c, f]
    # ListOrders shows the current state, the same as GetOrder.
    for result in quoted.list_orders():
        assert result == quoted.get_order(result.order_id)


# -- positions and PnL --------------------------------------------------------


def test_round_trip_realizes_exact_loss(client: ExecutionClient) -> None:
    publish(client, INFY, 1500.00)
    buy = client.submit(market(INFY, "BUY", 10, strategy_code="pnl"))
    assert_filled(buy, 10, 1500.75)  # 1500.00 x 1.0005
    sell = client.submit(market(INFY, "SELL", 10, strategy_code="pnl"))
    assert_filled(sell, 10, 1499.25)  # 1500.00 x 0.9995
    [pos] = client.positions()
    assert (pos.strategy_code, pos.symbol, pos.product) == ("pnl", INFY, Product.PRODUCT_MIS)
    assert pos.net_qty == 0
    assert pos.avg_price == 0.0
    # (1499.25 - 1500.75) x 10 = -15.00
    assert pos.realized_pnl_decimal == "-15.00"
    assert pos.realized_pnl == -15.0
    assert pos.unrealized_pnl == 0.0
    assert Decimal(pos.unrealized_pnl_decimal) == 0
    assert (pos.buy_qty, pos.sell_qty) == (10, 10)
    assert pos.last_price == 1500.00


def test_unrealized_pnl_is_marked_to_the_latest_ltp(client: ExecutionClient) -> None:
    publish(client, INFY, 1500.00)
    client.submit(market(INFY, "BUY", 10, strategy_code="mark"))  # 10 @ 1500.75
    [pos] = client.positions()
    # 1500.00 x 10 - 1500.75 x 10 = -7.50
    assert Decimal(pos.unrealized_pnl_decimal) == Decimal("-7.50")
    assert pos.unrealized_pnl == -7.5
    assert pos.last_price == 1500.00

    publish(client, INFY, 1510.00)
    [pos] = client.positions()
    # 15100.00 - 15007.50 = 92.50
    assert Decimal(pos.unrealized_pnl_decimal) == Decimal("92.50")
    assert pos.unrealized_pnl == 92.5
    assert pos.last_price == 1510.00
    assert (pos.net_qty, pos.avg_price) == (10, 1500.75)
    assert Decimal(pos.realized_pnl_decimal) == 0

    # Sell 4 at 1510.00 x 0.9995 = 1509.245 -> down 1509.20
    sell = client.submit(market(INFY, "SELL", 4, strategy_code="mark"))
    assert_filled(sell, 4, 1509.20)
    [pos] = client.positions()
    # realized: (1509.20 - 1500.75) x 4 = 33.80; 6 left at 1500.75
    assert Decimal(pos.realized_pnl_decimal) == Decimal("33.80")
    assert (pos.net_qty, pos.avg_price) == (6, 1500.75)
    # unrealized: (1510.00 - 1500.75) x 6 = 55.50
    assert Decimal(pos.unrealized_pnl_decimal) == Decimal("55.50")
    assert (pos.buy_qty, pos.sell_qty) == (10, 4)


def test_short_position_pnl(client: ExecutionClient) -> None:
    publish(client, TCS, 4100.00)
    # 4100.00 x 0.9995 = 4097.95, on the tick
    assert_filled(client.submit(market(TCS, "SELL", 5, strategy_code="short")), 5, 4097.95)
    publish(client, TCS, 4090.00)
    [pos] = client.positions()
    assert (pos.net_qty, pos.avg_price) == (-5, 4097.95)
    # short: (4097.95 - 4090.00) x 5 = 39.75
    assert Decimal(pos.unrealized_pnl_decimal) == Decimal("39.75")
    # cover at 4090.00 x 1.0005 = 4092.045 -> up 4092.05
    assert_filled(client.submit(market(TCS, "BUY", 5, strategy_code="short")), 5, 4092.05)
    [pos] = client.positions()
    # (4097.95 - 4092.05) x 5 = 29.50
    assert Decimal(pos.realized_pnl_decimal) == Decimal("29.50")
    assert pos.net_qty == 0
    assert Decimal(pos.unrealized_pnl_decimal) == 0


def test_position_flips_through_zero(client: ExecutionClient) -> None:
    publish(client, INFY, 1500.00)
    client.submit(market(INFY, "BUY", 10, strategy_code="flip"))  # +10 @ 1500.75
    client.submit(market(INFY, "SELL", 15, strategy_code="flip"))  # -15 @ 1499.25
    [pos] = client.positions()
    # closes 10: (1499.25 - 1500.75) x 10 = -15.00; opens a 5 short at 1499.25
    assert Decimal(pos.realized_pnl_decimal) == Decimal("-15.00")
    assert (pos.net_qty, pos.avg_price) == (-5, 1499.25)
    # short 5 at 1499.25 marked at 1500.00: (1499.25 - 1500.00) x 5 = -3.75
    assert Decimal(pos.unrealized_pnl_decimal) == Decimal("-3.75")
    assert (pos.buy_qty, pos.sell_qty) == (10, 15)


def test_partial_closes_at_average_cost_realize_the_exact_total(
    client: ExecutionClient,
) -> None:
    publish(client, INFY, 1500.00)
    client.submit(market(INFY, "BUY", 1, strategy_code="avg"))  # 1 @ 1500.75
    publish(client, INFY, 1520.00)
    # 1520.00 x 1.0005 = 1520.76 -> up 1520.80
    assert_filled(client.submit(market(INFY, "BUY", 2, strategy_code="avg")), 2, 1520.80)
    # open cost 1500.75 + 3041.60 = 4542.35 for 3: average 1514.11666...
    publish(client, INFY, 1530.00)
    # 1530.00 x 0.9995 = 1529.235 -> down 1529.20
    assert_filled(client.submit(market(INFY, "SELL", 1, strategy_code="avg")), 1, 1529.20)
    [pos] = client.positions("avg")
    assert pos.net_qty == 2
    assert pos.avg_price == pytest.approx(4542.35 / 3, abs=1e-9)
    # realized 1529.20 - 4542.35 / 3 = 181/12 = 15.08333...
    assert abs(Decimal(pos.realized_pnl_decimal) - Decimal(181) / 12) < Decimal("1e-18")
    assert_filled(client.submit(market(INFY, "SELL", 2, strategy_code="avg")), 2, 1529.20)
    [pos] = client.positions("avg")
    # Flat: 3 x 1529.20 - 4542.35 = 4587.60 - 4542.35 = 45.25, exactly, whatever the
    # rounding of the average on the way.
    assert pos.net_qty == 0
    assert Decimal(pos.realized_pnl_decimal) == Decimal("45.25")
    assert pos.realized_pnl == 45.25
    assert Decimal(pos.unrealized_pnl_decimal) == 0


def test_positions_are_kept_per_strategy_symbol_and_product(client: ExecutionClient) -> None:
    publish(client, INFY, 1500.00)
    publish(client, TCS, 4100.00)
    client.submit(market(INFY, "BUY", 10, strategy_code="A", product="MIS"))  # @ 1500.75
    client.submit(market(INFY, "BUY", 5, strategy_code="A", product="NRML"))  # @ 1500.75
    client.submit(market(INFY, "SELL", 3, strategy_code="B", product="MIS"))  # @ 1499.25
    client.submit(market(TCS, "BUY", 2, strategy_code="A", product="CNC"))  # 4102.05
    # 4100.00 x 1.0005 = 4102.05

    got = {k: (p.net_qty, p.avg_price) for k, p in position_map(client.positions()).items()}
    mis, nrml, cnc = Product.PRODUCT_MIS, Product.PRODUCT_NRML, Product.PRODUCT_CNC
    assert got == {
        ("A", INFY, mis): (10, 1500.75),
        ("A", INFY, nrml): (5, 1500.75),
        ("B", INFY, mis): (-3, 1499.25),
        ("A", TCS, cnc): (2, 4102.05),
    }
    only_a = position_map(client.positions("A"))
    assert set(only_a) == {("A", INFY, mis), ("A", INFY, nrml), ("A", TCS, cnc)}
    only_b = position_map(client.positions("B"))
    assert set(only_b) == {("B", INFY, mis)}
    assert client.positions("nobody") == []
    # Each is marked to its own symbol's LTP.
    assert Decimal(only_a[("A", TCS, cnc)].unrealized_pnl_decimal) == Decimal("-4.10")
    # (4100.00 - 4102.05) x 2 = -4.10
    assert Decimal(only_b[("B", INFY, mis)].unrealized_pnl_decimal) == Decimal("-2.25")
    # short 3 at 1499.25 marked at 1500.00: (1499.25 - 1500.00) x 3 = -2.25


# -- idempotency --------------------------------------------------------------


def test_same_client_order_id_and_intent_places_once(client: ExecutionClient) -> None:
    publish(client, INFY, 1500.00)
    intent = market(INFY, "BUY", 10, strategy_code="idem")
    first = client.submit(intent, client_order_id="retry-1")
    publish(client, INFY, 1600.00)  # a second placement would fill at 1600.80
    second = client.submit(intent, client_order_id="retry-1")
    assert second.order_id == first.order_id
    assert second.client_order_id == "retry-1"
    assert_filled(second, 10, 1500.75)
    assert [o.order_id for o in client.list_orders()] == [first.order_id]
    [pos] = client.positions()
    assert (pos.net_qty, pos.buy_qty, pos.avg_price) == (10, 10, 1500.75)


def test_concurrent_retries_place_one_order(client: ExecutionClient) -> None:
    publish(client, INFY, 1500.00)
    intent = limit(INFY, "BUY", 10, 1490.00, strategy_code="idem")
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(lambda _: client.submit(intent, client_order_id="race-1"), range(8))
        )
    assert len({r.order_id for r in results}) == 1
    assert all(r.status == PLACED for r in results)
    assert len(client.list_orders()) == 1


def test_retry_of_a_rejected_order_returns_the_rejection(client: ExecutionClient) -> None:
    intent = market(TCS, "BUY", 1, strategy_code="idem")
    first = client.submit(intent, client_order_id="rej-1")
    assert first.reject_reason == RejectReason.REJECT_REASON_NO_MARKET_DATA
    publish(client, TCS, 4100.00)  # the venue could price it now
    again = client.submit(intent, client_order_id="rej-1")
    assert again.order_id == first.order_id
    assert again.status == REJECTED
    assert len(client.list_orders()) == 1
    assert client.positions() == []


@pytest.mark.parametrize(
    "changed",
    [
        market(INFY, "BUY", 20, strategy_code="idem"),
        market(INFY, "SELL", 10, strategy_code="idem"),
        market(TCS, "BUY", 10, strategy_code="idem"),
        market(INFY, "BUY", 10, strategy_code="idem", product="NRML"),
        limit(INFY, "BUY", 10, 1500.00, strategy_code="idem"),
    ],
    # Another strategy with the same key places its own order: keys are per strategy.
    ids=["qty", "side", "symbol", "product", "order_type"],
)
def test_same_client_order_id_different_intent_is_already_exists(
    client: ExecutionClient, changed: OrderIntent
) -> None:
    publish(client, INFY, 1500.00)
    publish(client, TCS, 4100.00)
    first = client.submit(market(INFY, "BUY", 10, strategy_code="idem"), "reuse-1")
    before = snapshot(client)
    with pytest.raises(AlreadyExists) as info:
        client.submit(changed, client_order_id="reuse-1")
    assert info.value.code.name == "ALREADY_EXISTS"
    assert "reuse-1" in info.value.details
    assert snapshot(client) == before
    assert [o.order_id for o in client.list_orders()] == [first.order_id]
