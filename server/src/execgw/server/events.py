"""Events: the only things that change gateway state.

The ledger's state is a fold over these, in sequence, so replaying a journal of
them rebuilds the state exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, get_args

from execgw.server.breakers import Breaker
from execgw.server.domain import Fill, OrderIntent, Quote, RejectReason, TradingState


@dataclass(frozen=True, slots=True)
class OrderAccepted:
    order_id: str
    client_order_id: str
    intent: OrderIntent
    timestamp: datetime
    dry_run: bool = False
    raw: dict[str, Any] = field(default_factory=dict)
    # Placed by the gateway itself (MIS square-off), not by a strategy: not a trade.
    internal: bool = False
    # The authenticated caller's name (auth.tokens[].name); empty with auth off, for
    # internal orders and in journals written before authentication.
    placed_by: str = ""


@dataclass(frozen=True, slots=True)
class OrderRejected:
    order_id: str
    client_order_id: str
    intent: OrderIntent
    timestamp: datetime
    reason: RejectReason
    message: str
    dry_run: bool = False
    internal: bool = False
    placed_by: str = ""


@dataclass(frozen=True, slots=True)
class OrderSubmitted:
    """Passed risk and handed to a venue that answers later (the broker, or the dry run
    standing in for it): status SUBMITTED until the venue's answer.

    Journaled before the venue call is made (an outbox): a crash before the answer
    leaves this record, and start-up looks the order up at the venue by its tag instead
    of sending it again. `request` is the venue call exactly as made, field by field;
    in a dry run, exactly as it would have been made."""

    order_id: str
    client_order_id: str
    intent: OrderIntent
    timestamp: datetime
    venue: str
    request: dict[str, Any]
    dry_run: bool = False
    internal: bool = False
    placed_by: str = ""


@dataclass(frozen=True, slots=True)
class VenueAccepted:
    """The venue acknowledged the order with its own id: status PLACED."""

    order_id: str
    venue_order_id: str
    timestamp: datetime
    # The venue's view of the order (Kite's order dict), as received.
    raw: dict[str, Any] = field(default_factory=dict)
    message: str = ""


@dataclass(frozen=True, slots=True)
class VenueRejected:
    """The venue refused the order (REJECT_REASON_BROKER with its text). Not a risk
    denial: those are OrderRejected and never reach a venue."""

    order_id: str
    timestamp: datetime
    message: str
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VenueUpdated:
    """The venue reported the order in a new state that changes nothing we account
    (e.g. Kite's TRIGGER PENDING, or a cancel it could not carry out)."""

    order_id: str
    timestamp: datetime
    message: str
    raw: dict[str, Any] = field(default_factory=dict)
    # The cancel this order was waiting on failed: it works on (PLACED or PARTIAL).
    cancel_refused: bool = False


@dataclass(frozen=True, slots=True)
class OrderAmbiguous:
    """A venue call's outcome is unknown (a timeout or a lost connection after sending)."""

    order_id: str
    timestamp: datetime
    message: str


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """A cancel was sent to the venue (or, in a dry run, would have been): status
    PENDING_CANCEL until the venue confirms with OrderCancelled."""

    order_id: str
    timestamp: datetime
    message: str
    request: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OrderArrived:
    """A paper order reached the simulated exchange after its insert latency: from now
    on it works there. Journaled so a restart knows which orders were still on their
    way (and must arrive, freeze check and all) and which were already working."""

    order_id: str
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class OrderTriggered:
    """A stop order's trigger was crossed; from now on it behaves as LIMIT or MARKET."""

    order_id: str
    timestamp: datetime
    trigger_ltp: Decimal


@dataclass(frozen=True, slots=True)
class OrderFilled:
    fill: Fill
    # The quote the fill was priced against, kept for the audit trail.
    quote: Quote
    # The venue's view of the order after the fill (the paper simulator's Kite-like
    # status with execution.simulator.kite_statuses); empty otherwise.
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FillExecuted:
    """The simulated exchange filled (part of) a paper order at fill.timestamp, on
    `quote`; its report reaches the gateway at `reported_at` (fill latency), as the
    OrderFilled with the same fill. Until then the order shows no such fill: this only
    records the exchange's decision, so a restart delivers the report once, neither
    losing nor repeating it. Not an order update: it is not streamed."""

    fill: Fill
    quote: Quote
    reported_at: datetime
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QuoteObserved:
    """The paper simulator took a new quote as the latest of its symbol, with the
    cumulative volume of the quote before it (None for the first it saw); emitted only
    while it tracks liquidity. Fills against the quote (FillExecuted, or OrderFilled
    reported at once) then count as taken from it. Not streamed."""

    quote: Quote
    previous_volume: int | None


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    order_id: str
    timestamp: datetime
    message: str
    # The venue's view of the order when it confirmed the cancel; empty for paper.
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BreakerTripped:
    """A breaker latched; it stays tripped until the day rolls over or an operator resumes."""

    breaker: Breaker
    strategy_code: str  # empty for the account scope
    state: TradingState
    reason: RejectReason
    message: str
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class TradingHalted:
    strategy_code: str  # empty for the account scope
    actor: str
    reason: str
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class TradingResumed:
    strategy_code: str  # empty for the account scope
    actor: str
    reason: str
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class DayRolledOver:
    trading_day: date
    timestamp: datetime
    # Unrealized PnL of positions carried into the day, marked at the rollover:
    # the day's PnL counts only what moves after it.
    baseline_unrealized: Decimal = Decimal(0)
    # Open positions with no quote at the rollover (e.g. right after a restart): each
    # is marked into the baseline by its first quote of the day (BaselineMarked).
    unmarked: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class BaselineMarked:
    """A carried position's first quote of the day, added to the day's baseline."""

    strategy_code: str
    symbol: str
    product: str
    unrealized: Decimal
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class EquityPeak:
    """The day's peak equity rose; journaled (in steps) so a restart keeps it."""

    equity: Decimal
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class MarksRecorded:
    """The marks positions are valued at, made durable so a restart does not value them
    at nothing. Carries the LTP of every symbol with an open position or a resting
    order that has one, and replaces the previous set (a symbol missing here has no
    durable mark any more)."""

    marks: dict[str, Decimal]
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class MisSquareOffStarted:
    trading_day: date
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class AccessDenied:
    """An authenticated caller was refused (PERMISSION_DENIED). Audit only: it changes no
    state and is not streamed. Journaled at a bounded rate per principal; `suppressed`
    counts that principal's refusals left out of the journal since its previous record."""

    principal: str
    rpc: str
    reason: str
    timestamp: datetime
    suppressed: int = 0


@dataclass(frozen=True, slots=True)
class QuotesRecorded:
    """The quotes one PublishQuotes batch (or feed batch) had accepted, in the order they
    were applied, journaled with journal.record_quotes so that `execgw replay` can run
    the day again. Changes no state: the marks positions are valued at stay with
    MarksRecorded and fills. Not streamed."""

    quotes: tuple[Quote, ...]
    timestamp: datetime


OrderEvent = (
    OrderAccepted
    | OrderRejected
    | OrderTriggered
    | OrderFilled
    | OrderCancelled
    | OrderSubmitted
    | VenueAccepted
    | VenueRejected
    | VenueUpdated
    | OrderAmbiguous
    | CancelRequested
    | OrderArrived
)
RiskEvent = (
    BreakerTripped
    | TradingHalted
    | TradingResumed
    | DayRolledOver
    | MisSquareOffStarted
    | EquityPeak
    | BaselineMarked
    | MarksRecorded
)
AuditEvent = AccessDenied
MarketEvent = QuotesRecorded
# The simulated exchange's own state, journaled for restarts; the gateway's orders and
# positions do not show it.
SimulatorEvent = FillExecuted | QuoteObserved
Event = OrderEvent | RiskEvent | AuditEvent | MarketEvent | SimulatorEvent
# For isinstance checks; derived, so it cannot drift from the union.
ORDER_EVENTS: tuple[type[OrderEvent], ...] = get_args(OrderEvent)


def event_order_id(event: OrderEvent) -> str:
    return event.fill.order_id if isinstance(event, OrderFilled) else event.order_id
