"""Marks are durable state, and a position with no mark is unknown, not zero
(issue 8, defect 4).

Before: quotes were not journaled, so a restarted gateway valued every open position
at zero. The journaled day peak still held the earlier gain, so the drawdown breaker
tripped with no price move (REDUCING, resting orders cancelled), and a position
carried into the day at a loss showed a phantom gain.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from execgw.client import ExecutionClient, Quote, RejectReason, TradingState, limit, market
from execgw.server.clock import ManualClock
from execgw.server.journal import Journal
from execgw.server.recovery import rebuild

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.durability_helpers import ServerProcess, free_port, read_events
    from tests.risk_helpers import (
        INFY,
        PLACED,
        TCS,
        TIMEOUT_S,
        Harness,
        assert_accepted,
        assert_rejected,
        ist,
        risk_overrides,
        tripped,
    )
else:
    from conftest import RunningGateway, make_config
    from durability_helpers import ServerProcess, free_port, read_events
    from risk_helpers import (
        INFY,
        PLACED,
        TCS,
        TIMEOUT_S,
        Harness,
        assert_accepted,
        assert_rejected,
        ist,
        risk_overrides,
        tripped,
    )

ACTIVE = TradingState.TRADING_STATE_ACTIVE
CAPITAL = 1_000_000.0


def q(ltp: float, symbol: str = INFY) -> Quote:
    return Quote(symbol=symbol, ltp=ltp)


def marks_recorded(journal: Path) -> list[dict[str, Any]]:
    return [e for e in read_events(journal) if e["kind"] == "MarksRecorded"]


# -- kill -9 -----------------------------------------------------------------------


def test_kill_9_with_a_position_up_30k_then_one_tick_trips_nothing(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "execgw.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "listen": f"127.0.0.1:{port}",
                "journal": {"path": str(tmp_path / "journal.db")},
                "market_data": {"source": "external"},
                "execution": {
                    "slippage_bps": 0.0,
                    "capital_rupees": CAPITAL,
                    # A 30k fall from the peak is 2.9%: it trips if the position is lost.
                    "circuit_breakers": {"max_daily_drawdown_pct": 0.02},
                },
                # Wall-clock time: the test must not depend on the hour it runs at.
                "trading_day": {"mis_square_off": None},
                "server": {"shutdown_grace_s": 1.0},
            }
        ),
        encoding="utf-8",
    )
    server = ServerProcess(config, port)
    try:
        server.wait_serving()
        with ExecutionClient(server.target, timeout=TIMEOUT_S) as client:
            assert client.publish_quotes([q(1000.0)]) == 1
            bought = client.submit(market(INFY, "BUY", 100, strategy_code="S1", product="NRML"))
            assert bought.avg_price == 1000.0
            resting = client.submit(
                limit(INFY, "BUY", 10, 950.0, strategy_code="S1", product="NRML")
            )
            assert resting.status == PLACED
            # Inside the default 20% band at each step; up 100 x 300 = 30000 in all.
            assert client.publish_quotes([q(1100.0), q(1200.0), q(1300.0)]) == 3
            before = client.risk_state()
            assert before.state == ACTIVE
            assert before.peak_equity == CAPITAL + 30_000
        server.kill()

        server = ServerProcess(config, port)
        server.wait_serving()
        with ExecutionClient(server.target, timeout=TIMEOUT_S) as client:
            # One tick that does not bring INFY's price: evaluation runs on the marks.
            assert client.publish_quotes([q(4100.0, TCS)]) == 1
            after = client.risk_state()
            assert tripped(after) == set(), [b.message for b in after.breakers if b.tripped]
            assert after.state == ACTIVE
            assert list(after.unmarked_symbols) == []
            assert (after.equity, after.peak_equity) == (CAPITAL + 30_000, CAPITAL + 30_000)
            assert after.drawdown_pct == 0.0
            assert client.get_order(resting.order_id).status == PLACED
            [position] = client.positions()
            assert (position.last_price, position.unrealized_pnl) == (1300.0, 30_000.0)
    finally:
        server.close()
    kinds = [e["kind"] for e in read_events(tmp_path / "journal.db")]
    assert "BreakerTripped" not in kinds
    assert "OrderCancelled" not in kinds


# -- a carried position ----------------------------------------------------------------


def test_a_carried_loss_shows_no_phantom_gain_after_a_restart(
    tmp_path: Path, clock: ManualClock
) -> None:
    with Harness(tmp_path, clock) as h:
        h.publish(INFY, 1000.0)
        assert_accepted(h.mkt("BUY", 10))
        h.publish(INFY, 950.0)  # carried at -500
        clock.set(ist(2026, 11, 28, 9, 15))
        h.tick()  # the next trading day: its baseline is the -500
        assert h.state().day_pnl == 0.0

        h.restart()
        state = h.state()
        assert state.day_pnl == 0.0, "the carried loss came back as a gain"
        assert state.equity == state.peak_equity == CAPITAL
        assert list(state.unmarked_symbols) == []
        [position] = h.client.positions()
        assert (position.last_price, position.unrealized_pnl) == (950.0, -500.0)
        h.tick()
        assert h.state().peak_equity == CAPITAL
        # A journaled mark values a position; it never prices an order.
        assert_rejected(h.mkt("SELL", 10), RejectReason.REJECT_REASON_NO_MARKET_DATA)

        h.publish(INFY, 940.0)
        assert h.state().day_pnl == -100.0


def strip_marks(source: Path, target: Path) -> None:
    """`source` as a gateway that predates durable marks would have written it."""
    reader, writer = Journal(source, read_only=True), Journal(target)
    try:
        kept = [row.decode() for row in reader.rows() if row.kind != "MarksRecorded"]
        writer.append([dataclasses.replace(r, sequence=i) for i, r in enumerate(kept, start=1)])
    finally:
        reader.close()
        writer.close()


@pytest.mark.parametrize(
    ("carried_at", "limits"),
    [
        # Up 2000 yesterday: valued at zero, today would start 2000 down.
        (120.0, {"max_daily_loss_rupees": 1500.0}),
        # Down 1000 yesterday: valued at zero, today would start 1000 up (a new peak),
        # and the real price coming back would be a 0.1% drawdown from it.
        (90.0, {"max_daily_drawdown_pct": 0.0005}),
    ],
    ids=["carried_gain_loss_breaker", "carried_loss_drawdown_breaker"],
)
def test_a_position_with_no_mark_is_unknown_not_zero(
    tmp_path: Path, clock: ManualClock, carried_at: float, limits: dict[str, float]
) -> None:
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    with Harness(first_dir, clock) as h:
        h.publish(INFY, 100.0)
        assert_accepted(h.mkt("BUY", 100, product="CNC"))
        h.publish(INFY, carried_at)
        clock.set(ist(2026, 11, 28, 9, 15))
        h.tick()
        assert h.state().day_pnl == 0.0
    strip_marks(first_dir / "journal.db", second_dir / "journal.db")

    config = make_config(second_dir, **risk_overrides(execution={"circuit_breakers": limits}))
    running = RunningGateway(config, clock)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as client:
            running.call(running.gateway.core.tick())
            state = client.risk_state()
            assert tripped(state) == set(), [b.message for b in state.breakers if b.tripped]
            assert state.state == ACTIVE
            assert state.peak_equity == CAPITAL, "an unknown position moved the day's peak"
            assert list(state.unmarked_symbols) == [INFY]

            # The real price arrives: nothing moved since yesterday, nothing trips.
            assert client.publish_quotes([q(carried_at)]) == 1
            state = client.risk_state()
            assert list(state.unmarked_symbols) == []
            assert tripped(state) == set()
            assert (state.day_pnl, state.equity, state.peak_equity) == (0.0, CAPITAL, CAPITAL)
    finally:
        running.stop()


# -- the journal and snapshots ------------------------------------------------------------


def test_marks_are_journaled_at_a_bounded_rate(tmp_path: Path, clock: ManualClock) -> None:
    """At most one MarksRecorded per marks_every_s (5 s) of the gateway clock, only when
    a mark moved, and only for symbols with an open position or resting order."""
    journal = tmp_path / "journal.db"
    with Harness(tmp_path, clock) as h:
        h.publish(INFY, 1000.0)
        assert_accepted(h.mkt("BUY", 10))
        for second in range(1, 61):
            clock.advance(timedelta(seconds=1))
            # Moves of one tick: the day's peak never moves a whole step.
            h.publish(INFY, 1000.0 + 0.05 * (second % 2))
            h.publish(TCS, 4100.0 + 0.05 * second)  # no position, no order: no mark
        moving = marks_recorded(journal)
        # t = 5, 10, ..., 60 s: the mark moved every time (1000.05, 1000.00, ...).
        assert len(moving) == 12, [e["event"]["timestamp"] for e in moving]
        for _ in range(60):
            clock.advance(timedelta(seconds=1))
            h.publish(INFY, 1000.0)  # the mark recorded at 60 s: nothing to write
        still = marks_recorded(journal)
    assert len(still) == 12
    times = [datetime.fromisoformat(e["event"]["timestamp"]) for e in still]
    gaps = [(b - a).total_seconds() for a, b in pairwise(times)]
    assert min(gaps) >= 5.0, gaps
    assert {symbol for e in still for symbol in e["event"]["marks"]} == {INFY}
    assert Decimal(still[-1]["event"]["marks"][INFY]) == Decimal("1000")


def test_marks_are_kept_in_snapshots(tmp_path: Path, clock: ManualClock) -> None:
    journal = tmp_path / "journal.db"
    # A snapshot after every commit, and every event below it pruned.
    with Harness(tmp_path, clock, journal={"snapshot_every": 1, "retain_events": 1}) as h:
        h.publish(INFY, 1000.0)
        assert_accepted(h.mkt("BUY", 10))
        clock.advance(timedelta(seconds=10))
        h.publish(INFY, 1010.0)  # journals the mark
        h.lmt("BUY", 1, 1000.0)  # one more commit, so the mark's own event is pruned
        h.state()  # queued behind that commit, which started its snapshot and pruning
        h.running.call(h.running.gateway.core.snapshot_written())  # written off the writer
        assert marks_recorded(journal) == []

        reader = Journal(journal, read_only=True)
        try:
            recovered = rebuild(reader)
        finally:
            reader.close()
        assert recovered.replayed == 0
        assert recovered.marks == {INFY: Decimal("1010")}

        h.restart()
        [position] = h.client.positions()
        assert (position.last_price, position.unrealized_pnl) == (1010.0, 100.0)
        assert list(h.state().unmarked_symbols) == []


# -- review regressions: what a missing mark must not hide ------------------------------


def test_a_position_opened_just_before_a_crash_is_marked_by_its_fill(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Opened inside the first marks interval, then a restart: no MarksRecorded names it,
    but its fill carried the quote it was priced at, so it is not unknown, and a
    realized loss elsewhere still trips the loss breaker."""
    overrides = {"execution": {"circuit_breakers": {"max_daily_loss_rupees": 5000.0}}}
    with Harness(tmp_path, clock, **overrides) as h:
        h.publish(INFY, 1500.0)
        h.publish(TCS, 4000.0)
        assert_accepted(h.mkt("BUY", 1, strategy="S1", product="NRML"))
        assert INFY not in {
            s for e in marks_recorded(tmp_path / "journal.db") for s in e["event"]["marks"]
        }
        h.restart()
        state = h.state()
        assert list(state.unmarked_symbols) == []
        h.publish(TCS, 4000.0)
        assert_accepted(h.mkt("BUY", 10, symbol=TCS, strategy="S2"))
        h.publish(TCS, 3400.0)
        assert_accepted(h.mkt("SELL", 10, symbol=TCS, strategy="S2"))  # realizes -6000
        assert ("max_daily_loss_rupees", "") in tripped(h.state())


def test_a_realized_loss_trips_the_loss_breaker_even_while_a_position_is_unmarked(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Unknown positions may be up or down; a realized loss is not unknown."""
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    with Harness(first_dir, clock) as h:
        h.publish(INFY, 100.0)
        assert_accepted(h.mkt("BUY", 100, product="CNC"))
        clock.set(ist(2026, 11, 28, 9, 15))
        h.tick()
    strip_marks(first_dir / "journal.db", second_dir / "journal.db")
    limits = {"circuit_breakers": {"max_daily_loss_rupees": 5000.0}}
    config = make_config(second_dir, **risk_overrides(execution=limits))
    running = RunningGateway(config, clock)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as client:
            assert client.publish_quotes([q(4000.0, TCS)]) == 1
            client.submit(market(TCS, "BUY", 10, strategy_code="S2"))
            assert client.publish_quotes([q(3400.0, TCS)]) == 1
            client.submit(market(TCS, "SELL", 10, strategy_code="S2"))
            state = client.risk_state()
            assert list(state.unmarked_symbols) == [INFY]
            assert ("max_daily_loss_rupees", "") in tripped(state)
    finally:
        running.stop()


def test_a_full_quote_book_still_takes_quotes_for_symbols_with_exposure(
    tmp_path: Path, clock: ManualClock
) -> None:
    with Harness(tmp_path, clock, market_data={"max_symbols": 2}) as h:
        h.publish(INFY, 1500.0)
        assert_accepted(h.mkt("BUY", 1))
        h.restart()
        assert h.client.publish_quotes([q(100.0, "NSE:AAA"), q(100.0, "NSE:BBB")]) == 2
        assert h.client.publish_quotes([q(100.0, "NSE:CCC")]) == 0
        # INFY has a position: its quotes are never crowded out.
        assert h.client.publish_quotes([q(1500.0)]) == 1
        assert_accepted(h.mkt("SELL", 1))
