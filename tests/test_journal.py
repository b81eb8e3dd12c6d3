"""The journal on its own: exact round trips, the sequence rule, tamper evidence,
SQLite durability settings, refusing files it must not use, export and the CLI."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from execgw.server import audit
from execgw.server.chain import PLAIN_CHAIN, Chain
from execgw.server.domain import (
    Fill,
    OrderIntent,
    OrderType,
    Product,
    Quote,
    RejectReason,
    Side,
    Validity,
)
from execgw.server.events import (
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderFilled,
    OrderRejected,
    OrderTriggered,
    event_order_id,
)
from execgw.server.journal import (
    GENESIS_HASH,
    Journal,
    JournalCorrupt,
    JournalError,
    JournalRecord,
    JournalWriteFailed,
    chain_hash,
)
from execgw.server.ledger import Ledger
from execgw.server.recovery import rebuild, state_to_json

if TYPE_CHECKING:
    from tests.durability_helpers import run_cli
else:
    from durability_helpers import run_cli

D = Decimal
T0 = datetime(2026, 11, 27, 4, 30, 0, 123456, tzinfo=UTC)


def _intent(
    symbol: str,
    side: Side,
    qty: int,
    order_type: OrderType,
    *,
    product: Product = Product.MIS,
    price: Decimal | None = None,
    trigger: Decimal | None = None,
    strategy: str = "mom",
) -> OrderIntent:
    return OrderIntent(
        symbol=symbol,
        strategy_code=strategy,
        side=side,
        qty=qty,
        order_type=order_type,
        product=product,
        validity=Validity.DAY,
        price=price,
        trigger_price=trigger,
        tag="t-1",
        reason="unit test",
        confidence=0.75,
        metadata={"lots": 2, "path": ["a", "b"]},
    )


def _quote(symbol: str, ltp: str, at: datetime) -> Quote:
    return Quote(
        symbol=symbol,
        ltp=D(ltp),
        timestamp=at,
        bid=D(ltp) - D("0.05"),
        ask=D(ltp) + D("0.05"),
        bid_qty=100,
        ask_qty=200,
        volume=12345,
    )


def _fill(fill_id: str, order_id: str, intent: OrderIntent, qty: int, price: str) -> Fill:
    return Fill(
        fill_id=fill_id,
        order_id=order_id,
        client_order_id=f"c-{order_id}",
        strategy_code=intent.strategy_code,
        symbol=intent.symbol,
        side=intent.side,
        product=intent.product,
        qty=qty,
        price=D(price),
        timestamp=T0 + timedelta(seconds=int(fill_id[1:])),
    )


def sample_events() -> list[OrderEvent]:
    """Every order event kind, with prices whose exact Decimal text matters."""
    market = _intent("NSE:INFY", Side.BUY, 10, OrderType.MARKET)
    resting = _intent(
        "NSE:TCS", Side.SELL, 5, OrderType.LIMIT, product=Product.NRML, price=D("4100.05")
    )
    stop = _intent(
        "NSE:INFY",
        Side.BUY,
        4,
        OrderType.SL,
        price=D("1506.5000"),  # trailing zeros must survive: "1506.5000", not 1506.5
        trigger=D("1505.00"),
    )
    rejected = _intent("NSE:SBIN", Side.SELL, 1, OrderType.MARKET, strategy="rev")
    t = T0
    return [
        OrderAccepted("O0000000001", "c-O0000000001", market, t, raw={"venue": "paper"}),
        OrderFilled(
            _fill("F0000000001", "O0000000001", market, 10, "1500.75"),
            _quote("NSE:INFY", "1500.0", t),
        ),
        OrderAccepted("O0000000002", "c-O0000000002", resting, t + timedelta(seconds=1)),
        OrderCancelled("O0000000002", t + timedelta(seconds=2), "cancelled by client"),
        OrderRejected(
            "O0000000003",
            "c-O0000000003",
            rejected,
            t + timedelta(seconds=3),
            RejectReason.NO_MARKET_DATA,
            "no quote for NSE:SBIN; the venue cannot price the order",
        ),
        OrderAccepted("O0000000004", "c-O0000000004", stop, t + timedelta(seconds=4)),
        OrderTriggered("O0000000004", t + timedelta(seconds=5), D("1505.10")),
        OrderFilled(
            _fill("F0000000002", "O0000000004", stop, 3, "1506.5000"),
            _quote("NSE:INFY", "1505.10", t + timedelta(seconds=6)),
        ),
    ]


def records_for(events: list[OrderEvent], first_sequence: int = 1) -> list[JournalRecord]:
    """Records as the core makes them: the event plus the order's after-image."""
    ledger = Ledger()
    records = []
    for offset, event in enumerate(events):
        ledger.apply(event)
        order = ledger.snapshot(event_order_id(event))
        at = T0 + timedelta(milliseconds=offset)
        records.append(JournalRecord(first_sequence + offset, at, event, order))
    return records


RECORDS = records_for(sample_events())


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def filled_journal(journal_path: Path) -> Path:
    """A closed journal holding RECORDS (8 events), written in three batches."""
    journal = Journal(journal_path)
    journal.append(RECORDS[:1])
    journal.append(RECORDS[1:5])
    journal.append(RECORDS[5:])
    journal.close()
    return journal_path


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def _verify(path: Path) -> audit.VerifyReport:
    journal = Journal(path, read_only=True)
    try:
        return audit.verify(journal)
    finally:
        journal.close()


# -- round trip -----------------------------------------------------------------


def test_batches_read_back_as_equal_records_after_reopen(filled_journal: Path) -> None:
    journal = Journal(filled_journal)
    try:
        assert journal.head_sequence == 8
        rows = list(journal.rows())
        decoded = [row.decode() for row in rows]
        assert [r.sequence for r in rows] == list(range(1, 9))
        assert [r.kind for r in rows] == [
            "OrderAccepted",
            "OrderFilled",
            "OrderAccepted",
            "OrderCancelled",
            "OrderRejected",
            "OrderAccepted",
            "OrderTriggered",
            "OrderFilled",
        ]
        assert decoded == RECORDS
        assert journal.head_hash == rows[-1].hash
    finally:
        journal.close()


def test_decimals_survive_with_their_exact_text(filled_journal: Path) -> None:
    journal = Journal(filled_journal, read_only=True)
    try:
        decoded = [row.decode() for row in journal.rows()]
    finally:
        journal.close()
    fill = decoded[1].event
    assert isinstance(fill, OrderFilled)
    assert str(fill.fill.price) == "1500.75"
    assert str(fill.quote.ltp) == "1500.0"
    assert decoded[1].order is not None
    assert str(decoded[1].order.filled_value) == "15007.50"
    stop = decoded[5].event
    assert isinstance(stop, OrderAccepted)
    assert str(stop.intent.price) == "1506.5000"
    assert str(stop.intent.trigger_price) == "1505.00"
    triggered = decoded[6].event
    assert isinstance(triggered, OrderTriggered)
    assert str(triggered.trigger_ltp) == "1505.10"
    partial = decoded[7].order
    assert partial is not None
    assert (partial.status.value, partial.filled_qty) == ("PARTIAL", 3)
    assert str(partial.filled_value) == "4519.5000"
    rejected = decoded[4].event
    assert isinstance(rejected, OrderRejected)
    assert rejected.reason is RejectReason.NO_MARKET_DATA


def test_rows_after_and_single_row_lookup(filled_journal: Path) -> None:
    journal = Journal(filled_journal, read_only=True)
    try:
        assert [r.sequence for r in journal.rows(after=5)] == [6, 7, 8]
        assert [r.sequence for r in journal.rows(after=0, batch=3)] == list(range(1, 9))
        row = journal.row(4)
        assert row is not None
        assert row.decode() == RECORDS[3]
        assert journal.row(9) is None
    finally:
        journal.close()


# -- the sequence rule and atomic batches ---------------------------------------------


@pytest.mark.parametrize(
    ("sequences", "message"),
    [
        ([3], "sequence 3 does not follow journal head 1"),  # a gap
        ([1], "sequence 1 does not follow journal head 1"),  # a replay
        ([2, 4], "sequence 4 does not follow journal head 2"),  # a gap inside the batch
        ([2, 2], "sequence 2 does not follow journal head 2"),  # a duplicate inside it
    ],
)
def test_sequence_must_follow_head(journal_path: Path, sequences: list[int], message: str) -> None:
    journal = Journal(journal_path)
    try:
        journal.append(records_for(sample_events()[:1]))
        head = (journal.head_sequence, journal.head_hash)
        batch = [
            JournalRecord(seq, RECORDS[0].timestamp, RECORDS[0].event, RECORDS[0].order)
            for seq in sequences
        ]
        with pytest.raises(JournalWriteFailed, match=re.escape(message)):
            journal.append(batch)
        # Nothing of the refused batch, not even its valid first record, was written.
        assert (journal.head_sequence, journal.head_hash) == head
        assert [r.sequence for r in journal.rows()] == [1]
    finally:
        journal.close()


def test_failed_batch_is_all_or_nothing_and_head_is_unchanged(journal_path: Path) -> None:
    journal = Journal(journal_path)
    try:
        journal.append(RECORDS[:2])
        head = (journal.head_sequence, journal.head_hash)
        # Make the database itself refuse the third row of the next batch.
        with _raw(journal_path) as raw:
            raw.execute(
                "CREATE TRIGGER refuse_5 BEFORE INSERT ON events WHEN NEW.seq = 5 "
                "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            )
        with pytest.raises(JournalWriteFailed, match="injected failure"):
            journal.append(RECORDS[2:6])
        assert (journal.head_sequence, journal.head_hash) == head
        assert [r.sequence for r in journal.rows()] == [1, 2]
        with _raw(journal_path) as raw:
            raw.execute("DROP TRIGGER refuse_5")
        journal.append(RECORDS[2:6])  # the same batch goes through once the fault is gone
        assert [r.decode() for r in journal.rows()] == RECORDS[:6]
    finally:
        journal.close()


# -- tamper evidence ----------------------------------------------------------------


def test_verify_passes_on_a_clean_journal(filled_journal: Path) -> None:
    report = _verify(filled_journal)
    journal = Journal(filled_journal, read_only=True)
    try:
        head_hash = journal.head_hash
        first = journal.row(1)
    finally:
        journal.close()
    assert (report.events, report.head_sequence, report.head_hash) == (8, 8, head_hash)
    assert first is not None
    assert first.prev_hash == GENESIS_HASH


def _corrupt_message(path: Path) -> str:
    with pytest.raises(JournalCorrupt) as info:
        _verify(path)
    return str(info.value)


def _names_sequence(message: str, sequence: int) -> bool:
    return re.search(rf"(?<!\d){sequence}(?!\d)", message) is not None


def test_verify_fails_when_a_body_is_edited(filled_journal: Path) -> None:
    with _raw(filled_journal) as raw:
        raw.execute(
            "UPDATE events SET body = replace(body, '\"1500.75\"', '\"1400.75\"') WHERE seq = 2"
        )
        assert raw.total_changes == 1
    message = _corrupt_message(filled_journal)
    assert _names_sequence(message, 2), message
    assert "altered" in message or "hash" in message


def test_verify_fails_when_a_kind_is_edited(filled_journal: Path) -> None:
    with _raw(filled_journal) as raw:
        raw.execute("UPDATE events SET kind = 'OrderAccepted' WHERE seq = 4")
    assert _names_sequence(_corrupt_message(filled_journal), 4)


@pytest.mark.parametrize(
    ("deleted", "missing"),
    [((3,), 3), ((2, 3, 4), 2), ((6, 8), 6)],  # deleting only the newest rows is undetectable
)
def test_verify_fails_when_rows_are_deleted(
    filled_journal: Path, deleted: tuple[int, ...], missing: int
) -> None:
    with _raw(filled_journal) as raw:
        raw.executemany("DELETE FROM events WHERE seq = ?", [(seq,) for seq in deleted])
        assert raw.total_changes == len(deleted)
    message = _corrupt_message(filled_journal)
    assert "gap" in message
    assert _names_sequence(message, missing), message


def test_verify_fails_when_the_first_row_is_deleted(filled_journal: Path) -> None:
    """No snapshot covers sequence 1, so recovery refuses this journal ("gap: expected
    sequence 1"); the audit tool must not call it OK."""
    with _raw(filled_journal) as raw:
        raw.execute("DELETE FROM events WHERE seq = 1")
        assert raw.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0] == 0
    message = _corrupt_message(filled_journal)
    assert _names_sequence(message, 1), message


def test_verify_fails_when_a_hash_is_recomputed_over_a_broken_prev_link(
    filled_journal: Path,
) -> None:
    with _raw(filled_journal) as raw:
        seq, kind, ts, body = raw.execute(
            "SELECT seq, kind, ts, body FROM events WHERE seq = 5"
        ).fetchone()
        forged_prev = "f" * 64
        raw.execute(
            "UPDATE events SET prev_hash = ?, hash = ? WHERE seq = 5",
            (forged_prev, chain_hash(seq, kind, ts, body, forged_prev)),
        )
    message = _corrupt_message(filled_journal)
    assert _names_sequence(message, 5), message
    assert "chain" in message


def test_verify_fails_when_an_edited_row_is_rehashed(filled_journal: Path) -> None:
    """The edited row is self-consistent; the next row's prev link gives it away."""
    with _raw(filled_journal) as raw:
        seq, kind, ts, body, prev = raw.execute(
            "SELECT seq, kind, ts, body, prev_hash FROM events WHERE seq = 2"
        ).fetchone()
        edited = body.replace('"1500.75"', '"1400.75"')
        assert edited != body
        raw.execute(
            "UPDATE events SET body = ?, hash = ? WHERE seq = 2",
            (edited, chain_hash(seq, kind, ts, edited, prev)),
        )
    message = _corrupt_message(filled_journal)
    assert _names_sequence(message, 3), message
    assert "chain" in message


def test_verify_fails_when_two_rows_swap_bodies(filled_journal: Path) -> None:
    with _raw(filled_journal) as raw:
        a = raw.execute("SELECT body FROM events WHERE seq = 6").fetchone()[0]
        b = raw.execute("SELECT body FROM events WHERE seq = 7").fetchone()[0]
        raw.execute("UPDATE events SET body = ? WHERE seq = 6", (b,))
        raw.execute("UPDATE events SET body = ? WHERE seq = 7", (a,))
    assert _names_sequence(_corrupt_message(filled_journal), 6)


# -- SQLite settings ---------------------------------------------------------------


def test_writer_connection_is_wal_with_synchronous_full(journal_path: Path) -> None:
    journal = Journal(journal_path)
    try:
        db = journal._db
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        journal.append(RECORDS[:2])
        assert Path(f"{journal_path}-wal").exists()
    finally:
        journal.close()
    # WAL is a property of the file: a new connection sees it too.
    with _raw(journal_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- files the journal must refuse ---------------------------------------------------


def test_a_file_that_is_not_sqlite_is_refused_and_left_untouched(journal_path: Path) -> None:
    garbage = os.urandom(3 * 4096)
    journal_path.write_bytes(garbage)
    for read_only in (False, True):
        with pytest.raises(JournalCorrupt) as info:
            Journal(journal_path, read_only=read_only)
        message = str(info.value)
        assert str(journal_path) in message
        assert "not a readable execgw journal" in message
        assert "refusing to start" in message
    assert journal_path.read_bytes() == garbage


def test_a_newer_schema_version_is_refused(filled_journal: Path) -> None:
    with _raw(filled_journal) as raw:
        raw.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    for read_only in (False, True):
        with pytest.raises(JournalError, match="newer") as info:
            Journal(filled_journal, read_only=read_only)
        assert "99" in str(info.value)
    with _raw(filled_journal) as raw:
        assert raw.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 8
        version = raw.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        assert version == ("99",)


def test_read_only_open_of_a_missing_file_fails_without_creating_it(journal_path: Path) -> None:
    with pytest.raises(JournalError):
        Journal(journal_path, read_only=True)
    assert not journal_path.exists()


def test_a_foreign_sqlite_database_is_refused_and_left_untouched(journal_path: Path) -> None:
    """Pointing journal.path at another application's database must not adopt it."""
    with _raw(journal_path) as raw:
        raw.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        raw.execute("INSERT INTO customers VALUES (1, 'acme')")
    before = journal_path.read_bytes()
    with pytest.raises(JournalError):
        Journal(journal_path).close()
    with _raw(journal_path) as raw:
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"customers"}
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert journal_path.read_bytes() == before


_CREATE_AND_DIE = textwrap.dedent(
    """
    import os, sqlite3, sys
    from pathlib import Path

    kill_before = int(sys.argv[2])
    executed = 0
    real_connect = sqlite3.connect

    def trace(statement):
        global executed
        if executed == kill_before:
            os._exit(9)  # as abrupt as kill -9: no cleanup, no rollback
        executed += 1

    def connect(*args, **kwargs):
        db = real_connect(*args, **kwargs)
        db.set_trace_callback(trace)
        return db

    sqlite3.connect = connect
    from execgw.server.journal import Journal

    Journal(Path(sys.argv[1])).close()
    print(executed)
    """
)


def test_a_crash_at_any_point_of_journal_creation_leaves_an_openable_journal(
    tmp_path: Path,
) -> None:
    """kill -9 during the very first start-up must not brick the journal."""

    def create(path: Path, kill_before: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", _CREATE_AND_DIE, str(path), str(kill_before)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    complete = create(tmp_path / "complete.db", 10_000)
    assert complete.returncode == 0, complete.stderr
    statements = int(complete.stdout)
    assert statements >= 5
    refused = []
    for kill_before in range(statements):
        path = tmp_path / f"killed-before-{kill_before}.db"
        assert create(path, kill_before).returncode == 9
        try:
            journal = Journal(path)
        except JournalError as e:
            refused.append((kill_before, str(e)))
            continue
        try:
            journal.append(RECORDS[:2])
            assert journal.head_sequence == 2
        finally:
            journal.close()
    assert refused == [], f"journals killed during creation refuse to open: {refused}"


# -- export ---------------------------------------------------------------------------


def _export(path: Path, fmt: str) -> tuple[int, str]:
    journal = Journal(path, read_only=True)
    try:
        out = io.StringIO()
        count = audit.export(journal, out, fmt)
        return count, out.getvalue()
    finally:
        journal.close()


def test_export_jsonl_has_one_line_per_event_with_its_chain(filled_journal: Path) -> None:
    count, text = _export(filled_journal, "jsonl")
    lines = text.splitlines()
    assert count == len(lines) == 8
    items = [json.loads(line) for line in lines]
    assert [i["sequence"] for i in items] == list(range(1, 9))
    assert all(
        set(i) == {"sequence", "kind", "timestamp", "event", "order", "prev_hash", "hash"}
        for i in items
    )
    assert items[0]["prev_hash"] == GENESIS_HASH
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(items))
    fill = items[1]
    assert fill["kind"] == "OrderFilled"
    assert fill["event"]["fill"]["price"] == "1500.75"
    assert fill["event"]["fill"]["qty"] == 10
    assert fill["order"]["status"] == "FILLED"
    assert fill["order"]["filled_value"] == "15007.50"
    assert fill["timestamp"] == RECORDS[1].timestamp.isoformat()
    assert items[4]["event"]["reason"] == "NO_MARKET_DATA"
    assert items[5]["event"]["intent"]["price"] == "1506.5000"
    journal = Journal(filled_journal, read_only=True)
    try:
        assert [i["hash"] for i in items] == [r.hash for r in journal.rows()]
    finally:
        journal.close()


def test_export_csv_has_a_header_and_one_row_per_event(filled_journal: Path) -> None:
    count, text = _export(filled_journal, "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert count == len(rows) == 8
    assert text.splitlines()[0].split(",") == list(audit.CSV_COLUMNS)
    assert [r["sequence"] for r in rows] == [str(i) for i in range(1, 9)]
    first_fill = rows[1]
    assert (first_fill["kind"], first_fill["order_id"], first_fill["client_order_id"]) == (
        "OrderFilled",
        "O0000000001",
        "c-O0000000001",
    )
    assert (first_fill["fill_qty"], first_fill["fill_price"]) == ("10", "1500.75")
    assert (first_fill["side"], first_fill["qty"], first_fill["status"]) == ("BUY", "10", "FILLED")
    resting = rows[2]
    assert (resting["order_type"], resting["product"], resting["price"]) == (
        "LIMIT",
        "NRML",
        "4100.05",
    )
    assert (resting["fill_qty"], resting["fill_price"]) == ("", "")
    assert rows[3]["status"] == "CANCELLED"
    assert rows[3]["message"] == "cancelled by client"
    assert (rows[4]["status"], rows[4]["reject_reason"]) == ("REJECTED", "NO_MARKET_DATA")
    assert (rows[7]["fill_qty"], rows[7]["fill_price"], rows[7]["status"]) == (
        "3",
        "1506.5000",
        "PARTIAL",
    )
    assert rows[0]["strategy_code"] == "mom"
    assert rows[4]["strategy_code"] == "rev"


def test_export_rejects_an_unknown_format(filled_journal: Path) -> None:
    with pytest.raises(ValueError, match="xml"):
        _export(filled_journal, "xml")


# -- the CLI ----------------------------------------------------------------------------


def test_cli_verify_exit_codes(filled_journal: Path, tmp_path: Path) -> None:
    ok = run_cli("journal", "verify", "--journal", str(filled_journal))
    assert ok.returncode == 0, ok.stderr
    assert "journal OK: 8 events, head sequence 8" in ok.stdout

    with _raw(filled_journal) as raw:
        raw.execute("UPDATE events SET body = replace(body, 'mom', 'xyz') WHERE seq = 6")
    bad = run_cli("journal", "verify", "--journal", str(filled_journal))
    assert bad.returncode == 1
    assert "FAILED" in bad.stderr
    assert _names_sequence(bad.stderr, 6), bad.stderr
    assert "Traceback" not in bad.stderr
    assert bad.stdout == ""

    missing = tmp_path / "missing.db"
    gone = run_cli("journal", "verify", "--journal", str(missing))
    assert gone.returncode == 1
    assert "Traceback" not in gone.stderr
    assert not missing.exists()


def test_cli_verify_takes_the_path_from_a_config(filled_journal: Path, tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(f"journal:\n  path: {filled_journal}\n", encoding="utf-8")
    result = run_cli("journal", "verify", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "8 events" in result.stdout


def test_cli_export_writes_every_event(filled_journal: Path, tmp_path: Path) -> None:
    jsonl = run_cli("journal", "export", "--journal", str(filled_journal))
    assert jsonl.returncode == 0, jsonl.stderr
    assert [json.loads(line)["sequence"] for line in jsonl.stdout.splitlines()] == list(range(1, 9))
    assert "exported 8 events" in jsonl.stderr
    out = tmp_path / "events.csv"
    result = run_cli(
        "journal", "export", "--journal", str(filled_journal), "--format", "csv", "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) == 9


def test_csv_export_of_a_real_journal_with_risk_events(tmp_path: Path) -> None:
    """Every real journal starts with a DayRolledOver (no order): CSV must cope."""
    from execgw.server.audit import CSV_COLUMNS, export
    from execgw.server.events import DayRolledOver, TradingHalted

    journal = Journal(tmp_path / "j.db")
    when = datetime(2026, 11, 27, 4, 30, tzinfo=UTC)
    journal.append(
        [
            JournalRecord(1, when, DayRolledOver(date(2026, 11, 27), when), None),
            JournalRecord(2, when, TradingHalted("S1", "ops", "fat finger", when), None),
        ]
    )
    out = io.StringIO()
    assert export(journal, out, "csv") == 2
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == list(CSV_COLUMNS)
    assert [r[1] for r in rows[1:]] == ["DayRolledOver", "TradingHalted"]
    assert rows[2][5] == "S1"
    assert rows[2][16] == ""  # no order message; the halt's reason lives in the event
    journal.close()


# -- snapshots and the pruning record are sealed (review defect 1) ---------------------

KEYED = Chain(b"k" * 32)


def _chain(name: str) -> Chain:
    return KEYED if name == "keyed" else PLAIN_CHAIN


def _snapshot_and_prune(path: Path, chain: Chain, *, at: int = 8, keep_from: int = 6) -> str:
    """RECORDS, a snapshot of the state at `at` as the core takes one, then pruning."""
    journal = Journal(path, chain=chain)
    try:
        journal.append(RECORDS[:at])
        body = state_to_json(rebuild(journal))
        journal.write_snapshot(at, body)
        journal.append(RECORDS[at:])
        journal.prune_before(keep_from)
    finally:
        journal.close()
    return body


def _read(path: Path, chain: Chain) -> Journal:
    return Journal(path, read_only=True, chain=chain)


def _verify_with(path: Path, chain: Chain) -> audit.VerifyReport:
    journal = _read(path, chain)
    try:
        return audit.verify(journal)
    finally:
        journal.close()


def _rebuild_with(path: Path, chain: Chain) -> str:
    journal = _read(path, chain)
    try:
        return state_to_json(rebuild(journal))
    finally:
        journal.close()


def _forged_body(body: str) -> str:
    """The state an intruder wants loaded: no orders, no positions, ids from 1."""
    data = json.loads(body)
    data["orders"], data["positions"] = [], []
    data["ids"] = {"next_order": 1, "next_fill": 1}
    return json.dumps(data)


@pytest.mark.parametrize("chain_name", ["plain", "keyed"])
def test_snapshot_and_pruning_record_carry_the_chains_seal(
    journal_path: Path, chain_name: str
) -> None:
    chain = _chain(chain_name)
    body = _snapshot_and_prune(journal_path, chain)
    with contextlib.closing(_raw(journal_path)) as raw:
        [(seq, stored_body, seal)] = raw.execute("SELECT seq, body, seal FROM snapshots").fetchall()
        row8 = raw.execute("SELECT hash FROM events WHERE seq = 8").fetchone()[0]
        row6_prev = raw.execute("SELECT prev_hash FROM events WHERE seq = 6").fetchone()[0]
        meta = dict(raw.execute("SELECT key, value FROM meta").fetchall())
    assert (seq, stored_body) == (8, body)
    assert seal == chain.seal_snapshot(8, row8, body)
    assert seal != hashlib.sha256(body.encode()).hexdigest()
    assert meta["schema_version"] == "4"
    assert (meta["pruned_below"], meta["pruned_prev_hash"]) == ("6", row6_prev)
    assert meta["pruned_seal"] == chain.seal_pruning(6, row6_prev)
    report = _verify_with(journal_path, chain)
    assert (report.first_sequence, report.before_first_hash) == (6, row6_prev)
    assert report.snapshots == (8,)
    assert _rebuild_with(journal_path, chain) == body


@pytest.mark.parametrize("forged_seal", ["sha256 of the body", "plain chain seal"])
def test_a_forged_snapshot_is_refused_by_a_keyed_journal(
    journal_path: Path, forged_seal: str
) -> None:
    """What an intruder without the key can write: any state, with the old checksum
    or with the seal recomputed the way a plain journal computes it."""
    body = _forged_body(_snapshot_and_prune(journal_path, KEYED))
    with contextlib.closing(_raw(journal_path)) as raw:
        row8 = raw.execute("SELECT hash FROM events WHERE seq = 8").fetchone()[0]
        seal = (
            hashlib.sha256(body.encode()).hexdigest()
            if forged_seal == "sha256 of the body"
            else PLAIN_CHAIN.seal_snapshot(8, row8, body)
        )
        raw.execute("UPDATE snapshots SET body = ?, seal = ?", (body, seal))
    for check in (_verify_with, _rebuild_with):
        with pytest.raises(JournalCorrupt, match="snapshot at 8 fails its checksum"):
            check(journal_path, KEYED)
    with pytest.raises(JournalCorrupt, match="snapshot at 8 fails its checksum"):
        Journal(journal_path, chain=KEYED).latest_snapshot()


def test_a_plain_journal_cannot_stop_a_forger_who_recomputes_the_seal(
    journal_path: Path,
) -> None:
    """The documented limit of the plain chain, for snapshots as for rows; a forged
    state with only the old sha256 checksum is refused all the same."""
    body = _forged_body(_snapshot_and_prune(journal_path, PLAIN_CHAIN))
    with contextlib.closing(_raw(journal_path)) as raw:
        row8 = raw.execute("SELECT hash FROM events WHERE seq = 8").fetchone()[0]
        raw.execute("UPDATE snapshots SET body = ?, seal = ?", (body, sha256_hex(body)))
        with pytest.raises(JournalCorrupt, match="fails its checksum"):
            _verify_with(journal_path, PLAIN_CHAIN)
        seal = PLAIN_CHAIN.seal_snapshot(8, row8, body)
        raw.execute("UPDATE snapshots SET seal = ?", (seal,))
    assert _verify_with(journal_path, PLAIN_CHAIN).snapshots == (8,)


def test_a_snapshot_seal_covers_its_sequence(journal_path: Path) -> None:
    """A genuine snapshot moved to another sequence is not genuine there."""
    _snapshot_and_prune(journal_path, KEYED, keep_from=1)
    with contextlib.closing(_raw(journal_path)) as raw:
        raw.execute("UPDATE snapshots SET seq = 7")
    with pytest.raises(JournalCorrupt, match="snapshot at 7 fails its checksum"):
        _verify_with(journal_path, KEYED)


def test_a_snapshot_without_its_event_fails_verify(journal_path: Path) -> None:
    _snapshot_and_prune(journal_path, KEYED, at=5, keep_from=1)
    with contextlib.closing(_raw(journal_path)) as raw:
        raw.execute("DELETE FROM events WHERE seq >= 5")
    with pytest.raises(JournalCorrupt, match="snapshot at 5 has no matching journal row"):
        _verify_with(journal_path, KEYED)


def test_a_snapshot_needs_its_event(journal_path: Path) -> None:
    journal = Journal(journal_path, chain=KEYED)
    try:
        journal.append(RECORDS[:3])
        with pytest.raises(JournalCorrupt, match="snapshot at 5 has no matching journal row"):
            journal.write_snapshot(5, "{}")
        assert journal.latest_snapshot() is None
    finally:
        journal.close()


@pytest.mark.parametrize("chain_name", ["plain", "keyed"])
def test_history_deleted_behind_a_rewritten_pruning_record_fails_verify(
    journal_path: Path, chain_name: str
) -> None:
    """Deleting the oldest kept event and moving the record up to cover it, keeping the
    record's seal (it cannot be made without the key): the seal no longer matches."""
    chain = _chain(chain_name)
    _snapshot_and_prune(journal_path, chain)
    with contextlib.closing(_raw(journal_path)) as raw:
        prev7 = raw.execute("SELECT prev_hash FROM events WHERE seq = 7").fetchone()[0]
        raw.execute("DELETE FROM events WHERE seq = 6")
        raw.execute("UPDATE meta SET value = '7' WHERE key = 'pruned_below'")
        raw.execute("UPDATE meta SET value = ? WHERE key = 'pruned_prev_hash'", (prev7,))
        with pytest.raises(JournalCorrupt, match=r"pruning record .* fails its seal"):
            _verify_with(journal_path, chain)
        # Without the key, the seal can only be recomputed as a plain journal's.
        raw.execute(
            "UPDATE meta SET value = ? WHERE key = 'pruned_seal'",
            (PLAIN_CHAIN.seal_pruning(7, prev7),),
        )
    if chain.keyed:
        with pytest.raises(JournalCorrupt, match=r"pruning record .* fails its seal"):
            _verify_with(journal_path, chain)
    else:  # the documented limit of the plain chain
        assert _verify_with(journal_path, chain).first_sequence == 7


def test_a_pruning_record_must_match_the_oldest_event(journal_path: Path) -> None:
    _snapshot_and_prune(journal_path, KEYED)
    with contextlib.closing(_raw(journal_path)) as raw:
        raw.execute("DELETE FROM events")
    with pytest.raises(JournalCorrupt, match="events below 6 were pruned, but no events"):
        _verify_with(journal_path, KEYED)


# -- journals written before snapshots were sealed (schema 1) --------------------------


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _as_schema_1(path: Path) -> None:
    """Turn a journal into exactly what the schema 1 writer left: snapshots with
    sha256(body) in a body_hash column, an unsealed pruning record."""
    with contextlib.closing(_raw(path)) as raw:
        raw.execute("ALTER TABLE snapshots RENAME COLUMN seal TO body_hash")
        for seq, body in raw.execute("SELECT seq, body FROM snapshots").fetchall():
            raw.execute("UPDATE snapshots SET body_hash = ? WHERE seq = ?", (sha256_hex(body), seq))
        raw.execute("DELETE FROM meta WHERE key = 'pruned_seal'")
        raw.execute("DROP TABLE closed_orders")  # schema 4's
        raw.execute("DELETE FROM meta WHERE key IN ('archive', 'archive_seal')")
        raw.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")


def _schema_version(path: Path) -> str:
    with contextlib.closing(_raw(path)) as raw:
        return str(raw.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])


def test_a_schema_1_plain_journal_verifies_and_is_sealed_when_a_writer_opens_it(
    journal_path: Path,
) -> None:
    body = _snapshot_and_prune(journal_path, PLAIN_CHAIN)
    _as_schema_1(journal_path)
    # Readers take it as it is: the sha256 checksum is what its writer stored.
    report = _verify_with(journal_path, PLAIN_CHAIN)
    assert (report.first_sequence, report.snapshots) == (6, (8,))
    assert _rebuild_with(journal_path, PLAIN_CHAIN) == body
    verified = run_cli("journal", "verify", "--journal", str(journal_path))
    assert verified.returncode == 0, verified.stderr

    Journal(journal_path).close()  # a writer migrates
    assert _schema_version(journal_path) == "4"
    with contextlib.closing(_raw(journal_path)) as raw:
        [(seal,)] = raw.execute("SELECT seal FROM snapshots").fetchall()
        row8 = raw.execute("SELECT hash FROM events WHERE seq = 8").fetchone()[0]
        meta = dict(raw.execute("SELECT key, value FROM meta").fetchall())
    assert seal == PLAIN_CHAIN.seal_snapshot(8, row8, body)
    assert meta["pruned_seal"] == PLAIN_CHAIN.seal_pruning(6, meta["pruned_prev_hash"])
    assert _verify_with(journal_path, PLAIN_CHAIN).snapshots == (8,)
    assert _rebuild_with(journal_path, PLAIN_CHAIN) == body


def test_a_schema_1_snapshot_that_fails_its_checksum_stops_the_migration(
    journal_path: Path,
) -> None:
    _snapshot_and_prune(journal_path, PLAIN_CHAIN)
    _as_schema_1(journal_path)
    with contextlib.closing(_raw(journal_path)) as raw:
        raw.execute("UPDATE snapshots SET body = replace(body, '\"mom\"', '\"xyz\"')")
    with pytest.raises(JournalCorrupt, match="snapshot at 8 fails its checksum"):
        Journal(journal_path)
    assert _schema_version(journal_path) == "1"  # the migration is all or nothing
    with contextlib.closing(_raw(journal_path)) as raw:
        assert raw.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0] == 1
    Journal(journal_path, read_only=True).close()
    Journal(journal_path, read_only=True).close()


def test_a_schema_1_keyed_journal_drops_its_unsealed_snapshot(journal_path: Path) -> None:
    """The key never covered it: not trusted, not needed (every event is still there)."""
    body = _snapshot_and_prune(journal_path, KEYED, keep_from=1)
    _as_schema_1(journal_path)
    with contextlib.closing(_raw(journal_path)) as raw:
        # A schema 1 writer also recorded a pruning that removed nothing.
        raw.execute("INSERT INTO meta VALUES ('pruned_below', '1')")
        raw.execute("INSERT INTO meta VALUES ('pruned_prev_hash', ?)", (GENESIS_HASH,))
    with pytest.raises(JournalCorrupt, match="written before snapshots were sealed"):
        _verify_with(journal_path, KEYED)
    Journal(journal_path, chain=KEYED).close()
    assert _schema_version(journal_path) == "4"
    report = _verify_with(journal_path, KEYED)
    assert (report.first_sequence, report.snapshots) == (1, ())
    # Replayed from the events: the state the snapshot held, and the events after it.
    full = _rebuild_with(journal_path, KEYED)
    assert json.loads(full)["sequence"] == 8
    assert full == body


def test_a_schema_1_keyed_journal_that_was_pruned_is_refused(journal_path: Path) -> None:
    _snapshot_and_prune(journal_path, KEYED)
    _as_schema_1(journal_path)
    with pytest.raises(JournalCorrupt, match="did not seal its pruning record"):
        _verify_with(journal_path, KEYED)
    with pytest.raises(JournalCorrupt, match="did not seal its pruning record"):
        Journal(journal_path, chain=KEYED)
    assert _schema_version(journal_path) == "1"
