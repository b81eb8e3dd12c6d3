"""execution.autoslice: slice, end to end: an order above the freeze quantity becomes
child orders "<key>#1".."#n" of at most the freeze quantity (whole lots); the submit
returns their aggregate; a retry of the parent key, also after a restart, returns the
same children and places none; risk sees the whole order once."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from google.protobuf.json_format import MessageToDict

from execgw.client import ExecgwError, ExecutionClient, OrderStatus, RejectReason, market
from execgw.server.autoslice import Placed, slice_sizes, sliced_runs
from execgw.server.clock import ManualClock
from execgw.server.domain import OrderIntent, OrderType, Product, Side, Validity
from execgw.server.instruments import Instrument

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TIMEOUT_S, publish
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TIMEOUT_S, publish

SLICE: dict[str, Any] = {"autoslice": "slice", "slippage_bps": 0.0}


def _children(result: Any) -> list[dict[str, Any]]:
    raw = MessageToDict(result.raw)
    children: list[dict[str, Any]] = raw["autoslice"]["children"]
    return children


def test_slice_sizes_are_at_most_the_freeze_qty_in_whole_lots() -> None:
    assert slice_sizes(250, Instrument("NSE:INFY", freeze_qty=100)) == [100, 100, 50]
    assert slice_sizes(100, Instrument("NSE:INFY", freeze_qty=100)) is None
    assert slice_sizes(5, Instrument("NSE:INFY")) is None
    # NIFTY: lot 75, freeze 1800 = 24 lots; a freeze that is not whole lots rounds down.
    assert slice_sizes(3750, Instrument("NFO:X", lot_size=75, freeze_qty=1800)) == [
        1800,
        1800,
        150,
    ]
    assert slice_sizes(300, Instrument("NFO:X", lot_size=75, freeze_qty=200)) == [150, 150]


def test_sliced_runs_finds_a_parents_children_and_nothing_else() -> None:
    at = datetime(2026, 1, 5, 9, 20, tzinfo=UTC)
    buy = OrderIntent(INFY, "s", Side.BUY, 0, OrderType.MARKET, Product.MIS, Validity.DAY)

    def placed(key: str, qty: int, later: int = 0, side: Side = Side.BUY) -> Placed:
        return Placed(key, replace(buy, qty=qty, side=side), at + timedelta(seconds=later))

    orders = [
        placed("a", 10),
        placed("big#1", 100),
        placed("big#2", 100),
        placed("big#3", 50),
        placed("x#1", 100),  # one key alone is no slice
        placed("y#1", 100),
        placed("y#2", 100, later=1),  # another command
        placed("z#1", 50),
        placed("z#2", 100),  # larger than the first: not how slices are cut
        placed("w#1", 100),
        placed("w#2", 100, side=Side.SELL),  # another intent
    ]
    assert sliced_runs(orders) == [("big", range(1, 4))]


def test_an_order_above_the_freeze_qty_is_sliced_under_one_parent(
    tmp_path: Path, clock: ManualClock
) -> None:
    config = make_config(tmp_path, execution=SLICE, instruments={"freeze_qty": {"NSE:INFY": 100}})
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as client:
            publish(client, INFY, 1500.0)
            result = client.submit(market(INFY, "BUY", 250, strategy_code="s"), "big")
            assert result.status == OrderStatus.ORDER_STATUS_FILLED
            assert (result.client_order_id, result.qty, result.filled_qty) == ("big", 250, 250)
            assert result.avg_price_decimal == "1500.00"
            children = _children(result)
            assert [(c["client_order_id"], c["qty"], c["status"]) for c in children] == [
                ("big#1", 100, "FILLED"),
                ("big#2", 100, "FILLED"),
                ("big#3", 50, "FILLED"),
            ]
            assert result.order_id == children[0]["order_id"]
            orders = client.list_orders(strategy_code="s")
            assert sorted((o.client_order_id, o.qty) for o in orders) == [
                ("big#1", 100),
                ("big#2", 100),
                ("big#3", 50),
            ]
            # A retry of the parent key returns the same thing and places nothing.
            again = client.submit(market(INFY, "BUY", 250, strategy_code="s"), "big")
            assert again == result
            assert len(client.list_orders(strategy_code="s")) == 3
            (position,) = client.positions("s")
            assert position.net_qty == 250
    finally:
        gateway.stop()
    # And after a restart, from the journal.
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as client:
            again = client.submit(market(INFY, "BUY", 250, strategy_code="s"), "big")
            assert again.order_id == result.order_id
            assert _children(again) == children
            assert len(client.list_orders(strategy_code="s")) == 3
    finally:
        gateway.stop()


def test_risk_sees_the_whole_sliced_order_once(tmp_path: Path, clock: ManualClock) -> None:
    config = make_config(
        tmp_path,
        execution={**SLICE, "pre_trade": {"max_order_qty": 200}},
        instruments={"freeze_qty": {"NSE:INFY": 100}},
    )
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as client:
            publish(client, INFY, 1500.0)
            too_big = client.submit(market(INFY, "BUY", 250, strategy_code="s"), "big")
            assert too_big.status == OrderStatus.ORDER_STATUS_REJECTED
            assert too_big.reject_reason != RejectReason.REJECT_REASON_BROKER
            assert (too_big.client_order_id, too_big.qty) == ("big", 250)
            assert "autoslice" not in MessageToDict(too_big.raw)
            # Its retry is the same rejection; nothing was placed.
            assert client.submit(market(INFY, "BUY", 250, strategy_code="s"), "big") == too_big
            assert len(client.list_orders(strategy_code="s")) == 1
            fits = client.submit(market(INFY, "BUY", 200, strategy_code="s"), "ok")
            assert fits.status == OrderStatus.ORDER_STATUS_FILLED
            assert len(_children(fits)) == 2
    finally:
        gateway.stop()


def test_a_parent_key_whose_child_keys_are_taken_is_a_conflict(
    tmp_path: Path, clock: ManualClock
) -> None:
    config = make_config(tmp_path, execution=SLICE, instruments={"freeze_qty": {"NSE:INFY": 100}})
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as client:
            publish(client, INFY, 1500.0)
            client.submit(market(INFY, "BUY", 10, strategy_code="s"), "x#1")
            with pytest.raises(ExecgwError, match="x#1"):
                client.submit(market(INFY, "BUY", 250, strategy_code="s"), "x")
            assert len(client.list_orders(strategy_code="s")) == 1
    finally:
        gateway.stop()


def test_each_child_counts_against_the_trade_limits_before_slicing(
    tmp_path: Path, clock: ManualClock
) -> None:
    """max_trades_per_day 5: three single orders leave room for two more. A 250 order
    (freeze 100: children 100, 100, 50) would make it 6, so it is refused whole with the
    trade limit's reason and places nothing; a 200 order (two children) makes it exactly
    5 and fills, after which the tripped breaker refuses the next order as before."""
    config = make_config(
        tmp_path,
        execution={**SLICE, "circuit_breakers": {"max_trades_per_day": 5}},
        instruments={"freeze_qty": {"NSE:INFY": 100}},
    )
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as client:
            publish(client, INFY, 1500.0)
            for i in range(3):
                one = client.submit(market(INFY, "BUY", 10, strategy_code="s"), f"one-{i}")
                assert one.status == OrderStatus.ORDER_STATUS_FILLED
            big = market(INFY, "BUY", 250, strategy_code="s")
            preview = client.preview(big)
            assert not preview.accepted
            refused = client.submit(big, "big")
            assert refused.status == OrderStatus.ORDER_STATUS_REJECTED
            assert refused.reject_reason == RejectReason.REJECT_REASON_MAX_TRADES_PER_DAY
            assert "3 of 5 trades" in refused.message
            assert "3 child orders" in refused.message
            assert (refused.client_order_id, refused.qty) == ("big", 250)
            assert len(client.list_orders(strategy_code="s")) == 4  # 3 + the rejection
            fits = client.submit(market(INFY, "BUY", 200, strategy_code="s"), "fits")
            assert fits.status == OrderStatus.ORDER_STATUS_FILLED
            assert [c["qty"] for c in _children(fits)] == [100, 100]
            (breaker,) = [b for b in client.risk_state().breakers if b.name == "max_trades_per_day"]
            assert (breaker.value, breaker.tripped) == (5, True)
            after = client.submit(market(INFY, "BUY", 10, strategy_code="s"), "after")
            assert after.reject_reason == RejectReason.REJECT_REASON_MAX_TRADES_PER_DAY
    finally:
        gateway.stop()


def test_each_child_counts_against_the_strategy_trade_limit(
    tmp_path: Path, clock: ManualClock
) -> None:
    config = make_config(
        tmp_path,
        execution={**SLICE, "circuit_breakers": {"max_trades_per_strategy_per_day": 2}},
        instruments={"freeze_qty": {"NSE:INFY": 100}},
    )
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as client:
            publish(client, INFY, 1500.0)
            # 0 of 2 trades, three children: one past the strategy's limit.
            refused = client.submit(market(INFY, "BUY", 250, strategy_code="s"), "big")
            assert (
                refused.reject_reason == RejectReason.REJECT_REASON_MAX_TRADES_PER_STRATEGY_PER_DAY
            )
            assert "strategy s has 0 of 2 trades" in refused.message
            # Another strategy's count is its own: two children fit exactly.
            fits = client.submit(market(INFY, "BUY", 200, strategy_code="t"), "fits")
            assert fits.status == OrderStatus.ORDER_STATUS_FILLED
    finally:
        gateway.stop()
