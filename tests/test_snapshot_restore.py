"""A restart restores a day's finished orders from their snapshot bytes by their heads
alone (OrderHead), never decoding them whole: the same ledger, less time and memory.
A snapshot whose bytes the codec no longer writes is decoded whole, as before."""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import TYPE_CHECKING, Any

import pytest

from execgw.server import codec, recovery
from execgw.server.closed_orders import ClosedOrder
from execgw.server.domain import Order, OrderIntent, OrderType, Product, Side, Validity
from execgw.server.events import OrderAccepted
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
    ledger.compact()
    return GatewayState(ledger, RiskBook(), IdSource(), 40, "0" * 64)


def test_the_bytes_form_mirrors_the_snapshot_field_for_field() -> None:
    mirrored = [f.name for f in dataclasses.fields(recovery._SnapshotBytes)]
    assert mirrored == [f.name for f in dataclasses.fields(recovery.Snapshot)]


def test_finished_orders_are_restored_from_their_heads_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = _state()
    body = state_to_json(state)
    whole: list[str] = []
    real = codec.decode

    def counted(text: Any, into: Any) -> Any:
        found = real(text, into)
        if into is Order:
            whole.append(found.order_id)
        return found

    monkeypatch.setattr(codec, "decode", counted)
    again = state_from_json(body)
    orders = again.ledger._orders
    open_ids = [i for i, o in orders.items() if isinstance(o, Order)]
    closed = [o for o in orders.values() if isinstance(o, ClosedOrder)]
    assert open_ids
    assert closed
    ids = list(orders)
    # Whole: the first and last (the codec check) and the open ones; never the rest.
    assert sorted(set(whole)) == sorted({ids[0], ids[-1], *open_ids})
    monkeypatch.setattr(codec, "decode", real)
    assert again.ledger.export() == state.ledger.export()
    assert state_to_json(again) == body
    for order in closed:
        assert again.ledger.order_for_client_id(
            order.intent.strategy_code, order.client_order_id
        ) == state.ledger.order(order.order_id)


def test_a_snapshot_the_codec_no_longer_writes_is_decoded_whole() -> None:
    state = _state()
    body = json.loads(state_to_json(state))
    older = json.dumps(body)  # the same state, written another way
    again = state_from_json(older)
    assert again.ledger.export() == state.ledger.export()
    # Its bytes are not kept: the next snapshot writes today's.
    assert state_to_json(again) == state_to_json(state)
