"""Finished orders kept compact: the bytes the codec writes for them, plus the few fields
a listing filters on.

A finished order no longer changes, yet the day keeps every one of them for GetOrder,
ListOrders and idempotency. As a live Order (intent, Decimals, dicts) each costs about
3 KB; as its encoding about a tenth of that, so the ledger's memory follows the open
orders and stays small per finished one. The encoding is the snapshot's form of the
order, so a snapshot reuses it as it is.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from execgw.server import codec
from execgw.server.domain import Order, OrderStatus, RejectReason


class ListedKey(NamedTuple):
    """What a listing needs of a finished order's intent; one shared per (strategy,
    symbol), so a finished order keeps neither its intent nor copies of these strings."""

    strategy_code: str
    symbol: str


class ClosedOrder:
    """A finished order: its encoding, and the fields ListOrders, idempotency, the MIS
    square-off count and the rollover look at without decoding it."""

    __slots__ = (
        "body",
        "client_order_id",
        "created_at",
        "intent",
        "internal",
        "order_id",
        "reject_reason",
        "status",
    )

    def __init__(self, order: Order, body: bytes, intent: ListedKey) -> None:
        self.order_id = order.order_id
        self.client_order_id = order.client_order_id
        self.intent = intent
        self.status: OrderStatus = order.status
        self.created_at: datetime = order.created_at
        self.internal = order.internal
        self.reject_reason: RejectReason | None = order.reject_reason
        self.body = body

    def decode(self) -> Order:
        """The order as it finished: a new object each time, so callers may keep it."""
        return codec.decode(self.body, Order)
