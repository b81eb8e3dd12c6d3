"""Freeze quantities: the exchange's most one order may be, from instruments.freeze_qty.
Above it the paper simulator rejects the order, as the exchange does
(execution.autoslice: reject)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from execgw.client import ExecutionClient, OrderStatus, RejectReason, market
from execgw.server.clock import ManualClock
from execgw.server.config import ConfigError
from execgw.server.instruments import Instrument, InstrumentRegistry

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TCS, TIMEOUT_S, publish
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TCS, TIMEOUT_S, publish


def test_freeze_qty_by_symbol_or_by_the_longest_matching_prefix() -> None:
    registry = InstrumentRegistry(
        [Instrument("NFO:NIFTY26DECFUT", lot_size=75)],
        freeze_qty={"NFO:NIFTY*": 1800, "NFO:NIFTY26DEC*": 1200, "NSE:INFY": 5000},
    )
    assert registry.get("NFO:NIFTY26DECFUT").freeze_qty == 1200
    assert registry.get("NFO:NIFTY26DECFUT").lot_size == 75
    assert registry.get("NFO:NIFTY27JANFUT").freeze_qty == 1800
    assert registry.get("NSE:INFY").freeze_qty == 5000
    assert registry.get("NSE:TCS").freeze_qty is None
    assert InstrumentRegistry().get("NSE:INFY").freeze_qty is None


def test_orders_above_the_freeze_qty_are_rejected_at_the_venue(
    tmp_path: Path, clock: ManualClock
) -> None:
    config = make_config(tmp_path, instruments={"freeze_qty": {"NSE:INFY": 100}})
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as client:
            publish(client, INFY, 1500.0)
            publish(client, TCS, 4000.0)
            over = client.submit(market(INFY, "BUY", 101, strategy_code="s"))
            assert over.status == OrderStatus.ORDER_STATUS_REJECTED
            assert over.reject_reason == RejectReason.REJECT_REASON_BROKER
            assert over.message == "qty 101 exceeds the freeze quantity 100 of NSE:INFY"
            at = client.submit(market(INFY, "BUY", 100, strategy_code="s"))
            assert at.status == OrderStatus.ORDER_STATUS_FILLED
            other = client.submit(market(TCS, "BUY", 1_000, strategy_code="s"))
            assert other.status == OrderStatus.ORDER_STATUS_FILLED
    finally:
        gateway.stop()


def test_autoslice_slice_is_refused_for_live(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="autoslice"):
        make_config(tmp_path, mode="live", execution={"autoslice": "slice"})
    assert make_config(tmp_path, execution={"autoslice": "slice"}).execution.autoslice == "slice"
