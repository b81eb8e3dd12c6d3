"""Kite-like lifecycle on paper (execution.simulator.kite_statuses): order updates carry
Kite's status string in raw, in the sequence a Kite user sees."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from google.protobuf.json_format import MessageToDict

from execgw.client import ExecutionClient, ExecutionResult, Quote, market, stop
from execgw.server.clock import ManualClock

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TIMEOUT_S, publish
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TIMEOUT_S, publish


@pytest.fixture
def client(tmp_path: Path, clock: ManualClock) -> Iterator[ExecutionClient]:
    execution = {
        "slippage_bps": 0.0,
        "simulator": {
            "kite_statuses": True,
            "price_source": "touch",
            "cap_to_displayed_qty": True,
        },
    }
    gateway = RunningGateway(make_config(tmp_path, execution=execution), clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as c:
            yield c
    finally:
        gateway.stop()


def raw(result: ExecutionResult) -> dict[str, Any]:
    return MessageToDict(result.raw)


def statuses(client: ExecutionClient, order_id: str) -> list[str]:
    """The Kite statuses the order's updates carried, in order, repeats collapsed."""
    seen: list[str] = []
    for event in client.stream_fills(
        from_sequence=1, include_order_updates=True, reconnect=False, heartbeats=True
    ):
        if event.WhichOneof("payload") == "heartbeat":
            break
        if event.WhichOneof("payload") == "order_update":
            update = event.order_update
            status = raw(update).get("status")
            if update.order_id == order_id and status and (not seen or seen[-1] != status):
                seen.append(status)
    return seen


def test_a_stop_goes_trigger_pending_open_complete(client: ExecutionClient) -> None:
    publish(client, INFY, 1000.00)
    sent = client.submit(stop(INFY, "BUY", 10, 1005.00, strategy_code="s"))
    assert raw(sent)["status"] == "TRIGGER PENDING"
    trigger = Quote(symbol=INFY, ltp=1006.0, bid=1005.9, ask=1006.1, bid_qty=50, ask_qty=50)
    assert client.publish_quotes([trigger]) == 1  # triggers, and 50 at the ask fill it
    done = client.get_order(sent.order_id)
    assert raw(done) == {"status": "COMPLETE", "filled_quantity": 10.0, "pending_quantity": 0.0}
    # The stream's order updates; the completing fill comes as a fill event, and the
    # order (GetOrder, ListOrders) then says COMPLETE.
    assert statuses(client, sent.order_id) == ["TRIGGER PENDING", "OPEN"]


def test_a_partly_filled_order_stays_open_and_an_ioc_remainder_is_cancelled(
    client: ExecutionClient,
) -> None:
    book = Quote(symbol=INFY, ltp=1000.0, bid=999.9, ask=1000.1, bid_qty=100, ask_qty=30)
    assert client.publish_quotes([book]) == 1
    day = client.submit(market(INFY, "BUY", 50, strategy_code="s"))
    assert raw(day) == {"status": "OPEN", "filled_quantity": 30.0, "pending_quantity": 20.0}
    ioc = client.submit(market(INFY, "SELL", 150, strategy_code="s", validity="IOC"))
    assert raw(ioc) == {"status": "CANCELLED", "filled_quantity": 100.0, "pending_quantity": 0.0}


def test_without_the_flag_paper_orders_carry_no_raw(tmp_path: Path, clock: ManualClock) -> None:
    gateway = RunningGateway(make_config(tmp_path), clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as client:
            publish(client, INFY, 1000.00)
            assert raw(client.submit(market(INFY, "BUY", 1, strategy_code="s"))) == {}
    finally:
        gateway.stop()
