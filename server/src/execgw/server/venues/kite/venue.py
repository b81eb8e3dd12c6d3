"""The engine's half of the Kite venue: it decides nothing at once. Opening an order
journals the exact place_order call (OrderSubmitted); cancelling journals the request
(CancelRequested). The link makes those calls once the records are durable."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from execgw.server.domain import Order, OrderIntent, OrderStatus, Quote, QuoteLiquidity
from execgw.server.events import CancelRequested, Event, OrderSubmitted
from execgw.server.venues.kite import mapping

VENUE_NAME = "kite"


class KiteVenue:
    name = VENUE_NAME
    dry_run = False
    order_id_suffix = ""

    def __init__(self, *, market_protection: float) -> None:
        self._market_protection = market_protection

    def reset(self) -> None:
        pass

    def restore(self, orders: Iterable[Order], liquidity: Iterable[QuoteLiquidity] = ()) -> None:
        pass

    def forget(self, order: Order) -> None:
        pass

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
            dry_run=False,
            internal=internal,
            placed_by=placed_by,
        )

    def on_new_order(
        self, order: Order, quote: Quote, now: datetime, next_fill_id: Callable[[], str]
    ) -> list[Event]:
        return []

    def on_quote(self, quote: Quote, now: datetime, next_fill_id: Callable[[], str]) -> list[Event]:
        return []

    def on_time(self, now: datetime, next_fill_id: Callable[[], str]) -> list[Event]:
        return []

    def cancel(self, order: Order, now: datetime, message: str) -> list[Event]:
        if order.status is OrderStatus.PENDING_CANCEL:
            return []
        # Without the broker's id yet (not acked), the link sends it once the ack is in.
        request = mapping.cancel_params(order.venue_order_id) if order.venue_order_id else {}
        return [CancelRequested(order.order_id, now, message, request)]
