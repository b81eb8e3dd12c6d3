"""Snapshots stored in parts (journal schema 3): each part its own transaction, so the
writer's commits go on between them; the seal over the whole state; a part altered,
missing or added fails it; parts a crash left behind are never read and are removed;
schema 2 journals read as they are and are upgraded by a writer."""

from __future__ import annotations

import contextlib
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from execgw.server import audit
from execgw.server import journal as journal_module
from execgw.server.chain import PLAIN_CHAIN, Chain
from execgw.server.journal import (
    Journal,
    JournalCorrupt,
    JournalError,
    JournalWriteFailed,
    _iter_parts,
)
from execgw.server.recovery import prepare_snapshot, rebuild, state_to_json

if TYPE_CHECKING:
    from tests.durability_helpers import run_cli
    from tests.test_journal import RECORDS
else:
    from durability_helpers import run_cli
    from test_journal import RECORDS

KEYED = Chain(b"p" * 32)
FIXTURE_V2 = Path(__file__).parent / "fixtures" / "journal_v2" / "journal.db"
# Small parts, so the few events of RECORDS make a snapshot of many parts.
PART = 100


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def _parts_stored(path: Path) -> list[tuple[int, int]]:
    with contextlib.closing(_raw(path)) as raw:
        return [
            (int(seq), int(part))
            for seq, part in raw.execute("SELECT seq, part FROM snapshot_parts ORDER BY seq, part")
        ]


def _schema_version(path: Path) -> str:
    with contextlib.closing(_raw(path)) as raw:
        return str(raw.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])


def _snapshot_in_parts(path: Path, chain: Chain = PLAIN_CHAIN, *, at: int = 8) -> str:
    """RECORDS, and a snapshot at `at` written in parts of PART characters."""
    journal = Journal(path, chain=chain)
    try:
        journal.append(RECORDS[:at])
        body = state_to_json(rebuild(journal))
        journal.write_snapshot(at, body, part_size=PART)
        journal.append(RECORDS[at:])
    finally:
        journal.close()
    return body


def _latest(path: Path, chain: Chain = PLAIN_CHAIN) -> str | None:
    journal = Journal(path, read_only=True, chain=chain)
    try:
        snapshot = journal.latest_snapshot()
        return None if snapshot is None else snapshot.body
    finally:
        journal.close()


def _verify(path: Path, chain: Chain = PLAIN_CHAIN) -> audit.VerifyReport:
    journal = Journal(path, read_only=True, chain=chain)
    try:
        return audit.verify(journal)
    finally:
        journal.close()


def _rebuilt(path: Path, chain: Chain = PLAIN_CHAIN) -> str:
    journal = Journal(path, read_only=True, chain=chain)
    try:
        return state_to_json(rebuild(journal))
    finally:
        journal.close()


# -- splitting and joining ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("pieces", "size", "parts"),
    [
        ([""], 4, [""]),
        ([], 4, [""]),
        (["abcdefghij"], 4, ["abcd", "efgh", "ij"]),
        (["abcd"], 4, ["abcd"]),
        (["ab", "c", "defgh", "", "ij"], 4, ["abcd", "efgh", "ij"]),
        (["ä€😀x"], 2, ["ä€", "😀x"]),  # characters, never half of one
    ],
)
def test_the_text_is_split_into_parts_that_join_back_to_it(
    pieces: list[str], size: int, parts: list[str]
) -> None:
    assert list(_iter_parts(pieces, size)) == parts
    assert "".join(parts) == "".join(pieces)


@pytest.mark.parametrize("per_piece", [1, 2, 3, 256])
def test_a_prepared_snapshots_pieces_join_to_its_body(path: Path, per_piece: int) -> None:
    journal = Journal(path)
    try:
        journal.append(RECORDS)
        prepared = prepare_snapshot(rebuild(journal))
    finally:
        journal.close()
    assert "".join(prepared.pieces(per_piece)) == prepared.body()


# -- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("chain", [PLAIN_CHAIN, KEYED], ids=["plain", "keyed"])
def test_a_snapshot_in_parts_reads_back_whole_and_rebuilds_the_same_state(
    path: Path, chain: Chain
) -> None:
    body = _snapshot_in_parts(path, chain)
    assert len(body) > 5 * PART
    count = -(-len(body) // PART)
    assert _parts_stored(path) == [(8, n) for n in range(1, count)]
    with contextlib.closing(_raw(path)) as raw:
        [(first,)] = raw.execute("SELECT body FROM snapshots WHERE seq = 8").fetchall()
    assert first == body[:PART]
    assert _latest(path, chain) == body
    assert _verify(path, chain).snapshots == (8,)
    with contextlib.closing(_raw(path)) as raw:
        raw.execute("DELETE FROM snapshots")  # the same state from the events alone
    assert _latest(path, chain) is None
    assert _rebuilt(path, chain) == _snapshot_in_parts(path.with_name("again.db"), chain)


def test_recovery_from_a_snapshot_in_parts_equals_a_full_replay(path: Path) -> None:
    """Snapshot at 5 (in parts, from the pieces the core hands over), events 6..8 after."""
    journal = Journal(path)
    try:
        journal.append(RECORDS[:5])
        prepared = prepare_snapshot(rebuild(journal))
        journal.write_snapshot(5, prepared.pieces(1), part_size=PART)
        journal.append(RECORDS[5:])
        rebuilt = rebuild(journal)
        assert rebuilt.replayed == 3
        from_snapshot = state_to_json(rebuilt)
    finally:
        journal.close()
    with contextlib.closing(_raw(path)) as raw:
        raw.execute("DELETE FROM snapshots")
    assert from_snapshot == _rebuilt(path)


def test_the_cli_verifies_a_snapshot_in_parts(path: Path) -> None:
    _snapshot_in_parts(path)
    verified = run_cli("journal", "verify", "--journal", str(path))
    assert verified.returncode == 0, verified.stderr
    assert "snapshot at 8 sealed" in verified.stdout + verified.stderr


def test_a_newer_snapshot_replaces_the_older_one_and_its_parts(path: Path) -> None:
    journal = Journal(path)
    try:
        journal.append(RECORDS[:5])
        journal.write_snapshot(5, state_to_json(rebuild(journal)), part_size=PART)
        assert {seq for seq, _ in _parts_stored(path)} == {5}
        journal.append(RECORDS[5:])
        body = state_to_json(rebuild(journal))
        journal.write_snapshot(8, body, part_size=PART)
        assert {seq for seq, _ in _parts_stored(path)} == {8}
        assert [s.sequence for s in journal.snapshots()] == [8]
        # The same sequence again (in bigger parts): replaced in one transaction.
        journal.write_snapshot(8, body, part_size=3 * PART)
        assert len(_parts_stored(path)) == -(-len(body) // (3 * PART)) - 1
        latest = journal.latest_snapshot()
        assert latest is not None
        assert latest.body == body
    finally:
        journal.close()


def test_a_small_snapshot_is_one_part_in_its_row(path: Path) -> None:
    journal = Journal(path)
    try:
        journal.append(RECORDS)
        body = state_to_json(rebuild(journal))
        journal.write_snapshot(8, body)
    finally:
        journal.close()
    assert _parts_stored(path) == []
    with contextlib.closing(_raw(path)) as raw:
        assert raw.execute("SELECT body FROM snapshots").fetchone()[0] == body


# -- tampering -----------------------------------------------------------------------------


@pytest.mark.parametrize("chain", [PLAIN_CHAIN, KEYED], ids=["plain", "keyed"])
@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (
            "UPDATE snapshot_parts SET body = '#' || substr(body, 2) WHERE part = 3",
            r"snapshot at 8 fails its checksum: .*stored in \d+ parts",
        ),
        ("DELETE FROM snapshot_parts WHERE part = 2", "snapshot at 8 is missing part 2"),
        (
            "DELETE FROM snapshot_parts WHERE part = (SELECT MAX(part) FROM snapshot_parts)",
            "snapshot at 8 fails its checksum",
        ),
        (
            "INSERT INTO snapshot_parts SELECT 8, MAX(part) + 1, ' ' FROM snapshot_parts",
            "snapshot at 8 fails its checksum: .*a part added or removed",
        ),
        (
            "UPDATE snapshot_parts SET part = 1000 + part WHERE part IN (1, 2)",
            "snapshot at 8 is missing part 1",
        ),
        ("UPDATE snapshots SET body = body || ' '", "snapshot at 8 fails its checksum"),
    ],
    ids=["altered", "deleted", "last-deleted", "extra", "moved", "first-altered"],
)
def test_a_tampered_part_fails_the_snapshot(
    path: Path, chain: Chain, tamper: str, message: str
) -> None:
    _snapshot_in_parts(path, chain)
    with contextlib.closing(_raw(path)) as raw:
        raw.execute(tamper)
    with pytest.raises(JournalCorrupt, match=message):
        _latest(path, chain)
    with pytest.raises(JournalCorrupt, match=message):
        _verify(path, chain)
    writer = Journal(path, chain=chain)
    try:
        with pytest.raises(JournalCorrupt, match=message):
            writer.latest_snapshot()
    finally:
        writer.close()


# -- a crash between parts -----------------------------------------------------------------


def _fail_the_snapshots_row(path: Path) -> None:
    """A snapshots row can no longer be written: the snapshot stops after its parts, as
    a crash before its last transaction would leave it."""
    with contextlib.closing(_raw(path)) as raw:
        raw.execute(
            "CREATE TRIGGER no_row BEFORE INSERT ON snapshots "
            "BEGIN SELECT RAISE(ABORT, 'the disk went away'); END"
        )


def _allow_the_snapshots_row(path: Path) -> None:
    with contextlib.closing(_raw(path)) as raw:
        raw.execute("DROP TRIGGER no_row")


def test_a_failed_snapshot_takes_its_parts_back_and_is_never_read(path: Path) -> None:
    """A snapshot whose row cannot be written (a full disk) removes the parts it wrote:
    the room goes back to orders. Readers see the older snapshot as it was."""
    body = _snapshot_in_parts(path, at=5)
    stored = _parts_stored(path)
    _fail_the_snapshots_row(path)
    journal = Journal(path)
    try:
        newer = state_to_json(rebuild(journal))
        with pytest.raises(JournalWriteFailed, match="the disk went away"):
            journal.write_snapshot(8, newer, part_size=PART)
    finally:
        journal.close()
    assert [(seq, part) for seq, part in _parts_stored(path) if seq == 8] == []
    # Readers see the snapshot at 5 as it was, and nothing of the one at 8.
    assert _latest(path) == body
    assert _verify(path).snapshots == (5,)
    assert _rebuilt(path) == newer
    _allow_the_snapshots_row(path)
    Journal(path).close()  # a writer removes what no snapshot row names
    assert _parts_stored(path) == stored
    assert _latest(path) == body


def test_a_snapshot_at_the_sequence_a_crash_left_parts_of_replaces_them(path: Path) -> None:
    _snapshot_in_parts(path, at=5)
    with contextlib.closing(_raw(path)) as raw:
        # A crashed attempt at 8, in bigger parts than the next one, and one stray part.
        raw.executemany(
            "INSERT INTO snapshot_parts VALUES (8, ?, ?)", [(n, "junk") for n in (1, 2, 50)]
        )
    journal = Journal(path)
    try:
        body = state_to_json(rebuild(journal))
        assert {seq for seq, _ in _parts_stored(path)} == {5}  # removed on open
        with contextlib.closing(_raw(path)) as raw:
            raw.executemany(
                "INSERT INTO snapshot_parts VALUES (8, ?, ?)", [(n, "junk") for n in (1, 50)]
            )
        journal.write_snapshot(8, body, part_size=PART)
        latest = journal.latest_snapshot()
        assert latest is not None
        assert latest.body == body
    finally:
        journal.close()
    assert _parts_stored(path) == [(8, n) for n in range(1, -(-len(body) // PART))]


def test_a_snapshot_killed_between_parts_leaves_the_previous_one(path: Path) -> None:
    """kill -9 of a process writing a snapshot in parts, in the middle of its fourth
    part's transaction: three parts committed, no snapshots row."""
    body = _snapshot_in_parts(path, at=5)
    with contextlib.closing(_raw(path)) as raw:
        raw.execute(
            "CREATE TRIGGER die AFTER INSERT ON snapshot_parts WHEN NEW.seq = 8 "
            "AND NEW.part = 4 BEGIN SELECT die(); END"
        )
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from execgw.server.journal import Journal\n"
        "from execgw.server.recovery import rebuild, state_to_json\n"
        "journal = Journal(Path(sys.argv[1]))\n"
        "journal._db.create_function('die', 0, lambda: os.kill(os.getpid(), signal.SIGKILL))\n"
        f"journal.write_snapshot(8, state_to_json(rebuild(journal)), part_size={PART})\n"
    )
    killed = subprocess.run([sys.executable, "-c", script, str(path)], check=False, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    with contextlib.closing(_raw(path)) as raw:
        raw.execute("DROP TRIGGER die")
    assert [(seq, part) for seq, part in _parts_stored(path) if seq == 8] == [
        (8, 1),
        (8, 2),
        (8, 3),
    ]
    assert _latest(path) == body
    assert _verify(path).snapshots == (5,)
    Journal(path).close()
    assert {seq for seq, _ in _parts_stored(path)} == {5}


# -- the writer between parts ---------------------------------------------------------------


def test_the_writers_append_commits_between_two_parts(path: Path) -> None:
    """A snapshot of many parts in a thread; once its first part is in, an append from
    another thread commits before the snapshot's row does (one transaction, as before
    schema 3, would have kept it waiting until the whole snapshot was written)."""
    journal = Journal(path)
    try:
        journal.append(RECORDS[:5])
        body = state_to_json(rebuild(journal))
        journal_db = journal._db
        with contextlib.closing(_raw(path)) as raw:
            raw.execute("CREATE TABLE trace (n INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT)")
            raw.execute(
                "CREATE TRIGGER trace_part AFTER INSERT ON snapshot_parts BEGIN "
                "INSERT INTO trace (what) VALUES ('part ' || NEW.part); "
                "SELECT part_written(NEW.part); END"
            )
            raw.execute(
                "CREATE TRIGGER trace_event AFTER INSERT ON events BEGIN "
                "INSERT INTO trace (what) VALUES ('event ' || NEW.seq); END"
            )
            raw.execute(
                "CREATE TRIGGER trace_row AFTER INSERT ON snapshots BEGIN "
                "INSERT INTO trace (what) VALUES ('row'); END"
            )
        first_part = threading.Event()
        journal_db.create_function(
            "part_written", 1, lambda part: first_part.set() if part == 1 else None
        )
        failed: list[BaseException] = []
        size = max(1, len(body) // 200)  # about 200 parts

        def snapshot() -> None:
            try:
                journal.write_snapshot(5, body, part_size=size)
            except BaseException as e:
                failed.append(e)

        writing = threading.Thread(target=snapshot)
        writing.start()
        assert first_part.wait(30)
        journal.append(RECORDS[5:6])
        writing.join(60)
        assert not writing.is_alive()
        assert not failed
        with contextlib.closing(_raw(path)) as raw:
            trace = [what for (what,) in raw.execute("SELECT what FROM trace ORDER BY n")]
        parts = -(-len(body) // size) - 1
        assert trace.count("row") == 1
        assert trace[-1] == "row"
        event = trace.index("event 6")
        assert trace[0] == "part 1"
        assert 0 < event < parts, (event, parts)
        latest = journal.latest_snapshot()
        assert latest is not None
        assert latest.body == body
    finally:
        journal.close()


# -- pruning in batches ----------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2, 3, 100])
def test_pruning_in_batches_leaves_a_sealed_record_of_the_cut(path: Path, batch: int) -> None:
    journal = Journal(path, chain=KEYED)
    try:
        journal.append(RECORDS[:7])
        journal.write_snapshot(7, state_to_json(rebuild(journal)), part_size=PART)
        journal.append(RECORDS[7:])
        assert journal.prune_before(7, batch=batch) == 6
        assert journal.prune_before(7, batch=batch) == 0
        assert journal.prune_before(100, batch=batch) == 0  # nothing would follow the cut
        assert journal.oldest_sequence() == 7
        record = journal.pruning_record()
        assert record is not None
        assert record.below == 7
    finally:
        journal.close()
    report = _verify(path, KEYED)
    assert (report.first_sequence, report.snapshots) == (7, (7,))


# -- schema 2 -----------------------------------------------------------------------------


@pytest.fixture
def v2(tmp_path: Path) -> Path:
    target = tmp_path / "journal.db"
    shutil.copyfile(FIXTURE_V2, target)
    target.chmod(0o600)
    return target


def test_a_schema_2_journal_reads_as_it_is_without_a_writer(v2: Path) -> None:
    assert _schema_version(v2) == "2"
    body = _latest(v2)
    assert body is not None
    assert _verify(v2).snapshots
    _rebuilt(v2)
    assert _schema_version(v2) == "2"
    with contextlib.closing(_raw(v2)) as raw:
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "snapshot_parts" not in tables


def test_a_writer_upgrades_a_schema_2_journal_and_keeps_its_snapshot(v2: Path) -> None:
    before = _latest(v2)
    rebuilt = _rebuilt(v2)
    Journal(v2).close()
    assert _schema_version(v2) == "4"
    assert _parts_stored(v2) == []
    assert _latest(v2) == before
    assert _rebuilt(v2) == rebuilt
    # And a snapshot in parts on top of it.
    journal = Journal(v2)
    try:
        state = rebuild(journal)
        journal.write_snapshot(state.sequence, state_to_json(state), part_size=PART)
    finally:
        journal.close()
    assert len(_parts_stored(v2)) > 1
    assert _rebuilt(v2) == rebuilt


def test_a_build_that_knows_schema_2_refuses_a_newer_journal(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _snapshot_in_parts(path)
    monkeypatch.setattr(journal_module, "SCHEMA_VERSION", 2)
    for read_only in (False, True):
        with pytest.raises(JournalError, match=r"written by a newer execgw .*schema 4"):
            Journal(path, read_only=read_only)


def test_a_schema_3_journal_without_its_parts_table_is_refused(path: Path) -> None:
    _snapshot_in_parts(path)
    with contextlib.closing(_raw(path)) as raw:
        raw.execute("DROP TABLE snapshot_parts")
    with pytest.raises(JournalCorrupt, match="tables missing: \\['snapshot_parts'\\]"):
        Journal(path, read_only=True)


def test_a_snapshot_whose_parts_went_missing_while_written_is_not_recorded(path: Path) -> None:
    """The row is written only over every part it wrote: were one removed meanwhile, the
    snapshot would name state that cannot be read back, and pruning below it would
    leave the journal unrecoverable."""
    body = _snapshot_in_parts(path, at=5)
    with contextlib.closing(_raw(path)) as raw:
        raw.execute(
            "CREATE TRIGGER lose_part_1 AFTER INSERT ON snapshot_parts "
            "WHEN NEW.seq = 8 AND NEW.part = 2 "
            "BEGIN DELETE FROM snapshot_parts WHERE seq = 8 AND part = 1; END"
        )
    journal = Journal(path)
    try:
        newer = state_to_json(rebuild(journal))
        with pytest.raises(JournalWriteFailed, match="parts are stored; not recording it"):
            journal.write_snapshot(8, newer, part_size=PART)
        latest = journal.latest_snapshot()
        assert latest is not None
        assert latest.sequence == 5
    finally:
        journal.close()
    assert _latest(path) == body


def test_a_reader_opened_before_a_writer_upgrades_reads_the_upgraded_journal(
    v2: Path,
) -> None:
    reader = Journal(v2, read_only=True)
    try:
        writer = Journal(v2)  # upgrades to schema 3
        try:
            state = rebuild(writer)
            body = state_to_json(state)
            writer.write_snapshot(state.sequence, body, part_size=PART)
        finally:
            writer.close()
        assert len(_parts_stored(v2)) > 1
        latest = reader.latest_snapshot()
        assert latest is not None
        assert latest.body == body
    finally:
        reader.close()


def test_a_closed_journal_opens_no_checkpoint_connection(path: Path) -> None:
    """A snapshot thread still between parts when the journal closes must not open a
    second connection after close (its descriptors would outlive the writer's lock)."""
    journal = Journal(path)
    journal.append(RECORDS[:2])
    journal.close()
    journal._checkpoint()
    assert journal._checkpointer is None
