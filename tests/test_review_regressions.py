"""Regressions from the code review: each test failed before its fix."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from execgw.client import ExecutionClient, OrderStatus, Unavailable, market
from execgw.client._common import StreamCursor
from execgw.server.clock import ManualClock
from execgw.server.journal import Journal
from execgw.server.recovery import rebuild, state_to_json
from execgw.v1 import gateway_pb2, market_data_pb2, orders_pb2

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
else:
    from conftest import RunningGateway, make_config

FILLED = OrderStatus.Value("ORDER_STATUS_FILLED")
REJECTED = OrderStatus.Value("ORDER_STATUS_REJECTED")


def quote(ltp: float) -> market_data_pb2.Quote:
    return market_data_pb2.Quote(symbol="NSE:INFY", ltp=ltp)


@pytest.fixture
def running(tmp_path: Path, clock: ManualClock) -> Iterator[RunningGateway]:
    config = make_config(
        tmp_path,
        journal={"probe_interval_s": 0.05, "snapshot_every": 1},
        execution={"pre_trade": {"duplicate_window_s": 5.0}, "slippage_bps": 0.0},
    )
    gateway = RunningGateway(config, clock)
    try:
        yield gateway
    finally:
        gateway.stop()


def test_snapshot_and_full_replay_agree_on_the_day_baseline(
    running: RunningGateway, clock: ManualClock
) -> None:
    with ExecutionClient(running.target) as client:
        client.publish_quotes([quote(100.0)])
        client.submit(market("NSE:INFY", "BUY", 100, strategy_code="S1", product="CNC"))
        client.publish_quotes([quote(90.0)])  # carried at -1000 into the next day
        clock.advance(timedelta(days=1))
        running.call(running.gateway.core.tick())
        client.submit(market("NSE:INFY", "BUY", 1, strategy_code="S1", product="CNC"))
        day_pnl = client.risk_state().day_pnl
    journal = Journal(Path(running.config.journal.path), read_only=True)
    try:
        from_snapshot = rebuild(journal)
        assert journal.latest_snapshot() is not None
        assert from_snapshot.risk.baseline_unrealized == Decimal("-1000.0")
        assert state_to_json(from_snapshot) == running.call(_state_json(running))
    finally:
        journal.close()
    assert day_pnl == 0.0  # yesterday's -1000 is not today's loss


async def _state_json(running: RunningGateway) -> str:
    return state_to_json(running.gateway.core._engine.state)


def test_a_backward_clock_step_does_not_roll_the_day_again(
    tmp_path: Path, clock: ManualClock
) -> None:
    config = make_config(
        tmp_path,
        execution={"circuit_breakers": {"max_trades_per_day": 1}},
    )
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target) as client:
            client.publish_quotes([quote(1500.0)])
            assert client.submit(market("NSE:INFY", "BUY", 1, strategy_code="S1")).status == FILLED
            assert client.risk_state().trades_today == 1
            clock.advance(timedelta(days=-1))  # NTP steps the clock back a day
            late = client.submit(market("NSE:INFY", "BUY", 1, strategy_code="S2"))
            assert late.status == REJECTED
            assert late.reject_reason == orders_pb2.REJECT_REASON_MAX_TRADES_PER_DAY
            assert client.risk_state().trades_today == 1
    finally:
        gateway.stop()


def test_the_retry_a_failed_commit_asks_for_is_not_a_duplicate(running: RunningGateway) -> None:
    journal = Path(running.config.journal.path)
    with ExecutionClient(running.target, retries=0, timeout=30) as client:
        client.publish_quotes([quote(1500.0)])
        intent = market("NSE:INFY", "BUY", 3, strategy_code="S1")
        holder = sqlite3.connect(journal, isolation_level=None, timeout=5)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(Unavailable):
                client.submit(intent, "retry-me")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        for _ in range(200):  # the probe flips health back; bounded, not timed
            try:
                result = client.submit(intent, "retry-me")
                break
            except Unavailable:
                continue
        assert result.status == FILLED, result.message
        assert [o.client_order_id for o in client.list_orders()] == ["retry-me"]


def test_a_core_that_cannot_rebuild_refuses_everything_instead_of_hanging(
    running: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = running.gateway.core

    async def broken_reload() -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(core, "_reload", broken_reload)
    with ExecutionClient(running.target, retries=0, timeout=10) as client:
        client.publish_quotes([quote(1500.0)])
        holder = sqlite3.connect(Path(running.config.journal.path), isolation_level=None, timeout=5)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(Unavailable):
                client.submit(market("NSE:INFY", "BUY", 1, strategy_code="S1"))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        with pytest.raises(Unavailable, match="restart it"):
            client.list_orders()
    assert core.healthy is False


def test_a_stream_anchored_at_head_zero_resumes_instead_of_going_live() -> None:
    cursor = StreamCursor(gateway_pb2.StreamFillsRequest(include_order_updates=True))
    assert cursor.resume_request().from_sequence == 0  # nothing known yet: live
    cursor.take(
        orders_pb2.ExecutionEvent(heartbeat=orders_pb2.Heartbeat(head_sequence=0)),
        heartbeats=False,
    )
    assert cursor.resume_request().from_sequence == 1


def test_a_position_unmarked_at_rollover_is_marked_by_its_first_quote(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Long 100 carried at +2000 (LTP 120); restarted overnight with an empty quote book.
    Today's fall back to 100 is a day loss of 2000 and must trip a 1500 limit."""
    config = make_config(
        tmp_path,
        execution={
            "slippage_bps": 0.0,
            "circuit_breakers": {"max_daily_loss_rupees": 1500.0},
        },
    )
    first = RunningGateway(config, clock)
    try:
        with ExecutionClient(first.target) as client:
            client.publish_quotes([quote(100.0)])
            client.submit(market("NSE:INFY", "BUY", 100, strategy_code="S1", product="CNC"))
            client.publish_quotes([quote(120.0)])
    finally:
        first.stop()
    clock.advance(timedelta(days=1))
    second = RunningGateway(config, clock)  # rolls the day with no quote known
    try:
        with ExecutionClient(second.target) as client:
            client.publish_quotes([quote(120.0)])  # first quote today: the mark
            assert client.risk_state().day_pnl == 0.0
            client.publish_quotes([quote(100.0)])
            state = client.risk_state()
            assert state.day_pnl == -2000.0
            assert state.state == orders_pb2.TRADING_STATE_REDUCING
    finally:
        second.stop()
