"""`execgw replay` of an autosliced order: the live gateway checked the parent once and
placed its children "<key>#1".."#n"; the replay submits the parent once, so the same
config reproduces the children (no per-child duplicate or rate checks) and another
config may reject the parent whole or not slice it. Either run shows the order as one
row under the parent's key, its children beside it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from execgw.client import ExecutionClient, OrderStatus, limit, market
from execgw.server.cli_replay import as_json
from execgw.server.clock import ManualClock
from execgw.server.config import GatewayConfig
from execgw.server.journal import Journal
from execgw.server.replay import Comparison, compare
from execgw.v1 import gateway_pb2

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TIMEOUT_S, publish
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TIMEOUT_S, publish

FREEZE: dict[str, Any] = {"freeze_qty": {INFY: 100}}
SLICE: dict[str, Any] = {"autoslice": "slice", "slippage_bps": 0.0}


def _record(tmp_path: Path, clock: ManualClock, execution: dict[str, Any]) -> GatewayConfig:
    config = make_config(
        tmp_path, execution=execution, journal={"record_quotes": True}, instruments=FREEZE
    )
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as client:
            publish(client, INFY, 1500.0)
            big = client.submit(market(INFY, "BUY", 250, strategy_code="s"), "big")
            assert big.status == OrderStatus.ORDER_STATUS_FILLED
            clock.advance(timedelta(seconds=1))
            publish(client, INFY, 1510.0)
            client.submit(market(INFY, "SELL", 50, strategy_code="s"), "small")
    finally:
        gateway.stop()
    return config


def _compare(recorded: GatewayConfig, other: GatewayConfig) -> Comparison:
    journal = Journal(Path(recorded.journal.path), read_only=True)
    try:
        return compare(journal, other)
    finally:
        journal.close()


@pytest.mark.parametrize(
    "pre_trade",
    [
        # Each child alone would be a duplicate of the one before it.
        {"duplicate_window_s": 5.0},
        # Each child alone would take a rate token the bucket does not have.
        {"orders_per_second": 1.0, "order_burst": 1},
    ],
    ids=["duplicate_window", "order_burst"],
)
def test_the_recording_config_reproduces_an_autosliced_order(
    tmp_path: Path, clock: ManualClock, pre_trade: dict[str, Any]
) -> None:
    recorded = _record(tmp_path, clock, {**SLICE, "pre_trade": pre_trade})
    result = _compare(recorded, recorded)
    assert result.replayed == result.recorded
    assert not any(result.differs(k) for k in result.order_keys())
    assert result.order_keys() == [("s", "big"), ("s", "small")]
    big = result.replayed.orders[("s", "big")]
    assert (big.status, big.qty, big.filled_qty) == ("FILLED", 250, 250)
    assert [(c.client_order_id, c.qty, c.status) for c in big.children] == [
        ("big#1", 100, "FILLED"),
        ("big#2", 100, "FILLED"),
        ("big#3", 50, "FILLED"),
    ]


def test_a_what_if_from_slice_to_reject_rejects_the_parent_whole(
    tmp_path: Path, clock: ManualClock
) -> None:
    recorded = _record(tmp_path, clock, SLICE)
    other = make_config(tmp_path, execution={"slippage_bps": 0.0}, instruments=FREEZE)
    result = _compare(recorded, other)
    assert result.differs(("s", "big"))
    before, after = result.recorded.orders[("s", "big")], result.replayed.orders[("s", "big")]
    assert (before.status, before.filled_qty, len(before.children)) == ("FILLED", 250, 3)
    assert (after.status, after.qty, after.filled_qty, after.children) == ("REJECTED", 250, 0, ())
    rows = {o["client_order_id"]: o for o in as_json(result)["orders"]}
    assert set(rows) == {"big", "small"}
    assert [c["client_order_id"] for c in rows["big"]["recorded"]["children"]] == [
        "big#1",
        "big#2",
        "big#3",
    ]
    assert "children" not in rows["big"]["replayed"]


def test_a_what_if_from_reject_to_slice_slices_the_recorded_rejection(
    tmp_path: Path, clock: ManualClock
) -> None:
    config = make_config(
        tmp_path,
        execution={"slippage_bps": 0.0},
        journal={"record_quotes": True},
        instruments=FREEZE,
    )
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as client:
            publish(client, INFY, 1500.0)
            big = client.submit(market(INFY, "BUY", 250, strategy_code="s"), "big")
            assert big.status == OrderStatus.ORDER_STATUS_REJECTED
    finally:
        gateway.stop()
    other = make_config(tmp_path, execution=SLICE, instruments=FREEZE)
    result = _compare(config, other)
    assert result.order_keys() == [("s", "big")]
    after = result.replayed.orders[("s", "big")]
    assert (after.status, after.filled_qty, len(after.children)) == ("FILLED", 250, 3)
    assert result.replayed.strategies["s"].filled_qty == 250


def test_keys_that_only_look_like_children_stay_orders_of_their_own(
    tmp_path: Path, clock: ManualClock
) -> None:
    config = make_config(tmp_path, execution=SLICE, journal={"record_quotes": True})
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as client:
            publish(client, INFY, 1500.0)
            client.submit(market(INFY, "BUY", 10, strategy_code="s"), "p#1")
            # Placed a moment later: its own command, not a slice of the one before.
            clock.advance(timedelta(milliseconds=1))
            client.submit(market(INFY, "BUY", 10, strategy_code="s"), "p#2")
    finally:
        gateway.stop()
    result = _compare(config, config)
    assert result.order_keys() == [("s", "p#1"), ("s", "p#2")]
    assert result.replayed == result.recorded


def _record_cancels(tmp_path: Path, clock: ManualClock, cancel_keys: list[str]) -> GatewayConfig:
    """A resting BUY 250 @1400 sliced into big#1..#3; the children named by
    `cancel_keys` cancelled one by one, a second apart; then the market trades through."""
    config = make_config(
        tmp_path, execution=SLICE, journal={"record_quotes": True}, instruments=FREEZE
    )
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as client:
            publish(client, INFY, 1500.0)
            client.submit(limit(INFY, "BUY", 250, 1400.0, strategy_code="s"), "big")
            by_key = {o.client_order_id: o.order_id for o in client.list_orders()}
            for key in cancel_keys:
                clock.advance(timedelta(seconds=1))
                client.cancel(by_key[key])
            clock.advance(timedelta(seconds=1))
            publish(client, INFY, 1390.0)
    finally:
        gateway.stop()
    return config


def test_cancelling_every_child_cancels_the_parent_replayed_unsliced(
    tmp_path: Path, clock: ManualClock
) -> None:
    recorded = _record_cancels(tmp_path, clock, ["big#1", "big#2", "big#3"])
    other = make_config(tmp_path / "other", execution={"slippage_bps": 0.0})
    result = _compare(recorded, other)
    before, after = result.recorded.orders[("s", "big")], result.replayed.orders[("s", "big")]
    assert (before.status, before.filled_qty) == ("CANCELLED", 0)
    assert (after.status, after.qty, after.filled_qty, after.children) == (
        "CANCELLED",
        250,
        0,
        (),
    )


def test_cancelling_every_child_cancels_every_child_of_another_slicing(
    tmp_path: Path, clock: ManualClock
) -> None:
    recorded = _record_cancels(tmp_path, clock, ["big#1", "big#2", "big#3"])
    other = make_config(tmp_path / "other", execution=SLICE, instruments={"freeze_qty": {INFY: 60}})
    result = _compare(recorded, other)
    after = result.replayed.orders[("s", "big")]
    assert (after.status, after.filled_qty) == ("CANCELLED", 0)
    assert [(c.client_order_id, c.qty, c.status) for c in after.children] == [
        (f"big#{i}", qty, "CANCELLED") for i, qty in enumerate([60, 60, 60, 60, 10], start=1)
    ]


def test_cancelling_some_children_cancels_nothing_of_a_parent_replayed_unsliced(
    tmp_path: Path, clock: ManualClock
) -> None:
    # The trader cut the order down; a parent replayed whole cannot be, so it rests on.
    recorded = _record_cancels(tmp_path, clock, ["big#2"])
    other = make_config(tmp_path / "other", execution={"slippage_bps": 0.0})
    result = _compare(recorded, other)
    before, after = result.recorded.orders[("s", "big")], result.replayed.orders[("s", "big")]
    assert (before.status, before.filled_qty) == ("CANCELLED", 150)
    assert (after.status, after.filled_qty) == ("FILLED", 250)


@pytest.mark.parametrize(
    "cancel_keys", [["big#2"], ["big#3", "big#1"], ["big#1", "big#2", "big#3"]]
)
def test_the_recording_config_reproduces_child_cancels_one_to_one(
    tmp_path: Path, clock: ManualClock, cancel_keys: list[str]
) -> None:
    recorded = _record_cancels(tmp_path, clock, cancel_keys)
    result = _compare(recorded, recorded)
    assert result.replayed == result.recorded
    big = result.replayed.orders[("s", "big")]
    assert {c.client_order_id for c in big.children if c.status == "CANCELLED"} == set(cancel_keys)
    assert big.filled_qty == sum(c.qty for c in big.children if c.status == "FILLED")


def _submit_keyless(client: ExecutionClient, intent: Any) -> Any:
    # The Python client makes up a key when given none: only the raw stub sends none.
    request = gateway_pb2.SubmitOrderRequest(intent=intent, client_order_id="")
    return client._gateway.SubmitOrder(request).result


def test_a_parent_placed_without_a_key_replays_as_one_parent(
    tmp_path: Path, clock: ManualClock
) -> None:
    execution = {
        **SLICE,
        "require_client_order_id": False,
        # Each child alone would be a duplicate of the one before it.
        "pre_trade": {"duplicate_window_s": 5.0},
    }
    config = make_config(
        tmp_path, execution=execution, journal={"record_quotes": True}, instruments=FREEZE
    )
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as client:
            publish(client, INFY, 1500.0)
            big = _submit_keyless(client, market(INFY, "BUY", 250, strategy_code="s"))
            assert (big.status, big.filled_qty) == (OrderStatus.ORDER_STATUS_FILLED, 250)
            parent = f"auto-{big.order_id}"
            assert big.client_order_id == parent
            assert sorted(o.client_order_id for o in client.list_orders()) == [
                f"{parent}#1",
                f"{parent}#2",
                f"{parent}#3",
            ]
    finally:
        gateway.stop()
    result = _compare(config, config)
    assert result.replayed == result.recorded
    assert result.order_keys() == [("s", parent)]
    whole = result.replayed.orders[("s", parent)]
    assert (whole.status, whole.filled_qty, len(whole.children)) == ("FILLED", 250, 3)
    other = make_config(tmp_path / "other", execution={**execution, "autoslice": "reject"})
    unsliced = _compare(config, other).replayed.orders[("s", parent)]
    assert (unsliced.status, unsliced.filled_qty, unsliced.children) == ("FILLED", 250, ())
