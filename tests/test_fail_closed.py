"""Failing closed: when the journal cannot be written the gateway answers UNAVAILABLE,
places nothing, reports NOT_SERVING and comes back by itself once writes succeed; a
journal it cannot trust stops start-up with a clear message."""

from __future__ import annotations

import hashlib
import random
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from execgw.client import (
    ExecgwError,
    ExecutionClient,
    ExecutionResult,
    Unavailable,
    limit,
    market,
)
from execgw.server.app import SERVICE_NAMES
from execgw.server.clock import ManualClock
from execgw.v1 import orders_pb2

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.durability_helpers import (
        NOT_SERVING,
        RELAXED_EXECUTION,
        SERVING,
        ServerProcess,
        export_jsonl,
        free_port,
        health_check,
        quote,
        run_cli,
        run_server_to_exit,
        wait_for_health,
        write_config,
    )
else:
    from conftest import RunningGateway, make_config
    from durability_helpers import (
        NOT_SERVING,
        RELAXED_EXECUTION,
        SERVING,
        ServerProcess,
        export_jsonl,
        free_port,
        health_check,
        quote,
        run_cli,
        run_server_to_exit,
        wait_for_health,
        write_config,
    )

FILLED = orders_pb2.ORDER_STATUS_FILLED
# Big enough for the schema and the 32 KiB WAL index, small enough to fill in ~20 orders.
FILE_SIZE_LIMIT = 128 * 1024


def _buy(qty: int = 1) -> orders_pb2.OrderIntent:
    # NRML: unaffected by the MIS square-off, whatever the wall-clock time of the run.
    return market("NSE:INFY", "BUY", qty, strategy_code="fc", product="NRML")


# -- disk full (a real process under RLIMIT_FSIZE) --------------------------------------


@dataclass
class DiskFull:
    server: ServerProcess
    client: ExecutionClient
    journal: Path
    acked: list[ExecutionResult]
    failed_id: str
    seconds_to_fail: float


@contextmanager
def disk_full(tmp_path: Path) -> Iterator[DiskFull]:
    """A gateway whose journal hits a file-size limit; yields once a submit failed."""
    journal = tmp_path / "journal.db"
    port = free_port()
    config = write_config(tmp_path, journal, port, journal_options={"probe_interval_s": 0.05})
    server = ServerProcess(config, port, file_size_limit=FILE_SIZE_LIMIT)
    try:
        server.wait_serving()
        with ExecutionClient(server.target, retries=0, timeout=10) as client:
            assert client.publish_quotes([quote("NSE:INFY", 1500.0)]) == 1
            acked: list[ExecutionResult] = []
            for i in range(2000):
                started = time.monotonic()
                try:
                    acked.append(client.submit(_buy(), f"df-{i}"))
                except Unavailable:
                    yield DiskFull(
                        server, client, journal, acked, f"df-{i}", time.monotonic() - started
                    )
                    return
            pytest.fail(f"2000 orders fitted under a {FILE_SIZE_LIMIT} byte file-size limit")
    finally:
        server.close()


def test_disk_full_fails_closed_and_recovers_when_space_returns(tmp_path: Path) -> None:
    with disk_full(tmp_path) as df:
        client, server = df.client, df.server
        assert len(df.acked) >= 3, "the limit left no room for any order"
        assert all(r.status == FILLED for r in df.acked)
        assert df.seconds_to_fail < 5.0

        # Up, refusing, and saying so.
        assert server.alive()
        assert health_check(server.target, "") == NOT_SERVING
        for service in SERVICE_NAMES:
            assert health_check(server.target, service) == NOT_SERVING
        # Nothing of the failed submit exists; everything acknowledged does.
        ids = [o.client_order_id for o in client.list_orders()]
        assert ids == [f"df-{i}" for i in range(len(df.acked))]
        assert df.failed_id not in ids
        [position] = client.positions()
        assert position.net_qty == len(df.acked)
        # Still full: a retry is refused again rather than half-applied.
        with pytest.raises(Unavailable):
            client.submit(_buy(), df.failed_id)
        assert len(client.list_orders()) == len(df.acked)
        # The disk holds exactly what was acknowledged, with an intact chain.
        verified = run_cli("journal", "verify", "--journal", str(df.journal))
        assert verified.returncode == 0, verified.stderr
        accepted = [e for e in export_jsonl(df.journal) if e["kind"] == "OrderAccepted"]
        assert [e["event"]["client_order_id"] for e in accepted] == ids

        # Space comes back: the probe notices without any traffic.
        started = time.monotonic()
        server.raise_file_size_limit()
        wait_for_health(server.target, SERVING, timeout=15)
        assert time.monotonic() - started < 10
        assert health_check(server.target, SERVICE_NAMES[0]) == SERVING

        retried = client.submit(_buy(), df.failed_id)
        assert retried.status == FILLED
        again = client.submit(_buy(), df.failed_id)
        assert again.order_id == retried.order_id
        orders = client.list_orders()
        assert [o.client_order_id for o in orders].count(df.failed_id) == 1
        assert len(orders) == len(df.acked) + 1
        assert len({o.order_id for o in orders}) == len(orders)
        assert retried.order_id not in {r.order_id for r in df.acked}
    assert server.proc.returncode is not None
    verified = run_cli("journal", "verify", "--journal", str(df.journal))
    assert verified.returncode == 0, verified.stderr


def test_disk_full_log_names_the_real_cause(tmp_path: Path) -> None:
    """An operator paged for NOT_SERVING must read "disk I/O error"/"disk is full" in the
    log, not an error raised by the clean-up after it."""
    with disk_full(tmp_path) as df:
        df.server.raise_file_size_limit()
        wait_for_health(df.server.target, SERVING, timeout=15)
        df.server.terminate()
    log = df.server.output
    failures = [line for line in log.splitlines() if "journal write failed" in line]
    assert failures, log
    assert all(
        re.search(r"disk I/O error|disk is full|too large|No space", line) for line in failures
    ), failures


# -- a write lock held by someone else (SQLITE_BUSY) ---------------------------------------


@dataclass
class Outcome:
    result: ExecutionResult | None = None
    error: ExecgwError | None = None
    seconds: float = 0.0
    seen_while_pending: list[str] = field(default_factory=list)


@contextmanager
def locked_gateway(tmp_path: Path, clock: ManualClock) -> Iterator[tuple[RunningGateway, Path]]:
    config = make_config(tmp_path, journal={"probe_interval_s": 0.05}, execution=RELAXED_EXECUTION)
    gateway = RunningGateway(config, clock)
    try:
        yield gateway, Path(config.journal.path)
    finally:
        gateway.stop()


def _client(gateway: RunningGateway) -> ExecutionClient:
    return ExecutionClient(gateway.target, retries=0, timeout=60)


def _submit_while_watching(client: ExecutionClient, client_order_id: str) -> Outcome:
    """Submit from a thread; meanwhile read the order book as any client might."""
    outcome = Outcome()

    def submit() -> None:
        started = time.monotonic()
        try:
            outcome.result = client.submit(_buy(2), client_order_id)
        except ExecgwError as e:
            outcome.error = e
        outcome.seconds = time.monotonic() - started

    thread = threading.Thread(target=submit)
    thread.start()
    while thread.is_alive():
        for order in client.list_orders():
            if order.client_order_id == client_order_id:
                outcome.seen_while_pending.append(order.order_id)
        thread.join(timeout=0.02)
    return outcome


def _hold_write_lock(journal: Path) -> sqlite3.Connection:
    holder = sqlite3.connect(journal, isolation_level=None, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def test_a_locked_journal_fails_closed_then_recovers(tmp_path: Path, clock: ManualClock) -> None:
    with locked_gateway(tmp_path, clock) as (gateway, journal), _client(gateway) as client:
        client.publish_quotes([quote("NSE:INFY", 1500.0)])
        before = client.submit(_buy(), "before-lock")
        holder = _hold_write_lock(journal)
        try:
            outcome = _submit_while_watching(client, "under-lock")
            assert isinstance(outcome.error, Unavailable), outcome
            # The writer waits for SQLite's busy timeout before failing closed.
            assert outcome.seconds < 30
            assert health_check(gateway.target) == NOT_SERVING
            assert gateway.gateway.core.healthy is False
            assert [o.order_id for o in client.list_orders()] == [before.order_id]
            assert client.positions()[0].net_qty == 1  # reads keep working
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        seen = wait_for_health(gateway.target, SERVING, timeout=30)
        assert seen[-1] == SERVING
        placed = client.submit(_buy(2), "under-lock")
        assert placed.status == FILLED
        assert [o.client_order_id for o in client.list_orders()] == [
            "before-lock",
            "under-lock",
        ]
    events = export_jsonl(journal)
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    accepted = [e["event"]["client_order_id"] for e in events if e["kind"] == "OrderAccepted"]
    assert accepted == ["before-lock", "under-lock"]


def test_reads_never_show_an_order_that_is_not_yet_durable(
    tmp_path: Path, clock: ManualClock
) -> None:
    """ListOrders must not report an order before its journal commit: if the commit
    fails, the order vanishes and its order_id is handed to a different order."""
    with locked_gateway(tmp_path, clock) as (gateway, journal), _client(gateway) as client:
        client.publish_quotes([quote("NSE:INFY", 1500.0)])
        client.submit(_buy(), "first")
        holder = _hold_write_lock(journal)
        try:
            outcome = _submit_while_watching(client, "doomed")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert isinstance(outcome.error, Unavailable), outcome
        wait_for_health(gateway.target, SERVING, timeout=30)
        other = client.submit(_buy(3), "someone-else")
    assert outcome.seen_while_pending == [], (
        f"ListOrders showed order {sorted(set(outcome.seen_while_pending))} for 'doomed' "
        f"{len(outcome.seen_while_pending)} times while its commit was pending; the commit "
        f"failed, and {other.order_id} now belongs to 'someone-else'"
    )


# -- journals the gateway must refuse to start on -------------------------------------------


def _real_journal(tmp_path: Path, clock: ManualClock) -> Path:
    """A journal from a real run: fills, a resting order, a cancel, a reject; closed cleanly."""
    source = tmp_path / "source"
    source.mkdir()
    config = make_config(source, execution=RELAXED_EXECUTION)
    gateway = RunningGateway(config, clock)
    try:
        with ExecutionClient(gateway.target, retries=0) as client:
            client.publish_quotes([quote("NSE:INFY", 1500.0), quote("NSE:TCS", 4100.0)])
            for i in range(30):
                client.submit(_buy(1 + i % 3), f"real-{i:02d}")
            resting = client.submit(
                limit("NSE:TCS", "BUY", 5, 4000.0, strategy_code="fc", product="NRML"), "rest"
            )
            client.cancel(resting.order_id)
            client.submit(market("NSE:SBIN", "BUY", 1, strategy_code="fc"), "rej")
    finally:
        gateway.stop()
    path = Path(config.journal.path)
    assert not Path(f"{path}-wal").exists(), "a clean stop checkpoints the WAL"
    return path


def _page_of_events_root(path: Path) -> tuple[int, int]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name='events'").fetchone()[0]
    db.close()
    return page_size, root


def _corrupt(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    rng = random.Random(f"corrupt-{how}")
    if how == "edited_row":
        # Change one character inside a stored event body: "real-17" -> "real-71".
        at = data.find(b"real-17")
        assert at > 0
        data[at + 5 : at + 7] = b"71"
    elif how == "truncated":
        del data[len(data) // 2 :]
    elif how == "events_page_overwritten":
        page_size, root = _page_of_events_root(path)
        start = (root - 1) * page_size
        data[start + 8 : start + page_size] = rng.randbytes(page_size - 8)
    elif how == "middle_zeroed":
        middle = len(data) // 2
        data[middle - 2048 : middle + 2048] = bytes(4096)
    else:
        raise AssertionError(how)
    path.write_bytes(bytes(data))


def _refused(tmp_path: Path, journal: Path) -> tuple[int, str]:
    """Start `execgw serve` on the journal; it must exit by itself, not serve."""
    config = write_config(tmp_path, journal, free_port(), name="refuse.yaml")
    result = run_server_to_exit(config, timeout=60)
    return result.returncode, result.stderr


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "how", ["edited_row", "truncated", "events_page_overwritten", "middle_zeroed"]
)
def test_a_corrupt_journal_stops_start_up_with_a_clear_message(
    tmp_path: Path, clock: ManualClock, how: str
) -> None:
    journal = _real_journal(tmp_path, clock)
    _corrupt(journal, how)
    digest = _sha256(journal)

    code, stderr = _refused(tmp_path, journal)
    assert code != 0
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert re.search(r"journal|corrupt|malformed|altered", last, re.IGNORECASE), stderr
    assert _sha256(journal) == digest, "a refused start must not modify the journal"

    verified = run_cli("journal", "verify", "--journal", str(journal))
    assert verified.returncode == 1
    assert "Traceback" not in verified.stderr, verified.stderr
    assert "FAILED" in verified.stderr


def test_a_journal_from_a_newer_version_is_refused(tmp_path: Path, clock: ManualClock) -> None:
    journal = _real_journal(tmp_path, clock)
    with sqlite3.connect(journal) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.close()
    digest = _sha256(journal)

    code, stderr = _refused(tmp_path, journal)
    assert code != 0
    assert "newer" in stderr
    assert "Traceback" not in stderr, stderr
    assert _sha256(journal) == digest
    verified = run_cli("journal", "verify", "--journal", str(journal))
    assert verified.returncode == 1
    assert "newer" in verified.stderr


def test_a_file_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    journal = tmp_path / "journal.db"
    journal.write_bytes(random.Random(7).randbytes(16 * 1024))
    digest = _sha256(journal)
    code, stderr = _refused(tmp_path, journal)
    assert code != 0
    assert "not a readable execgw journal" in stderr
    assert "Traceback" not in stderr, stderr
    assert _sha256(journal) == digest
