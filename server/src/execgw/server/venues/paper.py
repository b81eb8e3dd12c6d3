"""The paper venue: the fill simulator decides every order's fate at once."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from execgw.server.domain import Order, OrderIntent, OrderStatus, Quote, QuoteLiquidity
from execgw.server.events import CancelRequested, Event, OrderAccepted
from execgw.server.venues.simulator import SmartFillSimulator


class PaperVenue:
    name = "paper"
    dry_run = False
    order_id_suffix = ""

    def __init__(self, simulator: SmartFillSimulator) -> None:
        self.simulator = simulator

    def reset(self) -> None:
        self.simulator.reset()

    def restore(self, orders: Iterable[Order], liquidity: Iterable[QuoteLiquidity] = ()) -> None:
        self.simulator.restore(orders, liquidity)

    def forget(self, order: Order) -> None:
        self.simulator.cancel(order.order_id, order.intent.symbol)

    def open(
        self,
        order_id: str,
        client_order_id: str,
        intent: OrderIntent,
        now: datetime,
        *,
        internal: bool,
        placed_by: str,
    ) -> OrderAccepted:
        return OrderAccepted(
            order_id, client_order_id, intent, now, internal=internal, placed_by=placed_by
        )

    def on_new_order(
        self, order: Order, quote: Quote, now: datetime, next_fill_id: Callable[[], str]
    ) -> list[Event]:
        return self.simulator.on_new_order(order, quote, now, next_fill_id)

    def on_quote(self, quote: Quote, now: datetime, next_fill_id: Callable[[], str]) -> list[Event]:
        return self.simulator.on_quote(quote, now, next_fill_id)

    def on_time(self, now: datetime, next_fill_id: Callable[[], str]) -> list[Event]:
        return self.simulator.on_time(now, next_fill_id)

    def cancel(self, order: Order, now: datetime, message: str) -> list[Event]:
        if order.status is OrderStatus.PENDING_CANCEL:
            return []  # already on its way to the exchange
        if self.simulator.request_cancel(order, now, message):
            # With cancel latency the order works, and may fill, until the cancel arrives.
            return [CancelRequested(order.order_id, now, message)]
        return self.simulator.cancel_now(order, now, message)
