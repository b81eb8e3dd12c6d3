"""Audit tools over the journal: verify the hash chain, export events."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from typing import TextIO

from execgw.server import codec
from execgw.server.journal import GENESIS_HASH, Journal, JournalCorrupt, check_link


@dataclass(frozen=True, slots=True)
class VerifyReport:
    events: int
    head_sequence: int
    head_hash: str


def verify(journal: Journal) -> VerifyReport:
    """Walk every event: contiguous sequences, intact hash chain, decodable bodies."""
    oldest = journal.oldest_sequence()
    if oldest > 1:
        # Only pruning may remove the oldest events, and it records where it cut.
        pruned_below = journal.meta("pruned_below")
        if pruned_below is None or int(pruned_below) != oldest:
            raise JournalCorrupt(
                f"events 1..{oldest - 1} are missing and no pruning record covers them"
            )
        expected_seq, prev = oldest, journal.meta("pruned_prev_hash") or ""
    else:
        expected_seq, prev = 1, GENESIS_HASH
    count = 0
    for row in journal.rows():
        check_link(row, expected_seq, prev)
        row.decode()
        expected_seq, prev = row.sequence + 1, row.hash
        count += 1
    return VerifyReport(count, expected_seq - 1, prev)


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
)


def export(journal: Journal, out: TextIO, fmt: str) -> int:
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
                        "timestamp": row.timestamp,
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
            fill = body["event"].get("fill") or {}
            writer.writerow(
                (
                    row.sequence,
                    row.kind,
                    row.timestamp,
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
                )
            )
        count += 1
    return count
