"""Finished orders leave memory for the journal's archive with each snapshot, and every
answer about them stays what it was: GetOrder, ListOrders (filters, pages), idempotent
retries, across restarts. The archive is as tamper-evident as the journal: a row
removed stops the start, a row altered is refused when read, for plain and keyed
journals alike."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from execgw.client import ExecutionClient, limit, market
from execgw.client.errors import Internal, Unavailable
from execgw.server.audit import verify
from execgw.server.chain import PLAIN_CHAIN, Chain, chain_from_env
from execgw.server.clock import ManualClock
from execgw.server.closed_orders import ArchivedOrder, ClosedOrder
from execgw.server.journal import Journal, JournalCorrupt
from execgw.server.order_archive import (
    CREATE_CLOSED_ORDERS,
    ROW_COLUMNS,
    ArchiveCorrupt,
    ClosedOrderArchive,
    checked_row,
    seal_row,
)
from execgw.server.recovery import rebuild

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.durability_helpers import run_cli
    from tests.e2e_helpers import INFY, TCS, TIMEOUT_S, paged, publish
else:
    from conftest import RunningGateway, make_config
    from durability_helpers import run_cli
    from e2e_helpers import INFY, TCS, TIMEOUT_S, paged, publish

KEY_ENV = "EXECGW_TEST_ARCHIVE_KEY"
SNAPSHOT_EVERY = 7


@pytest.fixture(params=["plain", "keyed"])
def journal_options(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> dict[str, object]:
    options: dict[str, object] = {"snapshot_every": SNAPSHOT_EVERY}
    if request.param == "keyed":
        monkeypatch.setenv(KEY_ENV, "0123456789abcdef" * 4)
        options["hmac_key_env"] = KEY_ENV
    return options


@contextlib.contextmanager
def _editing(directory: Path) -> Iterator[sqlite3.Connection]:
    """The journal file as anyone who can write it sees it, committed on the way out."""
    with contextlib.closing(sqlite3.connect(directory / "journal.db")) as raw, raw:
        yield raw


def _record(raw: sqlite3.Connection) -> str:
    """The archive's record as meta holds it: "seq|day|count|digest"."""
    [record] = raw.execute("SELECT value FROM meta WHERE key = 'archive'").fetchone()
    return str(record)


def _lower_count(raw: sqlite3.Connection) -> list[str]:
    """Lower the record's count by one, leaving the rest; the record as it was."""
    sequence, day, count, digest = _record(raw).split("|")
    lower = f"{sequence}|{day}|{int(count) - 1}|{digest}"
    raw.execute("UPDATE meta SET value = ? WHERE key = 'archive'", (lower,))
    return [sequence, day, count, digest]


def _chain(options: dict[str, object]) -> Chain:
    return chain_from_env(KEY_ENV) if "hmac_key_env" in options else PLAIN_CHAIN


def test_journal_verify_checks_every_archived_row(
    tmp_path: Path, clock: ManualClock, journal_options: dict[str, object]
) -> None:
    ids = _day(tmp_path, clock, journal_options)
    report = verify(Journal(tmp_path / "journal.db", read_only=True, chain=_chain(journal_options)))
    assert report.archived_orders >= len(ids) - 15 - SNAPSHOT_EVERY
    keyed = ["--hmac-key-env", KEY_ENV] if "hmac_key_env" in journal_options else []
    done = run_cli("journal", "verify", "--journal", str(tmp_path / "journal.db"), *keyed)
    assert done.returncode == 0, done.stderr
    assert f"; {report.archived_orders} archived orders sealed" in done.stdout


def _start(directory: Path, clock: ManualClock, options: dict[str, object]) -> RunningGateway:
    return RunningGateway(make_config(directory, journal=options), clock)


def _answers(client: ExecutionClient, ids: list[str]) -> list[bytes]:
    out = [client.get_order(i).SerializeToString(deterministic=True) for i in ids]
    for listed in (
        client.list_orders(),
        client.list_orders(strategy_code="s2"),
        client.list_orders(symbol=TCS),
        client.list_orders(strategy_code="s1"),
    ):
        out += [o.SerializeToString(deterministic=True) for o in listed]
    return out + paged(client, page_size=4)


def _day(directory: Path, clock: ManualClock, options: dict[str, object]) -> list[str]:
    """60 orders: filled, rejected (no quote), cancelled and resting, two strategies."""
    running = _start(directory, clock, options)
    ids = []
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            publish(c, INFY, 1234.55)
            for n in range(15):
                code = f"s{n % 2 + 1}"
                ids.append(c.submit(market(INFY, "BUY", 1, strategy_code=code), f"f{n}").order_id)
                ids.append(c.submit(market(TCS, "BUY", 1, strategy_code=code), f"r{n}").order_id)
                gone = c.submit(limit(INFY, "BUY", 1, 1210.0, strategy_code=code), f"c{n}")
                ids.append(c.cancel(gone.order_id).order_id)
                ids.append(c.submit(limit(INFY, "BUY", 1, 1200.0, strategy_code=code)).order_id)
            running.call(running.gateway.core.snapshot_written())
            # While it runs, too: stored snapshots took the finished orders out of memory.
            held = running.ledger._orders.values()
            assert sum(isinstance(o, ClosedOrder) for o in held) < SNAPSHOT_EVERY
            # A retry of an order that went is answered with it, before any restart.
            assert ids[0] not in running.ledger._orders
            retry = c.submit(market(INFY, "BUY", 1, strategy_code="s1"), "f0")
            assert retry.order_id == ids[0]
    finally:
        running.stop()
    return ids


def test_finished_orders_leave_memory_and_answer_as_before_across_restarts(
    tmp_path: Path, clock: ManualClock, journal_options: dict[str, object]
) -> None:
    ids = _day(tmp_path, clock, journal_options)
    seen = []
    for _ in range(2):
        running = _start(tmp_path, clock, journal_options)
        try:
            ledger = running.ledger
            held = ledger._orders
            finished_held = [o for o in held.values() if isinstance(o, ClosedOrder)]
            # Memory: the 15 resting orders, and what finished since the last snapshot.
            assert len(held) - len(finished_held) == 15
            assert len(finished_held) < SNAPSHOT_EVERY
            assert len(list(ledger.orders())) == 60
            with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
                seen.append(_answers(c, ids))
                # Idempotent retries of archived orders return them, placing nothing.
                for n in (0, 7, 14):
                    code = f"s{n % 2 + 1}"
                    retry = c.submit(market(INFY, "BUY", 1, strategy_code=code), f"f{n}")
                    assert retry.order_id == ids[4 * n]
                    retry = c.submit(market(TCS, "BUY", 1, strategy_code=code), f"r{n}")
                    assert retry.order_id == ids[4 * n + 1]
                assert len(c.list_orders()) == 60
        finally:
            running.stop()
    assert seen[0] == seen[1]


def test_a_removed_archive_row_stops_the_start(
    tmp_path: Path, clock: ManualClock, journal_options: dict[str, object]
) -> None:
    ids = _day(tmp_path, clock, journal_options)
    with _editing(tmp_path) as raw:
        held = raw.execute("SELECT count(*) FROM closed_orders").fetchone()[0]
        assert held >= 40
        raw.execute("DELETE FROM closed_orders WHERE order_id = ?", (ids[0],))
    with pytest.raises(JournalCorrupt, match=f"archive holds {held - 1} .*; {held} were stored"):
        _start(tmp_path, clock, journal_options)


def test_an_altered_archive_row_is_refused_when_read_and_stops_the_start(
    tmp_path: Path, clock: ManualClock, journal_options: dict[str, object]
) -> None:
    ids = _day(tmp_path, clock, journal_options)
    running = _start(tmp_path, clock, journal_options)
    try:
        with _editing(tmp_path) as raw:
            # The order filled 1; the row now says 9, in its body and nowhere else.
            changed = raw.execute(
                "UPDATE closed_orders SET body = "
                "replace(body, '\"filled_qty\":1', '\"filled_qty\":9') WHERE order_id = ?",
                (ids[0],),
            ).rowcount
            assert changed == 1
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            with pytest.raises(Internal):
                c.get_order(ids[0])
            # The others answer as they did.
            assert c.get_order(ids[4]).filled_qty == 1
    finally:
        running.stop()
    refused = f"archived order {ids[0]} is not what the journal stored"
    with pytest.raises(JournalCorrupt, match=refused):
        verify(Journal(tmp_path / "journal.db", read_only=True, chain=_chain(journal_options)))
    with pytest.raises(JournalCorrupt, match=refused):
        _start(tmp_path, clock, journal_options)


def test_an_altered_archive_record_stops_the_start(
    tmp_path: Path, clock: ManualClock, journal_options: dict[str, object]
) -> None:
    """The snapshot's seal covers the record: a lower count hiding a removed row fails it."""
    _day(tmp_path, clock, journal_options)
    with _editing(tmp_path) as raw:
        sequence = _lower_count(raw)[0]
        raw.execute(
            "DELETE FROM closed_orders WHERE rowid = (SELECT max(rowid) FROM closed_orders)"
        )
    with pytest.raises(JournalCorrupt, match=f"snapshot at {sequence} fails its checksum"):
        _start(tmp_path, clock, journal_options)


def test_the_record_and_the_days_rows_removed_together_stop_the_start(
    tmp_path: Path, clock: ManualClock, journal_options: dict[str, object]
) -> None:
    _day(tmp_path, clock, journal_options)
    with _editing(tmp_path) as raw:
        record = _record(raw)
        raw.execute("DELETE FROM closed_orders WHERE day = ?", (record.split("|")[1],))
        raw.execute("DELETE FROM meta WHERE key = 'archive'")
    with pytest.raises(JournalCorrupt, match="fails its checksum"):
        _start(tmp_path, clock, journal_options)


def test_a_count_altered_while_running_is_not_sealed_again_by_the_next_snapshot(
    tmp_path: Path, clock: ManualClock, journal_options: dict[str, object]
) -> None:
    """The next snapshot adds to the record as the journal stored (or checked) it, not
    as the file says now: the removal it would have vouched for stops the next start."""
    ids = _day(tmp_path, clock, journal_options)
    running = _start(tmp_path, clock, journal_options)
    try:
        with _editing(tmp_path) as raw:
            raw.execute("DELETE FROM closed_orders WHERE order_id = ?", (ids[0],))
            sequence, _, count, _ = _lower_count(raw)
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            for n in range(2 * SNAPSHOT_EVERY):
                c.submit(market(TCS, "BUY", 1, strategy_code="s1"), f"x{n}")  # no quote
            running.call(running.gateway.core.snapshot_written())
    finally:
        running.stop()
    with _editing(tmp_path) as raw:
        [(latest,)] = raw.execute("SELECT seq FROM snapshots").fetchall()
        stored = _record(raw)
    assert latest > int(sequence)
    expected = int(stored.split("|")[2])
    assert expected >= int(count) + 2 * SNAPSHOT_EVERY - SNAPSHOT_EVERY
    with pytest.raises(JournalCorrupt, match=f"holds {expected - 1} .*; {expected} were stored"):
        _start(tmp_path, clock, journal_options)


def test_a_snapshot_that_fails_to_store_lets_no_finished_order_go(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = _start(tmp_path, clock, {"snapshot_every": 3})
    try:

        def full_disk(*args: object, **kwargs: object) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(running.gateway.journal, "write_snapshot", full_disk)
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            keys = [f"r{n}" for n in range(10)]
            ids = [c.submit(market(TCS, "BUY", 1, strategy_code="s1"), k).order_id for k in keys]
            running.call(running.gateway.core.snapshot_written())
            assert len(running.ledger._orders) == 10
            assert [o.order_id for o in c.list_orders()] == ids
            for key, order_id in zip(keys, ids, strict=True):
                assert c.get_order(order_id).order_id == order_id
                retry = c.submit(market(TCS, "BUY", 1, strategy_code="s1"), key)
                assert retry.order_id == order_id
    finally:
        running.stop()


def test_rows_of_a_snapshot_that_never_committed_are_not_counted_and_are_removed(
    tmp_path: Path, clock: ManualClock, journal_options: dict[str, object]
) -> None:
    """New rows go in before the snapshot's own row: a crash between leaves rows no
    stored snapshot names. The start does not count them; the next snapshot removes them."""
    ids = _day(tmp_path, clock, journal_options)
    with _editing(tmp_path) as raw:
        [latest] = raw.execute("SELECT max(seq) FROM snapshots").fetchone()
        raw.execute(
            "INSERT INTO closed_orders SELECT 'O9999999999', day, strategy_code, symbol, "
            "client_order_id, status, internal, created_at, reject_reason, body, seal, ? "
            "FROM closed_orders WHERE order_id = ?",
            (latest + 1, ids[0]),
        )
    running = _start(tmp_path, clock, journal_options)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            for n in range(SNAPSHOT_EVERY):
                c.submit(market(INFY, "BUY", 1, strategy_code="s1"), f"more{n}")
            running.call(running.gateway.core.snapshot_written())
    finally:
        running.stop()
    with _editing(tmp_path) as raw:
        assert raw.execute(
            "SELECT count(*) FROM closed_orders WHERE order_id = 'O9999999999'"
        ).fetchone() == (0,)
    _start(tmp_path, clock, journal_options).stop()


@pytest.mark.parametrize("where", ["before", "after"])
def test_the_record_moved_into_the_state_stops_the_start(
    tmp_path: Path, clock: ManualClock, journal_options: dict[str, object], where: str
) -> None:
    """The seal covers the record framed, ahead of the state: its text moved into the
    state (and the record removed, with the day's rows) fails the seal or the state."""
    _day(tmp_path, clock, journal_options)
    with _editing(tmp_path) as raw:
        record = _record(raw)
        framed = f"archive|{len(record)}:{record}|"
        if where == "before":
            raw.execute("UPDATE snapshots SET body = ? || body", (framed,))
        else:
            raw.execute("UPDATE snapshots SET body = body || ?", ("\x00" + framed,))
        raw.execute("DELETE FROM closed_orders WHERE day = ?", (record.split("|")[1],))
        raw.execute("DELETE FROM meta WHERE key = 'archive'")
    journal = Journal(tmp_path / "journal.db", read_only=True, chain=_chain(journal_options))
    refused = "is not a state" if where == "before" else "fails its checksum"
    with pytest.raises(JournalCorrupt, match=refused):
        verify(journal)  # which reads no state, only seals
    with pytest.raises(JournalCorrupt):
        _start(tmp_path, clock, journal_options)


def test_a_planted_row_stops_the_start(
    tmp_path: Path, clock: ManualClock, journal_options: dict[str, object]
) -> None:
    ids = _day(tmp_path, clock, journal_options)
    with _editing(tmp_path) as raw:
        raw.execute("DELETE FROM closed_orders WHERE order_id = ?", (ids[0],))
        raw.execute(
            "INSERT INTO closed_orders SELECT 'O9999999999', day, strategy_code, symbol, "
            "client_order_id, status, internal, created_at, reject_reason, body, seal, "
            "snapshot_seq FROM closed_orders WHERE order_id = ?",
            (ids[4],),
        )
    with pytest.raises(JournalCorrupt, match="archived order O9999999999 is not what"):
        _start(tmp_path, clock, journal_options)


def test_a_genuine_row_of_another_snapshot_in_place_of_the_counted_one_stops_the_start(
    tmp_path: Path, clock: ManualClock, journal_options: dict[str, object]
) -> None:
    """A version of the row the gateway could have sealed for a snapshot that failed
    (the same order, another snapshot_seq): its seal holds, the count holds, the
    record's digest of the day's seals does not."""
    ids = _day(tmp_path, clock, journal_options)
    with _editing(tmp_path) as raw:
        row = raw.execute(
            f"SELECT {ROW_COLUMNS} FROM closed_orders WHERE order_id = ?", (ids[0],)
        ).fetchone()
        archived = ArchivedOrder(*row[:-2])
        other = int(row[-1]) - 1
        seal = seal_row(_chain(journal_options), archived, other)
        raw.execute(
            "UPDATE closed_orders SET seal = ?, snapshot_seq = ? WHERE order_id = ?",
            (seal, other, ids[0]),
        )
    with pytest.raises(JournalCorrupt, match="and others than those"):
        _start(tmp_path, clock, journal_options)


def test_snapshots_removed_while_running_stop_the_gateway_and_keep_the_archive(
    tmp_path: Path, clock: ManualClock, journal_options: dict[str, object]
) -> None:
    """The next snapshot finds its latest stored one gone: it neither removes the rows
    (as rows of no stored snapshot) nor seals a record without them, and the gateway
    stops taking commands, since what it reads from the journal is no longer sure."""
    _day(tmp_path, clock, journal_options)
    with _editing(tmp_path) as raw:
        [(rows,)] = raw.execute("SELECT count(*) FROM closed_orders").fetchall()
    running = _start(tmp_path, clock, journal_options)
    try:
        with _editing(tmp_path) as raw:
            raw.execute("DELETE FROM snapshots")
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            refused = _refusal(c, running)
        assert refused is not None
        assert "journal was altered" in str(refused)
        # For good: a commit or a probe still in flight must not bring SERVING back.
        running.call(running.gateway.core.snapshot_written())
        assert not running.gateway.core.healthy
    finally:
        running.stop()
    with _editing(tmp_path) as raw:
        assert raw.execute("SELECT count(*) FROM closed_orders").fetchone() == (rows,)


def _refusal(client: ExecutionClient, running: RunningGateway) -> Unavailable | None:
    """Submit (each one's snapshot, if due, stored) until the gateway refuses."""
    for n in range(3 * SNAPSHOT_EVERY):
        try:
            client.submit(market(TCS, "BUY", 1, strategy_code="s1"), f"x{n}")
        except Unavailable as e:
            return e
        running.call(running.gateway.core.snapshot_written())
    return None


def test_reading_a_days_keys_leaves_the_archive_unlocked_between_batches(tmp_path: Path) -> None:
    """A reader that stops midway (an exception while a start loads the keys) must not
    leave the archive locked: its lookups, and closing it, would wait for good."""
    path = tmp_path / "journal.db"
    with contextlib.closing(sqlite3.connect(path)) as raw:
        for statement in CREATE_CLOSED_ORDERS:
            raw.execute(statement)
        raw.executemany(
            "INSERT INTO closed_orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    f"O{n:010d}",
                    "2026-12-03",
                    "s1",
                    INFY,
                    f"k{n}",
                    "FILLED",
                    0,
                    "t",
                    None,
                    b"",
                    "x",
                    1,
                )
                for n in range(25_000)
            ],
        )
        raw.commit()
    archive = ClosedOrderArchive(path, PLAIN_CHAIN)
    keys = iter(archive.client_keys("2026-12-03"))
    assert next(keys) == ("s1", "k0")
    assert archive._lock.acquire(timeout=5)
    archive._lock.release()
    assert sum(1 for _ in keys) == 24_999  # the rest, across batches
    archive.close()


def test_a_row_of_another_shape_is_refused_as_altered() -> None:
    """Every caller turns ArchiveCorrupt into a refusal; any other error would escape."""
    row = ("O1", "2026-12-03", "s1", INFY, "k1", "FILLED", 0, "t", None, b"", "ab" * 32, 7)
    for shape in (row[:-1], (*row, 1)):
        with pytest.raises(ArchiveCorrupt, match="columns"):
            checked_row(PLAIN_CHAIN, shape)


def test_an_archive_whose_keys_cannot_be_read_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As every other unreadable part of the journal does: JournalCorrupt, not a crash."""

    def unreadable(self: ClosedOrderArchive, day: str) -> Iterator[tuple[str, str]]:
        raise ArchiveCorrupt("cannot read the journal's archive: database disk image is malformed")
        yield  # a generator, as the real one

    journal = Journal(tmp_path / "journal.db")
    try:
        monkeypatch.setattr(ClosedOrderArchive, "client_keys", unreadable)
        with pytest.raises(JournalCorrupt, match="archive cannot be read"):
            rebuild(journal, starting=True)
    finally:
        journal.close()
