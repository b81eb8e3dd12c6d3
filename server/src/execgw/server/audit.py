"""Audit tools over the journal: verify the hash chain, export events."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import TextIO

from execgw.server import codec
from execgw.server.journal import GENESIS_HASH, Journal, JournalCorrupt, check_link
from execgw.server.order_archive import ArchiveCorrupt


@dataclass(frozen=True, slots=True)
class VerifyReport:
    events: int
    head_sequence: int
    head_hash: str
    # The oldest retained event, and the seal of the one before it: GENESIS_HASH at 1,
    # else from the (sealed) pruning record.
    first_sequence: int = 1
    before_first_hash: str = GENESIS_HASH
    # Sequences of the stored snapshots, each seal checked.
    snapshots: tuple[int, ...] = ()
    # Finished orders in the journal's archive, of every day, each row's seal checked.
    archived_orders: int = 0


def verify(journal: Journal) -> VerifyReport:
    """Walk every event: contiguous sequences, intact hash chain, decodable bodies; then
    the pruning record and every stored snapshot, each against its seal."""
    oldest = journal.oldest_sequence()
    # Only pruning may remove the oldest events, and it records, sealed, where it cut.
    pruned = journal.pruning_record()
    if pruned is not None:
        if oldest != pruned.below:
            found = "no events at all" if oldest == 0 else f"the oldest event is {oldest}"
            raise JournalCorrupt(
                f"the pruning record says events below {pruned.below} were pruned, but "
                f"{found}: events were deleted or put back"
            )
        expected_seq, prev = pruned.below, pruned.prev_hash
    elif oldest > 1:
        raise JournalCorrupt(
            f"events 1..{oldest - 1} are missing and no pruning record covers them"
        )
    else:
        expected_seq, prev = 1, GENESIS_HASH
    first, before_first = expected_seq, prev
    count = 0
    for row in journal.rows():
        check_link(row, expected_seq, prev)
        row.decode()
        expected_seq, prev = row.sequence + 1, row.hash
        count += 1
    head = expected_seq - 1
    # Each seal covers the event it was taken at, which the walk above has just checked.
    snapshots = tuple(s.sequence for s in journal.snapshots())
    for sequence in snapshots:
        if not first <= sequence <= head:
            raise JournalCorrupt(
                f"snapshot at {sequence} is outside the retained events {first}..{head}"
            )
    latest = journal.latest_snapshot(with_archive=True)
    if latest is not None:
        journal.check_archived_rows(latest)
    try:
        archived = journal.archive().verify()
    except ArchiveCorrupt as e:
        raise JournalCorrupt(str(e)) from None
    return VerifyReport(count, head, prev, first, before_first, snapshots, archived)


CSV_COLUMNS = (
    "sequence",
    "kind",
    "timestamp",
    "order_id",
    "client_order_id",
    "strategy_code",
    "symbol",
    "side",
    "qty",
    "order_type",
    "product",
    "price",
    "fill_qty",
    "fill_price",
    "status",
    "reject_reason",
    "message",
    "hash",
    # Who: placed_by of an order, the actor of a halt or resume, the refused principal.
    "actor",
)


def export(journal: Journal, out: TextIO, fmt: str, zone: tzinfo | None = None) -> int:
    """Every row, in order. `zone`: the timezone the `timestamp` column is written in,
    with its offset (the hashed text in the journal itself stays as it is)."""

    def when(row_timestamp: str) -> str:
        if zone is None:
            return row_timestamp
        return datetime.fromisoformat(row_timestamp).astimezone(zone).isoformat()

    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"unknown format {fmt!r}; use jsonl or csv")
    writer = csv.writer(out) if fmt == "csv" else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    count = 0
    for row in journal.rows():
        try:
            body = codec.json_loads(row.body)
        except (ValueError, codec.CodecError) as e:
            raise JournalCorrupt(f"row {row.sequence} is not valid JSON: {e}") from e
        if writer is None:
            out.write(
                json.dumps(
                    {
                        "sequence": row.sequence,
                        "kind": row.kind,
                        "timestamp": when(row.timestamp),
                        "event": body["event"],
                        "order": body["order"],
                        "prev_hash": row.prev_hash,
                        "hash": row.hash,
                    },
                    sort_keys=True,
                )
                + "\n"
            )
        else:
            # Risk events (breakers, halts, rollover) concern no order.
            order = body["order"] or {}
            intent = order.get("intent") or {}
            event = body["event"]
            fill = event.get("fill") or {}
            actor = order.get("placed_by") or event.get("actor") or event.get("principal") or ""
            writer.writerow(
                (
                    row.sequence,
                    row.kind,
                    when(row.timestamp),
                    order.get("order_id", ""),
                    order.get("client_order_id", ""),
                    intent.get("strategy_code", body["event"].get("strategy_code", "")),
                    intent.get("symbol", ""),
                    intent.get("side", ""),
                    intent.get("qty", ""),
                    intent.get("order_type", ""),
                    intent.get("product", ""),
                    intent.get("price") or "",
                    fill.get("qty", ""),
                    fill.get("price", ""),
                    order.get("status", ""),
                    order.get("reject_reason") or "",
                    order.get("message", body["event"].get("message", "")),
                    row.hash,
                    actor,
                )
            )
        count += 1
    return count
