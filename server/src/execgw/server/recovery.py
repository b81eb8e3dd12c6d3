"""Rebuilding gateway state from the journal: the latest snapshot, then the events after it.

State is a fold over journaled events, so this is the only way state is ever
restored, at start-up and after a failed write alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from execgw.server import codec
from execgw.server.domain import Product
from execgw.server.events import Event, OrderAccepted, OrderFilled, OrderRejected
from execgw.server.journal import GENESIS_HASH, Journal, JournalCorrupt, check_link
from execgw.server.ledger import Ledger, LedgerError, PositionState

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
    ids: IdSource
    sequence: int
    head_hash: str


def state_to_json(state: GatewayState) -> str:
    orders, positions = state.ledger.export()
    return codec.dumps(
        {
            "sequence": state.sequence,
            "ids": {"next_order": state.ids.next_order, "next_fill": state.ids.next_fill},
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
                }
                for key, p in positions
            ],
        }
    )


def _state_from_json(body: str) -> tuple[int, Ledger, IdSource]:
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
            ),
        )
        for p in data["positions"]
    ]
    ids = IdSource(int(data["ids"]["next_order"]), int(data["ids"]["next_fill"]))
    return int(data["sequence"]), Ledger.restore(orders, positions), ids


def rebuild(journal: Journal) -> GatewayState:
    snapshot = journal.latest_snapshot()
    if snapshot is None:
        sequence, ledger, ids, prev_hash = 0, Ledger(), IdSource(), GENESIS_HASH
    else:
        try:
            sequence, ledger, ids = _state_from_json(snapshot.body)
        except (codec.CodecError, KeyError, TypeError, ValueError, ArithmeticError) as e:
            raise JournalCorrupt(f"snapshot at {snapshot.sequence} cannot be decoded: {e}") from e
        anchor = journal.row(sequence)
        if anchor is None:
            raise JournalCorrupt(f"snapshot at {sequence} has no matching journal row")
        prev_hash = anchor.hash
    replayed = 0
    for row in journal.rows(after=sequence):
        check_link(row, sequence + 1, prev_hash)
        record = row.decode()
        try:
            ledger.apply(record.event)
        except LedgerError as e:
            raise JournalCorrupt(f"journal row {row.sequence} does not apply: {e}") from e
        ids.observe(record.event)
        sequence, prev_hash = row.sequence, row.hash
        replayed += 1
    log.info(
        "recovered state at sequence %d (snapshot %s, %d events replayed)",
        sequence,
        "none" if snapshot is None else snapshot.sequence,
        replayed,
    )
    return GatewayState(ledger=ledger, ids=ids, sequence=sequence, head_hash=prev_hash)
