"""Fill-report latency (execution.simulator.latency_ms.fill), end to end through the
real server and client: the simulated exchange fills an order at T on the quote in
force at T; the gateway learns of it (OrderFilled) at its first command, tick or quote
from T + fill latency on (tests/test_sim_on_time.py: with no quote at all), and until
then its order shows no such fill. A cancel that
comes in between cannot undo the fill. A restart in between neither loses nor repeats
the report. The ManualClock is the only time; slippage is 0, so every fill price is the
price it met."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from execgw.client import ExecutionClient, OrderStatus, Quote, limit, market
from execgw.server.clock import ManualClock
from execgw.server.events import FillExecuted, OrderFilled
from execgw.server.journal import Journal
from execgw.server.venues.latency import LatencyModel

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TIMEOUT_S, publish
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TIMEOUT_S, publish

FILLED = OrderStatus.ORDER_STATUS_FILLED
PLACED = OrderStatus.ORDER_STATUS_PLACED
PARTIAL = OrderStatus.ORDER_STATUS_PARTIAL
PENDING_CANCEL = OrderStatus.ORDER_STATUS_PENDING_CANCEL
CANCELLED = OrderStatus.ORDER_STATUS_CANCELLED

FILL_LATENCY: dict[str, Any] = {
    "slippage_bps": 0.0,
    "simulator": {"latency_ms": {"fill": 100.0}},
}
# Fills capped by the displayed quantity, priced at the touch: an order can be part
# filled at the exchange with the rest working there.
CAPPED: dict[str, Any] = {
    "slippage_bps": 0.0,
    "simulator": {
        "price_source": "touch",
        "cap_to_displayed_qty": True,
        "latency_ms": {"fill": 100.0},
    },
}


def ms(n: int) -> timedelta:
    return timedelta(milliseconds=n)


def book(ask: float, ask_qty: int) -> Quote:
    return Quote(symbol=INFY, ltp=ask, bid=ask - 0.05, ask=ask, bid_qty=ask_qty, ask_qty=ask_qty)


@pytest.fixture
def client(tmp_path: Path, clock: ManualClock) -> Iterator[ExecutionClient]:
    gateway = RunningGateway(make_config(tmp_path, execution=FILL_LATENCY), clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as c:
            yield c
    finally:
        gateway.stop()


@pytest.fixture
def capped(tmp_path: Path, clock: ManualClock) -> Iterator[ExecutionClient]:
    gateway = RunningGateway(make_config(tmp_path, execution=CAPPED), clock)
    try:
        with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as c:
            yield c
    finally:
        gateway.stop()


def test_a_fill_is_reported_after_its_latency_at_the_price_it_was_made_at(
    client: ExecutionClient, clock: ManualClock
) -> None:
    publish(client, INFY, 1000.00)
    sent = client.submit(market(INFY, "BUY", 10, strategy_code="s"))
    # Filled at the exchange at t0, at 1000; the report reaches the gateway at t0 + 100.
    assert (sent.status, sent.filled_qty) == (PLACED, 0)
    assert client.positions("s") == []
    clock.advance(ms(50))
    publish(client, INFY, 1010.00)  # t0 + 50: the report is still on its way
    assert client.get_order(sent.order_id).filled_qty == 0
    assert client.positions("s") == []
    clock.advance(ms(100))
    publish(client, INFY, 1020.00)  # t0 + 150: the report arrived (due at t0 + 100)
    done = client.get_order(sent.order_id)
    assert (done.status, done.filled_qty, done.avg_price_decimal) == (FILLED, 10, "1000.00")
    (position,) = client.positions("s")
    assert (position.net_qty, position.avg_price) == (10, 1000.0)


def test_a_cancel_after_the_exchange_filled_the_order_does_not_undo_the_fill(
    client: ExecutionClient, clock: ManualClock
) -> None:
    publish(client, INFY, 1000.00)
    sent = client.submit(market(INFY, "BUY", 10, strategy_code="s"))
    clock.advance(ms(10))
    # The gateway still shows it working, so the cancel is sent; the exchange has
    # nothing left to cancel.
    assert client.cancel(sent.order_id).status == PENDING_CANCEL
    clock.advance(ms(140))
    publish(client, INFY, 990.00)
    done = client.get_order(sent.order_id)
    assert (done.status, done.filled_qty, done.avg_price_decimal) == (FILLED, 10, "1000.00")


def test_a_cancel_of_a_part_filled_order_cancels_only_the_rest_after_the_report(
    capped: ExecutionClient, clock: ManualClock
) -> None:
    assert capped.publish_quotes([book(1000.00, 60)]) == 1
    sent = capped.submit(market(INFY, "BUY", 100, strategy_code="s"))
    # 60 filled at the exchange (all the ask shows), 40 working there; nothing reported.
    assert (sent.status, sent.filled_qty) == (PLACED, 0)
    clock.advance(ms(10))
    assert capped.cancel(sent.order_id).status == PENDING_CANCEL
    clock.advance(ms(140))
    # The cancel took the 40 off the exchange at t0 + 10: this quote's 100 on the ask
    # fill none of them. The report of the 60 comes first, then the cancel's.
    assert capped.publish_quotes([book(1001.00, 100)]) == 1
    done = capped.get_order(sent.order_id)
    assert (done.status, done.filled_qty, done.avg_price_decimal) == (CANCELLED, 60, "1000.00")


def test_an_ioc_remainder_is_cancelled_behind_the_report_of_its_fill(
    capped: ExecutionClient, clock: ManualClock
) -> None:
    assert capped.publish_quotes([book(1000.00, 60)]) == 1
    sent = capped.submit(limit(INFY, "BUY", 100, 1000.00, strategy_code="s", validity="IOC"))
    assert (sent.status, sent.filled_qty) == (PLACED, 0)
    clock.advance(ms(100))
    assert capped.publish_quotes([book(1000.00, 60)]) == 1
    done = capped.get_order(sent.order_id)
    assert (done.status, done.filled_qty) == (CANCELLED, 60)
    assert done.message.startswith("IOC remainder 40 of 100 cancelled")


def _journaled(path: str, order_id: str) -> tuple[list[OrderFilled], list[FillExecuted]]:
    journal = Journal(Path(path), read_only=True)
    try:
        events = [r.event for r in journal.records_after(0, 10_000)]
    finally:
        journal.close()
    reported = [e for e in events if isinstance(e, OrderFilled) and e.fill.order_id == order_id]
    made = [e for e in events if isinstance(e, FillExecuted) and e.fill.order_id == order_id]
    return reported, made


@pytest.mark.parametrize("snapshot_every", [1, 10_000], ids=["from-snapshot", "from-journal"])
def test_a_restart_while_a_report_is_on_its_way_neither_loses_nor_repeats_it(
    tmp_path: Path, clock: ManualClock, snapshot_every: int
) -> None:
    """Stopping writes no snapshot, and every answer was durable before it was given,
    so a restart after stop() rebuilds exactly what one after kill -9 does: from the
    journal alone (snapshot_every 10,000), or from a snapshot taken while the report
    was on its way (snapshot_every 1)."""
    execution = {**CAPPED, "charges": {"enabled": True}}
    config = make_config(tmp_path, execution=execution, journal={"snapshot_every": snapshot_every})
    running = RunningGateway(config, clock)
    with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
        assert c.publish_quotes([book(1000.00, 60)]) == 1
        order_id = c.submit(market(INFY, "BUY", 100, product="MIS", strategy_code="s")).order_id
        assert c.get_order(order_id).filled_qty == 0  # 60 made at t0, reported at t0 + 100
    running.stop()
    running = RunningGateway(config, clock)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            assert c.get_order(order_id).filled_qty == 0
            clock.advance(ms(150))
            # The 60's report lands; the 40 left at the exchange fill at 1001, reported
            # at t0 + 250.
            assert c.publish_quotes([book(1001.00, 100)]) == 1
            now = c.get_order(order_id)
            assert (now.status, now.filled_qty, now.avg_price_decimal) == (PARTIAL, 60, "1000.00")
            clock.advance(ms(100))
            assert c.publish_quotes([book(1002.00, 100)]) == 1
            done = c.get_order(order_id)
            # (60 x 1000 + 40 x 1001) / 100 = 1000.40
            assert (done.status, done.filled_qty) == (FILLED, 100)
            assert Decimal(done.avg_price_decimal) == Decimal("1000.40")
            # Brokerage: min(Rs 20, 0.03%) once for the order (60,000 x 0.03% = 18.00,
            # then 2.00 of the 40's 12.01 up to the cap), across the restart.
            reported, made = _journaled(config.journal.path, order_id)
            assert [(e.fill.qty, str(e.fill.price)) for e in reported] == [
                (60, "1000.00"),
                (40, "1001.00"),
            ]
            assert [e.fill.fill_id for e in made] == [e.fill.fill_id for e in reported]
            assert len({e.fill.fill_id for e in reported}) == 2
            brokerage = sum(e.fill.charges.brokerage for e in reported if e.fill.charges)
            assert brokerage == Decimal("20.00")
    finally:
        running.stop()


def test_fill_latency_is_seeded_and_jitter_alone_does_not_turn_it_on() -> None:
    model = LatencyModel(fill_ms=Decimal(100), jitter_ms=Decimal(10), seed=3)
    first = model.delay("fill", "F0000000001")
    assert first == model.delay("fill", "F0000000001")
    assert timedelta(milliseconds=100) <= first < timedelta(milliseconds=110)
    assert model.active("fill")
    jitter_only = LatencyModel(insert_ms=Decimal(5), jitter_ms=Decimal(10), seed=3)
    assert jitter_only.active("insert")
    assert jitter_only.active("cancel")
    assert not jitter_only.active("fill")


def test_a_restart_between_a_cancel_and_the_report_it_waits_for(
    tmp_path: Path, clock: ManualClock
) -> None:
    """60 of 100 filled at the exchange at t0 (report due t0 + 100); the cancel at
    t0 + 10 takes the 40 off; a restart; then the report lands and the cancel is
    confirmed behind it. The 40 never fill, though the next quote offers 100."""
    config = make_config(tmp_path, execution=CAPPED)
    running = RunningGateway(config, clock)
    with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
        assert c.publish_quotes([book(1000.00, 60)]) == 1
        day = c.submit(market(INFY, "BUY", 100, strategy_code="s")).order_id
        ioc = c.submit(limit(INFY, "BUY", 50, 1000.00, strategy_code="s", validity="IOC"))
        # The ask's 60 went to the first order: the IOC took none, and is cancelled.
        assert (ioc.status, ioc.filled_qty) == (CANCELLED, 0)
        clock.advance(ms(10))
        assert c.cancel(day).status == PENDING_CANCEL
    running.stop()
    running = RunningGateway(config, clock)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            assert c.get_order(day).status == PENDING_CANCEL
            clock.advance(ms(140))
            assert c.publish_quotes([book(1001.00, 100)]) == 1
            done = c.get_order(day)
            assert (done.status, done.filled_qty, done.avg_price_decimal) == (
                CANCELLED,
                60,
                "1000.00",
            )
        reported, made = _journaled(config.journal.path, day)
        assert [e.fill.qty for e in reported] == [60]
        assert [e.fill.qty for e in made] == [60]
    finally:
        running.stop()


def test_an_ioc_part_filled_before_a_restart_is_cancelled_behind_its_report_after_it(
    tmp_path: Path, clock: ManualClock
) -> None:
    config = make_config(tmp_path, execution=CAPPED)
    running = RunningGateway(config, clock)
    with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
        assert c.publish_quotes([book(1000.00, 60)]) == 1
        ioc = c.submit(limit(INFY, "BUY", 100, 1000.00, strategy_code="s", validity="IOC"))
        assert (ioc.status, ioc.filled_qty) == (PLACED, 0)
    running.stop()
    running = RunningGateway(config, clock)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            clock.advance(ms(100))
            # 100 on the ask now: an IOC remainder must not rest and take them.
            assert c.publish_quotes([book(1000.00, 100)]) == 1
            done = c.get_order(ioc.order_id)
            assert (done.status, done.filled_qty) == (CANCELLED, 60)
            assert done.message.startswith("IOC remainder 40 of 100 cancelled")
    finally:
        running.stop()


def test_a_dry_run_cancel_keeps_simulated_fills_whose_reports_are_on_their_way(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dry_run_fills: simulate with fill latency: a dry-run cancel is never sent, but
    the simulated exchange had filled 60 of 100 already; they stand, reported at
    t0 + 100, and only the 40 left are cancelled."""
    for name in ("KITE_API_KEY", "KITE_API_SECRET", "KITE_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    config = make_config(
        tmp_path,
        mode="live",
        execution={**CAPPED, "dry_run": True, "dry_run_fills": "simulate"},
        # Never called: a dry run holds no broker link.
        broker={"kite": {"root": "http://127.0.0.1:9"}},
    )
    running = RunningGateway(config, clock)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            assert c.publish_quotes([book(1000.00, 60)]) == 1
            order_id = c.submit(market(INFY, "BUY", 100, strategy_code="s")).order_id
            assert c.get_order(order_id).filled_qty == 0
            clock.advance(ms(10))
            assert c.cancel(order_id).status == PENDING_CANCEL
            clock.advance(ms(140))
            assert c.publish_quotes([book(1001.00, 100)]) == 1
            done = c.get_order(order_id)
            assert (done.status, done.filled_qty, done.avg_price_decimal) == (
                CANCELLED,
                60,
                "1000.00",
            )
            assert done.dry_run
    finally:
        running.stop()
