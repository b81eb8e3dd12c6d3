"""A restart decodes each of the snapshot's orders whole (a body that does not decode
stops the start), and makes a finished one compact at once, so the day's orders are
never all whole in memory together: the same ledger, finished orders equal slot for
slot, less memory. A snapshot whose bytes the codec no longer writes is restored whole,
as before."""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest

from execgw.server import codec, recovery
from execgw.server.closed_orders import ClosedOrder
from execgw.server.domain import (
    Order,
    OrderIntent,
    OrderType,
    Product,
    RejectReason,
    Side,
    Validity,
)
from execgw.server.events import OrderAccepted, OrderCancelled, OrderRejected
from execgw.server.ledger import Ledger
from execgw.server.recovery import GatewayState, IdSource, state_from_json, state_to_json
from execgw.server.risk_state import RiskBook

if TYPE_CHECKING:
    from tests.test_open_positions import WHEN, _fill
else:
    from test_open_positions import WHEN, _fill


def _state() -> GatewayState:
    """A day with finished orders (filled both ways, in two strategies) and open ones."""
    ledger = Ledger()
    numbers = itertools.count(1)
    for step in range(12):
        key = (f"s{step % 2}", "NSE:INFY", Product.CNC)
        _fill(ledger, next(numbers), key, 3 if step % 3 else -2, 10_000 + step)
        if step % 4 == 0:  # a resting one between them
            number = next(numbers)
            intent = OrderIntent(
                "NSE:TCS", "s1", Side.BUY, 1, OrderType.LIMIT, Product.CNC, Validity.DAY
            )
            ledger.apply(OrderAccepted(f"O{number:05d}", f"c{number}", intent, WHEN))
    # A rejection (with its reason), and the gateway's own order, at an IST time.
    ist = WHEN.astimezone(ZoneInfo("Asia/Kolkata"))
    rejected = OrderIntent(
        "NSE:SBIN", "s0", Side.SELL, 5, OrderType.MARKET, Product.MIS, Validity.DAY
    )
    ledger.apply(
        OrderRejected("O09001", "c9001", rejected, ist, RejectReason.MAX_LOSS_STREAK, "streak")
    )
    internal = OrderIntent(
        "NSE:INFY", "s1", Side.SELL, 1, OrderType.MARKET, Product.MIS, Validity.DAY
    )
    ledger.apply(OrderAccepted("O09002", "c9002", internal, ist, internal=True))
    ledger.apply(OrderCancelled("O09002", ist, "cancelled at MIS square-off"))
    ledger.compact()
    return GatewayState(ledger, RiskBook(), IdSource(), 40, "0" * 64)


def _slots(order: ClosedOrder) -> tuple[object, ...]:
    return tuple(getattr(order, name) for name in ClosedOrder.__slots__)


def test_finished_orders_come_back_compact_and_equal_slot_for_slot() -> None:
    state = _state()
    body = state_to_json(state)
    again = state_from_json(body)
    before = state.ledger._orders
    after = again.ledger._orders
    assert list(after) == list(before)
    assert any(isinstance(o, ClosedOrder) for o in after.values())
    assert any(isinstance(o, Order) for o in after.values())
    for order_id, order in before.items():
        restored = after[order_id]
        assert type(restored) is type(order)
        if isinstance(order, ClosedOrder):
            assert isinstance(restored, ClosedOrder)
            assert _slots(restored) == _slots(order)
            # One listing key per (strategy, symbol), shared, as the live ledger keeps it.
            assert restored.intent is again.ledger._listed_keys[restored.intent]
    assert any(isinstance(o, ClosedOrder) and o.internal for o in after.values())
    # Open orders keep the bytes they came in: the next snapshot need not encode them.
    assert set(again.ledger._encoded) == {i for i, o in after.items() if isinstance(o, Order)}
    assert again.ledger.export() == state.ledger.export()
    assert state_to_json(again) == body
    # Compact as each is decoded: what restore is handed holds no finished order whole.
    bodies = [codec.encode_bytes(o) for o in state.ledger.orders()]
    handed, kept = recovery._restorable(bodies)
    assert kept == bodies
    assert all(isinstance(o, ClosedOrder) != o.status.is_open for o in handed)
    for order in before.values():
        assert again.ledger.order_for_client_id(
            order.intent.strategy_code, order.client_order_id
        ) == state.ledger.order(order.order_id)


def test_a_finished_order_that_does_not_decode_stops_the_restore() -> None:
    state = _state()
    body = json.loads(state_to_json(state))
    middle = len(body["orders"]) // 2
    assert body["orders"][middle]["status"] in ("FILLED", "REJECTED", "CANCELLED")
    body["orders"][middle]["intent"]["side"] = "SHORT"
    with pytest.raises(codec.CodecError, match=f"snapshot order {middle}"):
        state_from_json(json.dumps(body, separators=(",", ":")))


def test_a_snapshot_the_codec_no_longer_writes_is_decoded_whole() -> None:
    state = _state()
    body = json.loads(state_to_json(state))
    older = json.dumps(body)  # the same state, written another way
    again = state_from_json(older)
    assert again.ledger.export() == state.ledger.export()
    # Its bytes are not kept: the next snapshot writes today's.
    assert state_to_json(again) == state_to_json(state)
