"""The dry-run venue: every step of the live path except the broker call.

It builds and journals exactly the place_order and cancel_order calls the Kite venue
would make, then answers them itself. It holds no SDK, no credentials and no HTTP
client, and no link is started beside it, so nothing it does can reach the broker.
With fills `simulate`, the paper simulator fills its orders against the quotes
(shadow trading); with `none`, orders rest as placed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from execgw.server.domain import Order, OrderIntent, OrderStatus, Quote, QuoteLiquidity
from execgw.server.events import (
    CancelRequested,
    Event,
    OrderCancelled,
    OrderSubmitted,
    VenueAccepted,
)
from execgw.server.venues.kite import mapping
from execgw.server.venues.simulator import SmartFillSimulator

VENUE_NAME = "kite-dry-run"
ORDER_ID_SUFFIX = "-DRY"
NOT_SENT = "dry run: not sent to the broker"


class DryRunVenue:
    name = VENUE_NAME
    dry_run = True
    order_id_suffix = ORDER_ID_SUFFIX

    def __init__(self, *, market_protection: float, simulator: SmartFillSimulator | None) -> None:
        self._market_protection = market_protection
        self._simulator = simulator

    def reset(self) -> None:
        if self._simulator is not None:
            self._simulator.reset()

    def restore(self, orders: Iterable[Order], liquidity: Iterable[QuoteLiquidity] = ()) -> None:
        if self._simulator is not None:
            self._simulator.restore(orders, liquidity)

    def forget(self, order: Order) -> None:
        if self._simulator is not None:
            self._simulator.cancel(order.order_id, order.intent.symbol)

    def open(
        self,
        order_id: str,
        client_order_id: str,
        intent: OrderIntent,
        now: datetime,
        *,
        internal: bool,
        placed_by: str,
    ) -> OrderSubmitted:
        return mapping.submission(
            order_id,
            client_order_id,
            intent,
            now,
            venue=self.name,
            market_protection=self._market_protection,
            dry_run=True,
            internal=internal,
            placed_by=placed_by,
        )

    def on_new_order(
        self, order: Order, quote: Quote, now: datetime, next_fill_id: Callable[[], str]
    ) -> list[Event]:
        ack: list[Event] = [
            VenueAccepted(
                order.order_id,
                dry_run_venue_id(order.order_id),
                now,
                raw={"status": "OPEN", "dry_run": True},
                message=NOT_SENT,
            )
        ]
        if self._simulator is None:
            return ack
        return ack + self._simulator.on_new_order(order, quote, now, next_fill_id)

    def on_quote(self, quote: Quote, now: datetime, next_fill_id: Callable[[], str]) -> list[Event]:
        if self._simulator is None:
            return []
        return self._simulator.on_quote(quote, now, next_fill_id)

    def on_time(self, now: datetime, next_fill_id: Callable[[], str]) -> list[Event]:
        if self._simulator is None:
            return []
        return self._simulator.on_time(now, next_fill_id)

    def cancel(self, order: Order, now: datetime, message: str) -> list[Event]:
        if order.status is OrderStatus.PENDING_CANCEL:
            return []
        request = mapping.cancel_params(order.venue_order_id or dry_run_venue_id(order.order_id))
        requested = CancelRequested(order.order_id, now, f"{message} ({NOT_SENT})", request)
        if self._simulator is not None and order.fills_in_flight:
            # Simulated fills with their reports on the way stand (fill latency): only
            # the rest is cancelled, confirmed behind them.
            return [requested, *self._simulator.cancel_behind_reports(order, now, message)]
        self.forget(order)
        # Kite's status, as on the ack: without it the cancelled order kept the ack's
        # raw "OPEN" (an event with no raw leaves the order's raw as it was).
        raw: dict[str, Any] = {"status": "CANCELLED", "dry_run": True}
        if self._simulator is not None:
            raw = {**self._simulator.kite_cancelled(order), **raw}
        return [requested, OrderCancelled(order.order_id, now, message, raw=raw)]


def dry_run_venue_id(order_id: str) -> str:
    """The stand-in for Kite's order id: marked, and never a number Kite could issue."""
    return f"DRY-{order_id.removesuffix(ORDER_ID_SUFFIX)}"
