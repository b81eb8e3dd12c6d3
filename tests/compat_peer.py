"""The other side of tests/test_contract_compat.py: a client or a server written against
whatever `execgw.v1` stubs come first on the path (the released contract's, or a made-up
newer one's), never against execgw.client or the server package.

    python compat_peer.py client TARGET [--future]   trade against a real gateway
    python compat_peer.py serve released|future      a stand-in gateway of that contract

Both print one JSON line per step. `serve` prints `{"step": "port", ...}` first and
stops when its stdin closes.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import unknown_fields
from google.protobuf.message import Message

from execgw.v1 import gateway_pb2, gateway_pb2_grpc, market_data_pb2, market_data_pb2_grpc
from execgw.v1 import orders_pb2 as pb

DEADLINE_S = 10.0
FUTURE_STATUS = 99  # contract_helpers.FUTURE_STATUS
FUTURE_SIDE = 99  # a Side no contract has
_print_lock = threading.Lock()


def emit(step: str, **fields: Any) -> None:
    with _print_lock:
        print(json.dumps({"step": step, **fields}), flush=True)


def unknown(message: Message) -> list[int]:
    """Numbers of the fields `message` carries that these stubs do not know."""
    found = unknown_fields.UnknownFieldSet(message)
    return sorted({found[i].field_number for i in range(len(found))})


def status_name(value: int) -> str | int:
    # A status these stubs do not know stays a number: never guess a name for it.
    return pb.OrderStatus.Name(value) if value in pb.OrderStatus.values() else value  # type: ignore[arg-type]


def result(r: pb.ExecutionResult) -> dict[str, Any]:
    return {
        "order_id": r.order_id,
        "client_order_id": r.client_order_id,
        "status": status_name(r.status),
        "filled_qty": r.filled_qty,
        "avg_price": r.avg_price if r.HasField("avg_price") else None,
        "price": r.price if r.HasField("price") else None,
        "unknown": unknown(r),
    }


def intent(side: int, order_type: int, **fields: Any) -> pb.OrderIntent:
    message = pb.OrderIntent(
        symbol="NSE:INFY",
        strategy_code="peer",
        qty=10,
        product=pb.PRODUCT_MIS,
        validity=pb.VALIDITY_DAY,
        **fields,
    )
    # Raw numbers: a newer peer may send a value this contract does not name.
    message.side = side  # type: ignore[assignment]
    message.order_type = order_type  # type: ignore[assignment]
    return message


def set_future(message: Message, name: str, value: str) -> None:
    """Set a field only the newer contract has; `a.b` sets field b of message field a."""
    target: Any = message
    *path, last = name.split(".")
    for part in path:
        target = getattr(target, part)
    setattr(target, last, value)


# ---------------------------------------------------------------- client


def client(target: str, *, future: bool) -> None:
    emit("stubs", path=pb.__file__)
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=DEADLINE_S)
        gateway = gateway_pb2_grpc.ExecutionGatewayStub(channel)
        market = market_data_pb2_grpc.MarketDataStub(channel)
        quote = market_data_pb2.Quote(symbol="NSE:INFY", ltp=1500.0, bid=1499.95, ask=1500.05)
        published = market.PublishQuotes(
            iter([market_data_pb2.PublishQuotesRequest(quotes=[quote])]), timeout=DEADLINE_S
        )
        emit("quote", accepted=published.accepted)

        def submit(coid: str, order: pb.OrderIntent) -> pb.ExecutionResult:
            request = gateway_pb2.SubmitOrderRequest(intent=order, client_order_id=coid)
            return gateway.SubmitOrder(request, timeout=DEADLINE_S).result

        buy = intent(pb.SIDE_BUY, pb.ORDER_TYPE_MARKET)
        sell = intent(pb.SIDE_SELL, pb.ORDER_TYPE_LIMIT, price=1510.0)
        if future:
            for order in (buy, sell):
                set_future(order, "future_hint", "a field the gateway does not know")
        bought = submit("peer-mkt", buy)
        emit("market", **result(bought))
        resting = submit("peer-lmt", sell)
        emit("limit", **result(resting))
        cancelled = gateway.CancelOrder(
            gateway_pb2.CancelOrderRequest(order_id=resting.order_id), timeout=DEADLINE_S
        ).result
        emit("cancel", **result(cancelled))
        for p in gateway.GetPositions(
            gateway_pb2.GetPositionsRequest(strategy_code="peer"), timeout=DEADLINE_S
        ).positions:
            emit(
                "position",
                net_qty=p.net_qty,
                avg_price=p.avg_price,
                unrealized_pnl_decimal=p.unrealized_pnl_decimal,
                unknown=unknown(p),
            )
        stream = gateway.StreamFills(
            gateway_pb2.StreamFillsRequest(
                from_sequence=1, include_order_updates=True, strategy_codes=["peer"]
            )
        )
        try:
            for response in stream:  # the replay, then the heartbeat that says it is live
                event = response.event
                kind = event.WhichOneof("payload")
                if kind == "heartbeat":
                    emit("live", head_sequence=event.heartbeat.head_sequence)
                    break
                line: dict[str, Any] = {"sequence": event.sequence, "kind": kind}
                if kind == "fill":
                    line |= {"price": event.fill.price, "unknown": unknown(event.fill)}
                if kind == "order_update":
                    line |= {"status": status_name(event.order_update.status)}
                emit("event", **line)
        finally:
            stream.cancel()
        if future:
            # What a newer client may send that this gateway must refuse, not misread.
            for name, call in (
                ("unknown_side", lambda: submit("peer-side", intent(FUTURE_SIDE, 1))),
                (
                    "unknown_status_filter",
                    lambda: gateway.ListOrders(
                        gateway_pb2.ListOrdersRequest(status=FUTURE_STATUS),  # type: ignore[arg-type]
                        timeout=DEADLINE_S,
                    ),
                ),
            ):
                try:
                    call()
                    emit(name, code="OK")
                except grpc.RpcError as e:
                    if not isinstance(e, grpc.Call):
                        raise
                    emit(name, code=e.code().name, details=e.details())


# ---------------------------------------------------------------- server


class Gateway(gateway_pb2_grpc.ExecutionGatewayServicer):
    """A stand-in gateway: fixed answers in this contract's terms, every request logged."""

    def __init__(self, future: bool) -> None:
        self.future = future

    def _result(self, **fields: Any) -> pb.ExecutionResult:
        r = pb.ExecutionResult(symbol="NSE:INFY", strategy_code="peer", **fields)
        if self.future:
            r.status = FUTURE_STATUS  # type: ignore[assignment]
            set_future(r, "future_note", "from a newer gateway")
        return r

    def SubmitOrder(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: gateway_pb2.SubmitOrderRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.SubmitOrderResponse:
        i = request.intent
        emit(
            "received_submit",
            client_order_id=request.client_order_id,
            side=i.side,
            order_type=i.order_type,
            qty=i.qty,
            price=i.price if i.HasField("price") else None,
            unknown=unknown(i) + unknown(request),
        )
        market = i.order_type == pb.ORDER_TYPE_MARKET
        fields: dict[str, Any] = {
            "order_id": "P-" + request.client_order_id,
            "client_order_id": request.client_order_id,
            "status": pb.ORDER_STATUS_FILLED if market else pb.ORDER_STATUS_PLACED,
            "side": i.side,
            "qty": i.qty,
            "filled_qty": i.qty if market else 0,
            "order_type": i.order_type,
        }
        if market:
            fields["avg_price"] = 1500.75
        if i.HasField("price"):
            fields["price"] = i.price
        return gateway_pb2.SubmitOrderResponse(result=self._result(**fields))

    def CancelOrder(  # noqa: N802
        self, request: gateway_pb2.CancelOrderRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.CancelOrderResponse:
        emit("received_cancel", order_id=request.order_id, unknown=unknown(request))
        return gateway_pb2.CancelOrderResponse(
            result=self._result(order_id=request.order_id, status=pb.ORDER_STATUS_CANCELLED)
        )

    def GetPositions(  # noqa: N802
        self, request: gateway_pb2.GetPositionsRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.GetPositionsResponse:
        position = pb.Position(
            strategy_code="peer",
            symbol="NSE:INFY",
            product=pb.PRODUCT_MIS,
            net_qty=10,
            avg_price=1500.75,
            unrealized_pnl=-7.5,
            unrealized_pnl_decimal="-7.50",
            realized_pnl_decimal="0",
        )
        if self.future:
            set_future(position, "future_fee_decimal", "1.25")
        return gateway_pb2.GetPositionsResponse(positions=[position])

    def StreamFills(  # noqa: N802
        self, request: gateway_pb2.StreamFillsRequest, context: grpc.ServicerContext
    ) -> Iterator[gateway_pb2.StreamFillsResponse]:
        emit("received_stream", from_sequence=request.from_sequence, unknown=unknown(request))
        events = [pb.ExecutionEvent(heartbeat=pb.Heartbeat(head_sequence=2))]
        update = self._result(order_id="P-1", status=pb.ORDER_STATUS_PLACED)
        events.append(pb.ExecutionEvent(sequence=3, order_update=update))
        if self.future:
            notice = pb.ExecutionEvent(sequence=4)
            set_future(notice, "future_notice.text", "a kind of event this client does not know")
            events.append(notice)
        fill = pb.Fill(fill_id="F-1", order_id="P-1", side=pb.SIDE_BUY, qty=10, price=1500.75)
        if self.future:
            set_future(fill, "future_fee_decimal", "1.25")
        events.append(pb.ExecutionEvent(sequence=5, fill=fill, order=update))
        for event in events:
            yield gateway_pb2.StreamFillsResponse(event=event)


class MarketData(market_data_pb2_grpc.MarketDataServicer):
    def PublishQuotes(  # noqa: N802
        self,
        request_iterator: Iterator[market_data_pb2.PublishQuotesRequest],
        context: grpc.ServicerContext,
    ) -> market_data_pb2.PublishQuotesResponse:
        quotes = [q for request in request_iterator for q in request.quotes]
        emit("received_quotes", ltps=[q.ltp for q in quotes])
        return market_data_pb2.PublishQuotesResponse(accepted=len(quotes))


def serve(future: bool) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    # The RPCs not implemented answer UNIMPLEMENTED, as the generated base class does.
    gateway = Gateway(future)  # type: ignore[abstract]
    gateway_pb2_grpc.add_ExecutionGatewayServicer_to_server(gateway, server)
    market_data_pb2_grpc.add_MarketDataServicer_to_server(MarketData(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    emit("port", port=port, stubs=pb.__file__)
    sys.stdin.read()  # until the test closes our stdin
    server.stop(grace=None)


if __name__ == "__main__":
    if sys.argv[1] == "client":
        client(sys.argv[2], future="--future" in sys.argv[3:])
    else:
        serve(future=sys.argv[2] == "future")
