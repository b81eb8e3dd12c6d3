"""The durable journal: an append-only, hash-chained event log in embedded SQLite.

WAL mode with synchronous=FULL: a committed batch survives kill -9 and power loss,
and the caller is answered only after the commit returns. Every row carries the
seal of the row before it, so any edit, deletion or reordering is detectable by
whoever cannot recompute the seals (see chain.py and docs/journal-integrity.md).

Snapshots and the pruning record are sealed with the same chain, over the seal of
the event they stand for, so whoever cannot recompute the chain cannot forge the state
a restart loads, nor pass off deleted history as pruned.

One process writes a journal at a time (journal_lock.py); readers take no lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from execgw.server import codec
from execgw.server.chain import KEYED, PLAIN, PLAIN_CHAIN, Chain
from execgw.server.closed_orders import ArchiveBatch, ArchivedOrder
from execgw.server.domain import Order
from execgw.server.events import Event
from execgw.server.journal_lock import (
    FILE_MODE,
    InodeKey,
    JournalLock,
    JournalLockHeld,
    make_private_dirs,
    note_reader_closed,
    note_reader_open,
)
from execgw.server.order_archive import (
    CREATE_CLOSED_ORDERS,
    INSERT_CLOSED_ORDER,
    ROW_COLUMNS,
    ArchiveCorrupt,
    ClosedOrderArchive,
    checked_row,
    sealed_rows,
)

log = logging.getLogger(__name__)

# 1: snapshots carry sha256(body) (column body_hash); the pruning record is unsealed.
# 2: snapshots carry the chain's seal (column seal, Chain.seal_snapshot); the pruning
#    record carries one too (meta pruned_seal, Chain.seal_pruning). A writer migrates a
#    schema 1 journal when it opens it (_migrate_from_1).
# 3: a snapshot's state may be stored in parts (table snapshot_parts), each written in a
#    transaction of its own, so the writer's commits go on between them; snapshots.body
#    holds its first part. A writer adds the table when it opens a schema 2 journal
#    (_migrate_from_2); a schema 2 snapshot, all in snapshots.body, reads unchanged.
# 4: finished orders a snapshot moved out of memory live in table closed_orders
#    (order_archive.py), written in the transaction that stores the snapshot. A writer
#    adds the table when it opens a schema 3 journal (_migrate_from_3); a schema 3
#    snapshot holds every order of its day, and the next snapshot archives them.
SCHEMA_VERSION = 4
# A snapshot's parts are about this many characters (bytes, for the ASCII JSON a
# snapshot mostly is): one part is what a commit of the writer may wait behind.
SNAPSHOT_PART_SIZE = 1 << 20
# Finished orders a snapshot archives, written this many per transaction before it.
_ARCHIVE_BATCH = 500
# Between two parts the snapshot's thread pauses this long without the journal's lock:
# threading.Lock is not fair, and a writer waiting for it must get its turn.
_PART_PAUSE_S = 0.002
# Pruning and removing old parts: at most this many rows per transaction.
_PRUNE_BATCH = 2_000
_PARTS_BATCH = 1
_T = TypeVar("_T")
GENESIS_HASH = "0" * 64


class JournalError(Exception):
    """The journal cannot be used; the message says why and what to do."""


class JournalCorrupt(JournalError):
    pass


class JournalAltered(JournalCorrupt):
    """What the journal holds is not what this gateway stored: found by a check of seals
    or of the archive's record, not by a failed read (which may pass)."""


class JournalWriteFailed(JournalError):
    pass


class JournalInUse(JournalError):
    """Another process holds the journal's writer lock."""


class JournalChainMismatch(JournalError):
    """The journal's chain (plain or keyed) or key is not the one this process was given."""


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One event with the order as that event left it (the after-image); risk events
    have no order."""

    sequence: int
    timestamp: datetime
    event: Event
    order: Order | None


@dataclass(frozen=True, slots=True)
class StoredRow:
    sequence: int
    kind: str
    timestamp: str
    body: str
    prev_hash: str
    hash: str
    # The row is checked with the chain of the journal it was read from, so recovery
    # and audit need no key of their own; excluded from repr and equality.
    chain: Chain = field(default=PLAIN_CHAIN, repr=False, compare=False)

    def decode(self) -> JournalRecord:
        try:
            event, order = codec.decode_row(self.kind, self.body)
            return JournalRecord(
                self.sequence, datetime.fromisoformat(self.timestamp), event, order
            )
        except (codec.CodecError, ValueError) as e:
            raise JournalCorrupt(f"journal row {self.sequence} cannot be decoded: {e}") from e


def chain_hash(sequence: int, kind: str, timestamp: str, body: str, prev_hash: str) -> str:
    """The plain (unkeyed) seal of a row."""
    return PLAIN_CHAIN.seal(sequence, kind, timestamp, body, prev_hash)


def encode(record: JournalRecord) -> tuple[str, str, str]:
    body = codec.encode_row(record.event, record.order)
    return codec.event_kind(record.event), record.timestamp.isoformat(), body


@dataclass(frozen=True, slots=True)
class ArchiveRecord:
    """Which finished orders of which day the archive holds (order_archive.py): how
    many, and the XOR of their seals (order-free, so a snapshot adds its rows to it)."""

    day: str
    count: int
    digest: str

    def totals(self) -> tuple[str, int, int]:
        return self.day, self.count, int(self.digest, 16)

    def text(self, sequence: int) -> str:
        """As meta.archive holds it, with the snapshot it was stored with."""
        return f"{sequence}|{self.day}|{self.count}|{self.digest}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    sequence: int
    body: str
    # The archive's record stored with it (its seal covers it), and (read with_archive,
    # in the same read transaction) the rows the archive holds as of it: see
    # Journal.check_archived_rows.
    archive: ArchiveRecord | None = None
    archived_rows: int = 0
    archived_digest: str = ""


@dataclass(frozen=True, slots=True)
class PruningRecord:
    """Events below `below` were removed by pruning; `prev_hash` is the seal of the
    event before it, which the first kept event must follow."""

    below: int
    prev_hash: str


class Journal:
    """The journal file. A writer (read_only=False) holds the journal's exclusive lock
    until close(); readers take no lock and may run beside the writer.

    `chain` must be the chain the journal was created with: a keyed journal opened
    without its key, or a plain one opened with a key, is refused."""

    def __init__(self, path: Path, *, read_only: bool = False, chain: Chain = PLAIN_CHAIN) -> None:
        self.path = path
        self.chain = chain
        # One connection, used from worker threads: the lock keeps the writer and the
        # health probe from interleaving statements on it.
        self._lock = threading.Lock()
        self._head_pair = (0, GENESIS_HASH)
        self._version = SCHEMA_VERSION
        self._writer_lock: JournalLock | None = None
        self._reader_inode: InodeKey | None = None
        # A writer's second connection, opened by the first snapshot of several parts:
        # it checkpoints the WAL between parts without the journal's lock (_checkpoint).
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpoint_lock = threading.Lock()
        self._archive: ClosedOrderArchive | None = None
        # The archive's record as this journal last stored or checked it, with the
        # snapshot it belongs to: what the next snapshot adds to (_archive_plan).
        self._archive_trusted: tuple[int, ArchiveRecord | None] | None = None
        self._closed = False
        # One snapshot (and its pruning, and part removal) at a time: removing unused
        # parts would otherwise delete those of a snapshot still being written.
        self._snapshot_lock = threading.Lock()
        if read_only:
            self._reader_inode = note_reader_open(path)
        else:
            make_private_dirs(path.parent)
            try:
                self._writer_lock = JournalLock.acquire(path)
            except JournalLockHeld as e:
                raise JournalInUse(str(e)) from None
        try:
            self._open(read_only)
        except BaseException:
            self._release_locks()
            raise

    def _open(self, read_only: bool) -> None:
        path = self.path
        if not read_only:
            _create_private_file(path)
        uri = f"file:{path}?mode={'ro' if read_only else 'rwc'}"
        try:
            self._db = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=False, timeout=1.0
            )
        except sqlite3.Error as e:
            raise JournalError(f"cannot open journal {path}: {e}") from None
        try:
            self._check_or_create_schema(read_only)
            self._check_chain()
            if not read_only:
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode != "wal":
                    raise JournalError(f"{path}: cannot switch to WAL mode (got {mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            if not read_only and self._version == 1:
                self._migrate_from_1()
            if not read_only and self._version == 2:
                self._migrate_from_2()
            if not read_only and self._version == 3:
                self._migrate_from_3()
            self._head_pair = self._head()
            if not read_only:
                # Parts of a snapshot whose writer stopped before its row committed: never
                # read, so a failure to remove them (a full disk) need not stop a start.
                try:
                    self._remove_unused_parts()
                except JournalWriteFailed as e:
                    log.warning("%s: unused snapshot parts left in place: %s", path, e)
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise JournalCorrupt(
                f"{path} is not a readable execgw journal ({e}); refusing to start. "
                "Move it aside and restore from a backup; `execgw journal verify` checks one."
            ) from None
        except JournalError:
            self._db.close()
            raise

    def _check_or_create_schema(self, read_only: bool) -> None:
        tables = {
            r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if not tables:
            if read_only:
                raise JournalError(f"{self.path} has no execgw journal in it")
            # One transaction: a crash mid-creation leaves an empty file, never half a schema.
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute(
                "CREATE TABLE events (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, "
                "ts TEXT NOT NULL, body TEXT NOT NULL, prev_hash TEXT NOT NULL, "
                "hash TEXT NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE snapshots (seq INTEGER PRIMARY KEY, body TEXT NOT NULL, "
                "seal TEXT NOT NULL)"
            )
            self._db.execute(_CREATE_SNAPSHOT_PARTS)
            for statement in CREATE_CLOSED_ORDERS:
                self._db.execute(statement)
            self._db.execute(
                "INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            # The chain is chosen once, at creation: a journal half plain and half keyed
            # could be "verified" by whichever half an intruder rewrote.
            self._db.execute("INSERT INTO meta VALUES ('chain', ?)", (self.chain.name,))
            if self.chain.keyed:
                self._db.execute(
                    "INSERT INTO meta VALUES ('chain_key_check', ?)", (self.chain.key_check(),)
                )
            self._db.execute("COMMIT")
            self._version = SCHEMA_VERSION
            return
        if "meta" not in tables:
            raise JournalError(
                f"{self.path} is a SQLite database of something else (tables: "
                f"{', '.join(sorted(tables))}); refusing to write into it"
            )
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            raise JournalCorrupt(f"{self.path}: journal has no schema_version; refusing to start")
        try:
            version = int(row[0])
        except ValueError:
            version = 0
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"{self.path} was written by a newer execgw (journal schema {version}, this "
                f"build understands {SCHEMA_VERSION}); refusing to start rather than guess"
            )
        if version < 1:
            raise JournalCorrupt(f"{self.path}: journal schema_version {row[0]!r} is not valid")
        self._version = version
        missing = {"events", "snapshots"} - tables
        if version >= 3:
            missing |= {"snapshot_parts"} - tables
        if version >= 4:
            missing |= {"closed_orders"} - tables
        if missing:
            raise JournalCorrupt(f"{self.path}: journal tables missing: {sorted(missing)}")

    def _migrate_from_1(self) -> None:
        """Schema 1 to 2, in one transaction: seal the snapshot and the pruning record.

        A plain journal's snapshot is resealed once its sha256 matches: the plain chain
        never stopped a deliberate forger, so this trusts nothing it did not already.
        A keyed journal's snapshot and pruning record were never covered by the key, so
        nothing vouches for them: an unsealed snapshot is dropped (the events, which the
        key does cover, are replayed from sequence 1 instead), and an unsealed pruning
        record makes the journal unusable (see docs/journal-integrity.md)."""

        def statements() -> None:
            snapshots = self._db.execute(
                "SELECT seq, body, body_hash FROM snapshots ORDER BY seq"
            ).fetchall()
            below, prev_hash, _ = self._pruning_meta()
            if self.chain.keyed:
                if below is not None and not _removed_nothing(below, prev_hash):
                    raise JournalCorrupt(self._unsealed_keyed_pruning_message(below))
                self._db.execute("DELETE FROM snapshots")
                if snapshots:
                    log.warning(
                        "%s: dropped the snapshot at %d: it was written before snapshots "
                        "were sealed with the key, so nothing vouches for it; the state is "
                        "replayed from the events instead",
                        self.path,
                        snapshots[-1][0],
                    )
            else:
                for seq, body, digest in snapshots:
                    snapshot = self._checked_snapshot(int(seq), str(body), str(digest))
                    self._db.execute(
                        "UPDATE snapshots SET body_hash = ? WHERE seq = ?",
                        (self._snapshot_seal(snapshot.sequence, snapshot.body), seq),
                    )
            if below is not None:
                self._db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('pruned_seal', ?)",
                    (self.chain.seal_pruning(self._pruned_below(below), prev_hash or ""),),
                )
            self._db.execute("ALTER TABLE snapshots RENAME COLUMN body_hash TO seal")
            self._db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")

        # Read as schema 1 inside the transaction; adopt 2 only once committed.
        self._migrate(statements, 2)

    def _migrate_from_2(self) -> None:
        """Schema 2 to 3, in one transaction: the table for snapshots' further parts. A
        schema 2 snapshot keeps its whole state in snapshots.body, its only part."""

        def statements() -> None:
            self._db.execute(_CREATE_SNAPSHOT_PARTS.replace("TABLE", "TABLE IF NOT EXISTS", 1))
            self._db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")

        self._migrate(statements, 3)

    def _migrate_from_3(self) -> None:
        """Schema 3 to 4, in one transaction: the archive of finished orders, empty."""

        def statements() -> None:
            for statement in CREATE_CLOSED_ORDERS:
                self._db.execute(statement)
            self._db.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")

        self._migrate(statements, 4)

    def _migrate(self, statements: Callable[[], None], to: int) -> None:
        """Run a migration's statements in one transaction, then adopt schema `to`.
        Still in the constructor: no other thread has this connection yet (so not _write,
        which would turn SQLite's errors into JournalWriteFailed)."""
        previous = self._version
        self._db.execute("BEGIN IMMEDIATE")
        try:
            statements()
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._version = to
        log.info("%s: journal schema %d migrated to %d", self.path, previous, to)

    def _check_chain(self) -> None:
        def stored(key: str) -> str | None:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row[0])

        # Journals from before keyed chains have no 'chain' row: they are plain.
        created_with = stored("chain") or PLAIN
        if created_with not in (PLAIN, KEYED):
            raise JournalError(
                f"{self.path} uses a chain this build does not know ({created_with!r})"
            )
        if created_with == KEYED and not self.chain.keyed:
            raise JournalChainMismatch(
                f"{self.path} is sealed with a keyed chain ({KEYED}) and cannot be opened "
                "without its key: set the environment variable named by journal.hmac_key_env "
                "(for `execgw journal`, see --hmac-key-env)"
            )
        if created_with == PLAIN and self.chain.keyed:
            raise JournalChainMismatch(
                f"{self.path} is sealed with the plain {PLAIN} chain but an HMAC key was "
                "given; a journal keeps the chain it was created with. Unset the key "
                "variable, or start a new journal to use a keyed chain"
            )
        if self.chain.keyed and not self.chain.matches_key_check(stored("chain_key_check") or ""):
            raise JournalChainMismatch(
                f"the HMAC key given is not the key {self.path} was created with"
            )

    def _head(self) -> tuple[int, str]:
        row = self._db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, GENESIS_HASH) if row is None else (int(row[0]), str(row[1]))

    @property
    def head_sequence(self) -> int:
        return self._head_pair[0]

    @property
    def head_hash(self) -> str:
        return self._head_pair[1]

    def head(self) -> tuple[int, str]:
        """The last committed (sequence, hash), read as one pair: never the sequence of
        one commit with the hash of another."""
        with self._lock:
            return self._head_pair

    def _read(self, what: Callable[[], _T]) -> _T:
        """Run a read, turning SQLite's complaints about the file into JournalCorrupt."""
        with self._lock:
            try:
                return what()
            except sqlite3.DatabaseError as e:
                raise JournalCorrupt(f"{self.path}: cannot read the journal: {e}") from None

    def _write(
        self,
        statements: Callable[[], _T],
        failure: str,
        new_head: tuple[int, str] | None = None,
    ) -> _T:
        """Run statements in one IMMEDIATE transaction; all or nothing. `new_head` is
        adopted under the same lock as the commit, so head() never sees it early."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = statements()
                    self._db.execute("COMMIT")
                except BaseException:
                    # SQLite may already have rolled back itself (disk full, I/O error).
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                # An error does not prove nothing reached the disk: trust only the file.
                with contextlib.suppress(sqlite3.Error):
                    self._head_pair = self._head()
                raise JournalWriteFailed(f"{failure}: {e}") from e
            if new_head is not None:
                self._head_pair = new_head
            return result

    # -- writing ----------------------------------------------------------

    def append(self, records: list[JournalRecord]) -> None:
        """Append a batch in one transaction: all of it is durable, or none of it is."""
        rows = []
        seq, prev = self.head_sequence, self.head_hash
        for record in records:
            if record.sequence != seq + 1:
                raise JournalWriteFailed(
                    f"sequence {record.sequence} does not follow journal head {seq}"
                )
            kind, ts, body = encode(record)
            digest = self.chain.seal(record.sequence, kind, ts, body, prev)
            rows.append((record.sequence, kind, ts, body, prev, digest))
            seq, prev = record.sequence, digest
        self._write(
            lambda: self._db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows),
            "journal write failed",
            new_head=(seq, prev),
        )

    def probe_writable(self) -> None:
        """A real write transaction, so a recovered disk is noticed without traffic."""
        self._write(
            lambda: self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('last_probe', ?)", (str(self.head_sequence),)
            ),
            "journal not writable",
        )

    def write_snapshot(
        self,
        sequence: int,
        body: str | Iterable[str],
        *,
        part_size: int = SNAPSHOT_PART_SIZE,
        archived: ArchiveBatch | None = None,
    ) -> None:
        """Store the state as of `sequence` (see _write_snapshot), and the finished
        orders it moves out of memory (`archived`, into closed_orders: new rows before
        the snapshot's row, counted only once it commits; the record of how many the
        day's archive holds is stored with it, under its seal). One at a time; one that
        fails before its row commits takes its parts back (a full disk gets its room
        back for orders), and old parts that cannot be removed after it committed are
        left for later: the snapshot itself stands."""
        with self._snapshot_lock:
            # Parts a failed attempt could not take back: gone before new ones take room.
            self._remove_unused_parts()
            try:
                self._write_snapshot(sequence, body, part_size, archived)
            except BaseException:
                with contextlib.suppress(JournalError, sqlite3.Error):
                    self._remove_unused_parts()
                raise
            try:
                self._remove_unused_parts()
            except JournalError as e:
                log.warning("%s: old snapshot parts stay until the next snapshot: %s", self.path, e)

    def _write_snapshot(
        self,
        sequence: int,
        body: str | Iterable[str],
        part_size: int,
        archived: ArchiveBatch | None,
    ) -> None:
        """Store the state as of `sequence`, sealed over it and the event at `sequence`.

        `body` is the state's text, whole or as pieces to be joined in order. It is
        stored in parts of about `part_size` characters, each in a transaction of its
        own with the journal's lock released between them, so the writer's commits do
        not wait behind a whole day's state: parts 1..n first, then one transaction with
        the snapshots row (part 0 and the seal over the whole text), which makes the
        snapshot visible and drops the older ones. A crash before that row commits
        leaves parts no row names: never read, and removed by the next writer. The
        older snapshots' parts are removed afterwards, a few at a time.

        The seal is computed part by part outside the lock, as the parts are made: the
        event it covers is durable and events are never rewritten, so it cannot change
        meanwhile."""
        row_hash = self._read(partial(self._hash_at, sequence))
        # Rewriting a stored snapshot (same sequence) replaces its parts in place: all of
        # it in the final transaction, so no reader ever sees them mixed.
        replacing = self._read(
            lambda: (
                self._db.execute("SELECT 1 FROM snapshots WHERE seq = ?", (sequence,)).fetchone()
                is not None
            )
        )
        # First, before any part is written: the archive's record, which the seal covers.
        record, new_rows, old_rows = self._archive_plan(sequence, archived, replacing)
        record_text = None if record is None else record.text(sequence)
        sealer = self.chain.snapshot_sealer(sequence, row_hash, _archive_seal_text(record_text))
        # Made and sealed one at a time, as they are written: the thread joining them never
        # holds the GIL long, nor a second copy of the whole state.
        parts = _iter_parts([body] if isinstance(body, str) else body, part_size)
        first = next(parts)
        sealer.update(first.encode())
        rest: list[str] = []
        written = 0
        if replacing:
            rest = list(parts)
            for part in rest:
                sealer.update(part.encode())
        else:
            self._remove_parts("seq = ?", (sequence,))  # a crashed attempt's, if any
            for number, part in enumerate(parts, start=1):
                sealer.update(part.encode())
                time.sleep(_PART_PAUSE_S)
                self._write(
                    partial(self._insert_part, sequence, number, part), "snapshot write failed"
                )
                written = number
                self._checkpoint()
            time.sleep(_PART_PAUSE_S)
        # New rows go in before the snapshot's row, a few per transaction, as its parts
        # do: thousands of rows and their indexes in the final transaction would hold
        # the writer's commits for a tenth of a second. Until that row commits they are
        # not counted, and a crash's are removed before the next snapshot.
        for start in range(0, len(new_rows), _ARCHIVE_BATCH):
            chunk = new_rows[start : start + _ARCHIVE_BATCH]
            self._write(
                partial(self._db.executemany, INSERT_CLOSED_ORDER, chunk),
                "snapshot write failed (archiving finished orders)",
            )
            self._checkpoint()
            time.sleep(_PART_PAUSE_S)
        seal = sealer.hexdigest()

        def statements() -> None:
            if replacing:
                self._db.execute("DELETE FROM snapshot_parts WHERE seq = ?", (sequence,))
                for number, part in enumerate(rest, start=1):
                    self._insert_part(sequence, number, part)
            else:
                # Every part written is still there (nothing removed them meanwhile): the
                # row must never name a snapshot that cannot be read back.
                stored = self._db.execute(
                    "SELECT count(*), coalesce(max(part), 0) FROM snapshot_parts WHERE seq = ?",
                    (sequence,),
                ).fetchone()
                if tuple(stored) != (written, written):
                    raise JournalWriteFailed(
                        f"snapshot at {sequence}: {stored[0]} of its {written} parts are "
                        "stored; not recording it"
                    )
            # Rows the archive holds already (an event brought the order back): replaced
            # only here, or a crash could leave the archive without them.
            self._db.executemany(INSERT_CLOSED_ORDER, old_rows)
            self._db.execute(
                "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?)", (sequence, first, seal)
            )
            if record_text is not None:
                self._db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('archive', ?)", (record_text,)
                )
            # Older snapshots are never read again; events stay for audit and replay.
            self._db.execute("DELETE FROM snapshots WHERE seq < ?", (sequence,))

        self._write(statements, "snapshot write failed")
        if self._version >= 4:
            self._archive_trusted = (sequence, record)

    def _archive_plan(
        self, sequence: int, archived: ArchiveBatch | None, replacing: bool
    ) -> tuple[ArchiveRecord | None, list[tuple[object, ...]], list[tuple[object, ...]]]:
        """The archive's record to store with the snapshot at `sequence` (the day, its
        rows' count and digest once `archived` is in), and `archived`'s rows: those new
        to the archive, and those replacing rows it holds (which change the digest, not
        the count). The record carries over when nothing is archived; there is none
        when nothing ever was. Rows change only here, one snapshot at a time: read
        outside the lock.

        The record it adds to is the last this journal stored, as it stored it, or else
        (the first snapshot of a process that did not start by checking it) the latest
        snapshot's, checked against the rows: rows removed or altered meanwhile are never
        vouched for by a newly sealed record."""
        if self._version < 4:
            return None, [], []
        latest = self._read(
            lambda: self._db.execute("SELECT max(seq) FROM snapshots").fetchone()[0]
        )
        trusted = self._archive_trusted
        if trusted is not None and (latest is None or latest < trusted[0]):
            raise JournalAltered(
                f"{self.path}: the latest snapshot is {latest}, older than the one this "
                f"gateway stored or checked ({trusted[0]}): snapshots were removed or put back"
            )
        if trusted is not None and trusted[0] == latest:
            previous = trusted[1]
        else:
            snapshot = self.latest_snapshot(with_archive=True)
            if snapshot is not None:
                self.check_archived_rows(snapshot)
            previous = None if snapshot is None else snapshot.archive
            latest = None if snapshot is None else snapshot.sequence
        # Only once the latest snapshot is the one vouched for, and only above it.
        self._write(
            partial(self._remove_unfinished_archive, latest or 0),
            "removing an unfinished snapshot's rows",
        )
        if archived is None and previous is None:
            return None, [], []  # nothing archived, ever (a tool's snapshot)
        day, count, digest = ("", 0, 0) if previous is None else previous.totals()
        new_rows: list[tuple[object, ...]] = []
        old_rows: list[tuple[object, ...]] = []
        if archived is not None:
            if archived.day != day:
                day, count, digest = archived.day, 0, 0
            rows = sealed_rows(self.chain, archived.rows, sequence)
            for start in range(0, len(rows), _ARCHIVE_BATCH):
                chunk = rows[start : start + _ARCHIVE_BATCH]
                held = self._read(partial(self._archived_among, [str(r[0]) for r in chunk]))
                for row in chunk:
                    order_id, seal = str(row[0]), str(row[-2])
                    found = held.get(order_id)
                    if found is None:
                        count += 1
                    elif found[0] != day:
                        raise JournalCorrupt(
                            f"{self.path}: archived order {order_id} is of trading day "
                            f"{found[0]}, not {day}: refusing to replace it"
                        )
                    else:
                        digest ^= int(found[1], 16)
                    digest ^= int(seal, 16)
                    # A rewrite of a stored snapshot replaces all of it in one transaction.
                    (old_rows if found is not None or replacing else new_rows).append(row)
        return ArchiveRecord(day, count, f"{digest:064x}"), new_rows, old_rows

    def check_archived_rows(self, snapshot: Snapshot) -> None:
        """The archive holds exactly the rows the record stored with `snapshot` names
        (its seal covers the record; `snapshot` must be read with_archive): rows removed,
        added, moved between snapshots or put back from a copy fail the count or the
        digest. JournalCorrupt if so."""
        record = snapshot.archive
        where = f"{self.path}: the journal's archive"
        if record is None:
            if snapshot.archived_rows:
                raise JournalAltered(
                    f"{where} holds {snapshot.archived_rows} finished orders, but its "
                    f"snapshot at {snapshot.sequence} stored none. `execgw journal verify` "
                    "checks the journal"
                )
        elif (snapshot.archived_rows, snapshot.archived_digest) != (record.count, record.digest):
            raise JournalAltered(
                f"{where} holds {snapshot.archived_rows} finished orders of trading day "
                f"{record.day or '(none yet)'}; {record.count} were stored with the "
                f"snapshot at {snapshot.sequence}"
                + ("" if snapshot.archived_rows != record.count else ", and others than those")
                + ". `execgw journal verify` checks the journal"
            )
        self._archive_trusted = (snapshot.sequence, record)

    def _remove_unfinished_archive(self, stored_by: int) -> None:
        """Rows of a snapshot whose own row never committed (a crash, a failure): those
        tagged past `stored_by`, the latest snapshot, checked."""
        self._db.execute("DELETE FROM closed_orders WHERE snapshot_seq > ?", (stored_by,))

    def _archived_among(self, order_ids: list[str]) -> dict[str, tuple[str, str]]:
        """Which of these orders the archive holds (of any day): their day and seal, each
        row's seal checked (a planted row must not pass for one the record counts)."""
        marks = ",".join("?" * len(order_ids))
        found = self._db.execute(
            f"SELECT {ROW_COLUMNS} FROM closed_orders WHERE order_id IN ({marks})", order_ids
        ).fetchall()
        held = {}
        for row in found:
            archived, seal = self._checked_row(row)
            held[archived.order_id] = (archived.day, seal)
        return held

    def _checked_row(self, row: tuple[object, ...]) -> tuple[ArchivedOrder, str]:
        try:
            return checked_row(self.chain, row)
        except ArchiveCorrupt as e:
            raise JournalAltered(f"{self.path}: {e}") from None

    def _archived_totals(self, record: ArchiveRecord | None, sequence: int) -> tuple[int, str]:
        """The rows the snapshot at `sequence` and those before it stored: of `record`'s
        day, their count and the XOR of their seals; with no record, of any day, how
        many (there must be none)."""
        if self._version < 4:
            return 0, f"{0:064x}"  # a journal from before the archive (read as it is)
        if record is None:
            found = self._db.execute(
                "SELECT count(*) FROM closed_orders WHERE snapshot_seq <= ?", (sequence,)
            ).fetchone()
            return int(found[0]), f"{0:064x}"
        # Every row's seal checked, not only gathered: a row whose columns were edited
        # (say, to hide its client_order_id from a retry) must stop the start.
        count, digest = 0, 0
        for row in self._db.execute(
            f"SELECT {ROW_COLUMNS} FROM closed_orders WHERE day = ? AND snapshot_seq <= ?",
            (record.day, sequence),
        ):
            _, seal = self._checked_row(row)
            count += 1
            digest ^= int(seal, 16)
        return count, f"{digest:064x}"

    def archive(self) -> ClosedOrderArchive:
        """The reader of the finished orders snapshots archived, on its own read-only
        connection: one per journal, closed with it (and opened again by a state that
        outlives it, see ClosedOrderArchive)."""
        with self._checkpoint_lock:
            if self._archive is None:
                try:
                    self._archive = ClosedOrderArchive(self.path, self.chain)
                except sqlite3.DatabaseError as e:
                    raise JournalCorrupt(f"{self.path}: cannot read the archive: {e}") from None
            return self._archive

    def _checkpoint(self) -> None:
        """Copy the WAL's committed pages into the database file, from a connection of
        its own and without the journal's lock. Otherwise SQLite's automatic checkpoint
        (every 1000 pages) runs inside whichever commit crosses that mark, often one of
        the writer's, which would then wait while a snapshot's megabytes are copied. A
        passive checkpoint never blocks the writer; one that fails is only left to the
        automatic one."""
        with self._checkpoint_lock:
            if self._closed:
                return
            try:
                if self._checkpointer is None:
                    self._checkpointer = sqlite3.connect(
                        f"file:{self.path}?mode=rw",
                        uri=True,
                        isolation_level=None,
                        check_same_thread=False,
                        timeout=1.0,
                    )
                    self._checkpointer.execute("PRAGMA synchronous=FULL")
                self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as e:
                log.debug("%s: checkpoint between snapshot parts failed: %s", self.path, e)

    def _insert_part(self, sequence: int, number: int, text: str) -> None:
        self._db.execute("INSERT INTO snapshot_parts VALUES (?, ?, ?)", (sequence, number, text))

    def _remove_unused_parts(self) -> None:
        """Parts no snapshots row names (an older snapshot's, or a crashed one's)."""
        if self._version >= 3:
            self._remove_parts("seq NOT IN (SELECT seq FROM snapshots)", ())

    def _remove_parts(self, where: str, args: tuple[int, ...]) -> None:
        """Delete the parts `where` selects, a few per transaction (none when there are
        none: no write at all)."""
        select = f"SELECT rowid FROM snapshot_parts WHERE {where} LIMIT ?"

        def any_left() -> bool:
            return self._db.execute(select, (*args, 1)).fetchone() is not None

        def some() -> None:
            self._db.execute(
                f"DELETE FROM snapshot_parts WHERE rowid IN ({select})", (*args, _PARTS_BATCH)
            )

        while self._read(any_left):
            self._write(some, "removing old snapshot parts failed")
            self._checkpoint()
            time.sleep(_PART_PAUSE_S)

    def prune_before(self, sequence: int, *, batch: int = _PRUNE_BATCH) -> int:
        """Drop events below `sequence` (a snapshot must cover them); returns how many.

        The first kept event's prev_hash is recorded, so `verify` can tell a pruned
        journal from one whose oldest events were deleted behind our back. At most
        `batch` events go per transaction, each leaving a pruning record that matches
        what it kept, so the writer's commits go on between them."""
        keeps_one = self._read(
            lambda: self._db.execute(
                "SELECT 1 FROM events WHERE seq >= ? LIMIT 1", (sequence,)
            ).fetchone()
        )
        if keeps_one is None:
            return 0  # no event at or after `sequence`: nothing would follow the cut
        removed = 0
        while True:
            oldest = self._read(self._oldest)
            if oldest is None or oldest >= sequence:
                return removed
            some = self._write(
                partial(self._prune_below, min(sequence, oldest + batch)), "prune failed"
            )
            if some == 0:
                return removed
            removed += some
            self._checkpoint()
            time.sleep(_PART_PAUSE_S)

    def _oldest(self) -> int | None:
        row = self._db.execute("SELECT MIN(seq) FROM events").fetchone()
        return None if row[0] is None else int(row[0])

    def _prune_below(self, sequence: int) -> int:
        row = self._db.execute(
            "SELECT seq, prev_hash FROM events WHERE seq >= ? ORDER BY seq LIMIT 1",
            (sequence,),
        ).fetchone()
        if row is None:
            return 0
        cursor = self._db.execute("DELETE FROM events WHERE seq < ?", (row[0],))
        if cursor.rowcount == 0:
            return 0  # nothing removed: the record (if any) already says where it cut
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('pruned_below', ?)", (str(row[0]),))
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('pruned_prev_hash', ?)", (row[1],))
        self._db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('pruned_seal', ?)",
            (self.chain.seal_pruning(int(row[0]), str(row[1])),),
        )
        return int(cursor.rowcount)

    # -- reading ----------------------------------------------------------

    def latest_snapshot(self, *, with_archive: bool = False) -> Snapshot | None:
        """The newest snapshot, its seal checked: JournalCorrupt if it does not match.
        `with_archive`: and the rows the archive holds as of it, read with it (for
        check_archived_rows; reading them costs a walk of the day's rows)."""
        snapshots = self._read(
            partial(self._checked_snapshots, newest_only=True, with_archive=with_archive)
        )
        return snapshots[-1] if snapshots else None

    def snapshots(self) -> list[Snapshot]:
        """Every stored snapshot, oldest first, each seal checked."""
        return self._read(partial(self._checked_snapshots, newest_only=False, with_archive=False))

    def pruning_record(self) -> PruningRecord | None:
        """The record of the last pruning, its seal checked; None if never pruned."""
        return self._read(self._checked_pruning_record)

    def _checked_snapshots(self, *, newest_only: bool, with_archive: bool) -> list[Snapshot]:
        # One read transaction: a snapshots row and its parts as one commit left them,
        # even while a writer (another process) replaces that snapshot meanwhile.
        self._db.execute("BEGIN")
        try:
            if self._version < SCHEMA_VERSION:
                # A reader opened before a writer upgraded the journal reads it as it is now.
                row = self._db.execute(
                    "SELECT value FROM meta WHERE key='schema_version'"
                ).fetchone()
                if row is not None and str(row[0]).isdigit():
                    self._version = min(int(row[0]), SCHEMA_VERSION)
            column = "seal" if self._version >= 2 else "body_hash"
            rows = self._db.execute(
                f"SELECT seq, body, {column} FROM snapshots ORDER BY seq"
                + (" DESC LIMIT 1" if newest_only else "")
            ).fetchall()
            found = [(int(r[0]), [str(r[1]), *self._parts(int(r[0]))], str(r[2])) for r in rows]
            record = self._archive_meta()
            archives = {
                seq: record[1] if record is not None and record[0] == seq else None
                for seq, _, _ in found
            }
            totals = {
                seq: self._archived_totals(archives[seq], seq)
                for seq, _, _ in found
                if with_archive
            }
        finally:
            if self._db.in_transaction:
                self._db.execute("COMMIT")
        return [
            self._checked_snapshot(seq, parts, stored, archives[seq], totals.get(seq))
            for seq, parts, stored in found
        ]

    def _archive_meta(self) -> tuple[int, ArchiveRecord] | None:
        """The archive's record as meta holds it: the snapshot it was stored with, and
        the day and count. Vouched for only by that snapshot's seal."""
        if self._version < 4:
            return None
        row = self._db.execute("SELECT value FROM meta WHERE key = 'archive'").fetchone()
        if row is None:
            return None
        try:
            sequence, day, count, digest = str(row[0]).split("|")
            return int(sequence), ArchiveRecord(day, int(count), digest)
        except ValueError:
            raise JournalCorrupt(
                f"{self.path}: the archive's record {row[0]!r} is not valid"
            ) from None

    def _parts(self, sequence: int) -> list[str]:
        """A snapshot's parts after the first, in order; JournalCorrupt if one is missing."""
        if self._version < 3:
            return []
        rows = self._db.execute(
            "SELECT part, body FROM snapshot_parts WHERE seq = ? ORDER BY part", (sequence,)
        ).fetchall()
        for expected, (number, _) in enumerate(rows, start=1):
            if number != expected:
                raise JournalCorrupt(
                    f"{self.path}: snapshot at {sequence} is missing part {expected} of its "
                    f"state (found part {number} next): a part was deleted. Restore the "
                    "journal from a backup; `execgw journal verify` checks one"
                )
        return [str(body) for _, body in rows]

    def _checked_snapshot(
        self,
        sequence: int,
        parts: str | list[str],
        stored: str,
        archive: ArchiveRecord | None = None,
        archived: tuple[int, str] | None = None,
    ) -> Snapshot:
        """Check a snapshot stored as `parts` (its text is their concatenation), with
        the archive's record stored with it, if any."""
        where = f"{self.path}: snapshot at {sequence}"
        if isinstance(parts, str):
            parts = [parts]
        body = parts[0] if len(parts) == 1 else "".join(parts)
        if self._version < 2:
            if self.chain.keyed:
                raise JournalCorrupt(
                    f"{where} was written before snapshots were sealed (journal schema 1), "
                    "so the key cannot vouch for it. `execgw serve` with this build drops "
                    "it and replays the events instead"
                )
            # A schema 1 plain journal: the sha256 its writer stored.
            expected = hashlib.sha256(body.encode("utf-8")).hexdigest()
            if not self.chain.matches(stored, expected):
                raise JournalCorrupt(f"{where} fails its checksum: it was altered")
            self._snapshot_seal(sequence, body)  # its event must still be there
            return Snapshot(sequence, body)
        if body.startswith("archive|"):
            raise JournalCorrupt(f"{where} is not a state (it begins with 'archive|')")
        texts: list[str | bytes] = [
            _archive_seal_text(None if archive is None else archive.text(sequence)),
            *parts,
        ]
        expected = self.chain.seal_snapshot_parts(sequence, self._hash_at(sequence), texts)
        if not self.chain.matches(stored, expected):
            stored_in = f" (its state stored in {len(parts)} parts)" if len(parts) > 1 else ""
            raise JournalCorrupt(
                f"{where} fails its checksum: its seal does not match its state{stored_in} "
                f"and the event at {sequence} (the snapshot was altered or forged, a part "
                "added or removed, or that event was rewritten). Restore the journal from "
                "a backup; `execgw journal verify` checks one"
            )
        rows, digest = archived if archived is not None else (0, "")
        return Snapshot(sequence, body, archive, rows, digest)

    def _snapshot_seal(self, sequence: int, body: str) -> str:
        """What the seal of a snapshot at `sequence` holding `body` must be."""
        return self.chain.seal_snapshot(sequence, self._hash_at(sequence), body)

    def _hash_at(self, sequence: int) -> str:
        """The seal of the event at `sequence`. Pruning never removes the event the
        latest snapshot was taken at, and recovery continues the chain from it."""
        if sequence == 0:
            return GENESIS_HASH
        row = self._db.execute("SELECT hash FROM events WHERE seq = ?", (sequence,)).fetchone()
        if row is not None:
            return str(row[0])
        raise JournalCorrupt(
            f"{self.path}: snapshot at {sequence} has no matching journal row: the event it "
            "was taken at is gone"
        )

    def _pruning_meta(self) -> tuple[str | None, str | None, str | None]:
        found = dict(
            self._db.execute(
                "SELECT key, value FROM meta "
                "WHERE key IN ('pruned_below', 'pruned_prev_hash', 'pruned_seal')"
            ).fetchall()
        )
        return found.get("pruned_below"), found.get("pruned_prev_hash"), found.get("pruned_seal")

    def _pruned_below(self, value: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise JournalCorrupt(
                f"{self.path}: the pruning record names no sequence ({value!r})"
            ) from None

    def _unsealed_keyed_pruning_message(self, below: str) -> str:
        return (
            f"{self.path}: this keyed journal was pruned below sequence {below} by an execgw "
            "that did not seal its pruning record (journal schema 1), so the key cannot vouch "
            "that only pruning removed its oldest events, nor for the snapshot that stands "
            "for them; refusing to use it. Check it against its head anchors and start a "
            "new journal (docs/journal-integrity.md)"
        )

    def _checked_pruning_record(self) -> PruningRecord | None:
        below, prev_hash, seal = self._pruning_meta()
        if below is None:
            if prev_hash is not None or seal is not None:
                raise JournalCorrupt(f"{self.path}: the pruning record is incomplete")
            return None
        sequence = self._pruned_below(below)
        if prev_hash is None:
            raise JournalCorrupt(f"{self.path}: the pruning record is incomplete")
        if self._version < 2:
            if self.chain.keyed and not _removed_nothing(below, prev_hash):
                raise JournalCorrupt(self._unsealed_keyed_pruning_message(below))
            return PruningRecord(sequence, prev_hash)  # schema 1: never sealed
        if seal is None or not self.chain.matches(
            seal, self.chain.seal_pruning(sequence, prev_hash)
        ):
            raise JournalCorrupt(
                f"{self.path}: the pruning record (events below {sequence} removed) fails its "
                "seal: it was forged or altered, so nothing vouches that those events were "
                "pruned rather than deleted"
            )
        return PruningRecord(sequence, prev_hash)

    def rows(self, after: int = 0, batch: int = 1000) -> Iterator[StoredRow]:
        """Rows with sequence > after, in order, read in batches."""
        last = after
        while True:
            chunk = self._read(partial(self._rows_after, last, batch))
            if not chunk:
                return
            yield from chunk
            last = chunk[-1].sequence

    def _rows_after(self, after: int, limit: int) -> list[StoredRow]:
        rows = self._db.execute(
            "SELECT seq, kind, ts, body, prev_hash, hash FROM events "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        ).fetchall()
        return [StoredRow(int(r[0]), r[1], r[2], r[3], r[4], r[5], self.chain) for r in rows]

    def row(self, sequence: int) -> StoredRow | None:
        r = self._read(
            lambda: self._db.execute(
                "SELECT seq, kind, ts, body, prev_hash, hash FROM events WHERE seq = ?",
                (sequence,),
            ).fetchone()
        )
        return None if r is None else StoredRow(int(r[0]), r[1], r[2], r[3], r[4], r[5], self.chain)

    def records_after(self, sequence: int, limit: int) -> list[JournalRecord]:
        """Decoded records with sequence > `sequence`, at most `limit` of them."""
        return [row.decode() for row in self._read(partial(self._rows_after, sequence, limit))]

    def oldest_sequence(self) -> int:
        row = self._read(lambda: self._db.execute("SELECT MIN(seq) FROM events").fetchone())
        return 0 if row[0] is None else int(row[0])

    def meta(self, key: str) -> str | None:
        row = self._read(
            lambda: self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        )
        return None if row is None else str(row[0])

    def record_listen_address(self, address: str) -> None:
        """Name the address this writer serves in its lock file, for whoever is refused."""
        if self._writer_lock is not None:
            try:
                self._writer_lock.record_listen(address)
            except OSError as e:  # only a refused newcomer reads it: not worth a failed start
                log.warning("could not record the listen address in the journal lock: %s", e)

    def close(self) -> None:
        with self._checkpoint_lock:
            self._closed = True  # a snapshot thread still writing opens no new one
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
            if self._archive is not None:
                self._archive.close()
        with self._lock:
            self._db.close()
        # Only once the connection is closed: a successor must not open the file while
        # this process could still write to it, and the lock's descriptor of the file
        # may be closed only when no connection of ours holds SQLite's locks on it.
        self._release_locks()

    def _release_locks(self) -> None:
        if self._writer_lock is not None:
            self._writer_lock.release()
            self._writer_lock = None
        note_reader_closed(self._reader_inode)
        self._reader_inode = None


_CREATE_SNAPSHOT_PARTS = (
    "CREATE TABLE snapshot_parts (seq INTEGER NOT NULL, part INTEGER NOT NULL, "
    "body TEXT NOT NULL, PRIMARY KEY (seq, part))"
)


def _archive_seal_text(record: str | None) -> bytes:
    """What a snapshot's seal covers of the archive's record: framed by its length, and
    before the state. A snapshot with no record is sealed as before the archive; one
    with a record cannot pass for one without (nor the other way round) unless its
    state began with "archive|", which a state never does (_checked_snapshot refuses)."""
    if record is None:
        return b""
    text = record.encode()
    return b"archive|" + str(len(text)).encode() + b":" + text + b"|"


def _iter_parts(pieces: Iterable[str], size: int) -> Iterator[str]:
    """The text of `pieces`, joined in order, as parts of `size` characters (the last
    may be shorter), made as they are asked for; one empty part for no text."""
    if size < 1:
        raise ValueError(f"part size must be positive, not {size}")
    pending: list[str] = []
    filled = 0
    made = False
    for piece in pieces:
        start = 0
        while start < len(piece):
            room = size - filled
            chunk = piece[start : start + room]
            pending.append(chunk)
            filled += len(chunk)
            start += len(chunk)
            if filled == size:
                yield "".join(pending)
                made = True
                pending, filled = [], 0
    if pending or not made:
        yield "".join(pending)


def _removed_nothing(below: str, prev_hash: str | None) -> bool:
    """A schema 1 writer also recorded prunings that removed nothing (below 1)."""
    return below.strip() == "1" and prev_hash == GENESIS_HASH


def _create_private_file(path: Path) -> None:
    """Create the database file 0600 before SQLite does (a writer's lock has usually
    created it already, to lock its inode): SQLite gives the -wal and -shm files the
    database file's mode, so this keeps all three private. An existing file is checked
    for a mode others can read and for hard links."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        st = path.stat()
        if st.st_nlink > 1:
            log.warning(
                "journal %s has %d hard links: SQLite finds the -wal file by the name it "
                "opens, so opening the journal under another name can miss committed events",
                path,
                st.st_nlink,
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            log.warning(
                "journal %s has mode %o: other users can read it; chmod 600 it and its -wal "
                "and -shm files",
                path,
                mode,
            )
        return
    os.close(fd)


def check_link(row: StoredRow, expected_seq: int, expected_prev: str) -> None:
    """Raise JournalCorrupt unless row continues the chain at expected_seq."""
    if row.sequence != expected_seq:
        raise JournalCorrupt(f"journal gap: expected sequence {expected_seq}, found {row.sequence}")
    if row.prev_hash != expected_prev:
        raise JournalCorrupt(f"journal chain broken at sequence {row.sequence}: prev_hash mismatch")
    if row.chain.seal(row.sequence, row.kind, row.timestamp, row.body, row.prev_hash) != row.hash:
        raise JournalCorrupt(f"journal row {row.sequence} fails its hash: it was altered")
