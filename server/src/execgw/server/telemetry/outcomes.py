"""One INFO line per order outcome the RPCs do not see: a resting order's later fill,
the broker's later answer (ack, rejection, ambiguity, cancel), DAY expiry, a cancel by a
halt or a breaker. SubmitOrder and CancelOrder log their own answers (api/tracing.py);
this logs what happens to orders after them, from the events the core publishes once
durable."""

from __future__ import annotations

import logging
from typing import Any

from execgw.server.bus import BusEvent
from execgw.server.events import (
    OrderAccepted,
    OrderAmbiguous,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    VenueAccepted,
    VenueRejected,
)
from execgw.server.telemetry.logs import FIELDS_ATTRIBUTE

log = logging.getLogger("execgw.server.orders")

_OPENING = (OrderAccepted, OrderRejected, OrderSubmitted)
_LATER = (OrderFilled, OrderCancelled, VenueAccepted, VenueRejected, OrderAmbiguous)
# Cancels a client asked for: its CancelOrder call logs them.
_BY_CLIENT = "cancelled by client"


def log_later_outcomes(events: list[BusEvent]) -> None:
    """A bus observer: quick, never raises."""
    if not log.isEnabledFor(logging.INFO):
        return
    # Orders placed in this commit: what happened to them at once (an immediate fill, a
    # dry-run ack) is in SubmitOrder's own line.
    placed = {e.order.order_id for e in events if e.order and isinstance(e.event, _OPENING)}
    for event in events:
        order = event.order
        if order is None or not isinstance(event.event, _LATER):
            continue
        if order.order_id in placed:
            continue
        if isinstance(event.event, OrderCancelled) and order.message == _BY_CLIENT:
            continue
        fields: dict[str, Any] = {
            "event": type(event.event).__name__,
            "order_id": order.order_id,
            "client_order_id": order.client_order_id,
            "strategy_code": order.intent.strategy_code,
            "symbol": order.intent.symbol,
            "status": order.status.value,
            "filled_qty": order.filled_qty,
            "sequence": event.sequence,
        }
        if order.avg_price is not None:
            fields["avg_price"] = f"{order.avg_price:f}"
        if order.reject_reason is not None:
            fields["reject_reason"] = order.reject_reason.value
        log.info(
            "order %s %s%s after %s (%s filled)",
            order.order_id,
            order.status.value,
            f" {order.reject_reason.value}" if order.reject_reason is not None else "",
            fields["event"],
            order.filled_qty,
            extra={FIELDS_ATTRIBUTE: fields},
        )
