"""Restart recovery: a gateway started on an existing journal is the gateway that
stopped, down to exact Decimal PnL, resting orders, id counters and idempotency."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from execgw.client import AlreadyExists, ExecutionClient, limit, market, stop
from execgw.client import ExecutionResult as Result
from execgw.client import OrderIntent as WireIntent
from execgw.server.clock import ManualClock
from execgw.server.config import GatewayConfig
from execgw.server.journal import Journal, JournalCorrupt, StoredRow
from execgw.server.recovery import GatewayState, rebuild, state_to_json
from execgw.v1 import orders_pb2

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.durability_helpers import (
        RELAXED_EXECUTION,
        position_facts,
        position_key,
        quote,
        read_events,
        replay_fills,
        run_cli,
    )
else:
    from conftest import RunningGateway, make_config
    from durability_helpers import (
        RELAXED_EXECUTION,
        position_facts,
        position_key,
        quote,
        read_events,
        replay_fills,
        run_cli,
    )

PLACED = orders_pb2.ORDER_STATUS_PLACED
FILLED = orders_pb2.ORDER_STATUS_FILLED
CANCELLED = orders_pb2.ORDER_STATUS_CANCELLED
REJECTED = orders_pb2.ORDER_STATUS_REJECTED


def _config(tmp_path: Path, **journal: object) -> GatewayConfig:
    return make_config(tmp_path, journal=journal, execution=RELAXED_EXECUTION)


@contextmanager
def running(config: GatewayConfig, clock: ManualClock) -> Iterator[ExecutionClient]:
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target, retries=0, timeout=10) as client:
            yield client
    finally:
        gateway.stop()


@dataclass
class FirstRun:
    config: GatewayConfig
    intents: dict[str, WireIntent]
    results: dict[str, Result]
    orders: list[Result]
    positions: dict[tuple[str, str, str], tuple[object, ...]]


def place_mix(client: ExecutionClient) -> tuple[dict[str, WireIntent], dict[str, Result]]:
    """Fills, a partial close, a short, resting limits, a stop, a cancel, a reject."""
    assert client.publish_quotes([quote("NSE:INFY", 1500.0), quote("NSE:TCS", 4100.0)]) == 2
    intents = {
        "a_buy": market("NSE:INFY", "BUY", 10, strategy_code="s1"),
        "a_sell": market("NSE:INFY", "SELL", 4, strategy_code="s1"),
        "b_short": market("NSE:TCS", "SELL", 6, strategy_code="s2", product="NRML"),
        "b_cover": limit("NSE:TCS", "BUY", 2, 4150.0, strategy_code="s2", product="NRML"),
        "rest_buy": limit("NSE:INFY", "BUY", 5, 1470.0, strategy_code="s2"),
        "rest_sell": limit("NSE:TCS", "SELL", 3, 4200.0, strategy_code="s1", product="NRML"),
        "cxl": limit("NSE:INFY", "BUY", 7, 1480.0, strategy_code="s1"),
        "rej": market("NSE:SBIN", "BUY", 1, strategy_code="s3"),
        "stop": stop("NSE:INFY", "SELL", 2, 1460.0, strategy_code="s1"),
    }
    results = {name: client.submit(intent, f"rec-{name}") for name, intent in intents.items()}
    results["cxl"] = client.cancel(results["cxl"].order_id)
    # Moves the mark; reaches no resting order.
    assert client.publish_quotes([quote("NSE:INFY", 1502.5)]) == 1
    return intents, results


@pytest.fixture
def first_run(tmp_path: Path, clock: ManualClock) -> FirstRun:
    config = _config(tmp_path)
    with running(config, clock) as client:
        intents, results = place_mix(client)
        orders = client.list_orders()
        positions = position_facts(client.positions())
    return FirstRun(config, intents, results, orders, positions)


def test_first_run_is_what_the_recovery_tests_assume(first_run: FirstRun) -> None:
    r = first_run.results
    assert [r[n].order_id for n in first_run.intents] == [f"O{i:010d}" for i in range(1, 10)]
    assert (r["a_buy"].status, r["a_buy"].avg_price) == (FILLED, 1500.75)
    assert (r["a_sell"].status, r["a_sell"].avg_price) == (FILLED, 1499.25)
    assert (r["b_short"].status, r["b_short"].avg_price) == (FILLED, 4097.95)
    assert (r["b_cover"].status, r["b_cover"].avg_price) == (FILLED, 4102.05)
    assert [r[n].status for n in ("rest_buy", "rest_sell", "stop")] == [PLACED] * 3
    assert (r["cxl"].status, r["rej"].status) == (CANCELLED, REJECTED)
    assert r["rej"].reject_reason == orders_pb2.REJECT_REASON_NO_MARKET_DATA


def test_restart_rebuilds_orders_and_exact_positions(
    first_run: FirstRun, clock: ManualClock
) -> None:
    with running(first_run.config, clock) as client:
        assert client.list_orders() == first_run.orders
        for before in first_run.orders:
            assert client.get_order(before.order_id) == before
        resting = client.list_orders(status="PLACED")
        assert sorted(o.client_order_id for o in resting) == [
            "rec-rest_buy",
            "rec-rest_sell",
            "rec-stop",
        ]
        after = client.positions()
        facts = position_facts(after)
        # Quotes are market data, not journaled: the mark comes back with the next quote.
        # Everything that does not depend on the mark is identical at once ...
        assert {k: v[:5] for k, v in facts.items()} == {
            k: v[:5] for k, v in first_run.positions.items()
        }
        by_key = {position_key(p): p for p in after}
        infy = by_key[("s1", "NSE:INFY", "MIS")]
        assert (infy.net_qty, infy.buy_qty, infy.sell_qty) == (6, 10, 4)
        assert Decimal(infy.realized_pnl_decimal) == Decimal("-6.00")
        tcs = by_key[("s2", "NSE:TCS", "NRML")]
        assert (tcs.net_qty, tcs.buy_qty, tcs.sell_qty) == (-4, 2, 6)
        assert Decimal(tcs.realized_pnl_decimal) == Decimal("-8.20")
        # ... and with the same marks published again, so is the rest, strings included.
        client.publish_quotes([quote("NSE:TCS", 4100.0), quote("NSE:INFY", 1502.5)])
        assert position_facts(client.positions()) == first_run.positions
        assert client.list_orders() == first_run.orders  # the quotes reached no order


def test_resting_orders_resume_after_restart(first_run: FirstRun, clock: ManualClock) -> None:
    ids = {name: res.order_id for name, res in first_run.results.items()}
    with running(first_run.config, clock) as client:
        client.publish_quotes([quote("NSE:INFY", 1470.05)])  # one tick short of the limit
        assert client.get_order(ids["rest_buy"]).status == PLACED

        client.publish_quotes([quote("NSE:INFY", 1469.95)])  # crosses BUY 1470 and 1480
        filled = client.get_order(ids["rest_buy"])
        assert (filled.status, filled.filled_qty, filled.avg_price) == (FILLED, 5, 1470.0)
        cancelled = client.get_order(ids["cxl"])  # a cancelled order must stay dead
        assert (cancelled.status, cancelled.filled_qty) == (CANCELLED, 0)
        assert client.get_order(ids["stop"]).status == PLACED  # trigger 1460 not reached

        client.publish_quotes([quote("NSE:TCS", 4200.0)])
        sold = client.get_order(ids["rest_sell"])
        assert (sold.status, sold.filled_qty, sold.avg_price) == (FILLED, 3, 4200.0)

        client.publish_quotes([quote("NSE:INFY", 1459.95)])  # triggers the SL-M SELL
        stopped = client.get_order(ids["stop"])
        assert (stopped.status, stopped.filled_qty, stopped.avg_price) == (FILLED, 2, 1459.20)

        by_key = {position_key(p): p for p in client.positions()}
        s1_infy = by_key[("s1", "NSE:INFY", "MIS")]
        assert s1_infy.net_qty == 4
        # -6.00 before the restart, then 2 x 1459.20 - 2/6 of the 9004.50 open cost.
        assert Decimal(s1_infy.realized_pnl_decimal) == Decimal("-89.10")
        assert by_key[("s2", "NSE:INFY", "MIS")].net_qty == 5
        assert by_key[("s1", "NSE:TCS", "NRML")].net_qty == -3
        assert len(client.list_orders(status="PLACED")) == 0
    events = read_events(Path(first_run.config.journal.path))
    fills = [e["event"]["fill"] for e in events if e["kind"] == "OrderFilled"]
    assert [f["fill_id"] for f in fills] == [f"F{i:010d}" for i in range(1, 8)]
    assert [(f["order_id"], f["price"]) for f in fills[4:]] == [
        (ids["rest_buy"], "1470.0"),
        (ids["rest_sell"], "4200.0"),
        (ids["stop"], "1459.20"),
    ]


def test_ids_continue_and_retries_return_the_original_after_restart(
    first_run: FirstRun, clock: ManualClock
) -> None:
    journal = Path(first_run.config.journal.path)
    events_before = len(read_events(journal))
    with running(first_run.config, clock) as client:
        for name, intent in first_run.intents.items():
            # The order as it stands, which is the last acknowledged state of each.
            assert client.submit(intent, f"rec-{name}") == first_run.results[name], name
        # Idempotency wins over new market data: the rejected order stays rejected.
        client.publish_quotes([quote("NSE:SBIN", 820.0)])
        retried = client.submit(first_run.intents["rej"], "rec-rej")
        assert (retried.order_id, retried.status) == (first_run.results["rej"].order_id, REJECTED)
        with pytest.raises(AlreadyExists):
            client.submit(market("NSE:INFY", "BUY", 11, strategy_code="s1"), "rec-a_buy")
        assert client.list_orders() == first_run.orders
        assert len(read_events(journal)) == events_before  # retries wrote nothing

        client.publish_quotes([quote("NSE:INFY", 1500.0)])
        new = client.submit(market("NSE:INFY", "BUY", 1, strategy_code="s9"), "rec-new")
        assert new.order_id == "O0000000010"
        assert new.status == FILLED
        fresh = client.submit(market("NSE:SBIN", "SELL", 1, strategy_code="s9"), "rec-new2")
        assert fresh.order_id == "O0000000011"
    fills = [e for e in read_events(journal) if e["kind"] == "OrderFilled"]
    assert [f["event"]["fill"]["fill_id"] for f in fills][-2:] == ["F0000000005", "F0000000006"]
    assert len({o.order_id for o in first_run.orders} | {new.order_id, fresh.order_id}) == 11


def test_a_second_restart_is_still_identical(first_run: FirstRun, clock: ManualClock) -> None:
    for _ in range(2):
        with running(first_run.config, clock) as client:
            assert client.list_orders() == first_run.orders


# -- snapshots ---------------------------------------------------------------------------


class CountingJournal(Journal):
    """Records which rows recovery asks for and how many it reads."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, read_only=True)
        self.afters: list[int] = []
        self.read = 0

    def rows(self, after: int = 0, batch: int = 1000) -> Iterator[StoredRow]:
        self.afters.append(after)
        for row in super().rows(after, batch):
            self.read += 1
            yield row


def _rebuild(path: Path) -> tuple[GatewayState, CountingJournal]:
    journal = CountingJournal(path)
    try:
        return rebuild(journal), journal
    finally:
        journal.close()


def _copy(src: Path, dst: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{src}{suffix}").exists():
            shutil.copyfile(f"{src}{suffix}", f"{dst}{suffix}")
    return dst


def _busy_day(client: ExecutionClient) -> None:
    """About 45 events: fills, resting limits, cancels, rejects and quote-driven fills."""
    client.publish_quotes([quote("NSE:INFY", 1500.0), quote("NSE:TCS", 4100.0)])
    for i in range(12):
        strategy = f"snap{i % 3}"
        side = "BUY" if i % 2 == 0 else "SELL"
        client.submit(market("NSE:INFY", side, 1 + i, strategy_code=strategy), f"m{i}")
        rest = client.submit(
            limit("NSE:TCS", "BUY", 2, 4090.0 - i, strategy_code=strategy, product="NRML"),
            f"l{i}",
        )
        if i % 4 == 0:
            client.cancel(rest.order_id)
        if i % 5 == 0:
            client.submit(market("NSE:SBIN", "BUY", 1, strategy_code=strategy), f"r{i}")
    client.publish_quotes([quote("NSE:TCS", 4085.0)])  # fills the resting limits at >= 4085


@dataclass
class SnapshotRun:
    path: Path
    snapshot_sequence: int
    head: int
    orders: list[Result]
    positions: dict[tuple[str, str, str], tuple[object, ...]]


@pytest.fixture
def snapshot_run(tmp_path: Path, clock: ManualClock) -> SnapshotRun:
    """A busy day with snapshot_every=5, then a run that never snapshots adds a tail."""
    path = tmp_path / "journal.db"
    with running(_config(tmp_path, snapshot_every=5), clock) as client:
        _busy_day(client)
    journal = Journal(path, read_only=True)
    try:
        first_snapshot = journal.latest_snapshot()
        first_head = journal.head_sequence
    finally:
        journal.close()
    assert first_snapshot is not None
    assert first_head >= 40
    # A snapshot is taken once 5 or more events have piled up since the last one.
    assert 0 <= first_head - first_snapshot.sequence < 5
    with running(_config(tmp_path, snapshot_every=1_000_000), clock) as client:
        client.publish_quotes([quote("NSE:INFY", 1500.0)])
        for i in range(3):
            client.submit(market("NSE:INFY", "BUY", 1, strategy_code="tail"), f"tail{i}")
        orders = client.list_orders()
        positions = position_facts(client.positions())
    journal = Journal(path, read_only=True)
    try:
        snapshot = journal.latest_snapshot()
        head = journal.head_sequence
    finally:
        journal.close()
    assert snapshot == first_snapshot
    assert head == first_head + 6  # the tail: 3 accepts + 3 fills
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0] == 1
    return SnapshotRun(path, snapshot.sequence, head, orders, positions)


def _mark_free(facts: dict[tuple[str, str, str], tuple[object, ...]]) -> dict[object, object]:
    return {k: v[:5] for k, v in facts.items()}


def test_snapshot_bounds_what_recovery_replays(
    snapshot_run: SnapshotRun, tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    run = snapshot_run
    tail = run.head - run.snapshot_sequence
    with caplog.at_level(logging.INFO, logger="execgw.server.recovery"):
        from_snapshot, counted = _rebuild(run.path)
    assert counted.afters == [run.snapshot_sequence]
    assert counted.read == tail
    assert from_snapshot.sequence == run.head
    assert f"snapshot {run.snapshot_sequence}, {tail} events replayed" in caplog.text

    # Events before the snapshot are never read: drop them and nothing changes.
    pruned_dir = tmp_path / "pruned"
    pruned_dir.mkdir()
    pruned = _copy(run.path, pruned_dir / "journal.db")
    with sqlite3.connect(pruned) as raw:
        raw.execute("DELETE FROM events WHERE seq < ?", (run.snapshot_sequence,))
    from_pruned, _ = _rebuild(pruned)
    assert state_to_json(from_pruned) == state_to_json(from_snapshot)
    with running(_config(pruned_dir), clock) as client:
        assert client.list_orders() == run.orders
        assert _mark_free(position_facts(client.positions())) == _mark_free(run.positions)


def test_snapshot_state_equals_a_full_replay(snapshot_run: SnapshotRun, tmp_path: Path) -> None:
    """Recovery is a fold over events; a snapshot is only a shortcut to the same state."""
    from_snapshot, _ = _rebuild(snapshot_run.path)
    full_copy = _copy(snapshot_run.path, tmp_path / "full.db")
    with sqlite3.connect(full_copy) as raw:
        raw.execute("DELETE FROM snapshots")
    full, full_counted = _rebuild(full_copy)
    assert full_counted.read == snapshot_run.head
    assert from_snapshot.sequence == full.sequence
    assert from_snapshot.head_hash == full.head_hash
    snap_orders, snap_positions = from_snapshot.ledger.export()
    full_orders, full_positions = full.ledger.export()
    assert snap_orders == full_orders
    assert sorted(snap_positions, key=repr) == sorted(full_positions, key=repr)
    assert (from_snapshot.ids.next_order, from_snapshot.ids.next_fill) == (
        full.ids.next_order,
        full.ids.next_fill,
    )
    # Everything a snapshot stores, risk state included, must be what replay derives.
    assert state_to_json(from_snapshot) == state_to_json(full)


def test_snapshots_that_reuse_unchanged_orders_equal_a_full_replay(
    tmp_path: Path, clock: ManualClock
) -> None:
    """A snapshot encodes only the orders changed since the previous one and reuses the
    others' bytes, across a restart too (they come from the snapshot read at start-up).
    Orders resting at one snapshot and filled or cancelled before the next must be taken
    as they are now: the last snapshot is the state a full replay derives."""
    path = tmp_path / "journal.db"
    with running(_config(tmp_path, snapshot_every=5), clock) as client:
        _busy_day(client)
        resting = [
            client.submit(limit("NSE:TCS", "BUY", 1, 4000.0, strategy_code="snap0"), f"x{i}")
            for i in range(6)
        ]
    with running(_config(tmp_path, snapshot_every=5), clock) as client:
        for order in resting[:3]:
            client.cancel(order.order_id)
        client.publish_quotes([quote("NSE:TCS", 3990.0)])  # fills the other three
        for i in range(4):
            client.submit(market("NSE:INFY", "BUY", 1, strategy_code="snap1"), f"after{i}")
        orders = client.list_orders()
    from_snapshot, counted = _rebuild(path)
    assert counted.afters[0] > 0  # started from a snapshot
    full_copy = _copy(path, tmp_path / "full.db")
    with sqlite3.connect(full_copy) as raw:
        raw.execute("DELETE FROM snapshots")
    full, _ = _rebuild(full_copy)
    assert state_to_json(from_snapshot) == state_to_json(full)
    assert {o.status for o in orders if o.client_order_id.startswith("x")} == {
        orders_pb2.ORDER_STATUS_CANCELLED,
        orders_pb2.ORDER_STATUS_FILLED,
    }


def test_a_pruned_journal_recovers_identically_and_still_verifies(
    tmp_path: Path, clock: ManualClock
) -> None:
    config = _config(tmp_path, snapshot_every=5, retain_events=3)
    with running(config, clock) as client:
        _busy_day(client)
        orders = client.list_orders()
        positions = position_facts(client.positions())
    path = tmp_path / "journal.db"
    journal = Journal(path, read_only=True)
    try:
        oldest, head = journal.oldest_sequence(), journal.head_sequence
        snapshot = journal.latest_snapshot()
    finally:
        journal.close()
    assert snapshot is not None
    assert 1 < oldest <= snapshot.sequence <= head  # pruned, but never past the snapshot
    events = read_events(path)
    assert [e["sequence"] for e in events] == list(range(oldest, head + 1))
    verified = run_cli("journal", "verify", "--journal", str(path))
    assert verified.returncode == 0, verified.stderr
    assert f"head sequence {head}" in verified.stdout
    with running(_config(tmp_path), clock) as client:
        assert client.list_orders() == orders
        assert _mark_free(position_facts(client.positions())) == _mark_free(positions)


def test_positions_equal_an_independent_replay_of_the_fills(
    tmp_path: Path, clock: ManualClock
) -> None:
    with running(_config(tmp_path, snapshot_every=5), clock) as client:
        _busy_day(client)
    with running(_config(tmp_path), clock) as client:
        served = {position_key(p): p for p in client.positions()}
    replayed = replay_fills(read_events(tmp_path / "journal.db"))
    assert set(served) == set(replayed)
    for key, mine in replayed.items():
        theirs = served[key]
        assert (theirs.net_qty, theirs.buy_qty, theirs.sell_qty) == (
            mine.net_qty,
            mine.buy_qty,
            mine.sell_qty,
        ), key
        assert Decimal(theirs.realized_pnl_decimal) == mine.realized, key


def test_a_snapshot_that_fails_its_checksum_stops_recovery(
    tmp_path: Path, clock: ManualClock
) -> None:
    with running(_config(tmp_path, snapshot_every=5), clock) as client:
        _busy_day(client)
    path = tmp_path / "journal.db"
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE snapshots SET body = replace(body, '\"s', '\"x')")
    with pytest.raises(JournalCorrupt, match="checksum"):
        _rebuild(path)


def test_a_snapshot_without_its_anchor_event_stops_recovery(
    tmp_path: Path, clock: ManualClock
) -> None:
    with running(_config(tmp_path, snapshot_every=5), clock) as client:
        _busy_day(client)
    path = tmp_path / "journal.db"
    with sqlite3.connect(path) as raw:
        (seq,) = raw.execute("SELECT seq FROM snapshots").fetchone()
        raw.execute("DELETE FROM events WHERE seq >= ?", (seq,))
    with pytest.raises(JournalCorrupt, match="no matching journal row"):
        _rebuild(path)
