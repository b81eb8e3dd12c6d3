"""The venue seam: where an accepted order goes, and how the venue's answers come back.

A venue has two halves, as NautilusTrader's execution clients do:

- `Venue`, called by the engine inside the single writer. It decides, without I/O,
  which events open, fill or cancel an order. The paper simulator decides everything
  here; a broker venue only records that a call is due (OrderSubmitted,
  CancelRequested), because its answer comes later.
- `VenueLink`, the broker's I/O, outside the writer. It is handed each batch of
  records once they are durable (the outbox), makes the calls they ask for, and
  sends the answers back into the core as `VenueReport`s, which the engine turns into
  events like everything else. Venues that decide at once have no link.

A new broker is a new pair of these; the engine and core do not change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from execgw.server.domain import Order, OrderIntent, Quote, QuoteLiquidity
from execgw.server.events import Event, OrderAccepted, OrderSubmitted
from execgw.server.journal import JournalRecord


class Venue(Protocol):
    """The engine's side of a venue: pure decisions, events out."""

    # Journaled with each order it takes, e.g. "paper", "kite", "kite-dry-run".
    name: str
    # Results and events of this venue carry dry_run = true.
    dry_run: bool
    # Appended to order ids so that every id of a dry run says so ("-DRY").
    order_id_suffix: str

    def reset(self) -> None:
        """Forget every working order (state is about to be rebuilt)."""

    def restore(self, orders: Iterable[Order], liquidity: Iterable[QuoteLiquidity] = ()) -> None:
        """Take the open orders back after a rebuild or a restart, and (a simulator) what
        it knew of each symbol's latest quote."""

    def forget(self, order: Order) -> None:
        """Drop an order the gateway closed by itself (DAY expiry at the rollover)."""

    def open(
        self,
        order_id: str,
        client_order_id: str,
        intent: OrderIntent,
        now: datetime,
        *,
        internal: bool,
        placed_by: str,
    ) -> OrderAccepted | OrderSubmitted:
        """The event that opens an order that passed risk."""

    def on_new_order(
        self, order: Order, quote: Quote, now: datetime, next_fill_id: Callable[[], str]
    ) -> list[Event]:
        """What happens at once to an order just opened (fills, rests, an ack)."""

    def on_quote(self, quote: Quote, now: datetime, next_fill_id: Callable[[], str]) -> list[Event]:
        """Fills and triggers a new quote causes among working orders."""

    def on_time(self, now: datetime, next_fill_id: Callable[[], str]) -> list[Event]:
        """What time alone brings by `now`, quotes or not: a simulator's messages due
        after their latency (fill reports, cancel confirmations, orders reaching it).
        Called first whenever the engine's time advances."""

    def cancel(self, order: Order, now: datetime, message: str) -> list[Event]:
        """Cancel an open order: at once (OrderCancelled) or by request (CancelRequested)."""


# -- what a broker link reports -----------------------------------------------------
# Each names the gateway's order id: the link maps the broker's ids and tags to it.


@dataclass(frozen=True, slots=True)
class Acked:
    """The broker took the order and gave it this id."""

    order_id: str
    venue_order_id: str
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Refused:
    """The broker refused the order; nothing is working there. `message` is its text."""

    order_id: str
    message: str
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Unknown:
    """The call may or may not have reached the broker (a timeout after sending)."""

    order_id: str
    message: str


@dataclass(frozen=True, slots=True)
class Traded:
    """One execution at the broker, by its trade id (applied once, however often told)."""

    order_id: str
    trade_id: str
    qty: int
    price: Decimal
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class StatusSeen:
    """The broker's current view of an order. `state` is one of the link-neutral states
    below; `raw` is the broker's whole record of the order. Trades are reported first,
    as Traded, so a final state applies to an order whose fills are all in."""

    order_id: str
    venue_order_id: str
    state: str
    message: str
    raw: dict[str, Any] = field(default_factory=dict)


# StatusSeen.state values.
WORKING = "WORKING"  # open at the broker, perhaps partly filled, perhaps awaiting a trigger
DONE = "DONE"  # completely filled
CANCELLED = "CANCELLED"
REJECTED = "REJECTED"


@dataclass(frozen=True, slots=True)
class CancelFailed:
    """The broker would not cancel the order; it works on until told otherwise."""

    order_id: str
    message: str


VenueReport = Acked | Refused | Unknown | Traded | StatusSeen | CancelFailed


class VenueLink(Protocol):
    """The broker's I/O half, run by the gateway beside the core."""

    async def start(self, open_orders: Sequence[Order]) -> None:
        """Reconcile the journal's open orders with the broker, then follow updates."""

    def committed(self, records: Sequence[JournalRecord]) -> None:
        """Records just made durable: make the calls they ask for. Must not block."""

    async def stop(self) -> None: ...


# How a link hands its reports to the core; raises if the core cannot take them now.
ReportSink = Callable[[list[VenueReport]], Awaitable[None]]
