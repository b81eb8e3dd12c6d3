"""Trading with nothing but grpcio and the stubs protoc generates from proto/.

No `execgw.client`: this is what a Python program written against the contract alone
looks like, and it proves the contract is enough. Generate the stubs yourself with

    python -m grpc_tools.protoc -I proto --python_out=OUT --grpc_python_out=OUT \\
        proto/execgw/v1/*.proto

(or use the ones in client/src, which are the same), then, with
`make run CONFIG=configs/external.yaml` going (the default config makes its own prices
and refuses published ones):

    python examples/stubs_only.py [HOST:PORT]

It publishes a quote, follows StreamFills, places a MARKET order, reads its fill off
the stream and the resulting position. Each step prints one JSON line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import grpc

from execgw.v1 import gateway_pb2, gateway_pb2_grpc, market_data_pb2, market_data_pb2_grpc
from execgw.v1 import orders_pb2 as pb

SYMBOL = "NSE:INFY"
STRATEGY = "stubs"
DEADLINE_S = 10.0


def emit(step: str, **fields: Any) -> None:
    print(json.dumps({"step": step, **fields}), flush=True)


def status_name(value: pb.OrderStatus.ValueType) -> str:
    # A status a newer gateway added has no name in these stubs: never guess one.
    if value in pb.OrderStatus.values():
        return pb.OrderStatus.Name(value)
    return f"unknown OrderStatus {int(value)}"


def result_fields(r: pb.ExecutionResult) -> dict[str, Any]:
    return {
        "order_id": r.order_id,
        "client_order_id": r.client_order_id,
        "status": status_name(r.status),
        "filled_qty": r.filled_qty,
        # `optional double`: HasField tells a real 0 from "not set".
        "avg_price": r.avg_price if r.HasField("avg_price") else None,
    }


def next_event(stream: Iterator[gateway_pb2.StreamFillsResponse]) -> pb.ExecutionEvent:
    return next(stream).event


def run(target: str, ltp: float) -> None:
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=DEADLINE_S)
        gateway = gateway_pb2_grpc.ExecutionGatewayStub(channel)
        market_data = market_data_pb2_grpc.MarketDataStub(channel)

        # PublishQuotes is a client stream: any iterator of requests.
        quote = market_data_pb2.Quote(symbol=SYMBOL, ltp=ltp, bid=ltp - 0.05, ask=ltp + 0.05)
        published = market_data.PublishQuotes(
            iter([market_data_pb2.PublishQuotesRequest(quotes=[quote])]), timeout=DEADLINE_S
        )
        emit("quote", accepted=published.accepted, refused_count=published.refused_count)

        # Follow fills of this strategy, live from now. The first heartbeat says the
        # subscription is live, so the fill below cannot be missed.
        stream = gateway.StreamFills(
            gateway_pb2.StreamFillsRequest(strategy_codes=[STRATEGY], heartbeat_interval_ms=1000)
        )
        try:
            first = next_event(stream)
            assert first.WhichOneof("payload") == "heartbeat", first
            emit("stream_live", head_sequence=first.heartbeat.head_sequence)

            intent = pb.OrderIntent(
                symbol=SYMBOL,
                strategy_code=STRATEGY,
                side=pb.SIDE_BUY,
                qty=10,
                order_type=pb.ORDER_TYPE_MARKET,
                product=pb.PRODUCT_MIS,
                validity=pb.VALIDITY_DAY,
            )
            # Always choose the client_order_id: a retry with the same one is safe.
            submitted = gateway.SubmitOrder(
                gateway_pb2.SubmitOrderRequest(intent=intent, client_order_id="stubs-1"),
                timeout=DEADLINE_S,
            ).result
            emit("submit", **result_fields(submitted))

            while True:
                event = next_event(stream)
                if event.WhichOneof("payload") != "fill":
                    continue  # heartbeats
                fill = event.fill
                emit(
                    "fill",
                    sequence=event.sequence,
                    order_id=fill.order_id,
                    side=pb.Side.Name(fill.side),
                    qty=fill.qty,
                    price=fill.price,
                    order=result_fields(event.order),
                )
                if fill.order_id == submitted.order_id:
                    break
        finally:
            stream.cancel()

        positions = gateway.GetPositions(
            gateway_pb2.GetPositionsRequest(strategy_code=STRATEGY), timeout=DEADLINE_S
        ).positions
        for p in positions:
            emit(
                "position",
                symbol=p.symbol,
                net_qty=p.net_qty,
                avg_price=p.avg_price,
                unrealized_pnl=p.unrealized_pnl_decimal,
            )


if __name__ == "__main__":
    run(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051", ltp=1500.0)
