"""SubmitOrders: SubmitOrder's semantics per request over one bidirectional stream, with
answers in request order, through a real gateway and both clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from execgw.client import (
    AsyncExecutionClient,
    ExecutionClient,
    OrderIntent,
    OrderStatus,
    Quote,
    limit,
    market,
)
from execgw.server.clock import ManualClock
from execgw.server.events import AccessDenied
from execgw.v1 import gateway_pb2, gateway_pb2_grpc

if TYPE_CHECKING:
    from tests.auth_helpers import bearer, place_book, records_after, start_gateway
    from tests.auth_helpers import client as auth_client
    from tests.conftest import RunningGateway
    from tests.e2e_helpers import INFY, TIMEOUT_S, publish
else:
    from auth_helpers import bearer, place_book, records_after, start_gateway
    from auth_helpers import client as auth_client
    from conftest import RunningGateway
    from e2e_helpers import INFY, TIMEOUT_S, publish

OK = grpc.StatusCode.OK.value[0]
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
EXISTS = grpc.StatusCode.ALREADY_EXISTS.value[0]
DENIED = grpc.StatusCode.PERMISSION_DENIED.value[0]


@pytest.fixture
def client(gateway: RunningGateway) -> Iterator[ExecutionClient]:
    with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as c:
        publish(c, INFY, 1500.0)
        yield c


def bad_qty() -> OrderIntent:
    intent = market(INFY, "BUY", 1, strategy_code="S")
    intent.qty = 0
    return intent


def test_answers_come_in_request_order_and_a_bad_request_fails_alone(
    client: ExecutionClient,
) -> None:
    orders = [
        (market(INFY, "BUY", 1, strategy_code="S"), "s-0"),
        (bad_qty(), "s-1"),
        (limit(INFY, "BUY", 2, 1400.0, strategy_code="S"), "s-2"),
        (
            market(INFY, "BUY", 1, strategy_code="S"),
            "s-0",
        ),  # the same key and intent: the same order
        (market(INFY, "SELL", 3, strategy_code="S"), "s-0"),  # the same key, another intent
        *((market(INFY, "BUY", 1, strategy_code="S"), f"n-{i}") for i in range(100)),
    ]
    answers = list(client.submit_orders(orders, timeout=TIMEOUT_S))
    assert [a.client_order_id for a in answers] == [key for _, key in orders]
    first, invalid, resting, again, conflict = answers[:5]
    assert first.error_code == OK
    assert first.result.status == OrderStatus.ORDER_STATUS_FILLED
    assert invalid.error_code == INVALID
    assert invalid.error_message.startswith("intent.qty")
    assert not invalid.HasField("result")
    assert resting.result.status == OrderStatus.ORDER_STATUS_PLACED
    assert again.result.order_id == first.result.order_id
    assert conflict.error_code == EXISTS
    assert all(a.error_code == OK for a in answers[5:])
    # Each answered order is what SubmitOrder and GetOrder see: journaled, and once.
    for answer in (first, resting, *answers[5:]):
        assert client.get_order(answer.result.order_id) == answer.result
    assert (
        client.submit(market(INFY, "BUY", 1, strategy_code="S"), "s-0").order_id
        == first.result.order_id
    )
    placed = {a.result.order_id for a in answers if a.error_code == OK}
    assert len(placed) == 102


def test_the_async_client_streams_from_an_async_generator(gateway: RunningGateway) -> None:
    async def run() -> list[gateway_pb2.SubmitOrdersResponse]:
        async with AsyncExecutionClient(gateway.target, timeout=TIMEOUT_S) as c:
            await c.publish_quotes([market_quote()])

            async def orders() -> AsyncIterator[tuple[OrderIntent, str]]:
                for i in range(80):
                    yield (market(INFY, "BUY", 1, strategy_code="S"), f"a-{i}")

            return [a async for a in c.submit_orders(orders(), timeout=TIMEOUT_S)]

    answers = asyncio.run(run())
    assert [a.client_order_id for a in answers] == [f"a-{i}" for i in range(80)]
    assert {a.result.status for a in answers} == {OrderStatus.ORDER_STATUS_FILLED}


def market_quote() -> Quote:
    return Quote(symbol=INFY, ltp=1500.0)


def test_bytes_that_are_no_message_end_the_stream_naming_the_request(
    client: ExecutionClient, gateway: RunningGateway
) -> None:
    good = gateway_pb2.SubmitOrdersRequest(
        intent=market(INFY, "BUY", 1, strategy_code="S"), client_order_id="g-0"
    )
    with grpc.insecure_channel(gateway.target) as channel:
        call: grpc.StreamStreamMultiCallable[bytes, gateway_pb2.SubmitOrdersResponse]
        call = channel.stream_stream(
            "/execgw.v1.ExecutionGateway/SubmitOrders",
            request_serializer=None,
            response_deserializer=gateway_pb2.SubmitOrdersResponse.FromString,
        )
        responses = call(iter([good.SerializeToString(), b"\xff\xff"]), timeout=TIMEOUT_S)
        with pytest.raises(grpc.RpcError) as ended:
            list(responses)
    assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = ended.value.details() or ""
    assert details == "request 1 of the stream is not a valid execgw.v1.SubmitOrdersRequest"
    # The request before it was placed, answered or not: a retry with its key finds it.
    again = client.submit(market(INFY, "BUY", 1, strategy_code="S"), "g-0")
    assert again.status == OrderStatus.ORDER_STATUS_FILLED
    assert len(client.list_orders(strategy_code="S")) == 1
    # A bad key is one request's error, not the stream's.
    answers = list(client.submit_orders([(market(INFY, "BUY", 1, strategy_code="S"), "bad key")]))
    assert [a.error_code for a in answers] == [INVALID]


def test_each_request_is_authorized_on_its_own_and_refusals_are_journaled(
    tmp_path: Path, clock: ManualClock
) -> None:
    running = start_gateway(tmp_path, clock)
    try:
        place_book(running.target)
        journal = Path(running.config.journal.path)
        with auth_client(running.target, "strat-a") as a:
            answers = list(
                a.submit_orders(
                    [
                        (market(INFY, "BUY", 1, strategy_code="A"), "a-0"),
                        (market(INFY, "BUY", 1, strategy_code="B"), "a-1"),
                        (market(INFY, "BUY", 1, strategy_code="A"), "a-2"),
                    ],
                    timeout=TIMEOUT_S,
                )
            )
        assert [a.error_code for a in answers] == [OK, DENIED, OK]
        denials = [r.event for r in records_after(journal, 0) if isinstance(r.event, AccessDenied)]
        assert [(d.principal, d.rpc) for d in denials] == [("strat-a", "SubmitOrders")]
        # A role that may not submit is refused the whole stream.
        with grpc.insecure_channel(running.target) as channel:
            stub = gateway_pb2_grpc.ExecutionGatewayStub(channel)
            request = gateway_pb2.SubmitOrdersRequest(
                intent=market(INFY, "BUY", 1, strategy_code="A"), client_order_id="o-0"
            )
            with pytest.raises(grpc.RpcError) as refused:
                list(stub.SubmitOrders(iter([request]), metadata=bearer("ops"), timeout=10))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        running.stop()
