"""execution.autoslice: slice. An order above its instrument's freeze quantity becomes
child orders of at most that quantity under one parent, as Kite's autoslice does.

Representation: there is no parent order in the ledger. The children are ordinary
orders, journaled as any other, with client_order_id "<parent>#1", "<parent>#2", ...
(in order, the last one the remainder); the key of a parent placed without one is
"auto-" and its first child's order id, as that child alone would have been keyed.
What the submit returns, and what a retry of the parent key returns, is `aggregate`:
the first child's order id, the parent's client_order_id and quantity, the children's
filled quantity, value and charges summed, and raw["autoslice"] listing every child
(order_id, client_order_id, qty, filled_qty, status). Each child is also an order of
its own (GetOrder, ListOrders, StreamFills name the child). Risk checks the whole
order once, before any child.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from execgw.server.domain import Order, OrderIntent, OrderStatus
from execgw.server.instruments import Instrument

SEPARATOR = "#"


def slice_sizes(qty: int, instrument: Instrument) -> list[int] | None:
    """The children's quantities, or None when `qty` needs no slicing. Each child is
    at most the freeze quantity and a whole number of lots (as Kite slices F&O)."""
    freeze = instrument.freeze_qty
    if freeze is None or qty <= freeze:
        return None
    lot = max(instrument.lot_size, 1)
    size = max(freeze // lot * lot, lot)
    sizes = [size] * (qty // size)
    if qty % size:
        sizes.append(qty % size)
    return sizes


def child_client_order_id(parent: str, index: int) -> str:
    """The key of child `index` (from 1). A parent placed without a key is keyed
    "auto-<its first child's order_id>" by the engine first (journals written before
    that keyed each such child "auto-<its own order_id>")."""
    return f"{parent}{SEPARATOR}{index}" if parent else ""


@dataclass(frozen=True, slots=True)
class Placed:
    """An order as placed, for `sliced_runs`: its key, intent and time."""

    client_order_id: str
    intent: OrderIntent
    at: datetime


def sliced_runs(placed: Sequence[Placed]) -> list[tuple[str, range]]:
    """The runs of `placed` (orders in the order they were placed) that are one parent's
    children, each with the parent's client_order_id.

    Nothing journaled names a child's parent, so it is read off what slicing leaves:
    keys "<parent>#1".."#n" (n >= 2) placed one after another at the same instant (one
    command), the same intent but for qty, every child the size of the first but the
    last, which is no larger. A strategy would have to place such keys itself within
    the same microsecond to be mistaken for one. A parent placed without a key is found
    as "auto-<first child's order_id>"; in journals written before the engine keyed its
    children by that, each child is "auto-<its own order_id>" and it is not found."""
    runs: list[tuple[str, range]] = []
    i = 0
    while i < len(placed):
        first = placed[i]
        parent, sep, index = first.client_order_id.rpartition(SEPARATOR)
        end = i + 1
        if sep and parent and index == "1":
            while end < len(placed) and _next_child(first, placed[end], parent, end - i + 1):
                end += 1
        sizes = [p.intent.qty for p in placed[i:end]]
        if end - i >= 2 and all(q == sizes[0] for q in sizes[:-1]) and sizes[-1] <= sizes[0]:
            runs.append((parent, range(i, end)))
            i = end
        else:
            i += 1
    return runs


def _next_child(first: Placed, other: Placed, parent: str, index: int) -> bool:
    return (
        other.client_order_id == child_client_order_id(parent, index)
        and other.at == first.at
        and replace(other.intent, qty=first.intent.qty) == first.intent
    )


def aggregate(parent_client_order_id: str, children: list[Order]) -> Order:
    """The parent as one result: see the module docstring."""
    first = children[0]
    total = sum(c.intent.qty for c in children)
    filled = sum(c.filled_qty for c in children)
    statuses = {c.status for c in children}
    status = _status(statuses, filled, total, [c.status for c in children])
    raw: dict[str, Any] = {
        **first.raw,
        "autoslice": {
            "parent_client_order_id": parent_client_order_id,
            "children": [
                {
                    "order_id": c.order_id,
                    "client_order_id": c.client_order_id,
                    "qty": c.intent.qty,
                    "filled_qty": c.filled_qty,
                    "status": c.status.value,
                }
                for c in children
            ],
        },
    }
    message = first.message if len(statuses) == 1 else ""
    message = "; ".join(x for x in (f"autosliced into {len(children)} orders", message) if x)
    return replace(
        first,
        client_order_id=parent_client_order_id or first.client_order_id,
        intent=replace(first.intent, qty=total),
        status=status,
        filled_qty=filled,
        filled_value=sum((c.filled_value for c in children), Decimal(0)),
        charges=sum((c.charges for c in children), Decimal(0)),
        brokerage=sum((c.brokerage for c in children), Decimal(0)),
        message=message,
        raw=raw,
        updated_at=max(c.updated_at for c in children),
    )


def _status(
    statuses: set[OrderStatus], filled: int, total: int, ordered: list[OrderStatus]
) -> OrderStatus:
    """One child's status when all agree; otherwise FILLED when all filled, PARTIAL (or
    the first open child's status) while any is open, else CANCELLED or REJECTED."""
    if len(statuses) == 1:
        return next(iter(statuses))
    if filled == total:
        return OrderStatus.FILLED
    if any(s.is_open for s in statuses):
        if filled:
            return OrderStatus.PARTIAL
        return next(s for s in ordered if s.is_open)
    # All closed, not all filled: what ended the rest (filled_qty shows what filled).
    return OrderStatus.CANCELLED if OrderStatus.CANCELLED in statuses else OrderStatus.REJECTED
