"""Pre-trade rules, one function each, named by `Rule`.

Each function judges one order against one rule and returns a `Check`; none changes
anything. RiskEngine runs them in `Rule` order and keeps the state some of them read
(the rate buckets, the duplicate window). Messages are part of the API: clients and
tests match on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_UP, Decimal, localcontext
from enum import StrEnum

from execgw.server.breakers import ACCOUNT, Breaker
from execgw.server.config import PreTradeConfig, StrategyLimits
from execgw.server.domain import Caller, OrderIntent, Product, RejectReason, Side, TradingState
from execgw.server.risk_state import RiskBook
from execgw.server.trading_calendar import TradingCalendar


class Rule(StrEnum):
    """A pre-trade rule; the value is the check's name in PreviewOrder's reply.

    Members are in the order the rules run. The engine runs MARKET_DATA (the venue's
    own rule: it cannot price an order without a quote) after all the others pass."""

    CIRCUIT_BREAKERS = "circuit_breakers"
    MIS_SQUARE_OFF = "mis_square_off"
    ALLOWED_SYMBOLS = "allowed_symbols"
    ALLOWED_PRODUCTS = "allowed_products"
    MIN_CONFIDENCE = "min_confidence"
    MAX_ORDER_QTY = "max_order_qty"
    # Before the rules that read the LTP: a stale one must not price or collar an order.
    FRESH_QUOTE = "fresh_quote"
    MAX_ORDER_NOTIONAL = "max_order_notional"
    PRICE_COLLAR = "price_collar"
    ORDER_RATE = "order_rate"
    DUPLICATE_ORDER = "duplicate_order"
    MARKET_DATA = "market_data"

    @property
    def reason(self) -> RejectReason | None:
        """The reject reason of an order this rule refuses. None for CIRCUIT_BREAKERS:
        it refuses with the reason of the breaker that tripped (Breaker.reason).

        Every member is matched without a default, so mypy --strict refuses a new rule
        until its reason is decided."""
        match self:
            case Rule.CIRCUIT_BREAKERS:
                return None
            case Rule.MIS_SQUARE_OFF:
                return RejectReason.MIS_SQUARE_OFF
            case Rule.ALLOWED_SYMBOLS:
                return RejectReason.SYMBOL_NOT_ALLOWED
            case Rule.ALLOWED_PRODUCTS:
                return RejectReason.PRODUCT_NOT_ALLOWED
            case Rule.MIN_CONFIDENCE:
                return RejectReason.LOW_CONFIDENCE
            case Rule.MAX_ORDER_QTY:
                return RejectReason.MAX_ORDER_QTY
            case Rule.FRESH_QUOTE:
                return RejectReason.STALE_QUOTE
            case Rule.MAX_ORDER_NOTIONAL:
                return RejectReason.MAX_ORDER_NOTIONAL
            case Rule.PRICE_COLLAR:
                return RejectReason.PRICE_COLLAR
            case Rule.ORDER_RATE:
                return RejectReason.ORDER_RATE
            case Rule.DUPLICATE_ORDER:
                return RejectReason.DUPLICATE_ORDER
            case Rule.MARKET_DATA:
                return RejectReason.NO_MARKET_DATA


@dataclass(frozen=True, slots=True)
class Check:
    name: Rule
    passed: bool
    message: str = ""
    # Why the order is refused; None when the check passed.
    reason: RejectReason | None = None

    @classmethod
    def ok(cls, rule: Rule) -> Check:
        # Shared: a passed check carries nothing but its rule, and an order passes ~11.
        return _PASSED[rule]

    @classmethod
    def fail(cls, rule: Rule, message: str, reason: RejectReason | None = None) -> Check:
        return cls(rule, False, message, rule.reason if reason is None else reason)


_PASSED = {rule: Check(rule, True) for rule in Rule}


def reduces(intent: OrderIntent, position_qty: int, pending_qty: int = 0) -> bool:
    """True when the order, with the open orders already working the same way
    (pending_qty), only shrinks an existing position and can never flip it."""
    if position_qty == 0:
        return False
    opposite = (position_qty > 0) == (intent.side is Side.SELL)
    return opposite and intent.qty + pending_qty <= abs(position_qty)


def circuit_breakers(book: RiskBook, strategy_code: str, reducing: bool) -> Check:
    """The strictest trip binding the scope refuses the order: a HALTED trip refuses
    everything, a REDUCING one whatever does not only shrink a position."""
    trips = [t for (_, c), t in book.trips.items() if c in (ACCOUNT, strategy_code)]
    trips.sort(key=lambda t: (-t.state.severity, t.strategy_code != ACCOUNT, t.at))
    for trip in trips:
        if trip.state is TradingState.HALTED or not reducing:
            scope = "account" if trip.strategy_code == ACCOUNT else f"strategy {strategy_code}"
            return Check.fail(
                Rule.CIRCUIT_BREAKERS,
                # A Breaker formats as its value, the name the config and API use.
                f"{scope} is {trip.state.value} ({trip.breaker}): {trip.message}",
                trip.reason,
            )
    return Check.ok(Rule.CIRCUIT_BREAKERS)


def trade_count_room(
    book: RiskBook,
    strategy_code: str,
    reducing: bool,
    orders: int,
    limits: list[tuple[Breaker, int, TradingState]],
) -> Check:
    """An order the gateway places as `orders` child orders (execution.autoslice: slice)
    counts as that many trades: refused, with the trade breaker's reason, when its
    children would take the day's count past a limit that the breaker's trip would
    then enforce on them (a REDUCING trip lets an order that only shrinks a position
    through, as it would each child). `limits`: each trade-count breaker, its limit
    and the state it trips to."""
    for breaker, limit, trips_to in limits:
        code = ACCOUNT if breaker is Breaker.MAX_TRADES_PER_DAY else strategy_code
        if (breaker, code) in book.trips:
            continue  # tripped already: circuit_breakers judged it
        if trips_to is not TradingState.HALTED and reducing:
            continue
        count = (
            book.trades_total if code == ACCOUNT else book.trades_by_strategy.get(strategy_code, 0)
        )
        if count + orders > limit:
            scope = "account" if code == ACCOUNT else f"strategy {strategy_code}"
            return Check.fail(
                Rule.CIRCUIT_BREAKERS,
                f"{scope} has {count} of {limit} trades today ({breaker}): the order would "
                f"be placed as {orders} child orders (autoslice), {count + orders - limit} "
                "past the limit",
                breaker.reason(code),
            )
    return Check.ok(Rule.CIRCUIT_BREAKERS)


def mis_square_off(
    intent: OrderIntent, calendar: TradingCalendar, now: datetime, reducing: bool
) -> Check:
    """After the MIS square-off time an MIS order may only shrink a position."""
    if intent.product is Product.MIS and calendar.mis_closed(now) and not reducing:
        return Check.fail(
            Rule.MIS_SQUARE_OFF,
            f"MIS entries are closed after {calendar.square_off_text()}",
        )
    return Check.ok(Rule.MIS_SQUARE_OFF)


def allowed_symbols(intent: OrderIntent, limits: StrategyLimits) -> Check:
    allowed = limits.allowed_symbols
    if allowed is None or intent.symbol in allowed:
        return Check.ok(Rule.ALLOWED_SYMBOLS)
    return Check.fail(
        Rule.ALLOWED_SYMBOLS,
        f"strategy {intent.strategy_code} may not trade {intent.symbol} (allowed: {allowed})",
    )


def allowed_products(intent: OrderIntent, limits: StrategyLimits) -> Check:
    products = limits.allowed_products
    if products is None or intent.product.value in products:
        return Check.ok(Rule.ALLOWED_PRODUCTS)
    return Check.fail(
        Rule.ALLOWED_PRODUCTS,
        f"strategy {intent.strategy_code} may not use {intent.product.value} (allowed: {products})",
    )


def min_confidence(intent: OrderIntent, limits: StrategyLimits, pre: PreTradeConfig) -> Check:
    floor = limits.min_confidence if limits.min_confidence is not None else pre.min_confidence
    if floor == 0 or (intent.confidence is not None and intent.confidence >= floor):
        return Check.ok(Rule.MIN_CONFIDENCE)
    return Check.fail(
        Rule.MIN_CONFIDENCE,
        f"min_confidence {floor} not met by confidence {intent.confidence} "
        f"for strategy {intent.strategy_code}",
    )


def max_order_qty(intent: OrderIntent, limits: StrategyLimits, pre: PreTradeConfig) -> Check:
    max_qty = limits.max_order_qty or pre.max_order_qty
    if intent.qty <= max_qty:
        return Check.ok(Rule.MAX_ORDER_QTY)
    return Check.fail(
        Rule.MAX_ORDER_QTY,
        f"max_order_qty {max_qty} exceeded by qty {intent.qty} for strategy {intent.strategy_code}",
    )


def fresh_quote(stale: str | None) -> Check:
    """`stale`: why the symbol's quote is stale (QuoteBook.staleness), None when fresh
    or unknown. Every order is priced (MARKET) or collared (LIMIT, SL, SL-M) against the
    LTP, so none may go out against one the feed stopped updating."""
    if stale is None:
        return Check.ok(Rule.FRESH_QUOTE)
    return Check.fail(Rule.FRESH_QUOTE, stale)


def max_order_notional(
    intent: OrderIntent, limits: StrategyLimits, pre: PreTradeConfig, ltp: Decimal | None
) -> Check:
    """Notional at the order's price, or at the LTP for a market order; an order with
    neither is left to the market_data rule."""
    reference = intent.price if intent.price is not None else ltp
    max_notional = Decimal(repr(limits.max_order_notional_rupees or pre.max_order_notional_rupees))
    notional = None if reference is None else reference * intent.qty
    if notional is None or notional <= max_notional:
        return Check.ok(Rule.MAX_ORDER_NOTIONAL)
    return Check.fail(
        Rule.MAX_ORDER_NOTIONAL,
        f"max_order_notional_rupees {max_notional} exceeded by notional "
        f"{notional} for strategy {intent.strategy_code}",
    )


def price_collar(intent: OrderIntent, ltp: Decimal | None, collar: Decimal) -> Check:
    """The limit price and the stop trigger must both lie near the LTP: a trigger far
    away is as much a fat finger as a price far away."""
    if ltp is None or ltp <= 0:
        return Check.ok(Rule.PRICE_COLLAR)
    for name, value in (("price", intent.price), ("trigger_price", intent.trigger_price)):
        if value is None:
            continue
        # Wide precision: the message must never be the thing that fails.
        with localcontext(prec=60):
            away = abs(value - ltp) / ltp
            if away > collar:
                shown = away.quantize(Decimal("0.000001"), ROUND_UP)
                return Check.fail(
                    Rule.PRICE_COLLAR,
                    f"price_collar_pct {collar} exceeded: {name} {value} is "
                    f"{shown} away from LTP {ltp}",
                )
    return Check.ok(Rule.PRICE_COLLAR)


def order_rate(
    intent: OrderIntent,
    tokens: float,
    rate: float,
    caller: Caller | None = None,
    caller_tokens: float = 0.0,
) -> Check:
    """`tokens`: what the strategy's bucket holds now; `caller_tokens`: what the calling
    token's own bucket holds (when there is a caller). An order takes one from each."""
    if tokens < 1.0:
        return Check.fail(
            Rule.ORDER_RATE,
            f"orders_per_second {rate} exceeded for strategy {intent.strategy_code}",
        )
    if caller is not None and caller_tokens < 1.0:
        return Check.fail(
            Rule.ORDER_RATE,
            f"orders_per_second {caller.orders_per_second} exceeded for token {caller.name}",
        )
    return Check.ok(Rule.ORDER_RATE)


def duplicate_key(intent: OrderIntent) -> tuple[object, ...]:
    """What makes two orders identical: the order itself, not its tag or reason."""
    return (
        intent.strategy_code,
        intent.symbol,
        intent.side,
        intent.qty,
        intent.order_type,
        intent.product,
        intent.price,
        intent.trigger_price,
    )


def duplicate_order(
    intent: OrderIntent, last_accepted: datetime | None, now: datetime, window_s: float
) -> Check:
    """`last_accepted`: when an order with the same duplicate_key was last accepted."""
    if window_s <= 0 or last_accepted is None or last_accepted <= now - timedelta(seconds=window_s):
        return Check.ok(Rule.DUPLICATE_ORDER)
    age = (now - last_accepted).total_seconds()
    return Check.fail(
        Rule.DUPLICATE_ORDER,
        f"duplicate_window_s {window_s}: an identical order from strategy "
        f"{intent.strategy_code} was accepted {age:.3f}s ago",
    )


def market_data(symbol: str, *, quoted: bool) -> Check:
    """The venue's own rule: it cannot price an order without a quote."""
    if quoted:
        return Check.ok(Rule.MARKET_DATA)
    return Check.fail(Rule.MARKET_DATA, f"no quote for {symbol}; the venue cannot price the order")
