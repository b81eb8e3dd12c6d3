"""Regressions from the review of the live path: fills are never lost to a failed or
lagging trades call, a cancel that was lost is sent again (also after a restart), a
refused square-off is not retried without end, and a journal's open orders are never
picked up by another venue."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from execgw.client import ExecutionClient, builders
from execgw.server.app import Gateway
from execgw.server.clock import ManualClock
from execgw.server.config import ConfigError
from execgw.server.venues.kite.link import KiteLink
from execgw.v1 import orders_pb2

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TIMEOUT_S
    from tests.kite_standin import KiteStandIn
    from tests.test_live_kite import live_config, placements, start_live, status_is, until
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TIMEOUT_S
    from kite_standin import KiteStandIn
    from test_live_kite import live_config, placements, start_live, status_is, until

pytest_plugins = ["test_live_kite"]
D = Decimal
S = orders_pb2


def failing_first(real: Callable[..., Any], times: int) -> Callable[..., Any]:
    """The SDK call, failing its first `times` calls as a lost answer would."""
    calls = [0]

    def call(**kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] <= times:
            raise requests.exceptions.ReadTimeout("no answer in time")
        return real(**kwargs)

    return call


def link_of(running: RunningGateway) -> KiteLink:
    link = running.gateway.link
    assert link is not None
    return link


def test_a_failed_trades_call_does_not_lose_the_fill(
    tmp_path: Path, clock: ManualClock, standin: KiteStandIn, credentials: None
) -> None:
    running = start_live(tmp_path, clock, standin, poll_interval_s=60.0)
    link = link_of(running)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            order = c.submit(builders.limit(INFY, "BUY", 10, D("1499"), strategy_code="s1"), "t1")
            kite = link._kite
            kite.order_trades = failing_first(kite.order_trades, 1)  # type: ignore[method-assign]
            standin.fill(order.venue_order_id, 10, D("1499"))
            running.call(link.poll_once())  # the trades call fails
            running.call(link.poll_once())  # the order book is unchanged: looked at again
            done = c.get_order(order.order_id)
            assert done.status == S.ORDER_STATUS_FILLED
            assert done.filled_qty == 10
            assert c.positions("s1")[0].net_qty == 10
    finally:
        running.stop()


def test_a_cancel_after_a_partial_fill_keeps_the_fill_the_trades_call_missed(
    tmp_path: Path, clock: ManualClock, standin: KiteStandIn, credentials: None
) -> None:
    running = start_live(tmp_path, clock, standin, poll_interval_s=60.0)
    link = link_of(running)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            order = c.submit(builders.limit(INFY, "BUY", 10, D("1499"), strategy_code="s1"), "t2")
            kite = link._kite
            kite.order_trades = failing_first(kite.order_trades, 1)  # type: ignore[method-assign]
            standin.fill(order.venue_order_id, 4, D("1499"))
            standin.set_status(order.venue_order_id, "CANCELLED")
            running.call(link.poll_once())
            assert c.get_order(order.order_id).status == S.ORDER_STATUS_PLACED
            running.call(link.poll_once())
            done = c.get_order(order.order_id)
            assert done.status == S.ORDER_STATUS_CANCELLED
            assert done.filled_qty == 4
    finally:
        running.stop()


def test_a_cancel_whose_answer_was_lost_is_sent_again(
    tmp_path: Path, clock: ManualClock, standin: KiteStandIn, credentials: None
) -> None:
    running = start_live(tmp_path, clock, standin, timeout_s=0.2)
    link = link_of(running)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            order = c.submit(builders.limit(INFY, "BUY", 10, D("1499"), strategy_code="s1"), "t3")
            kite = link._kite
            real = kite.cancel_order

            def lost(**kwargs: Any) -> Any:
                raise requests.exceptions.ReadTimeout("no answer in time")

            kite.cancel_order = lost  # type: ignore[method-assign, assignment]
            assert c.cancel(order.order_id).status == S.ORDER_STATUS_PENDING_CANCEL
            kite.cancel_order = real  # type: ignore[method-assign]
            done = until(lambda: c.get_order(order.order_id), status_is(S.ORDER_STATUS_CANCELLED))
            assert done.raw["status"] == "CANCELLED"
        deletes = [r for r in standin.order_calls() if r.method == "DELETE"]
        assert len(deletes) == 1
    finally:
        running.stop()


def test_a_cancel_journaled_but_not_sent_before_a_stop_is_sent_after_the_restart(
    tmp_path: Path, clock: ManualClock, standin: KiteStandIn, credentials: None
) -> None:
    running = start_live(tmp_path, clock, standin)
    link = link_of(running)
    with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
        order = c.submit(builders.limit(INFY, "BUY", 10, D("1499"), strategy_code="s1"), "t4")
        # As if the process died between the journal commit and the DELETE.
        link._cancel_when_known = lambda tracked: None  # type: ignore[method-assign]
        assert c.cancel(order.order_id).status == S.ORDER_STATUS_PENDING_CANCEL
    running.stop()
    assert not [r for r in standin.order_calls() if r.method == "DELETE"]
    running = RunningGateway(running.config, clock)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            until(lambda: c.get_order(order.order_id), status_is(S.ORDER_STATUS_CANCELLED))
    finally:
        running.stop()
    assert standin.order(order.venue_order_id)["status"] == "CANCELLED"


def test_a_square_off_the_broker_keeps_refusing_is_tried_three_times_a_day(
    tmp_path: Path, clock: ManualClock, standin: KiteStandIn, credentials: None
) -> None:
    running = start_live(tmp_path, clock, standin)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            order = c.submit(builders.market(INFY, "BUY", 10, strategy_code="s1"), "mis")
            until(lambda: c.get_order(order.order_id), status_is(S.ORDER_STATUS_FILLED))
            before = len(placements(standin))
            standin.inject("insufficient_funds", 100)
            clock.advance(timedelta(hours=5, minutes=30))  # past 15:20 IST

            def sells() -> int:
                return sum(
                    1 for p in placements(standin)[before:] if p["transaction_type"] == "SELL"
                )

            def tick_then_count() -> int:
                running.call(running.gateway.core.tick())
                return sells()

            def square_offs() -> list[int]:
                return [
                    o.status for o in c.list_orders(strategy_code="s1") if o.tag == "MIS_SQUAREOFF"
                ]

            until(tick_then_count, lambda n: n >= 3)
            until(square_offs, lambda s: s == [S.ORDER_STATUS_REJECTED] * 3)
            for _ in range(5):
                running.call(running.gateway.core.tick())
            assert sells() == 3
    finally:
        running.stop()


def test_a_journal_with_open_orders_of_another_venue_refuses_to_start(
    tmp_path: Path, clock: ManualClock, standin: KiteStandIn, credentials: None
) -> None:
    running = start_live(tmp_path, clock, standin)
    with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
        c.submit(builders.limit(INFY, "BUY", 10, D("1499"), strategy_code="s1"), "open")
    running.stop()
    dry = live_config(tmp_path, standin).with_overrides(
        execution={**running.config.execution.model_dump(), "dry_run": True}
    )
    with pytest.raises(ConfigError, match="open orders at venue kite"):
        Gateway(dry, clock=clock)
    paper = make_config(tmp_path)
    with pytest.raises(ConfigError, match="routes to paper"):
        Gateway(paper, clock=clock)
