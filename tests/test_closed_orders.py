"""Finished orders are kept compact (closed_orders.py) and every answer about them is
unchanged: GetOrder, ListOrders (filters and pages), an idempotent retry, the same
after a snapshot and a restart. Open orders stay live Orders."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from execgw.client import ExecutionClient, OrderStatus, limit, market
from execgw.server.clock import ManualClock
from execgw.server.closed_orders import ClosedOrder
from execgw.server.domain import Order
from execgw.server.ledger import Ledger

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TCS, TIMEOUT_S, paged, publish
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TCS, TIMEOUT_S, paged, publish

# A snapshot every few events, so the restart below loads finished orders from one.
JOURNAL = {"snapshot_every": 3}


def _start(directory: Path, clock: ManualClock) -> RunningGateway:
    return RunningGateway(make_config(directory, journal=JOURNAL), clock)


def _answers(client: ExecutionClient, ids: list[str]) -> list[bytes]:
    """Everything a client can ask about these orders, serialized for comparison."""
    out = [client.get_order(i).SerializeToString(deterministic=True) for i in ids]
    out += [o.SerializeToString(deterministic=True) for o in client.list_orders()]
    for status in (OrderStatus.ORDER_STATUS_FILLED, OrderStatus.ORDER_STATUS_PLACED):
        out += [o.SerializeToString(deterministic=True) for o in client.list_orders(status=status)]
    out += [o.SerializeToString(deterministic=True) for o in client.list_orders(symbol=TCS)]
    return out + paged(client, page_size=1)


@pytest.fixture
def book(tmp_path: Path, clock: ManualClock) -> tuple[Path, dict[str, bytes], str]:
    """A day with a filled, a cancelled, a rejected and a resting order; each one's
    answer as the call that placed or finished it gave it, from the live order."""
    running = _start(tmp_path, clock)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            publish(c, INFY, 1234.55)
            filled = c.submit(market(INFY, "BUY", 10, strategy_code="s1"), "k-filled")
            resting = c.submit(limit(INFY, "BUY", 5, 1230.0, strategy_code="s1"), "k-rest")
            to_cancel = c.submit(limit(INFY, "BUY", 3, 1231.0, strategy_code="s2"), "k-cxl")
            cancelled = c.cancel(to_cancel.order_id)
            rejected = c.submit(market(TCS, "BUY", 1, strategy_code="s2"), "k-rej")  # no quote
            answers = {
                r.order_id: r.SerializeToString(deterministic=True)
                for r in (filled, resting, cancelled, rejected)
            }
            assert rejected.status == OrderStatus.ORDER_STATUS_REJECTED
            assert cancelled.status == OrderStatus.ORDER_STATUS_CANCELLED
            # One more event, so the orders the last one finished are compacted too.
            publish(c, INFY, 1234.60)
    finally:
        running.stop()
    return tmp_path, answers, resting.order_id


def test_finished_orders_are_compact_and_answer_as_they_did_across_a_restart(
    book: tuple[Path, dict[str, bytes], str], clock: ManualClock
) -> None:
    directory, placed, resting = book
    ids = sorted(placed)
    seen: list[list[bytes]] = []
    for _ in range(2):  # before and after another restart (the second one from a snapshot)
        running = _start(directory, clock)
        try:
            with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
                for order_id, answer in placed.items():
                    assert c.get_order(order_id).SerializeToString(deterministic=True) == answer
                seen.append(_answers(c, ids))
                # An idempotent retry of a finished order returns it, not a new one.
                retry = c.submit(market(INFY, "BUY", 10, strategy_code="s1"), "k-filled")
                assert retry.SerializeToString(deterministic=True) == placed[retry.order_id]
            # Finished orders are compact in memory, or (once a snapshot took them) only in
            # the journal's archive.
            ledger = running.ledger
            kinds = {o: type(ledger._orders.get(o) or ledger._found(o)) for o in ids}
            assert kinds == {o: Order if o == resting else ClosedOrder for o in ids}
        finally:
            running.stop()
    assert seen[0] == seen[1]


def test_a_finished_order_decodes_to_the_order_it_was(
    book: tuple[Path, dict[str, bytes], str], clock: ManualClock
) -> None:
    directory, _, _ = book
    running = _start(directory, clock)
    try:
        ledger = running.ledger
        live = {o.order_id: o for o in ledger.orders()}
        # In memory, or in the journal's archive.
        closed = [v for v in ledger.orders_after("") if isinstance(v, ClosedOrder)]
        assert len(closed) == 3
        for compact in closed:
            order = live[compact.order_id]
            assert compact.decode() == order == ledger.snapshot(compact.order_id)
            assert ledger.order_for_client_id(order.intent.strategy_code, order.client_order_id)
            assert (compact.intent.strategy_code, compact.intent.symbol) == (
                order.intent.strategy_code,
                order.intent.symbol,
            )
            assert (compact.status, compact.created_at, compact.reject_reason) == (
                order.status,
                order.created_at,
                order.reject_reason,
            )
        # The export round trip (what tests and tools restore from) keeps them compact, in
        # memory (the restored ledger has no archive).
        restored = Ledger.restore(*ledger.export())
        assert list(restored.orders()) == list(ledger.orders())
        assert sum(isinstance(v, ClosedOrder) for v in restored._orders.values()) == len(closed)
    finally:
        running.stop()
