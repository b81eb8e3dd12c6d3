"""Rebuilding gateway state from the journal: the latest snapshot, then the events after it.

State is a fold over journaled events, so this is the only way state is ever
restored, at start-up and after a failed write alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from execgw.server import codec
from execgw.server.breakers import Breaker
from execgw.server.domain import Product, RejectReason, TradingState
from execgw.server.events import (
    BreakerTripped,
    DayRolledOver,
    EquityPeak,
    Event,
    MarksRecorded,
    OrderAccepted,
    OrderFilled,
    OrderRejected,
)
from execgw.server.journal import GENESIS_HASH, Journal, JournalCorrupt, check_link
from execgw.server.ledger import Ledger, LedgerError, PositionState
from execgw.server.risk_state import RiskBook, Trip

log = logging.getLogger(__name__)


class IdSource:
    """Deterministic ids; after a restart the counters continue from the journal."""

    def __init__(self, next_order: int = 1, next_fill: int = 1) -> None:
        self.next_order = next_order
        self.next_fill = next_fill

    def order_id(self) -> str:
        value = f"O{self.next_order:010d}"
        self.next_order += 1
        return value

    def fill_id(self) -> str:
        value = f"F{self.next_fill:010d}"
        self.next_fill += 1
        return value

    def observe(self, event: Event) -> None:
        if isinstance(event, OrderAccepted | OrderRejected):
            self.next_order = max(self.next_order, int(event.order_id[1:]) + 1)
        elif isinstance(event, OrderFilled):
            self.next_fill = max(self.next_fill, int(event.fill.fill_id[1:]) + 1)


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

    def apply(self, event: Event) -> None:
        """Fold one event into every part of the state; the one path for live and replay."""
        outcome = self.ledger.apply(event)
        self.risk.apply(event, outcome)
        self.ids.observe(event)
        if isinstance(event, MarksRecorded):
            self.marks = dict(event.marks)
            self.fill_marks.clear()
        elif isinstance(event, OrderFilled):
            # Every fill carries the quote it was priced against: a durable mark for a
            # position that has had no MarksRecorded yet (opened just before a crash).
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


def _risk_to_json(book: RiskBook) -> dict[str, object]:
    return {
        "day": None if book.day is None else book.day.isoformat(),
        "trades_total": book.trades_total,
        "trades_by_strategy": book.trades_by_strategy,
        "realized_total": str(book.realized_total),
        "realized_by_strategy": {k: str(v) for k, v in book.realized_by_strategy.items()},
        "loss_streak": book.loss_streak,
        "trips": [
            {
                "breaker": t.breaker.value,
                "strategy_code": t.strategy_code,
                "state": t.state.value,
                "reason": t.reason.value,
                "message": t.message,
                "at": t.at.isoformat(),
            }
            for t in book.trips.values()
        ],
        "squared_off_day": None
        if book.squared_off_day is None
        else book.squared_off_day.isoformat(),
        "peak_equity": None if book.peak_equity is None else str(book.peak_equity),
        "baseline_unrealized": str(book.baseline_unrealized),
        "unmarked": sorted(list(key) for key in book.unmarked),
    }


def _risk_from_json(d: dict[str, Any]) -> RiskBook:
    trips = [
        Trip(
            Breaker(t["breaker"]),
            t["strategy_code"],
            TradingState(t["state"]),
            RejectReason(t["reason"]),
            t["message"],
            datetime.fromisoformat(t["at"]),
        )
        for t in d["trips"]
    ]
    return RiskBook(
        day=None if d["day"] is None else date.fromisoformat(d["day"]),
        trades_total=int(d["trades_total"]),
        trades_by_strategy={k: int(v) for k, v in d["trades_by_strategy"].items()},
        realized_total=Decimal(d["realized_total"]),
        realized_by_strategy={k: Decimal(v) for k, v in d["realized_by_strategy"].items()},
        loss_streak={k: int(v) for k, v in d["loss_streak"].items()},
        trips={(t.breaker, t.strategy_code): t for t in trips},
        squared_off_day=(
            None if d["squared_off_day"] is None else date.fromisoformat(d["squared_off_day"])
        ),
        peak_equity=None if d["peak_equity"] is None else Decimal(d["peak_equity"]),
        baseline_unrealized=Decimal(d["baseline_unrealized"]),
        unmarked={(str(k[0]), str(k[1]), str(k[2])) for k in d["unmarked"]},
    )


def state_to_json(state: GatewayState) -> str:
    orders, positions = state.ledger.export()
    return codec.dumps(
        {
            "sequence": state.sequence,
            "ids": {"next_order": state.ids.next_order, "next_fill": state.ids.next_fill},
            "risk": _risk_to_json(state.risk),
            "marks": {symbol: str(ltp) for symbol, ltp in state.marks.items()},
            "fill_marks": sorted(state.fill_marks),
            "orders": [codec.order_to_json(o) for o in orders],
            "positions": [
                {
                    "strategy_code": key[0],
                    "symbol": key[1],
                    "product": key[2].value,
                    "net_qty": p.net_qty,
                    "open_cost": str(p.open_cost),
                    "realized_pnl": str(p.realized_pnl),
                    "buy_qty": p.buy_qty,
                    "sell_qty": p.sell_qty,
                    "trip_pnl": str(p.trip_pnl),
                }
                for key, p in positions
            ],
        }
    )


def _state_from_json(
    body: str,
) -> tuple[int, Ledger, RiskBook, IdSource, dict[str, Decimal], set[str]]:
    data = codec.json_loads(body)
    orders = [codec.order_from_json(o) for o in data["orders"]]
    positions = [
        (
            (p["strategy_code"], p["symbol"], Product(p["product"])),
            PositionState(
                net_qty=int(p["net_qty"]),
                open_cost=Decimal(p["open_cost"]),
                realized_pnl=Decimal(p["realized_pnl"]),
                buy_qty=int(p["buy_qty"]),
                sell_qty=int(p["sell_qty"]),
                trip_pnl=Decimal(p["trip_pnl"]),
            ),
        )
        for p in data["positions"]
    ]
    ids = IdSource(int(data["ids"]["next_order"]), int(data["ids"]["next_fill"]))
    risk = _risk_from_json(data["risk"])
    # Snapshots written before marks were journaled have none: those positions are
    # unknown until their next quote, never valued at zero.
    marks = {str(k): Decimal(v) for k, v in dict(data.get("marks", {})).items()}
    fill_marks = {str(s) for s in data.get("fill_marks", [])}
    return (
        int(data["sequence"]),
        Ledger.restore(orders, positions),
        risk,
        ids,
        marks,
        fill_marks,
    )


def rebuild(journal: Journal) -> GatewayState:
    # Checked against the journal's chain (keyed, when the journal is): JournalCorrupt,
    # and so no start, if the state it holds is not the state the gateway stored.
    snapshot = journal.latest_snapshot()
    marks: dict[str, Decimal]
    fill_marks: set[str]
    if snapshot is None:
        sequence, ledger, risk, ids, marks, fill_marks = (
            0,
            Ledger(),
            RiskBook(),
            IdSource(),
            {},
            set(),
        )
        prev_hash = GENESIS_HASH
    else:
        try:
            sequence, ledger, risk, ids, marks, fill_marks = _state_from_json(snapshot.body)
        except (codec.CodecError, KeyError, TypeError, ValueError, ArithmeticError) as e:
            raise JournalCorrupt(f"snapshot at {snapshot.sequence} cannot be decoded: {e}") from e
        if sequence != snapshot.sequence:
            raise JournalCorrupt(
                f"snapshot at {snapshot.sequence} holds the state at sequence {sequence}"
            )
        anchor = journal.row(sequence)
        if anchor is None:
            raise JournalCorrupt(f"snapshot at {sequence} has no matching journal row")
        prev_hash = anchor.hash
    state = GatewayState(
        ledger=ledger,
        risk=risk,
        ids=ids,
        sequence=sequence,
        head_hash=prev_hash,
        marks=marks,
        fill_marks=fill_marks,
    )
    replayed = 0
    for row in journal.rows(after=sequence):
        check_link(row, state.sequence + 1, state.head_hash)
        record = row.decode()
        try:
            state.apply(record.event)
        except LedgerError as e:
            raise JournalCorrupt(f"journal row {row.sequence} does not apply: {e}") from e
        state.sequence, state.head_hash = row.sequence, row.hash
        replayed += 1
    log.info(
        "recovered state at sequence %d (snapshot %s, %d events replayed)",
        state.sequence,
        "none" if snapshot is None else snapshot.sequence,
        replayed,
    )
    state.replayed = replayed
    return state
