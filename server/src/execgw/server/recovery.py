"""Rebuilding gateway state from the journal: the latest snapshot, then the events after it.

State is a fold over journaled events, so this is the only way state is ever
restored, at start-up and after a failed write alike.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import date
from decimal import Decimal
from typing import Any, cast

import msgspec

from execgw.server import codec
from execgw.server.closed_orders import (
    EMPTY_ARCHIVE,
    Archive,
    ArchiveBatch,
    ClosedOrder,
    ListedKey,
)
from execgw.server.domain import Fill, Order, PositionKey, Product, Quote, QuoteLiquidity, Side
from execgw.server.events import (
    BreakerTripped,
    DayRolledOver,
    EquityPeak,
    Event,
    FillExecuted,
    MarksRecorded,
    OrderAccepted,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    QuoteObserved,
)
from execgw.server.journal import GENESIS_HASH, Journal, JournalCorrupt, check_link
from execgw.server.journal import Snapshot as StoredSnapshot
from execgw.server.ledger import Ledger, LedgerError, PositionState
from execgw.server.order_archive import ArchiveCorrupt, ClosedOrderArchive
from execgw.server.risk_state import NOT_STATE, ZERO, RiskBook, Trip

log = logging.getLogger(__name__)


@dataclass(slots=True)
class IdSource:
    """Deterministic ids; after a restart the counters continue from the journal."""

    next_order: int = 1
    next_fill: int = 1

    def order_id(self) -> str:
        value = self.peek_order_id()
        self.next_order += 1
        return value

    def peek_order_id(self) -> str:
        """The id order_id() gives next, not drawn."""
        return f"O{self.next_order:010d}"

    def fill_id(self) -> str:
        value = f"F{self.next_fill:010d}"
        self.next_fill += 1
        return value

    def observe(self, event: Event) -> None:
        # Ids are a letter and ten digits, perhaps with a marker after (dry-run "-DRY").
        if isinstance(event, OrderAccepted | OrderRejected | OrderSubmitted):
            self.next_order = max(self.next_order, int(event.order_id[1:11]) + 1)
        elif isinstance(event, OrderFilled | FillExecuted):
            self.next_fill = max(self.next_fill, int(event.fill.fill_id[1:11]) + 1)


@dataclass(slots=True)
class GatewayState:
    ledger: Ledger
    risk: RiskBook
    ids: IdSource
    sequence: int
    head_hash: str
    # Events replayed after the snapshot at the last rebuild (start-up cost).
    replayed: int = 0
    # The last journaled mark (LTP) of each symbol with an open position or resting
    # order: what positions are valued at after a restart, until their next quote.
    marks: dict[str, Decimal] = field(default_factory=dict)
    # Symbols whose mark is the quote of their last fill rather than a MarksRecorded.
    fill_marks: set[str] = field(default_factory=set)
    # The paper simulator's latest quote per symbol and what fills took from it, while it
    # tracks liquidity (QuoteObserved); handed back to it after a restart or rebuild.
    liquidity: dict[str, QuoteLiquidity] = field(default_factory=dict)

    def apply(self, event: Event) -> None:
        """Fold one event into every part of the state; the one path for live and replay."""
        late = isinstance(event, OrderFilled) and self.ledger.reported_late(event.fill)
        if isinstance(event, QuoteObserved):
            self.liquidity[event.quote.symbol] = QuoteLiquidity(event.quote, event.previous_volume)
        elif isinstance(event, FillExecuted) or (
            # Taken when the exchange made the fill: its late report takes nothing more.
            isinstance(event, OrderFilled) and not late
        ):
            self._take(event.fill, event.quote)
        outcome = self.ledger.apply(event)
        self.risk.apply(event, outcome)
        self.ids.observe(event)
        if isinstance(event, MarksRecorded):
            self.marks = dict(event.marks)
            self.fill_marks.clear()
        elif isinstance(event, FillExecuted) or (isinstance(event, OrderFilled) and not late):
            # Every fill carries the quote it was priced against: a durable mark for a
            # position that has had no MarksRecorded yet (opened just before a crash).
            # With fill latency that is the fill's own record (FillExecuted, in journal
            # order with the marks after it), not its late report: the report's quote is
            # as old as the fill, and must not replace a mark journaled since.
            self.marks[event.fill.symbol] = event.quote.ltp
            self.fill_marks.add(event.fill.symbol)
        elif isinstance(event, EquityPeak | BreakerTripped | DayRolledOver):
            # These were computed from live prices newer than any fill's quote. The
            # gateway journals its marks just before a peak or a trip (so these are
            # gone already), but a journal from before marks has none: there, a fill's
            # price would value a position against a newer peak or baseline.
            for symbol in self.fill_marks:
                self.marks.pop(symbol, None)
            self.fill_marks.clear()

    def _take(self, fill: Fill, quote: Quote) -> None:
        if not self.liquidity:
            return
        seen = self.liquidity.get(fill.symbol)
        if seen is None or seen.quote != quote:
            return  # priced on a quote the simulator has moved past: nothing to keep
        if fill.side is Side.BUY:
            seen.taken_buy += fill.qty
        else:
            seen.taken_sell += fill.qty


# -- the snapshot -------------------------------------------------------------------
# A snapshot is the state's parts as declared, encoded by the codec. Two parts are kept
# by keys JSON has no form for, so their snapshot form is declared here beside them;
# tests/test_codec_properties.py checks each mirrors every field of what it stands for.


@dataclass(frozen=True, slots=True)
class PositionEntry:
    """A PositionState with its key, flat."""

    strategy_code: str
    symbol: str
    product: Product
    net_qty: int
    open_cost: Decimal
    realized_pnl: Decimal
    buy_qty: int
    sell_qty: int
    trip_pnl: Decimal
    charges: Decimal = Decimal(0)

    @classmethod
    def of(cls, key: PositionKey, position: PositionState) -> PositionEntry:
        return cls(*key, **_fields_of(position))

    def restore(self) -> tuple[PositionKey, PositionState]:
        values = _fields_of(self)
        key = (values.pop("strategy_code"), values.pop("symbol"), values.pop("product"))
        return key, PositionState(**values)


@dataclass(frozen=True, slots=True)
class RiskEntry:
    """A RiskBook with its trips as a list and its unmarked positions sorted."""

    day: date | None
    trades_total: int
    trades_by_strategy: dict[str, int]
    realized_total: Decimal
    realized_by_strategy: dict[str, Decimal]
    loss_streak: dict[str, int]
    trips: list[Trip]
    squared_off_day: date | None
    peak_equity: Decimal | None
    baseline_unrealized: Decimal = ZERO
    unmarked: list[tuple[str, str, str]] = field(default_factory=list)

    @classmethod
    def of(cls, book: RiskBook) -> RiskEntry:
        values = _fields_of(book)
        values["trips"] = list(book.trips.values())
        values["unmarked"] = sorted(book.unmarked)
        return cls(**values)

    def restore(self) -> RiskBook:
        values = _fields_of(self)
        values["trips"] = {(t.breaker, t.strategy_code): t for t in self.trips}
        values["unmarked"] = set(self.unmarked)
        return RiskBook(**values)


@dataclass(frozen=True, slots=True)
class Snapshot:
    sequence: int
    ids: IdSource
    risk: RiskEntry
    # Each order as the codec wrote it: a restart decodes them one at a time (_restorable).
    orders: list[msgspec.Raw]
    positions: list[PositionEntry]
    # Snapshots written before marks were journaled have none: those positions are
    # unknown until their next quote, never valued at zero.
    marks: dict[str, Decimal] = field(default_factory=dict)
    fill_marks: list[str] = field(default_factory=list)
    # By symbol; snapshots from before the simulator's liquidity was kept have none.
    liquidity: list[QuoteLiquidity] = field(default_factory=list)


# Stands for the orders in a prepared snapshot's envelope until body() puts them in: a
# NUL byte, which encoded JSON never holds raw (control characters are escaped).
_ORDERS_HOLE = b"\x00"


@dataclass(frozen=True, slots=True)
class PreparedSnapshot:
    """The state at `sequence`, encoded except for the joining: immutable bytes only, so
    body() may run in another thread while the writer goes on changing the state."""

    sequence: int
    envelope: bytes
    orders: list[bytes]
    # With archiving: the finished orders this snapshot moves to the archive, as rows
    # for the journal to store with it, and as the ledger's objects, for it to let go
    # once the snapshot is stored (Ledger.evict).
    archived: ArchiveBatch | None = None
    finished: list[ClosedOrder] = field(default_factory=list)

    def body(self) -> str:
        """The snapshot, the same text as encoding the whole state at once."""
        head, tail = self.envelope.split(_ORDERS_HOLE)
        return b"".join((head, b"[", b",".join(self.orders), b"]", tail)).decode("utf-8")

    def pieces(self, orders_per_piece: int = 256) -> Iterator[str]:
        """body() in pieces, joined as they are asked for: each step is short, so the
        thread that stores a snapshot never holds the GIL for a whole day's state at once
        (the writer's thread would wait for it)."""
        head, tail = self.envelope.split(_ORDERS_HOLE)
        yield (head + b"[").decode("utf-8")
        for start in range(0, len(self.orders), orders_per_piece):
            group = b",".join(self.orders[start : start + orders_per_piece])
            yield ("," if start else "") + group.decode("utf-8")
        yield (b"]" + tail).decode("utf-8")


def prepare_snapshot(state: GatewayState, *, archiving: bool = False) -> PreparedSnapshot:
    """What the writer does for a snapshot: encodes the orders changed since the last one
    (kept per order by the ledger) and the small rest (risk, positions, marks); the
    orders are joined by PreparedSnapshot.body(), off the writer.

    `archiving`: the finished orders in memory go to the journal's archive with this
    snapshot (Journal.write_snapshot(archived=...)), not into its body; only a snapshot
    stored with them may say so. Otherwise they stay in the body, as they are in memory."""
    ledger = state.ledger
    positions = ledger.position_items()
    orders, finished = ledger.encoded_orders(codec.encode_bytes, archiving=archiving)
    envelope = codec.encode_bytes(
        Snapshot(
            sequence=state.sequence,
            ids=state.ids,
            risk=RiskEntry.of(state.risk),
            orders=cast(list[msgspec.Raw], msgspec.Raw(_ORDERS_HOLE)),
            positions=[PositionEntry.of(key, p) for key, p in positions],
            marks=state.marks,
            fill_marks=sorted(state.fill_marks),
            liquidity=[state.liquidity[symbol] for symbol in sorted(state.liquidity)],
        )
    )
    if not archiving:
        return PreparedSnapshot(state.sequence, envelope, orders)
    rows = [order.archived(ledger.day) for order in finished]
    batch = ArchiveBatch(ledger.day, rows)
    return PreparedSnapshot(state.sequence, envelope, orders, archived=batch, finished=finished)


def state_to_json(state: GatewayState) -> str:
    return prepare_snapshot(state).body()


def _restorable(bodies: list[bytes]) -> tuple[list[Order | ClosedOrder], list[bytes] | None]:
    """A snapshot's orders as Ledger.restore takes them, each decoded whole (so a body
    that does not decode stops the start, as it always did): open ones as they are,
    finished ones made compact at once, with the bytes they came in, so the day's orders
    are never all whole in memory together. A snapshot of an older codec (its bytes are
    not what the codec writes today) is restored whole, to be encoded afresh at the next
    snapshot."""
    if not bodies:
        return [], None
    ends = (0, len(bodies) - 1)
    if any(codec.encode_bytes(_decoded(bodies[i], i)) != bodies[i] for i in ends):
        return [_decoded(body, index) for index, body in enumerate(bodies)], None
    found: list[Order | ClosedOrder] = []
    for index, body in enumerate(bodies):
        order = _decoded(body, index)
        if order.status.is_open:
            found.append(order)
        else:
            listed = ListedKey(order.intent.strategy_code, order.intent.symbol)
            found.append(ClosedOrder(order, body, listed))
    return found, bodies


def _decoded(body: bytes, index: int) -> Order:
    try:
        return codec.decode(body, Order)
    except codec.CodecError as e:
        raise codec.CodecError(f"snapshot order {index}: {e}") from None


def state_from_json(
    body: str, head_hash: str = GENESIS_HASH, archive: Archive = EMPTY_ARCHIVE
) -> GatewayState:
    snapshot = codec.decode(body, Snapshot)
    orders, bodies = _restorable([bytes(raw) for raw in snapshot.orders])
    ledger = Ledger.restore(
        orders,
        [p.restore() for p in snapshot.positions],
        bodies,
        archive=archive,
        day=_day_key(snapshot.risk.day),
    )
    return GatewayState(
        ledger=ledger,
        risk=snapshot.risk.restore(),
        ids=snapshot.ids,
        sequence=snapshot.sequence,
        head_hash=head_hash,
        marks=dict(snapshot.marks),
        fill_marks=set(snapshot.fill_marks),
        liquidity={entry.quote.symbol: entry for entry in snapshot.liquidity},
    )


def _day_key(day: date | None) -> str:
    """The ledger's key for a trading day (Ledger.day)."""
    return "" if day is None else day.isoformat()


def _fields_of(instance: object) -> dict[str, Any]:
    """Its fields' values, less those marked bookkeeping rather than state (NOT_STATE)."""
    return {
        f.name: getattr(instance, f.name)
        for f in fields(instance)  # type: ignore[arg-type]
        if not f.metadata.get(NOT_STATE)
    }


def _check_archive(
    journal: Journal, archive: ClosedOrderArchive, day: str, snapshot: StoredSnapshot
) -> None:
    """The archive holds as many orders of the working day as the record stored with the
    snapshot says (the snapshot's seal covers the record; the rows were counted in the
    same read): rows removed or added since stop the start. Each row's own seal is
    checked whenever it is read."""
    journal.check_archived_rows(snapshot)
    stored = snapshot.archive
    if stored is not None and stored.day > day:
        raise JournalCorrupt(
            f"the journal's archive is of trading day {stored.day}, past its snapshot's "
            f"({day or 'none'})"
        )
    if stored is not None and stored.day == day:
        return
    # Nothing archived of this day yet (a rollover since the last archiving).
    try:
        held = archive.count(day, snapshot.sequence)
    except ArchiveCorrupt as e:
        raise JournalCorrupt(str(e)) from None
    if held:
        raise JournalCorrupt(
            f"the journal's archive holds {held} finished orders of the working day; "
            "none were stored with its snapshot"
        )


def rebuild(journal: Journal, *, starting: bool = False) -> GatewayState:
    """The state the journal holds: its latest snapshot, and the events after it.

    `starting`: nothing else runs yet (a gateway's or a tool's start), so the cyclic
    garbage collector waits meanwhile. Decoding a day's snapshot makes millions of
    objects, none of them garbage, and each collection on the way would walk all those
    made so far: with it running, a rebuild of 100,000 orders took 1.3 s instead of
    0.8 s, and the share grows with the day. Reference counting still frees whatever the
    rebuild drops; the collector resumes after it, as it was found. A rebuild while the
    gateway serves (after a failed command) leaves it alone: the collector is global,
    and the event loop's own garbage must not pile up for as long as the rebuild lasts."""
    if not starting:
        return _rebuild(journal)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _rebuild(journal)
    finally:
        if was_enabled:
            gc.enable()


def _rebuild(journal: Journal) -> GatewayState:
    # Checked against the journal's chain (keyed, when the journal is): JournalCorrupt,
    # and so no start, if the state it holds is not the state the gateway stored.
    snapshot = journal.latest_snapshot(with_archive=True)
    archive = journal.archive()
    if snapshot is None:
        state = GatewayState(
            ledger=Ledger(archive),
            risk=RiskBook(),
            ids=IdSource(),
            sequence=0,
            head_hash=GENESIS_HASH,
        )
    else:
        try:
            state = state_from_json(snapshot.body, archive=archive)
        except (codec.CodecError, TypeError, ValueError, ArithmeticError) as e:
            raise JournalCorrupt(f"snapshot at {snapshot.sequence} cannot be decoded: {e}") from e
        if state.sequence != snapshot.sequence:
            raise JournalCorrupt(
                f"snapshot at {snapshot.sequence} holds the state at sequence {state.sequence}"
            )
        anchor = journal.row(state.sequence)
        if anchor is None:
            raise JournalCorrupt(f"snapshot at {state.sequence} has no matching journal row")
        state.head_hash = anchor.hash
        # Without a snapshot the events replay every order from the first: whatever the
        # archive holds is in memory again, and memory stands for it.
        _check_archive(journal, archive, state.ledger.day, snapshot)
    replayed = 0
    for row in journal.rows(after=state.sequence):
        check_link(row, state.sequence + 1, state.head_hash)
        record = row.decode()
        try:
            state.apply(record.event)
        except (LedgerError, ArchiveCorrupt) as e:
            raise JournalCorrupt(f"journal row {row.sequence} does not apply: {e}") from e
        state.sequence, state.head_hash = row.sequence, row.hash
        replayed += 1
    # The last events' finished orders too: nothing else may come before the first command.
    state.ledger.compact()
    # Read now, not on the first order: a day's keys take a while to read.
    try:
        state.ledger.archived_keys()
    except ArchiveCorrupt as e:
        raise JournalCorrupt(f"the journal's archive cannot be read: {e}") from e
    log.info(
        "recovered state at sequence %d (snapshot %s, %d events replayed)",
        state.sequence,
        "none" if snapshot is None else snapshot.sequence,
        replayed,
    )
    state.replayed = replayed
    return state
