"""JSON encoding of events and state for the journal.

Decimals travel as strings and datetimes as ISO-8601 UTC, so a decoded event is
equal to the one encoded, and the text is stable enough to hash.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from execgw.server.breakers import Breaker
from execgw.server.domain import (
    Fill,
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    Product,
    Quote,
    RejectReason,
    Side,
    TradingState,
    Validity,
)
from execgw.server.events import (
    BaselineMarked,
    BreakerTripped,
    DayRolledOver,
    EquityPeak,
    Event,
    MarksRecorded,
    MisSquareOffStarted,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderTriggered,
    TradingHalted,
    TradingResumed,
)

Json = dict[str, Any]


class CodecError(ValueError):
    pass


def dumps(data: Json) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def json_loads(text: str) -> Json:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise CodecError("expected a JSON object")
    return data


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _undec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _ts(value: datetime) -> str:
    return value.isoformat()


def _unts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def intent_to_json(i: OrderIntent) -> Json:
    return {
        "symbol": i.symbol,
        "strategy_code": i.strategy_code,
        "side": i.side.value,
        "qty": i.qty,
        "order_type": i.order_type.value,
        "product": i.product.value,
        "validity": i.validity.value,
        "price": _dec(i.price),
        "trigger_price": _dec(i.trigger_price),
        "tag": i.tag,
        "reason": i.reason,
        "confidence": i.confidence,
        "metadata": i.metadata,
    }


def intent_from_json(d: Json) -> OrderIntent:
    return OrderIntent(
        symbol=d["symbol"],
        strategy_code=d["strategy_code"],
        side=Side(d["side"]),
        qty=int(d["qty"]),
        order_type=OrderType(d["order_type"]),
        product=Product(d["product"]),
        validity=Validity(d["validity"]),
        price=_undec(d["price"]),
        trigger_price=_undec(d["trigger_price"]),
        tag=d["tag"],
        reason=d["reason"],
        confidence=d["confidence"],
        metadata=d["metadata"],
    )


def order_to_json(o: Order) -> Json:
    return {
        "order_id": o.order_id,
        "client_order_id": o.client_order_id,
        "intent": intent_to_json(o.intent),
        "status": o.status.value,
        "created_at": _ts(o.created_at),
        "updated_at": _ts(o.updated_at),
        "filled_qty": o.filled_qty,
        "filled_value": str(o.filled_value),
        "reject_reason": None if o.reject_reason is None else o.reject_reason.value,
        "message": o.message,
        "triggered": o.triggered,
        "dry_run": o.dry_run,
        "raw": o.raw,
        "internal": o.internal,
    }


def order_from_json(d: Json) -> Order:
    return Order(
        order_id=d["order_id"],
        client_order_id=d["client_order_id"],
        intent=intent_from_json(d["intent"]),
        status=OrderStatus(d["status"]),
        created_at=_unts(d["created_at"]),
        updated_at=_unts(d["updated_at"]),
        filled_qty=int(d["filled_qty"]),
        filled_value=Decimal(d["filled_value"]),
        reject_reason=None if d["reject_reason"] is None else RejectReason(d["reject_reason"]),
        message=d["message"],
        triggered=bool(d["triggered"]),
        dry_run=bool(d["dry_run"]),
        raw=d["raw"],
        internal=bool(d.get("internal", False)),
    )


def fill_to_json(f: Fill) -> Json:
    return {
        "fill_id": f.fill_id,
        "order_id": f.order_id,
        "client_order_id": f.client_order_id,
        "strategy_code": f.strategy_code,
        "symbol": f.symbol,
        "side": f.side.value,
        "product": f.product.value,
        "qty": f.qty,
        "price": str(f.price),
        "timestamp": _ts(f.timestamp),
    }


def fill_from_json(d: Json) -> Fill:
    return Fill(
        fill_id=d["fill_id"],
        order_id=d["order_id"],
        client_order_id=d["client_order_id"],
        strategy_code=d["strategy_code"],
        symbol=d["symbol"],
        side=Side(d["side"]),
        product=Product(d["product"]),
        qty=int(d["qty"]),
        price=Decimal(d["price"]),
        timestamp=_unts(d["timestamp"]),
    )


def quote_to_json(q: Quote) -> Json:
    return {
        "symbol": q.symbol,
        "ltp": str(q.ltp),
        "bid": str(q.bid),
        "ask": str(q.ask),
        "bid_qty": q.bid_qty,
        "ask_qty": q.ask_qty,
        "volume": q.volume,
        "timestamp": _ts(q.timestamp),
    }


def quote_from_json(d: Json) -> Quote:
    return Quote(
        symbol=d["symbol"],
        ltp=Decimal(d["ltp"]),
        bid=Decimal(d["bid"]),
        ask=Decimal(d["ask"]),
        bid_qty=int(d["bid_qty"]),
        ask_qty=int(d["ask_qty"]),
        volume=int(d["volume"]),
        timestamp=_unts(d["timestamp"]),
    )


def event_kind(event: Event) -> str:
    return type(event).__name__


def event_to_json(event: Event) -> Json:
    match event:
        case OrderAccepted():
            return {
                "order_id": event.order_id,
                "client_order_id": event.client_order_id,
                "intent": intent_to_json(event.intent),
                "timestamp": _ts(event.timestamp),
                "dry_run": event.dry_run,
                "raw": event.raw,
                "internal": event.internal,
            }
        case OrderRejected():
            return {
                "order_id": event.order_id,
                "client_order_id": event.client_order_id,
                "intent": intent_to_json(event.intent),
                "timestamp": _ts(event.timestamp),
                "reason": event.reason.value,
                "message": event.message,
                "dry_run": event.dry_run,
                "internal": event.internal,
            }
        case OrderTriggered():
            return {
                "order_id": event.order_id,
                "timestamp": _ts(event.timestamp),
                "trigger_ltp": str(event.trigger_ltp),
            }
        case OrderFilled():
            return {"fill": fill_to_json(event.fill), "quote": quote_to_json(event.quote)}
        case OrderCancelled():
            return {
                "order_id": event.order_id,
                "timestamp": _ts(event.timestamp),
                "message": event.message,
            }
        case BreakerTripped():
            return {
                "breaker": event.breaker.value,
                "strategy_code": event.strategy_code,
                "state": event.state.value,
                "reason": event.reason.value,
                "message": event.message,
                "timestamp": _ts(event.timestamp),
            }
        case TradingHalted() | TradingResumed():
            return {
                "strategy_code": event.strategy_code,
                "actor": event.actor,
                "reason": event.reason,
                "timestamp": _ts(event.timestamp),
            }
        case DayRolledOver():
            return {
                "trading_day": event.trading_day.isoformat(),
                "timestamp": _ts(event.timestamp),
                "baseline_unrealized": str(event.baseline_unrealized),
                "unmarked": [list(key) for key in event.unmarked],
            }
        case BaselineMarked():
            return {
                "strategy_code": event.strategy_code,
                "symbol": event.symbol,
                "product": event.product,
                "unrealized": str(event.unrealized),
                "timestamp": _ts(event.timestamp),
            }
        case MisSquareOffStarted():
            return {
                "trading_day": event.trading_day.isoformat(),
                "timestamp": _ts(event.timestamp),
            }
        case EquityPeak():
            return {"equity": str(event.equity), "timestamp": _ts(event.timestamp)}
        case MarksRecorded():
            return {
                "marks": {symbol: str(ltp) for symbol, ltp in event.marks.items()},
                "timestamp": _ts(event.timestamp),
            }
    raise CodecError(f"cannot encode {event!r}")


def event_from_json(kind: str, d: Json) -> Event:
    try:
        return _decode_event(kind, d)
    except (KeyError, TypeError, ValueError, ArithmeticError) as e:
        raise CodecError(f"cannot decode {kind} event: {e!r}") from e


def _decode_event(kind: str, d: Json) -> Event:
    if kind == "OrderAccepted":
        return OrderAccepted(
            order_id=d["order_id"],
            client_order_id=d["client_order_id"],
            intent=intent_from_json(d["intent"]),
            timestamp=_unts(d["timestamp"]),
            dry_run=bool(d["dry_run"]),
            raw=d["raw"],
            internal=bool(d.get("internal", False)),
        )
    if kind == "OrderRejected":
        return OrderRejected(
            order_id=d["order_id"],
            client_order_id=d["client_order_id"],
            intent=intent_from_json(d["intent"]),
            timestamp=_unts(d["timestamp"]),
            reason=RejectReason(d["reason"]),
            message=d["message"],
            dry_run=bool(d["dry_run"]),
            internal=bool(d.get("internal", False)),
        )
    if kind == "OrderTriggered":
        return OrderTriggered(
            order_id=d["order_id"],
            timestamp=_unts(d["timestamp"]),
            trigger_ltp=Decimal(d["trigger_ltp"]),
        )
    if kind == "OrderFilled":
        return OrderFilled(fill=fill_from_json(d["fill"]), quote=quote_from_json(d["quote"]))
    if kind == "OrderCancelled":
        return OrderCancelled(
            order_id=d["order_id"], timestamp=_unts(d["timestamp"]), message=d["message"]
        )
    if kind == "BreakerTripped":
        return BreakerTripped(
            breaker=Breaker(d["breaker"]),
            strategy_code=d["strategy_code"],
            state=TradingState(d["state"]),
            reason=RejectReason(d["reason"]),
            message=d["message"],
            timestamp=_unts(d["timestamp"]),
        )
    if kind in ("TradingHalted", "TradingResumed"):
        cls = TradingHalted if kind == "TradingHalted" else TradingResumed
        return cls(
            strategy_code=d["strategy_code"],
            actor=d["actor"],
            reason=d["reason"],
            timestamp=_unts(d["timestamp"]),
        )
    if kind == "DayRolledOver":
        return DayRolledOver(
            trading_day=date.fromisoformat(d["trading_day"]),
            timestamp=_unts(d["timestamp"]),
            baseline_unrealized=Decimal(d.get("baseline_unrealized", "0")),
            unmarked=tuple((str(k[0]), str(k[1]), str(k[2])) for k in d.get("unmarked", [])),
        )
    if kind == "BaselineMarked":
        return BaselineMarked(
            strategy_code=d["strategy_code"],
            symbol=d["symbol"],
            product=d["product"],
            unrealized=Decimal(d["unrealized"]),
            timestamp=_unts(d["timestamp"]),
        )
    if kind == "MisSquareOffStarted":
        return MisSquareOffStarted(
            trading_day=date.fromisoformat(d["trading_day"]), timestamp=_unts(d["timestamp"])
        )
    if kind == "EquityPeak":
        return EquityPeak(equity=Decimal(d["equity"]), timestamp=_unts(d["timestamp"]))
    if kind == "MarksRecorded":
        return MarksRecorded(
            marks={str(symbol): Decimal(ltp) for symbol, ltp in dict(d["marks"]).items()},
            timestamp=_unts(d["timestamp"]),
        )
    raise CodecError(f"unknown event kind {kind!r}")
