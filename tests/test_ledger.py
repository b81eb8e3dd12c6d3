"""Position accounting is exact: Decimal all the way, no float drift."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from execgw.server.domain import (
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    Product,
    RejectReason,
    Side,
    Validity,
)
from execgw.server.ledger import PositionState

D = Decimal


def test_round_trip_realizes_exact_loss() -> None:
    pos = PositionState()
    pos.apply(10, D("1500.75"))
    realized, round_trip = pos.apply(-10, D("1499.25"))
    assert round_trip == D("-15.00")
    assert realized == D("-15.00")
    assert pos.realized_pnl == D("-15.00")
    assert pos.net_qty == 0
    assert pos.open_cost == 0
    assert (pos.buy_qty, pos.sell_qty) == (10, 10)


def test_average_price_and_unrealized_marked_to_ltp() -> None:
    pos = PositionState()
    pos.apply(10, D("100.05"))
    pos.apply(20, D("100.10"))
    assert pos.avg_price == D("3002.50") / 30
    assert pos.unrealized(D("101.00")) == D("101.00") * 30 - D("3002.50")
    assert pos.unrealized(None) == 0


def test_partial_close_keeps_average_of_remaining() -> None:
    pos = PositionState()
    pos.apply(30, D("100.00"))
    assert pos.apply(-10, D("110.00")) == (D("100.00"), None)
    assert pos.net_qty == 20
    assert pos.avg_price == D("100.00")
    assert pos.open_cost == D("2000.00")


def test_flip_from_long_to_short_opens_at_fill_price() -> None:
    pos = PositionState()
    pos.apply(5, D("200.00"))
    assert pos.apply(-8, D("190.00")) == (D("-50.00"), D("-50.00"))
    assert pos.net_qty == -3
    assert pos.avg_price == D("190.00")
    assert pos.unrealized(D("180.00")) == D("30.00")


def test_short_then_cover_realizes_gain() -> None:
    pos = PositionState()
    pos.apply(-4, D("50.05"))
    assert pos.apply(4, D("49.95")) == (D("0.40"), D("0.40"))


@pytest.mark.parametrize("n", [3, 7, 13])
def test_many_small_fills_sum_without_drift(n: int) -> None:
    pos = PositionState()
    for _ in range(n):
        pos.apply(1, D("0.10"))
    pos.apply(-n, D("0.30"))
    assert pos.realized_pnl == D("0.20") * n


def test_an_orders_copy_is_what_dataclasses_replace_makes() -> None:
    """Order.copy is compiled from the field list: every field, each one shared (a
    shallow copy), in a new object that later changes to the original leave alone."""
    at = datetime(2026, 12, 3, 4, 0, tzinfo=UTC)
    intent = OrderIntent("NSE:INFY", "S1", Side.BUY, 5, OrderType.LIMIT, Product.CNC, Validity.DAY)
    # Every field away from its default, so a field the copy forgot would show.
    values: dict[str, Any] = {
        "order_id": "O1",
        "client_order_id": "c1",
        "intent": intent,
        "status": OrderStatus.PARTIAL,
        "created_at": at,
        "updated_at": at,
        "filled_qty": 2,
        "filled_value": D("3001.5"),
        "reject_reason": RejectReason.NO_MARKET_DATA,
        "message": "m",
        "triggered": True,
        "dry_run": True,
        "raw": {"status": "OPEN"},
        "internal": True,
        "placed_by": "desk",
        "venue": "kite",
        "venue_order_id": "V1",
        "venue_trade_ids": ("T1",),
        "charges": D("1.5"),
        "arrived": True,
        "brokerage": D("0.5"),
        "fills_in_flight": (),
        "cancel_requested_at": at,
    }
    assert set(values) == {f.name for f in dataclasses.fields(Order)}
    order = Order(**values)
    copied = order.copy()
    assert copied == dataclasses.replace(order)
    assert copied is not order
    assert all(getattr(copied, name) is getattr(order, name) for name in values)
    order.filled_qty = 5
    assert copied.filled_qty == 2
