"""kill -9 between journaling an order and the broker's answer: the restart reconciles
with the broker by the order's tag, and never sends the order a second time.

Real processes: `execgw serve` in live mode against the Kite stand-in running in this
test process, with the stand-in's credentials in the environment.

- The order reached Kite, whose answer was held (timeout_after_accept) when the gateway
  died: at restart it is found in Kite's order book by its tag and becomes PLACED with
  Kite's order id. Kite saw one place call in all.
- The order was journaled but never sent (held in the adapter's rate shaper) when the
  gateway died: at restart it is absent from Kite's book, and once no request could
  still be on its way it is settled as REJECTED (broker), never placed and not sent.
- A cancel was journaled but not yet sent when the gateway died: the restart sends it,
  and the order is CANCELLED at Kite and here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import yaml

from execgw.client import ExecutionClient, OrderStatus, limit
from execgw.server.events import (
    OrderAmbiguous,
    OrderFilled,
    OrderSubmitted,
    VenueAccepted,
    VenueRejected,
)
from execgw.server.journal import Journal, JournalRecord
from execgw.v1 import market_data_pb2, orders_pb2

if TYPE_CHECKING:
    from tests.durability_helpers import RELAXED_EXECUTION, ServerProcess, free_port
    from tests.kite_standin import KiteStandIn, RecordedRequest
else:
    from durability_helpers import RELAXED_EXECUTION, ServerProcess, free_port
    from kite_standin import KiteStandIn, RecordedRequest

T = TypeVar("T")
STRATEGY = "CRASH1"
SUBMITTED = OrderStatus.Value("ORDER_STATUS_SUBMITTED")
PLACED = OrderStatus.Value("ORDER_STATUS_PLACED")
FILLED = OrderStatus.Value("ORDER_STATUS_FILLED")
CANCELLED = OrderStatus.Value("ORDER_STATUS_CANCELLED")
REJECTED = OrderStatus.Value("ORDER_STATUS_REJECTED")
DEADLINE_S = 10.0


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = DEADLINE_S) -> T:
    """Poll `probe` until it returns something other than None, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)  # bounds the poll rate; the deadline bounds the wait


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[KiteStandIn]:
    with KiteStandIn() as running:
        # The gateway processes inherit these: the stand-in's own credentials.
        monkeypatch.setenv("KITE_API_KEY", running.api_key)
        monkeypatch.setenv("KITE_ACCESS_TOKEN", running.access_token)
        monkeypatch.delenv("KITE_API_SECRET", raising=False)
        yield running


def write_live_config(tmp_path: Path, standin: KiteStandIn, port: int, **kite: Any) -> Path:
    data = {
        "mode": "live",
        "listen": f"127.0.0.1:{port}",
        "journal": {"path": str(tmp_path / "live.db")},
        "market_data": {"source": "external"},
        "execution": RELAXED_EXECUTION,
        # Round the clock: MIS is not refused after 15:20 IST.
        "trading_day": {"mis_square_off": None},
        "broker": {
            "kite": {"root": standin.url, "poll_interval_s": 0.2, "unresolved_grace_s": 1.0, **kite}
        },
        "server": {"shutdown_grace_s": 1.0},
    }
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def place_calls(standin: KiteStandIn) -> list[RecordedRequest]:
    return [r for r in standin.order_calls() if r.method == "POST"]


def journal_records(path: Path) -> list[JournalRecord]:
    journal = Journal(path, read_only=True)
    try:
        return [row.decode() for row in journal.rows()]
    finally:
        journal.close()


def events_of(records: list[JournalRecord], order_id: str) -> list[str]:
    return [
        type(r.event).__name__
        for r in records
        if r.order is not None and r.order.order_id == order_id
    ]


def start(path: Path, port: int) -> ServerProcess:
    server = ServerProcess(path, port)
    server.wait_serving()
    return server


def submit_limit(target: str, client_order_id: str, price: str) -> orders_pb2.ExecutionResult:
    with ExecutionClient(target) as client:
        client.publish_quotes([market_data_pb2.Quote(symbol="NSE:INFY", ltp=1500.0)])
        return client.submit(
            limit("NSE:INFY", "BUY", 10, Decimal(price), strategy_code=STRATEGY, product="NRML"),
            client_order_id,
        )


def get_order(target: str, order_id: str) -> orders_pb2.ExecutionResult:
    with ExecutionClient(target) as client:
        return client.get_order(order_id)


def order_in(
    target: str, order_id: str, status: int
) -> Callable[[], orders_pb2.ExecutionResult | None]:
    """A probe for wait_for: the order once it has `status`."""

    def probe() -> orders_pb2.ExecutionResult | None:
        order = get_order(target, order_id)
        return order if order.status == status else None

    return probe


def test_crash_while_the_broker_answer_is_held_reconciles_by_tag(
    tmp_path: Path, standin: KiteStandIn
) -> None:
    port = free_port()
    # The HTTP call outlives the process: Kite took the order, its answer is held.
    path = write_live_config(tmp_path, standin, port, timeout_s=30.0, ack_wait_s=0.0)
    standin.hold_s = 30.0
    standin.inject("timeout_after_accept")
    journal = tmp_path / "live.db"

    first = start(path, port)
    try:
        result = submit_limit(first.target, "crash-held-1", "1490.00")
        # Answered once journaled, before the broker's answer (ack_wait_s 0).
        assert result.status == SUBMITTED, result
        assert result.venue_order_id == ""
        kite_order = wait_for("the order at Kite", lambda: standin.orders() or None)
        assert len(kite_order) == 1
        assert len(place_calls(standin)) == 1
        # Durable as submitted, with no answer journaled.
        assert events_of(journal_records(journal), result.order_id) == ["OrderSubmitted"]
        first.kill()
    finally:
        first.close()

    second = start(path, port)
    try:
        # Reconciled before serving: found by its tag, with Kite's id.
        order = get_order(second.target, result.order_id)
        assert order.status == PLACED, order
        assert order.venue_order_id == kite_order[0]["order_id"]
        assert kite_order[0]["tag"] == result_tag(journal, result.order_id)
        # The order works on: a fill at Kite arrives by polling, once.
        trade_id = standin.fill(order.venue_order_id)
        filled = wait_for("the fill", order_in(second.target, result.order_id, FILLED))
        assert filled.filled_qty == 10
        assert Decimal(filled.avg_price_decimal) == Decimal("1490.00")
    finally:
        second.close()

    # Exactly one order was ever sent to the broker.
    assert len(place_calls(standin)) == 1
    assert len(standin.orders()) == 1
    records = journal_records(journal)
    kinds = events_of(records, result.order_id)
    assert kinds.count("OrderSubmitted") == 1
    assert kinds.count("VenueAccepted") == 1
    assert kinds.count("OrderFilled") == 1
    accepted = next(r.event for r in records if isinstance(r.event, VenueAccepted))
    assert accepted.venue_order_id == order.venue_order_id
    fills = [r.event.fill for r in records if isinstance(r.event, OrderFilled)]
    assert [f.venue_trade_id for f in fills] == [trade_id]


def result_tag(journal: Path, order_id: str) -> str:
    for record in journal_records(journal):
        if isinstance(record.event, OrderSubmitted) and record.event.order_id == order_id:
            return str(record.event.request["tag"])
    raise AssertionError(f"no OrderSubmitted for {order_id}")


def test_crash_before_the_order_was_sent_settles_it_as_never_placed(
    tmp_path: Path, standin: KiteStandIn
) -> None:
    port = free_port()
    # One order a minute: the second order is journaled, then waits in the adapter's
    # rate shaper, and never leaves the process before it dies.
    path = write_live_config(
        tmp_path, standin, port, orders_per_minute=1, timeout_s=1.0, ack_wait_s=0.0
    )
    journal = tmp_path / "live.db"

    first = start(path, port)
    try:
        sent = submit_limit(first.target, "crash-sent-1", "1490.00")
        placed = wait_for("the first order's ack", order_in(first.target, sent.order_id, PLACED))
        held = submit_limit(first.target, "crash-held-2", "1491.00")
        assert held.status == SUBMITTED, held
        assert events_of(journal_records(journal), held.order_id) == ["OrderSubmitted"]
        assert len(place_calls(standin)) == 1
        first.kill()
    finally:
        first.close()
    assert len(standin.orders()) == 1

    second = start(path, port)
    try:
        # Not in Kite's book: in doubt, until no request could still be on its way...
        settled = wait_for("the settlement", order_in(second.target, held.order_id, REJECTED))
        # ...then refused as never placed, and not sent again.
        assert settled.reject_reason == orders_pb2.REJECT_REASON_BROKER
        assert "never placed" in settled.message
        assert "not sent again" in settled.message
        assert settled.venue_order_id == ""
        # The order that did reach Kite is untouched.
        again = get_order(second.target, sent.order_id)
        assert again.status == PLACED
        assert again.venue_order_id == placed.venue_order_id
    finally:
        second.close()

    assert len(place_calls(standin)) == 1
    assert len(standin.orders()) == 1
    records = journal_records(journal)
    assert events_of(records, held.order_id) == [
        "OrderSubmitted",
        "OrderAmbiguous",
        "VenueRejected",
    ]
    ambiguous = next(r.event for r in records if isinstance(r.event, OrderAmbiguous))
    assert ambiguous.order_id == held.order_id
    rejected = next(r.event for r in records if isinstance(r.event, VenueRejected))
    assert rejected.message == settled.message


def test_crash_before_a_cancel_was_sent_sends_it_at_restart(
    tmp_path: Path, standin: KiteStandIn
) -> None:
    port = free_port()
    # One order call a minute: the cancel is journaled, then waits in the rate shaper.
    path = write_live_config(
        tmp_path, standin, port, orders_per_minute=1, timeout_s=1.0, ack_wait_s=0.0
    )
    first = start(path, port)
    try:
        sent = submit_limit(first.target, "crash-cancel-1", "1490.00")
        placed = wait_for("the ack", order_in(first.target, sent.order_id, PLACED))
        with ExecutionClient(first.target) as client:
            pending = client.cancel(sent.order_id)
        assert pending.status == OrderStatus.Value("ORDER_STATUS_PENDING_CANCEL")
        assert [r.method for r in standin.order_calls()] == ["POST"]
        first.kill()
    finally:
        first.close()

    second = start(path, port)
    try:
        # The cancel the operator asked for reaches Kite after the restart.
        cancelled = wait_for(
            "the cancel", order_in(second.target, sent.order_id, CANCELLED), timeout=3.0
        )
        assert cancelled.venue_order_id == placed.venue_order_id
    finally:
        second.close()
    assert [r.method for r in standin.order_calls()] == ["POST", "DELETE"]
    assert standin.orders()[0]["status"] == "CANCELLED"
