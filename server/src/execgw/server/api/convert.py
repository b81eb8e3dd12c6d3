"""Translation between execgw.v1 messages and domain objects. No logic lives here."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from execgw.server import domain
from execgw.server.breakers import Breaker
from execgw.server.bus import BusEvent
from execgw.server.events import (
    BreakerTripped,
    DayRolledOver,
    Event,
    MisSquareOffStarted,
    TradingHalted,
    TradingResumed,
)
from execgw.server.risk import RiskReport
from execgw.server.validation import InvalidRequest, RawIntent, RawQuote
from execgw.v1 import gateway_pb2, market_data_pb2, orders_pb2

_SIDE = {orders_pb2.SIDE_BUY: domain.Side.BUY, orders_pb2.SIDE_SELL: domain.Side.SELL}
_ORDER_TYPE = {
    orders_pb2.ORDER_TYPE_MARKET: domain.OrderType.MARKET,
    orders_pb2.ORDER_TYPE_LIMIT: domain.OrderType.LIMIT,
    orders_pb2.ORDER_TYPE_SL: domain.OrderType.SL,
    orders_pb2.ORDER_TYPE_SL_M: domain.OrderType.SL_M,
}
_PRODUCT = {
    orders_pb2.PRODUCT_MIS: domain.Product.MIS,
    orders_pb2.PRODUCT_NRML: domain.Product.NRML,
    orders_pb2.PRODUCT_CNC: domain.Product.CNC,
}
_VALIDITY = {
    orders_pb2.VALIDITY_DAY: domain.Validity.DAY,
    orders_pb2.VALIDITY_IOC: domain.Validity.IOC,
}
_STATUS = {
    orders_pb2.ORDER_STATUS_PLACED: domain.OrderStatus.PLACED,
    orders_pb2.ORDER_STATUS_REJECTED: domain.OrderStatus.REJECTED,
    orders_pb2.ORDER_STATUS_FILLED: domain.OrderStatus.FILLED,
    orders_pb2.ORDER_STATUS_PARTIAL: domain.OrderStatus.PARTIAL,
    orders_pb2.ORDER_STATUS_CANCELLED: domain.OrderStatus.CANCELLED,
    orders_pb2.ORDER_STATUS_SUBMITTED: domain.OrderStatus.SUBMITTED,
    orders_pb2.ORDER_STATUS_PENDING_CANCEL: domain.OrderStatus.PENDING_CANCEL,
    orders_pb2.ORDER_STATUS_AMBIGUOUS: domain.OrderStatus.AMBIGUOUS,
}
_SIDE_PB = {v: k for k, v in _SIDE.items()}
_ORDER_TYPE_PB = {v: k for k, v in _ORDER_TYPE.items()}
_PRODUCT_PB = {v: k for k, v in _PRODUCT.items()}
_VALIDITY_PB = {v: k for k, v in _VALIDITY.items()}
_STATUS_PB = {v: k for k, v in _STATUS.items()}


def raw_intent(msg: orders_pb2.OrderIntent) -> RawIntent:
    metadata, metadata_error = _metadata(msg)
    return RawIntent(
        symbol=msg.symbol,
        strategy_code=msg.strategy_code,
        side=_SIDE.get(msg.side),
        qty=msg.qty,
        order_type=_ORDER_TYPE.get(msg.order_type),
        product=_PRODUCT.get(msg.product),
        validity=_VALIDITY.get(msg.validity),
        price=msg.price if msg.HasField("price") else None,
        trigger_price=msg.trigger_price if msg.HasField("trigger_price") else None,
        tag=msg.tag,
        reason=msg.reason,
        confidence=msg.confidence if msg.HasField("confidence") else None,
        metadata=metadata,
        price_decimal=msg.price_decimal if msg.HasField("price_decimal") else None,
        trigger_price_decimal=(
            msg.trigger_price_decimal if msg.HasField("trigger_price_decimal") else None
        ),
        metadata_error=metadata_error,
    )


def _metadata(msg: orders_pb2.OrderIntent) -> tuple[dict[str, Any], str]:
    """The metadata as a dict, or why it cannot be one (for validation to report)."""
    if not msg.HasField("metadata"):
        return {}, ""
    try:
        return json_format.MessageToDict(msg.metadata), ""
    except ValueError:  # NaN and infinities have no JSON form
        return {}, "numbers must be finite"


def status(value: orders_pb2.OrderStatus.ValueType) -> domain.OrderStatus | None:
    """A status filter; UNSPECIFIED means any. A number that is no OrderStatus (proto3
    keeps unknown enum numbers) is refused: taken as "any", it would widen the filter."""
    if value == orders_pb2.ORDER_STATUS_UNSPECIFIED:
        return None
    found = _STATUS.get(value)
    if found is None:
        raise InvalidRequest("status", f"{value} is not an OrderStatus")
    return found


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(when: datetime) -> timestamp_pb2.Timestamp:
    """What Timestamp.FromDatetime gives, at a fifth of its cost: every result, fill and
    event carries one or two."""
    if when.utcoffset() is None:  # naive: local time, as astimezone reads it
        ts = timestamp_pb2.Timestamp()
        ts.FromDatetime(when.astimezone(UTC))
        return ts
    since = when - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1_000
    )


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if data:
        s.update(data)
    return s


def result(order: domain.Order) -> orders_pb2.ExecutionResult:
    intent = order.intent
    msg = orders_pb2.ExecutionResult(
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        status=_STATUS_PB[order.status],
        symbol=intent.symbol,
        side=_SIDE_PB[intent.side],
        qty=intent.qty,
        filled_qty=order.filled_qty,
        message=order.message,
        reject_reason=reject_reason(order.reject_reason),
        raw=_struct(order.raw),
        timestamp=timestamp(order.updated_at),
        created_at=timestamp(order.created_at),
        strategy_code=intent.strategy_code,
        dry_run=order.dry_run,
        order_type=_ORDER_TYPE_PB[intent.order_type],
        product=_PRODUCT_PB[intent.product],
        validity=_VALIDITY_PB[intent.validity],
        tag=intent.tag,
        venue_order_id=order.venue_order_id,
        charges_decimal=_plain(order.charges),
    )
    avg = order.avg_price
    if avg is not None:
        msg.avg_price = float(avg)
        msg.avg_price_decimal = _plain(avg)
    if intent.price is not None:
        msg.price = float(intent.price)
        msg.price_decimal = _plain(intent.price)
    if intent.trigger_price is not None:
        msg.trigger_price = float(intent.trigger_price)
        msg.trigger_price_decimal = _plain(intent.trigger_price)
    return msg


def fill(f: domain.Fill) -> orders_pb2.Fill:
    msg = orders_pb2.Fill(
        fill_id=f.fill_id,
        order_id=f.order_id,
        client_order_id=f.client_order_id,
        strategy_code=f.strategy_code,
        symbol=f.symbol,
        side=_SIDE_PB[f.side],
        product=_PRODUCT_PB[f.product],
        qty=f.qty,
        price=float(f.price),
        price_decimal=_plain(f.price),
        timestamp=timestamp(f.timestamp),
        venue_trade_id=f.venue_trade_id,
    )
    if f.charges is not None:
        c = f.charges
        msg.charges.CopyFrom(
            orders_pb2.Charges(
                total_decimal=_plain(c.total),
                brokerage_decimal=_plain(c.brokerage),
                stt_decimal=_plain(c.stt),
                exchange_txn_decimal=_plain(c.exchange_txn),
                sebi_decimal=_plain(c.sebi),
                stamp_duty_decimal=_plain(c.stamp_duty),
                gst_decimal=_plain(c.gst),
            )
        )
    return msg


def position(p: domain.PositionView) -> orders_pb2.Position:
    msg = orders_pb2.Position(
        strategy_code=p.strategy_code,
        symbol=p.symbol,
        product=_PRODUCT_PB[p.product],
        net_qty=p.net_qty,
        avg_price=float(p.avg_price),
        realized_pnl=float(p.realized_pnl),
        unrealized_pnl=float(p.unrealized_pnl),
        buy_qty=p.buy_qty,
        sell_qty=p.sell_qty,
        realized_pnl_decimal=_plain(p.realized_pnl),
        unrealized_pnl_decimal=_plain(p.unrealized_pnl),
        avg_price_decimal=_plain(p.avg_price),
        charges_decimal=_plain(p.charges),
        realized_pnl_net=float(p.realized_pnl_net),
        realized_pnl_net_decimal=_plain(p.realized_pnl_net),
    )
    if p.last_price is not None:
        msg.last_price = float(p.last_price)
        msg.last_price_decimal = _plain(p.last_price)
    return msg


def _plain(value: Decimal) -> str:
    """Fixed-point text, never exponent notation: the `*_decimal` fields' one form.

    The value as held, trailing zeros included ("7.50"); a zero has no sign."""
    text = f"{value:f}"
    return text[1:] if value.is_zero() and text.startswith("-") else text


def event(e: BusEvent, trading_day: date | None = None) -> orders_pb2.ExecutionEvent:
    msg = orders_pb2.ExecutionEvent(sequence=e.sequence, timestamp=timestamp(e.timestamp))
    if e.order is None:
        msg.risk_event.CopyFrom(risk_event(e.event, trading_day))
    elif e.fill is not None:
        msg.fill.CopyFrom(fill(e.fill))
        msg.order.CopyFrom(result(e.order))
    else:
        msg.order_update.CopyFrom(result(e.order))
    return msg


_RISK_KINDS: dict[type[Event], orders_pb2.RiskEventKind.ValueType] = {
    BreakerTripped: orders_pb2.RISK_EVENT_KIND_BREAKER_TRIPPED,
    TradingHalted: orders_pb2.RISK_EVENT_KIND_HALTED,
    TradingResumed: orders_pb2.RISK_EVENT_KIND_RESUMED,
    DayRolledOver: orders_pb2.RISK_EVENT_KIND_DAY_ROLLED_OVER,
    MisSquareOffStarted: orders_pb2.RISK_EVENT_KIND_MIS_SQUARE_OFF,
}


def is_streamed_risk_event(event: Event) -> bool:
    """Risk events with a RiskEventKind reach subscribers; the rest are bookkeeping."""
    return type(event) in _RISK_KINDS


def trading_state(state: domain.TradingState) -> orders_pb2.TradingState.ValueType:
    return orders_pb2.TradingState.Value("TRADING_STATE_" + state.value)


def reject_reason(reason: domain.RejectReason | None) -> orders_pb2.RejectReason.ValueType:
    if reason is None:
        return orders_pb2.REJECT_REASON_UNSPECIFIED
    return orders_pb2.RejectReason.Value("REJECT_REASON_" + reason.value)


def risk_event(event: Event, trading_day: date | None) -> orders_pb2.RiskEvent:
    msg = orders_pb2.RiskEvent(kind=_RISK_KINDS[type(event)], actor="gateway")
    match event:
        case BreakerTripped():
            msg.breaker = event.breaker.value
            msg.strategy_code = event.strategy_code
            msg.state = trading_state(event.state)
            msg.reason = reject_reason(event.reason)
            msg.message = event.message
        case TradingHalted() | TradingResumed():
            halted = isinstance(event, TradingHalted)
            msg.breaker = Breaker.KILL_SWITCH.value
            msg.strategy_code = event.strategy_code
            msg.actor = event.actor
            msg.message = event.reason
            msg.state = trading_state(
                domain.TradingState.HALTED if halted else domain.TradingState.ACTIVE
            )
            if halted:
                msg.reason = reject_reason(Breaker.KILL_SWITCH.reason(event.strategy_code))
        case DayRolledOver() | MisSquareOffStarted():
            msg.trading_day = event.trading_day.isoformat()
            msg.state = trading_state(domain.TradingState.ACTIVE)
    if trading_day is not None and isinstance(
        event, BreakerTripped | TradingHalted | TradingResumed
    ):
        msg.trading_day = trading_day.isoformat()
    return msg


def quote_in(msg: market_data_pb2.Quote) -> RawQuote:
    # The Timestamp travels as its raw fields: ToDatetime raises on an invalid one,
    # and validation must name the field instead.
    when = (msg.timestamp.seconds, msg.timestamp.nanos) if msg.HasField("timestamp") else None
    return RawQuote(
        symbol=msg.symbol,
        ltp=msg.ltp,
        bid=msg.bid,
        ask=msg.ask,
        bid_qty=msg.bid_qty,
        ask_qty=msg.ask_qty,
        volume=msg.volume,
        timestamp=when,
        ltp_decimal=msg.ltp_decimal,
        bid_decimal=msg.bid_decimal,
        ask_decimal=msg.ask_decimal,
    )


def quote_out(q: domain.Quote) -> market_data_pb2.Quote:
    return market_data_pb2.Quote(
        symbol=q.symbol,
        ltp=float(q.ltp),
        bid=float(q.bid),
        ask=float(q.ask),
        ltp_decimal=_plain(q.ltp),
        bid_decimal=_plain(q.bid),
        ask_decimal=_plain(q.ask),
        bid_qty=q.bid_qty,
        ask_qty=q.ask_qty,
        volume=q.volume,
        timestamp=timestamp(q.timestamp),
    )


def risk_state(report: RiskReport) -> gateway_pb2.GetRiskStateResponse:
    msg = gateway_pb2.GetRiskStateResponse(
        state=trading_state(report.state),
        trading_day="" if report.trading_day is None else report.trading_day.isoformat(),
        realized_pnl=float(report.realized_pnl),
        unrealized_pnl=float(report.unrealized_pnl),
        day_pnl=float(report.day_pnl),
        equity=float(report.equity),
        peak_equity=float(report.peak_equity),
        drawdown_pct=float(report.drawdown_pct),
        trades_today=report.trades_today,
        mis_entries_closed=report.mis_entries_closed,
        unmarked_symbols=report.unmarked_symbols,
        stale_symbols=report.stale_symbols,
        realized_pnl_decimal=_plain(report.realized_pnl),
        unrealized_pnl_decimal=_plain(report.unrealized_pnl),
        day_pnl_decimal=_plain(report.day_pnl),
        equity_decimal=_plain(report.equity),
        peak_equity_decimal=_plain(report.peak_equity),
        drawdown_pct_decimal=_plain(report.drawdown_pct),
    )
    for b in report.breakers:
        status = msg.breakers.add(
            name=b.breaker.value,
            strategy_code=b.strategy_code,
            tripped=b.trip is not None,
            trips_to=trading_state(b.trips_to),
            value=float(b.value),
            limit=float(b.limit),
            value_decimal=_plain(b.value),
            limit_decimal=_plain(b.limit),
        )
        if b.trip is not None:
            status.tripped_at.CopyFrom(timestamp(b.trip.at))
            status.message = b.trip.message
    for st in report.strategies:
        msg.strategies.add(
            strategy_code=st.strategy_code,
            state=trading_state(st.state),
            trades_today=st.trades_today,
            loss_streak=st.loss_streak,
            realized_pnl=float(st.realized_pnl),
            realized_pnl_decimal=_plain(st.realized_pnl),
        )
    return msg
