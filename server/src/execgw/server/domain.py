"""The gateway's domain vocabulary, free of gRPC and protobuf.

Values mirror the execgw.v1 enums by name, so translation is mechanical and the
domain code can be tested and reasoned about without a wire format.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

T = TypeVar("T")


class Side(enum.Enum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class OrderType(enum.Enum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    SL = "SL"
    SL_M = "SL_M"


class Product(enum.Enum):
    MIS = "MIS"
    NRML = "NRML"
    CNC = "CNC"


class Validity(enum.Enum):
    DAY = "DAY"
    IOC = "IOC"


class OrderStatus(enum.Enum):
    PLACED = "PLACED"
    REJECTED = "REJECTED"
    FILLED = "FILLED"
    PARTIAL = "PARTIAL"
    CANCELLED = "CANCELLED"
    # Journaled and handed to a venue that answers later (the broker): not yet acked.
    SUBMITTED = "SUBMITTED"
    # A cancel went to the venue; the order works until the venue confirms it.
    PENDING_CANCEL = "PENDING_CANCEL"
    # The venue call's outcome is unknown (a timeout after sending): resolved by looking
    # the order up at the venue, never by sending it again.
    AMBIGUOUS = "AMBIGUOUS"

    @property
    def is_open(self) -> bool:
        """Not final: the order may still fill, so it counts against limits."""
        return self not in _FINAL


_FINAL = frozenset({OrderStatus.REJECTED, OrderStatus.FILLED, OrderStatus.CANCELLED})


class TradingState(enum.Enum):
    """NautilusTrader's trading states, ordered by how much they allow."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"

    @property
    def severity(self) -> int:
        return {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}[self.value]


class RejectReason(enum.Enum):
    NO_MARKET_DATA = "NO_MARKET_DATA"
    HALTED = "HALTED"
    MAX_DAILY_LOSS = "MAX_DAILY_LOSS"
    MAX_DAILY_DRAWDOWN = "MAX_DAILY_DRAWDOWN"
    MAX_TRADES_PER_DAY = "MAX_TRADES_PER_DAY"
    MAX_TRADES_PER_STRATEGY_PER_DAY = "MAX_TRADES_PER_STRATEGY_PER_DAY"
    MAX_LOSS_STREAK = "MAX_LOSS_STREAK"
    MAX_ORDER_QTY = "MAX_ORDER_QTY"
    MAX_ORDER_NOTIONAL = "MAX_ORDER_NOTIONAL"
    PRICE_COLLAR = "PRICE_COLLAR"
    ORDER_RATE = "ORDER_RATE"
    DUPLICATE_ORDER = "DUPLICATE_ORDER"
    SYMBOL_NOT_ALLOWED = "SYMBOL_NOT_ALLOWED"
    PRODUCT_NOT_ALLOWED = "PRODUCT_NOT_ALLOWED"
    LOW_CONFIDENCE = "LOW_CONFIDENCE"
    MIS_SQUARE_OFF = "MIS_SQUARE_OFF"
    REDUCE_ONLY = "REDUCE_ONLY"
    STRATEGY_HALTED = "STRATEGY_HALTED"
    FREEZE_QTY = "FREEZE_QTY"
    BROKER = "BROKER"
    STALE_QUOTE = "STALE_QUOTE"


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """What a strategy asks for. Prices are exact decimals already checked against the tick."""

    symbol: str
    strategy_code: str
    side: Side
    qty: int
    order_type: OrderType
    product: Product
    validity: Validity
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    tag: str = ""
    reason: str = ""
    confidence: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> tuple[object, ...]:
        """Identity of the order a client asked for, used to tell a retry from a key reuse."""
        return (
            self.symbol,
            self.strategy_code,
            self.side,
            self.qty,
            self.order_type,
            self.product,
            self.validity,
            self.price,
            self.trigger_price,
            self.tag,
        )


@dataclass(frozen=True, slots=True)
class Quote:
    symbol: str
    ltp: Decimal
    timestamp: datetime
    bid: Decimal = Decimal(0)
    ask: Decimal = Decimal(0)
    bid_qty: int = 0
    ask_qty: int = 0
    volume: int = 0


@dataclass(slots=True)
class Order:
    """One order and where it stands; mutated only by the ledger as events are applied."""

    order_id: str
    client_order_id: str
    intent: OrderIntent
    status: OrderStatus
    created_at: datetime
    updated_at: datetime
    filled_qty: int = 0
    filled_value: Decimal = Decimal(0)
    reject_reason: RejectReason | None = None
    message: str = ""
    triggered: bool = False
    dry_run: bool = False
    raw: dict[str, Any] = field(default_factory=dict)
    internal: bool = False
    # Who placed it: the authenticated caller's name, "" when unknown (auth off, internal).
    placed_by: str = ""
    # The venue it was handed to when that venue answers later ("kite", "kite-dry-run");
    # "" for orders the paper simulator decided at once.
    venue: str = ""
    # The venue's own id once it acked the order (Kite's order_id); "" until then.
    venue_order_id: str = ""
    # The venue's trade ids already applied: the same trade reported twice (postback and
    # poll) fills once.
    venue_trade_ids: tuple[str, ...] = ()
    # Rupees of charges (brokerage, taxes, fees) on the fills so far; 0 when the
    # simulator's charges are off and for broker fills (the contract note has them).
    charges: Decimal = Decimal(0)
    # Paper orders with insert latency: it reached the simulated exchange (OrderArrived).
    arrived: bool = False
    # The brokerage part of `charges`: Zerodha caps it per order, across its fills and
    # across restarts.
    brokerage: Decimal = Decimal(0)
    # Paper orders with fill latency: fills the simulated exchange made whose reports
    # have not reached the gateway yet (FillExecuted). Not in filled_qty, charges or
    # positions until reported (OrderFilled with the same fill_id).
    fills_in_flight: tuple[FillInFlight, ...] = ()
    # When its latest cancel was sent (CancelRequested). updated_at is no stand-in: a
    # fill or a status update while the cancel travels moves it, and the paper
    # simulator needs the send time to deliver a cancel on its way after a restart.
    cancel_requested_at: datetime | None = None

    @property
    def avg_price(self) -> Decimal | None:
        if self.filled_qty == 0:
            return None
        return self.filled_value / self.filled_qty

    @property
    def remaining_qty(self) -> int:
        return self.intent.qty - self.filled_qty

    @property
    def in_flight_qty(self) -> int:
        """Filled at the simulated exchange, not yet reported (fills_in_flight)."""
        return sum(f.fill.qty for f in self.fills_in_flight)

    def copy(self) -> Order:
        """A shallow copy, as dataclasses.replace(self) makes, at a fraction of its cost
        (it looks at every field's declaration on each call): every reply and every
        published event carries one."""
        return _copy_order(self)


def _field_copier(cls: type[T]) -> Callable[[T], T]:
    """`cls(o.a, o.b, ...)` for every field of the dataclass `cls`, compiled once, as
    dataclasses compiles its own __init__."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    if any(not f.init or f.kw_only for f in fields(cls)):  # type: ignore[arg-type]
        raise TypeError(f"{cls.__name__} has fields __init__ does not take by position")
    source = f"def copy(o):\n    return cls({', '.join(f'o.{name}' for name in names)})\n"
    namespace: dict[str, Any] = {"cls": cls}
    exec(source, namespace)  # the source holds the field names, nothing else
    copier: Callable[[T], T] = namespace["copy"]
    return copier


_copy_order = _field_copier(Order)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sends a command, as the API layer authenticated it, and the order rate that
    caller is held to on top of its strategies' own."""

    name: str
    orders_per_second: float
    order_burst: int


@dataclass(frozen=True, slots=True)
class Charges:
    """What one fill cost on top of its price, in rupees, each part rounded to the paisa
    (venues/charges.py). GST is on brokerage, exchange transaction and SEBI fees."""

    brokerage: Decimal
    stt: Decimal  # securities (or commodities) transaction tax
    exchange_txn: Decimal
    sebi: Decimal
    stamp_duty: Decimal
    gst: Decimal

    @property
    def total(self) -> Decimal:
        return (
            self.brokerage + self.stt + self.exchange_txn + self.sebi + self.stamp_duty + self.gst
        )


@dataclass(frozen=True, slots=True)
class Fill:
    fill_id: str
    order_id: str
    client_order_id: str
    strategy_code: str
    symbol: str
    side: Side
    product: Product
    qty: int
    price: Decimal
    timestamp: datetime
    # The venue's id of this execution (Kite's trade_id); "" for paper fills.
    venue_trade_id: str = ""
    # Set by the paper simulator when execution.charges is enabled; None otherwise.
    charges: Charges | None = None


@dataclass(frozen=True, slots=True)
class FillInFlight:
    """A fill the simulated exchange made at fill.timestamp whose report reaches the
    gateway at `reported_at` (execution.simulator.latency_ms.fill): the OrderFilled it
    becomes then, kept with the order meanwhile so a restart neither loses nor repeats it."""

    fill: Fill
    quote: Quote
    reported_at: datetime
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class QuoteLiquidity:
    """What the paper simulator knows of a symbol's latest quote when it tracks
    liquidity (execution.simulator caps or volume_share): the quote, the cumulative
    volume of the one before it (so the quote's traded volume, which volume_limit takes
    a share of) and what fills took from it per side. Journaled (QuoteObserved, fills)
    and snapshotted, so a restart neither forgets the volume already seen nor offers
    what was taken again."""

    quote: Quote
    previous_volume: int | None
    taken_buy: int = 0
    taken_sell: int = 0


PositionKey = tuple[str, str, Product]


@dataclass(frozen=True, slots=True)
class PositionView:
    """A position as reported, with PnL marked to the last traded price."""

    strategy_code: str
    symbol: str
    product: Product
    net_qty: int
    avg_price: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    last_price: Decimal | None
    buy_qty: int
    sell_qty: int
    # Charges of the position's fills today; realized_pnl is gross of them.
    charges: Decimal = Decimal(0)

    @property
    def realized_pnl_net(self) -> Decimal:
        return self.realized_pnl - self.charges
