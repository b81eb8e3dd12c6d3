"""The journal's archive of finished orders: where a snapshot moves them out of memory.

Rows are written by Journal.write_snapshot, before the snapshot that names how many the
working day has (a record its seal covers, Journal.check_archived_rows), so a start sees
the archive and the snapshot agree or refuses. Each row carries a seal over all its
columns, made with the journal's chain: a keyed journal's rows cannot be altered
unseen, and every read checks the row it uses. This module reads them, on a connection
of its own, so a lookup never waits behind the writer's commit (WAL readers do not
block).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from execgw.server.chain import Chain
from execgw.server.closed_orders import ArchivedOrder, ClosedOrder

CREATE_CLOSED_ORDERS = (
    "CREATE TABLE closed_orders (order_id TEXT PRIMARY KEY, day TEXT NOT NULL, "
    "strategy_code TEXT NOT NULL, symbol TEXT NOT NULL, client_order_id TEXT NOT NULL, "
    "status TEXT NOT NULL, internal INTEGER NOT NULL, created_at TEXT NOT NULL, "
    "reject_reason TEXT, body BLOB NOT NULL, seal TEXT NOT NULL, "
    # The snapshot that stored it: rows of a snapshot not (yet) stored are not counted,
    # and are removed before the next one (Journal._remove_unfinished_archive).
    "snapshot_seq INTEGER NOT NULL)",
    # A listing's pages, whole day; the count a snapshot's record is checked against;
    # the rows of a snapshot that never committed.
    "CREATE INDEX closed_orders_by_day ON closed_orders (day, order_id)",
    "CREATE INDEX closed_orders_stored ON closed_orders (day, snapshot_seq, seal)",
    "CREATE INDEX closed_orders_unfinished ON closed_orders (snapshot_seq)",
    "CREATE INDEX closed_orders_by_strategy ON closed_orders (day, strategy_code, order_id)",
    "CREATE INDEX closed_orders_by_symbol ON closed_orders (day, symbol, order_id)",
    "CREATE INDEX closed_orders_by_client_id "
    "ON closed_orders (day, strategy_code, client_order_id, order_id)",
)
INSERT_CLOSED_ORDER = (
    "INSERT OR REPLACE INTO closed_orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
ROW_COLUMNS = (
    "order_id, day, strategy_code, symbol, client_order_id, status, internal, "
    "created_at, reject_reason, body, seal, snapshot_seq"
)


_ROW_LENGTH = len(ROW_COLUMNS.split(","))
# The columns that are the order (ArchivedOrder's fields, in ROW_COLUMNS's order); the
# seal and the snapshot follow.
_ORDER_COLUMNS = len(ArchivedOrder._fields)
# Keys client_keys reads under the lock at a time.
_KEYS_PER_BATCH = 10_000


class ArchiveCorrupt(RuntimeError):
    """A row that is not what the journal stored: altered, or torn."""


@contextlib.contextmanager
def _reading() -> Iterator[None]:
    try:
        yield
    except sqlite3.DatabaseError as e:
        raise ArchiveCorrupt(f"cannot read the journal's archive: {e}") from None


def seal_row(chain: Chain, row: ArchivedOrder, snapshot_seq: int) -> str:
    """The row's seal, over every column (see Chain.seal_closed_order), the snapshot
    that stored it included: a row cannot be moved in or out of a snapshot's count."""
    return _seal(chain, *row, snapshot_seq)


def _seal(
    chain: Chain,
    order_id: str,
    day: str,
    strategy_code: str,
    symbol: str,
    client_order_id: str,
    status: str,
    internal: int,
    created_at: str,
    reject_reason: str | None,
    body: bytes,
    snapshot_seq: int,
) -> str:
    # Each text framed by its length in characters, in one f-string: a start checks
    # every row of the day, so this is on its path (about 3 µs a row, not 7).
    reason = "" if reject_reason is None else "+" + reject_reason
    head = (
        f"{len(order_id)}:{order_id}{len(day)}:{day}{len(strategy_code)}:{strategy_code}"
        f"{len(symbol)}:{symbol}{len(client_order_id)}:{client_order_id}"
        f"{len(status)}:{status}{internal}|{len(created_at)}:{created_at}"
        f"{len(reason)}:{reason}{snapshot_seq}|{len(body)}:"
    )
    return chain.seal_closed_order(head.encode(), body)


def sealed_rows(
    chain: Chain, rows: list[ArchivedOrder], snapshot_seq: int
) -> list[tuple[object, ...]]:
    return [(*row, seal_row(chain, row, snapshot_seq), snapshot_seq) for row in rows]


class ClosedOrderArchive:
    """The Archive the ledger reads (closed_orders.Archive), over a journal file."""

    def __init__(self, path: Path, chain: Chain) -> None:
        self._path = path
        self._chain = chain
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        # A journal from before the archive, opened read-only (not migrated): nothing in it.
        self._exists = (
            self._connected()
            .execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='closed_orders'")
            .fetchone()
            is not None
        )

    def _connected(self) -> sqlite3.Connection:
        """The connection, opened again after close(): a state may outlive its journal
        (a tool's, a test's), and the journal's last connection must close with it (so
        SQLite folds the WAL back in at a clean stop)."""
        if self._db is None:
            self._db = sqlite3.connect(
                f"file:{self._path}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
        return self._db

    def get(self, day: str, order_id: str) -> ClosedOrder | None:
        rows = self._select("order_id = ? AND day = ?", (order_id, day), 1)
        return rows[0] if rows else None

    def order_id_for_client(self, day: str, strategy_code: str, client_order_id: str) -> str | None:
        rows = self._select(
            "day = ? AND strategy_code = ? AND client_order_id = ?",
            (day, strategy_code, client_order_id),
            1,
            order="order_id DESC",
        )
        return rows[0].order_id if rows else None

    def after(
        self, day: str, after: str, *, strategy_code: str, symbol: str, limit: int
    ) -> list[ClosedOrder]:
        where, args = "day = ? AND order_id > ?", [day, after]
        if strategy_code:
            where += " AND strategy_code = ?"
            args.append(strategy_code)
        elif symbol:
            where += " AND symbol = ?"
            args.append(symbol)
        return self._select(where, tuple(args), limit)

    def client_keys(self, day: str) -> Iterator[tuple[str, str]]:
        """In batches: a day's keys are many, and the caller keeps only their hashes.
        The lock is held per batch, never while the caller has one (a caller that stops
        midway must not leave the archive locked)."""
        if not self._exists:
            return
        with self._lock, _reading():
            # From the (day, strategy_code, client_order_id, order_id) index alone.
            cursor = self._connected().execute(
                "SELECT strategy_code, client_order_id FROM closed_orders "
                "WHERE day = ? AND client_order_id != ''",
                (day,),
            )
        try:
            while True:
                with self._lock, _reading():
                    batch = cursor.fetchmany(_KEYS_PER_BATCH)
                if not batch:
                    return
                yield from batch
        finally:
            with self._lock:
                cursor.close()

    def count(self, day: str, stored_by: int) -> int:
        """Rows of `day` stored by the snapshot at `stored_by` or before."""
        if not self._exists:
            return 0
        with self._lock, _reading():
            found = (
                self._connected()
                .execute(
                    "SELECT count(*) FROM closed_orders WHERE day = ? AND snapshot_seq <= ?",
                    (day, stored_by),
                )
                .fetchone()
            )
        return int(found[0])

    def verify(self) -> int:
        """Check every row's seal, of every day; how many there are."""
        if not self._exists:
            return 0
        checked = 0
        with self._lock, _reading():
            cursor = self._connected().execute(f"SELECT {ROW_COLUMNS} FROM closed_orders")
            for row in cursor:
                self._checked(row)
                checked += 1
        return checked

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _select(
        self, where: str, args: tuple[object, ...], limit: int, order: str = "order_id"
    ) -> list[ClosedOrder]:
        if not self._exists:
            return []
        with self._lock, _reading():
            rows = (
                self._connected()
                .execute(
                    f"SELECT {ROW_COLUMNS} FROM closed_orders WHERE {where} "
                    f"ORDER BY {order} LIMIT ?",
                    (*args, limit),
                )
                .fetchall()
            )
        return [ClosedOrder.of_archived(self._checked(row)) for row in rows]

    def _checked(self, row: tuple[object, ...]) -> ArchivedOrder:
        return checked_row(self._chain, row)[0]


def checked_row(chain: Chain, row: tuple[object, ...]) -> tuple[ArchivedOrder, str]:
    """A row as selected by ROW_COLUMNS, its seal checked: the order and its seal. A
    start checks every row of the day, so each column's type is tested in line (SQLite
    gives exactly str, int, float, bytes or None; subclasses never)."""
    if len(row) != _ROW_LENGTH:
        raise ArchiveCorrupt(
            f"an archived row has {len(row)} columns, not {_ROW_LENGTH}; "
            "`execgw journal verify` checks the journal"
        )
    (
        order_id,
        day,
        strategy_code,
        symbol,
        client_order_id,
        status,
        internal,
        created_at,
        reason,
        body,
        seal,
        snapshot_seq,
    ) = row
    if not (
        type(order_id) is str
        and type(day) is str
        and type(strategy_code) is str
        and type(symbol) is str
        and type(client_order_id) is str
        and type(status) is str
        and type(internal) is int
        and type(created_at) is str
        and (reason is None or type(reason) is str)
        and type(body) is bytes
        and type(snapshot_seq) is int
    ):
        raise _not_as_stored(row)
    archived = ArchivedOrder._make(row[:_ORDER_COLUMNS])
    if not chain.matches(str(seal), seal_row(chain, archived, snapshot_seq)):
        raise _not_as_stored(row)
    return archived, str(seal)


def _not_as_stored(row: tuple[object, ...]) -> ArchiveCorrupt:
    return ArchiveCorrupt(
        f"archived order {row[0]} is not what the journal stored "
        "(its seal does not match); `execgw journal verify` checks the journal"
    )
