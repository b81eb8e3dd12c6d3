"""Regressions from the second review of the simulator's latency: a freeze-quantity
rejection with the order's cancel due in the same delivery; breaker trips a replay
must reproduce; a cancel on its way across a restart; a what-if replay after a
refused command; reports behind an insert with no quote after a restart.

Driven through the real engine, one command at a time as the gateway's writer runs
it, with a ManualClock as the only time; slippage 0."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest

from execgw.server import replay as replay_module
from execgw.server.clock import ManualClock
from execgw.server.config import GatewayConfig
from execgw.server.domain import (
    OrderIntent,
    OrderStatus,
    OrderType,
    Product,
    Quote,
    Side,
    Validity,
)
from execgw.server.engine import ExecutionEngine
from execgw.server.events import Event, OrderFilled
from execgw.server.journal import JournalRecord
from execgw.server.replay import build_engine, replay, summarize

if TYPE_CHECKING:
    from tests.sim_session import INFY, Session, config, intent, kinds, ms, recording
else:
    from sim_session import INFY, Session, config, intent, kinds, ms, recording


# -- 1. a freeze-quantity rejection and a cancel due in the same delivery -----------


@pytest.mark.parametrize("how", ["tick", "quote"])
def test_a_cancel_due_behind_a_freeze_rejection_is_not_applied_to_the_rejected_order(
    how: str,
) -> None:
    """Insert 50 ms, cancel 10 ms, freeze 400: BUY 500 at T0, its cancel sent at
    T0 + 45 reaches the exchange at T0 + 55, behind the order (T0 + 50). Both are
    delivered by the next command at T0 + 65: the exchange rejects the order, and the
    cancel finds nothing. Before, the cancel was applied to the REJECTED order too
    (LedgerError, and the command failed)."""
    cfg = config(
        {"slippage_bps": 0.0, "simulator": {"latency_ms": {"insert": 50.0, "cancel": 10.0}}},
        instruments={"freeze_qty": {INFY: 400}},
    )
    s = Session(cfg)
    s.quote("1000.00")
    order_id = s.submit(intent("BUY", 500), "k1")
    s.clock.advance(ms(45))
    assert kinds(s.run(s.engine.cancel, order_id)) == ["CancelRequested"]
    s.clock.advance(ms(20))
    events = s.tick() if how == "tick" else s.quote("1001.00")
    assert kinds(events)[:2] == ["OrderArrived", "VenueRejected"]
    assert "OrderCancelled" not in kinds(events)
    assert s.order(order_id).status is OrderStatus.REJECTED
    s.clock.advance(ms(100))
    assert s.tick() == []


# -- 2. a replay reproduces a breaker tripped by a tick's deliveries ------------------


def test_a_replay_trips_the_breaker_a_tick_tripped_in_the_recording() -> None:
    """max_loss_streak 1, fill latency 500 ms: the losing SELL's report lands on a tick,
    whose breaker evaluation trips the strategy; its next BUY is refused. The replay
    with the same config evaluates breakers there too: the BUY is refused as well
    (before, it was accepted and left PENDING_CANCEL)."""
    cfg = config(
        {
            "slippage_bps": 0.0,
            "simulator": {"latency_ms": {"fill": 500.0}},
            "circuit_breakers": {
                "max_loss_streak": 1,
                "max_trades_per_day": 1000,
                "max_trades_per_strategy_per_day": 1000,
            },
        },
        journal={"path": "unused.db", "record_quotes": True},
    )
    s = recording(cfg)
    s.quote("1000.00")
    s.clock.advance(timedelta(seconds=1))
    s.submit(intent("BUY", 10), "b1")
    s.clock.advance(timedelta(seconds=1))
    s.tick()
    s.clock.advance(timedelta(seconds=1))
    s.quote("990.00")
    s.clock.advance(timedelta(seconds=1))
    s.submit(intent("SELL", 10), "s1")
    s.clock.advance(timedelta(seconds=1))
    assert kinds(s.tick())[-1] == "BreakerTripped"
    s.clock.advance(timedelta(seconds=1))
    b2 = s.submit(intent("BUY", 10), "b2")
    assert s.order(b2).status is OrderStatus.REJECTED
    recorded = summarize(s.engine.state)
    replayed = replay(s.records, cfg)
    assert replayed.orders[("s", "b2")].status == "REJECTED"
    assert replayed == recorded


# -- 3. a cancel on its way across a restart ------------------------------------------


def test_a_cancel_that_overtook_the_order_still_cancels_it_after_a_restart() -> None:
    """Insert 50 ms, cancel 10 ms: the cancel sent at T0 + 5 reaches the exchange at
    T0 + 15, before the order (T0 + 50), as it would have without the restart. Before,
    the restored order arrived and FILLED, its cancel lost."""
    cfg = config(
        {"slippage_bps": 0.0, "simulator": {"latency_ms": {"insert": 50.0, "cancel": 10.0}}}
    )
    s = Session(cfg)
    s.quote("1000.00")
    order_id = s.submit(intent("BUY", 10), "k1")
    s.clock.advance(ms(5))
    assert kinds(s.run(s.engine.cancel, order_id)) == ["CancelRequested"]
    s.clock.advance(ms(5))
    s.restart()
    s.clock.advance(ms(90))
    events = s.tick() + s.quote("1001.00")
    assert "OrderFilled" not in kinds(events)
    order = s.order(order_id)
    assert (order.status, order.filled_qty) == (OrderStatus.CANCELLED, 0)


def test_a_cancel_behind_the_order_still_finds_it_filled_after_a_restart() -> None:
    """The cancel sent at T0 + 45 is due at T0 + 55, after the order arrived (and filled)
    at T0 + 50: after the restart too it cancels nothing."""
    cfg = config(
        {"slippage_bps": 0.0, "simulator": {"latency_ms": {"insert": 50.0, "cancel": 10.0}}}
    )
    s = Session(cfg)
    s.quote("1000.00")
    order_id = s.submit(intent("BUY", 10), "k1")
    s.clock.advance(ms(45))
    s.run(s.engine.cancel, order_id)
    s.restart()
    s.clock.advance(ms(55))
    s.quote("1001.00")
    order = s.order(order_id)
    assert (order.status, order.filled_qty) == (OrderStatus.FILLED, 10)


# -- 4. a what-if replay keeps what a refused command did -----------------------------


def test_a_what_if_replay_keeps_the_fill_ids_a_refused_cancel_drew(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Recorded with no latency: a BUY LIMIT 990 rests (LTP 1000) and is cancelled at
    T0 + 170; a BUY MARKET later fills. Replayed with touch prices and insert latency
    100 ms: the LIMIT reaches the exchange (ask 990) as the cancel's command passes time,
    and fills, drawing a fill id; the cancel is then refused. As in the gateway the
    fill and its id stand: before, the replay took the id back and the MARKET's fill got
    it again (a duplicate fill id)."""
    live = config({"slippage_bps": 0.0}, journal={"path": "unused.db", "record_quotes": True})
    s = recording(live)

    def book() -> list[Event]:
        q = Quote(INFY, Decimal(1000), s.clock.now(), Decimal(989), Decimal(990), 1000, 1000, 0)
        return s.run(s.engine.apply_quotes, [q])

    book()
    s.clock.advance(ms(10))
    rests = s.submit(intent("BUY", 10, "990.00"), "A")
    s.clock.advance(ms(160))
    s.run(s.engine.cancel, rests)
    assert s.order(rests).status is OrderStatus.CANCELLED
    s.clock.advance(ms(30))
    book()
    s.submit(intent("BUY", 10), "B")
    s.clock.advance(ms(150))
    book()  # B has reached the exchange in the replay
    what_if = config(
        {
            "slippage_bps": 0.0,
            "simulator": {"price_source": "touch", "latency_ms": {"insert": 100.0}},
        }
    )
    replayed: list[JournalRecord] = []

    def capture(cfg: GatewayConfig, clock: ManualClock) -> ExecutionEngine:
        engine = build_engine(cfg, clock)
        take = engine.take_pending

        def taken() -> list[JournalRecord]:
            replayed.extend(take())
            return []

        monkeypatch.setattr(engine, "take_pending", taken)
        return engine

    monkeypatch.setattr(replay_module, "build_engine", capture)
    result = replay(s.records, what_if)
    assert result.orders[("s", "A")].status == "FILLED"
    fills = [r.event.fill for r in replayed if isinstance(r.event, OrderFilled)]
    assert [(f.client_order_id, f.qty) for f in fills] == [("A", 10), ("B", 10)]
    assert fills[0].fill_id != fills[1].fill_id
    assert result.orders[("s", "B")].filled_qty == 10


# -- 5. an order waiting for a quote after a restart holds up only itself ----------------


def test_after_a_restart_an_order_waiting_for_a_quote_does_not_hold_up_other_reports() -> None:
    """Insert 50 ms, fill 500 ms: A arrives and fills at T0 + 50, its report due at
    T0 + 550; B (a LIMIT) is sent at T0 + 70 and the gateway restarts. B cannot reach
    the exchange before INFY's next quote (none known); A's report must not wait for it
    behind B: a tick delivers it. Before, it waited for the quote."""
    cfg = config(
        {"slippage_bps": 0.0, "simulator": {"latency_ms": {"insert": 50.0, "fill": 500.0}}}
    )
    s = Session(cfg)
    s.quote("1000.00")
    a = s.submit(intent("BUY", 10), "A")
    s.clock.advance(ms(60))
    assert "FillExecuted" in kinds(s.tick())
    s.clock.advance(ms(10))
    b = s.submit(intent("BUY", 10, "900.00"), "B")
    s.restart()
    s.clock.advance(timedelta(seconds=5))
    assert kinds(s.tick()) == ["OrderFilled"]
    order = s.order(a)
    assert (order.status, order.filled_qty, order.fills_in_flight) == (OrderStatus.FILLED, 10, ())
    assert not s.order(b).arrived
    assert "OrderArrived" in kinds(s.quote("1000.00"))
    assert s.order(b).arrived


# -- 6. a tick's deliveries cost in proportion to them -----------------------------------


def test_a_tick_delivering_across_many_symbols_looks_at_each_symbol_a_few_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Insert latency 100 ms, one order in each of 200 symbols, all delivered by one
    tick. Before, finding each next item rescanned every symbol (200 x 200 looks);
    now each symbol is looked at once per item it delivers, and once to start."""
    cfg = config({"slippage_bps": 0.0, "simulator": {"latency_ms": {"insert": 100.0}}})
    s = Session(cfg)
    symbols = [f"NSE:S{i}" for i in range(200)]
    price = Decimal(100)
    quotes = [Quote(sym, price, s.clock.now(), price, price, 0, 0, 0) for sym in symbols]
    s.run(s.engine.apply_quotes, quotes)
    for sym in symbols:
        order = OrderIntent(
            symbol=sym,
            strategy_code="s",
            side=Side.BUY,
            qty=1,
            order_type=OrderType.MARKET,
            product=Product.CNC,
            validity=Validity.DAY,
        )
        s.submit(order, f"k-{sym}")
    simulator = s.engine._venue.simulator  # type: ignore[attr-defined]
    looks = 0
    first_deliverable = simulator._first_deliverable

    def counted(symbol: str, now: datetime) -> int | None:
        nonlocal looks
        looks += 1
        result: int | None = first_deliverable(symbol, now)
        return result

    monkeypatch.setattr(simulator, "_first_deliverable", counted)
    s.clock.advance(ms(150))
    assert kinds(s.tick()).count("OrderFilled") == 200
    assert looks <= 3 * len(symbols)


# -- 7. a report on its way at the rollover belongs to the day that ended -----------------


def test_a_report_due_after_the_rollover_counts_in_the_day_that_ended() -> None:
    """Fill latency 500 ms: a SELL closing a long fills at the exchange at 07:59:59.900
    IST with a profit of 100; its report is due at 08:00:00.400, after the rollover.
    The tick at 08:00:00.100 takes the report before DayRolledOver: the profit is the
    ended day's, and the new day starts at 0. Before, it landed after the rollover,
    in the new day's realized P&L."""
    cfg = config(
        {"slippage_bps": 0.0, "simulator": {"latency_ms": {"fill": 500.0}}},
        trading_day={"mis_square_off": None},
    )
    s = Session(cfg, start=datetime(2026, 11, 27, 2, 29, 58, tzinfo=UTC))
    s.quote("1000.00")
    s.submit(intent("BUY", 10), "b")
    s.clock.advance(timedelta(seconds=1))
    assert kinds(s.tick()) == ["OrderFilled"]
    s.clock.advance(ms(100))
    s.submit(intent("SELL", 10, "1010.00"), "s")
    s.clock.set(datetime(2026, 11, 27, 2, 29, 59, 900_000, tzinfo=UTC))
    assert "FillExecuted" in kinds(s.quote("1011.00"))
    s.clock.set(datetime(2026, 11, 27, 2, 30, 0, 100_000, tzinfo=UTC))
    events = kinds(s.tick())
    assert events.index("OrderFilled") < events.index("DayRolledOver")
    book = s.engine.state.risk
    assert book.day is not None
    assert book.day.isoformat() == "2026-11-27"
    assert book.realized_total == 0
