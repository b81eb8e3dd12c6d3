"""Clients against a real in-process gRPC server: retries, error mapping, streams.

The fake gateway is scripted per method ("fail the next N calls with CODE") and
records every request, so the tests can check what went over the wire. Retry
sleeps are injected and recorded; no test waits on the wall clock for backoff.
"""

# Servicer method names are fixed by the proto (SubmitOrder, ...).
# ruff: noqa: N802

from __future__ import annotations

import pickle
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.message import Message

from execgw.client import (
    AsyncExecutionClient,
    DeadlineExceeded,
    ExecgwError,
    ExecutionClient,
    ExecutionEvent,
    ExecutionResult,
    Fill,
    InvalidArgument,
    NotFound,
    OrderStatus,
    Position,
    Quote,
    RejectReason,
    Unavailable,
    from_rpc_error,
    market,
)
from execgw.client import errors as errors_module
from execgw.client._common import (
    DEFAULT_CHANNEL_OPTIONS,
    MAX_CAPACITY_RECONNECTS,
    RetryPolicy,
    StreamCursor,
    channel_options,
    client_order_id_or_new,
    stream_fills_request,
)
from execgw.v1 import gateway_pb2, gateway_pb2_grpc, market_data_pb2, market_data_pb2_grpc

BACKOFF = 0.05
INTENT = market("NSE:INFY", "BUY", 10, strategy_code="mom_v2")


# --------------------------------------------------------------------------- fake gateway


@dataclass(frozen=True)
class StreamStep:
    """What one StreamFills call does: send the script's events or not, then end, or
    fail with `failure` (and a resume point trailer when `resume_from` is set)."""

    events: bool = False
    failure: tuple[grpc.StatusCode, str] | None = None
    resume_from: int | None = None

    def trailers(self) -> tuple[tuple[str, str], ...]:
        return () if self.resume_from is None else (("execgw-resume-from", str(self.resume_from)),)


CAPACITY = (grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!")


@dataclass
class Script:
    """Shared by the sync and async servicers: what to fail, and what was asked."""

    failures: dict[str, list[tuple[grpc.StatusCode, str]]] = field(default_factory=dict)
    calls: list[tuple[str, Message]] = field(default_factory=list)
    events: list[ExecutionEvent] = field(default_factory=list)
    quote_batches: list[int] = field(default_factory=list)
    reject: bool = False
    # StreamFills calls in turn, once `fail` has none left; past the last, send the events.
    stream_steps: list[StreamStep] = field(default_factory=list)

    def fail(self, method: str, code: grpc.StatusCode, times: int, details: str = "") -> None:
        self.failures.setdefault(method, []).extend([(code, details)] * times)

    def stream_step(self) -> StreamStep:
        return self.stream_steps.pop(0) if self.stream_steps else StreamStep(events=True)

    def record(self, method: str, request: Message) -> tuple[grpc.StatusCode, str] | None:
        self.calls.append((method, request))
        pending = self.failures.get(method)
        return pending.pop(0) if pending else None

    def requests(self, method: str) -> list[Any]:
        return [request for name, request in self.calls if name == method]

    def submit(self, request: gateway_pb2.SubmitOrderRequest) -> gateway_pb2.SubmitOrderResponse:
        result = ExecutionResult(
            order_id="ord-1",
            client_order_id=request.client_order_id,
            status=OrderStatus.ORDER_STATUS_PLACED,
            symbol=request.intent.symbol,
            side=request.intent.side,
            qty=request.intent.qty,
            strategy_code=request.intent.strategy_code,
        )
        if self.reject:
            result.status = OrderStatus.ORDER_STATUS_REJECTED
            result.reject_reason = RejectReason.REJECT_REASON_NO_MARKET_DATA
            result.message = "no quote for NSE:INFY"
        return gateway_pb2.SubmitOrderResponse(result=result)

    def order(self, order_id: str) -> ExecutionResult:
        return ExecutionResult(order_id=order_id, status=OrderStatus.ORDER_STATUS_FILLED)

    def list_orders(self) -> gateway_pb2.ListOrdersResponse:
        return gateway_pb2.ListOrdersResponse(results=[self.order("ord-1"), self.order("ord-2")])

    def positions(self, strategy_code: str) -> gateway_pb2.GetPositionsResponse:
        position = Position(strategy_code=strategy_code, symbol="NSE:INFY", net_qty=10)
        return gateway_pb2.GetPositionsResponse(positions=[position])

    def quote(self, symbol: str) -> market_data_pb2.GetQuoteResponse:
        return market_data_pb2.GetQuoteResponse(quote=Quote(symbol=symbol, ltp=1501.25))


class SyncGateway(
    gateway_pb2_grpc.ExecutionGatewayServicer, market_data_pb2_grpc.MarketDataServicer
):
    def __init__(self, script: Script) -> None:
        self.script = script

    def _check(self, method: str, request: Message, context: grpc.ServicerContext) -> None:
        failure = self.script.record(method, request)
        if failure is not None:
            context.abort(*failure)

    def SubmitOrder(
        self, request: gateway_pb2.SubmitOrderRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.SubmitOrderResponse:
        self._check("SubmitOrder", request, context)
        return self.script.submit(request)

    def CancelOrder(
        self, request: gateway_pb2.CancelOrderRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.CancelOrderResponse:
        self._check("CancelOrder", request, context)
        return gateway_pb2.CancelOrderResponse(result=self.script.order(request.order_id))

    def GetOrder(
        self, request: gateway_pb2.GetOrderRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.GetOrderResponse:
        self._check("GetOrder", request, context)
        return gateway_pb2.GetOrderResponse(result=self.script.order(request.order_id))

    def ListOrders(
        self, request: gateway_pb2.ListOrdersRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.ListOrdersResponse:
        self._check("ListOrders", request, context)
        return self.script.list_orders()

    def GetPositions(
        self, request: gateway_pb2.GetPositionsRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.GetPositionsResponse:
        self._check("GetPositions", request, context)
        return self.script.positions(request.strategy_code)

    def StreamFills(
        self, request: gateway_pb2.StreamFillsRequest, context: grpc.ServicerContext
    ) -> Iterator[gateway_pb2.StreamFillsResponse]:
        self._check("StreamFills", request, context)
        step = self.script.stream_step()
        if step.events:
            for event in self.script.events:
                yield gateway_pb2.StreamFillsResponse(event=event)
        if step.failure is not None:
            context.set_trailing_metadata(step.trailers())
            context.abort(*step.failure)

    def PublishQuotes(
        self,
        request_iterator: Iterator[market_data_pb2.PublishQuotesRequest],
        context: grpc.ServicerContext,
    ) -> market_data_pb2.PublishQuotesResponse:
        accepted = 0
        for request in request_iterator:
            self.script.quote_batches.append(len(request.quotes))
            accepted += len(request.quotes)
        return market_data_pb2.PublishQuotesResponse(accepted=accepted)

    def GetQuote(
        self, request: market_data_pb2.GetQuoteRequest, context: grpc.ServicerContext
    ) -> market_data_pb2.GetQuoteResponse:
        self._check("GetQuote", request, context)
        return self.script.quote(request.symbol)


class AsyncGateway(
    gateway_pb2_grpc.ExecutionGatewayServicer, market_data_pb2_grpc.MarketDataServicer
):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def _check(
        self, method: str, request: Message, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        failure = self.script.record(method, request)
        if failure is not None:
            await context.abort(*failure)

    async def SubmitOrder(
        self,
        request: gateway_pb2.SubmitOrderRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.SubmitOrderResponse:
        await self._check("SubmitOrder", request, context)
        return self.script.submit(request)

    async def CancelOrder(
        self,
        request: gateway_pb2.CancelOrderRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.CancelOrderResponse:
        await self._check("CancelOrder", request, context)
        return gateway_pb2.CancelOrderResponse(result=self.script.order(request.order_id))

    async def GetOrder(
        self,
        request: gateway_pb2.GetOrderRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.GetOrderResponse:
        await self._check("GetOrder", request, context)
        return gateway_pb2.GetOrderResponse(result=self.script.order(request.order_id))

    async def ListOrders(
        self,
        request: gateway_pb2.ListOrdersRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.ListOrdersResponse:
        await self._check("ListOrders", request, context)
        return self.script.list_orders()

    async def GetPositions(
        self,
        request: gateway_pb2.GetPositionsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.GetPositionsResponse:
        await self._check("GetPositions", request, context)
        return self.script.positions(request.strategy_code)

    async def StreamFills(
        self,
        request: gateway_pb2.StreamFillsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[gateway_pb2.StreamFillsResponse]:
        await self._check("StreamFills", request, context)
        step = self.script.stream_step()
        if step.events:
            for event in self.script.events:
                yield gateway_pb2.StreamFillsResponse(event=event)
        if step.failure is not None:
            context.set_trailing_metadata(step.trailers())
            await context.abort(*step.failure)

    async def PublishQuotes(
        self,
        request_iterator: AsyncIterator[market_data_pb2.PublishQuotesRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> market_data_pb2.PublishQuotesResponse:
        accepted = 0
        async for request in request_iterator:
            self.script.quote_batches.append(len(request.quotes))
            accepted += len(request.quotes)
        return market_data_pb2.PublishQuotesResponse(accepted=accepted)

    async def GetQuote(
        self,
        request: market_data_pb2.GetQuoteRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> market_data_pb2.GetQuoteResponse:
        await self._check("GetQuote", request, context)
        return self.script.quote(request.symbol)


# --------------------------------------------------------------------------- fixtures


@dataclass
class Harness:
    target: str
    script: Script
    sleeps: list[float]


@pytest.fixture
def sync_gateway() -> Iterator[Harness]:
    script = Script()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    # The generated bases answer every RPC not overridden with UNIMPLEMENTED at
    # runtime; only their stubs call them abstract.
    servicer = SyncGateway(script)  # type: ignore[abstract]
    gateway_pb2_grpc.add_ExecutionGatewayServicer_to_server(servicer, server)
    market_data_pb2_grpc.add_MarketDataServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield Harness(f"127.0.0.1:{port}", script, [])
    finally:
        server.stop(None)


@pytest.fixture
def sync_client(sync_gateway: Harness) -> Iterator[ExecutionClient]:
    with ExecutionClient(
        sync_gateway.target, backoff=BACKOFF, sleep=sync_gateway.sleeps.append
    ) as client:
        yield client


@pytest.fixture
async def async_gateway() -> AsyncIterator[Harness]:
    script = Script()
    server = grpc.aio.server()
    servicer = AsyncGateway(script)  # type: ignore[abstract]
    gateway_pb2_grpc.add_ExecutionGatewayServicer_to_server(servicer, server)
    market_data_pb2_grpc.add_MarketDataServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield Harness(f"127.0.0.1:{port}", script, [])
    finally:
        await server.stop(None)


def _recording_sleep(sleeps: list[float]) -> Callable[[float], Awaitable[None]]:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return sleep


@pytest.fixture
async def async_client(async_gateway: Harness) -> AsyncIterator[AsyncExecutionClient]:
    async with AsyncExecutionClient(
        async_gateway.target, backoff=BACKOFF, sleep=_recording_sleep(async_gateway.sleeps)
    ) as client:
        yield client


def _assert_backoff(sleeps: list[float], expected_count: int) -> None:
    """Sleeps grow and each lies in its equal-jitter window [step/2, step]."""
    assert len(sleeps) == expected_count
    for n, seconds in enumerate(sleeps):
        step = BACKOFF * 2**n
        assert step / 2 <= seconds <= step, (n, seconds)
    assert sleeps == sorted(sleeps)
    assert len(set(sleeps)) == len(sleeps)


def _submitted_ids(script: Script) -> list[str]:
    return [request.client_order_id for request in script.requests("SubmitOrder")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------- sync client


def test_sync_submit_retries_unavailable_with_same_id(
    sync_gateway: Harness, sync_client: ExecutionClient
) -> None:
    sync_gateway.script.fail("SubmitOrder", grpc.StatusCode.UNAVAILABLE, 2, "restarting")

    result = sync_client.submit(INTENT)

    ids = _submitted_ids(sync_gateway.script)
    assert len(ids) == 3
    assert len(set(ids)) == 1
    assert 0 < len(ids[0]) <= 64
    assert result.client_order_id == ids[0]
    assert result.order_id == "ord-1"
    assert result.status == OrderStatus.ORDER_STATUS_PLACED
    assert sync_gateway.script.requests("SubmitOrder")[0].intent == INTENT
    _assert_backoff(sync_gateway.sleeps, 2)


def test_sync_submit_reuses_callers_id(sync_gateway: Harness, sync_client: ExecutionClient) -> None:
    sync_gateway.script.fail("SubmitOrder", grpc.StatusCode.UNAVAILABLE, 1)

    result = sync_client.submit(INTENT, "strat-7:2025-01-14:000123")

    assert _submitted_ids(sync_gateway.script) == ["strat-7:2025-01-14:000123"] * 2
    assert result.client_order_id == "strat-7:2025-01-14:000123"


def test_sync_generated_ids_differ_between_submits(
    sync_gateway: Harness, sync_client: ExecutionClient
) -> None:
    sync_client.submit(INTENT)
    sync_client.submit(INTENT)
    first, second = _submitted_ids(sync_gateway.script)
    assert first != second


def test_sync_retries_exhausted_raises_unavailable(sync_gateway: Harness) -> None:
    sync_gateway.script.fail("SubmitOrder", grpc.StatusCode.UNAVAILABLE, 10, "gateway restarting")
    with (
        ExecutionClient(
            sync_gateway.target, retries=3, backoff=BACKOFF, sleep=sync_gateway.sleeps.append
        ) as client,
        pytest.raises(Unavailable) as info,
    ):
        client.submit(INTENT)

    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert info.value.details == "gateway restarting"
    assert isinstance(info.value.__cause__, grpc.RpcError)
    ids = _submitted_ids(sync_gateway.script)
    assert len(ids) == 4
    assert len(set(ids)) == 1
    _assert_backoff(sync_gateway.sleeps, 3)


def test_sync_invalid_argument_is_not_retried(
    sync_gateway: Harness, sync_client: ExecutionClient
) -> None:
    sync_gateway.script.fail("SubmitOrder", grpc.StatusCode.INVALID_ARGUMENT, 1, "qty must be > 0")

    with pytest.raises(InvalidArgument) as info:
        sync_client.submit(INTENT)

    assert info.value.details == "qty must be > 0"
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(info.value) == "INVALID_ARGUMENT: qty must be > 0"
    assert len(_submitted_ids(sync_gateway.script)) == 1
    assert sync_gateway.sleeps == []


def test_sync_deadline_exceeded_is_not_retried_by_default(
    sync_gateway: Harness, sync_client: ExecutionClient
) -> None:
    sync_gateway.script.fail("SubmitOrder", grpc.StatusCode.DEADLINE_EXCEEDED, 1, "slow venue")

    with pytest.raises(DeadlineExceeded, match="slow venue"):
        sync_client.submit(INTENT)

    assert len(_submitted_ids(sync_gateway.script)) == 1
    assert sync_gateway.sleeps == []


def test_sync_deadline_exceeded_retried_when_opted_in(sync_gateway: Harness) -> None:
    sync_gateway.script.fail("SubmitOrder", grpc.StatusCode.DEADLINE_EXCEEDED, 2, "slow venue")
    with ExecutionClient(
        sync_gateway.target,
        backoff=BACKOFF,
        retry_deadline_exceeded=True,
        sleep=sync_gateway.sleeps.append,
    ) as client:
        result = client.submit(INTENT)

    ids = _submitted_ids(sync_gateway.script)
    assert len(ids) == 3
    assert len(set(ids)) == 1
    assert result.client_order_id == ids[0]
    _assert_backoff(sync_gateway.sleeps, 2)


def test_sync_rejected_order_is_a_result_not_an_error(
    sync_gateway: Harness, sync_client: ExecutionClient
) -> None:
    sync_gateway.script.reject = True

    result = sync_client.submit(INTENT)

    assert result.status == OrderStatus.ORDER_STATUS_REJECTED
    assert result.reject_reason == RejectReason.REJECT_REASON_NO_MARKET_DATA
    assert result.message == "no quote for NSE:INFY"


def test_sync_reads_retry_unavailable(sync_gateway: Harness, sync_client: ExecutionClient) -> None:
    script = sync_gateway.script
    for method in ("GetOrder", "CancelOrder", "ListOrders", "GetPositions", "GetQuote"):
        script.fail(method, grpc.StatusCode.UNAVAILABLE, 1)

    assert sync_client.get_order("ord-9").order_id == "ord-9"
    assert sync_client.cancel("ord-8").order_id == "ord-8"
    assert [r.order_id for r in sync_client.list_orders(status="filled")] == ["ord-1", "ord-2"]
    assert [(p.strategy_code, p.net_qty) for p in sync_client.positions("mom_v2")] == [
        ("mom_v2", 10)
    ]
    assert sync_client.get_quote("NSE:INFY").ltp == 1501.25

    assert [name for name, _ in script.calls] == [
        "GetOrder",
        "GetOrder",
        "CancelOrder",
        "CancelOrder",
        "ListOrders",
        "ListOrders",
        "GetPositions",
        "GetPositions",
        "GetQuote",
        "GetQuote",
    ]
    assert script.requests("ListOrders")[0].status == OrderStatus.ORDER_STATUS_FILLED
    assert len(sync_gateway.sleeps) == 5


def test_sync_not_found_maps_to_not_found(
    sync_gateway: Harness, sync_client: ExecutionClient
) -> None:
    sync_gateway.script.fail("GetOrder", grpc.StatusCode.NOT_FOUND, 1, "no order ord-404")
    with pytest.raises(NotFound, match="no order ord-404"):
        sync_client.get_order("ord-404")
    assert sync_gateway.sleeps == []


def test_sync_list_orders_filters(sync_gateway: Harness, sync_client: ExecutionClient) -> None:
    sync_client.list_orders()
    sync_client.list_orders(strategy_code="mom_v2", status="ORDER_STATUS_REJECTED", symbol="NSE:X")
    empty, filtered = sync_gateway.script.requests("ListOrders")
    assert empty == gateway_pb2.ListOrdersRequest()
    assert filtered == gateway_pb2.ListOrdersRequest(
        strategy_code="mom_v2", status=OrderStatus.ORDER_STATUS_REJECTED, symbol="NSE:X"
    )
    with pytest.raises(ValueError, match=r"^status: unknown value 'DONE'"):
        sync_client.list_orders(status="DONE")


def _events() -> list[ExecutionEvent]:
    return [
        ExecutionEvent(
            sequence=41, fill=Fill(fill_id="f-1", order_id="ord-1", qty=4, price=1500.05)
        ),
        ExecutionEvent(
            sequence=42,
            order_update=ExecutionResult(order_id="ord-1", status=OrderStatus.ORDER_STATUS_FILLED),
        ),
    ]


def test_sync_stream_fills_yields_events(
    sync_gateway: Harness, sync_client: ExecutionClient
) -> None:
    sync_gateway.script.events = _events()

    events = list(
        sync_client.stream_fills(
            strategy_codes=["mom_v2"],
            symbols=("NSE:INFY",),
            from_sequence=41,
            include_order_updates=True,
        )
    )

    assert events == _events()
    assert events[0].fill.price == 1500.05
    assert events[1].WhichOneof("payload") == "order_update"
    assert sync_gateway.script.requests("StreamFills") == [
        gateway_pb2.StreamFillsRequest(
            strategy_codes=["mom_v2"],
            symbols=["NSE:INFY"],
            from_sequence=41,
            include_order_updates=True,
        )
    ]


def test_sync_stream_fills_error_is_mapped_and_not_retried(
    sync_gateway: Harness, sync_client: ExecutionClient
) -> None:
    sync_gateway.script.fail("StreamFills", grpc.StatusCode.OUT_OF_RANGE, 1, "sequence 3 expired")
    with pytest.raises(errors_module.OutOfRange, match="sequence 3 expired"):
        list(sync_client.stream_fills(from_sequence=3))
    assert len(sync_gateway.script.requests("StreamFills")) == 1


def test_sync_stream_fills_reconnects_after_capacity_refusals(
    sync_gateway: Harness, sync_client: ExecutionClient
) -> None:
    """RESOURCE_EXHAUSTED without a resume point is also the gateway's call or stream
    limit: a short burst of callers must not end a strategy's stream for good."""
    sync_gateway.script.stream_steps = [StreamStep(failure=CAPACITY)] * 4
    sync_gateway.script.events = _events()

    assert list(sync_client.stream_fills(from_sequence=41)) == _events()
    requests = sync_gateway.script.requests("StreamFills")
    assert [r.from_sequence for r in requests] == [41] * 5
    _assert_backoff(sync_gateway.sleeps, 4)


def test_sync_stream_fills_raises_after_five_capacity_refusals_in_a_row(
    sync_gateway: Harness, sync_client: ExecutionClient
) -> None:
    # Or an event over a size limit, refused the same way on every reconnect.
    sync_gateway.script.stream_steps = [StreamStep(failure=CAPACITY)] * 20
    with pytest.raises(errors_module.ResourceExhausted, match="Concurrent RPC limit"):
        list(sync_client.stream_fills(from_sequence=41))
    assert len(sync_gateway.script.requests("StreamFills")) == 1 + MAX_CAPACITY_RECONNECTS
    _assert_backoff(sync_gateway.sleeps, MAX_CAPACITY_RECONNECTS)


def test_sync_capacity_refusals_are_counted_anew_once_events_come(
    sync_gateway: Harness, sync_client: ExecutionClient
) -> None:
    refused = StreamStep(failure=CAPACITY)
    sync_gateway.script.stream_steps = [
        refused,
        refused,
        refused,
        StreamStep(events=True, failure=CAPACITY),  # progress, then refused again
        *[refused] * 20,
    ]
    sync_gateway.script.events = _events()
    stream = sync_client.stream_fills(from_sequence=41)
    assert [next(stream), next(stream)] == _events()
    with pytest.raises(errors_module.ResourceExhausted):
        next(stream)
    requests = sync_gateway.script.requests("StreamFills")
    # 3 refusals, the call with events (its refusal is the first of a new run), then 4
    # more reconnects: 5 refusals in a row, and the stream raises.
    assert [r.from_sequence for r in requests] == [41] * 4 + [43] * 5


def test_sync_stream_fills_resumes_from_a_slow_consumer_cut_off_every_time(
    sync_gateway: Harness, sync_client: ExecutionClient
) -> None:
    cut_off = StreamStep(failure=(grpc.StatusCode.RESOURCE_EXHAUSTED, "fell behind"))
    sync_gateway.script.stream_steps = [replace(cut_off, resume_from=41)] * 8
    sync_gateway.script.events = _events()
    assert list(sync_client.stream_fills(from_sequence=41)) == _events()
    assert len(sync_gateway.script.requests("StreamFills")) == 9


def test_sync_stream_fills_rejects_a_bare_string() -> None:
    with (
        ExecutionClient(f"127.0.0.1:{_free_port()}") as client,
        pytest.raises(ValueError, match="symbols must be a collection"),
    ):
        client.stream_fills(symbols="NSE:INFY")


def test_sync_publish_quotes_batches(sync_gateway: Harness, sync_client: ExecutionClient) -> None:
    quotes = [Quote(symbol="NSE:INFY", ltp=1500.0 + n / 20) for n in range(250)]

    assert sync_client.publish_quotes(quotes) == 250
    assert sync_client.publish_quotes(iter(quotes[:3])) == 3
    assert sync_client.publish_quotes(quotes[:7], batch_size=3) == 7

    assert sync_gateway.script.quote_batches == [100, 100, 50, 1, 1, 1, 3, 3, 1]


def test_sync_publish_quotes_reraises_feed_error(sync_client: ExecutionClient) -> None:
    def feed() -> Iterator[Quote]:
        yield Quote(symbol="NSE:INFY", ltp=1500.0)
        raise RuntimeError("feed disconnected")

    with pytest.raises(RuntimeError, match="feed disconnected"):
        sync_client.publish_quotes(feed())


def test_sync_wait_ready(sync_gateway: Harness, sync_client: ExecutionClient) -> None:
    sync_client.wait_ready(5.0)
    with (
        ExecutionClient(f"127.0.0.1:{_free_port()}") as idle,
        pytest.raises(Unavailable, match=r"not ready after 0\.2s"),
    ):
        idle.wait_ready(0.2)


def test_sync_unreachable_gateway_retries_then_raises_unavailable() -> None:
    sleeps: list[float] = []
    with (
        ExecutionClient(
            f"127.0.0.1:{_free_port()}", retries=2, backoff=BACKOFF, sleep=sleeps.append
        ) as client,
        pytest.raises(Unavailable),
    ):
        client.get_quote("NSE:INFY")
    _assert_backoff(sleeps, 2)


# --------------------------------------------------------------------------- async client


async def test_async_submit_retries_unavailable_with_same_id(
    async_gateway: Harness, async_client: AsyncExecutionClient
) -> None:
    async_gateway.script.fail("SubmitOrder", grpc.StatusCode.UNAVAILABLE, 2, "restarting")

    result = await async_client.submit(INTENT)

    ids = _submitted_ids(async_gateway.script)
    assert len(ids) == 3
    assert len(set(ids)) == 1
    assert result.client_order_id == ids[0]
    assert result.status == OrderStatus.ORDER_STATUS_PLACED
    _assert_backoff(async_gateway.sleeps, 2)


async def test_async_submit_reuses_callers_id(
    async_gateway: Harness, async_client: AsyncExecutionClient
) -> None:
    async_gateway.script.fail("SubmitOrder", grpc.StatusCode.UNAVAILABLE, 1)

    result = await async_client.submit(INTENT, "strat-7:000124")

    assert _submitted_ids(async_gateway.script) == ["strat-7:000124"] * 2
    assert result.client_order_id == "strat-7:000124"


async def test_async_retries_exhausted_raises_unavailable(async_gateway: Harness) -> None:
    async_gateway.script.fail("SubmitOrder", grpc.StatusCode.UNAVAILABLE, 10, "gateway restarting")
    async with AsyncExecutionClient(
        async_gateway.target,
        retries=3,
        backoff=BACKOFF,
        sleep=_recording_sleep(async_gateway.sleeps),
    ) as client:
        with pytest.raises(Unavailable) as info:
            await client.submit(INTENT)

    assert info.value.details == "gateway restarting"
    ids = _submitted_ids(async_gateway.script)
    assert len(ids) == 4
    assert len(set(ids)) == 1
    _assert_backoff(async_gateway.sleeps, 3)


async def test_async_invalid_argument_is_not_retried(
    async_gateway: Harness, async_client: AsyncExecutionClient
) -> None:
    async_gateway.script.fail("SubmitOrder", grpc.StatusCode.INVALID_ARGUMENT, 1, "qty must be > 0")

    with pytest.raises(InvalidArgument) as info:
        await async_client.submit(INTENT)

    assert info.value.details == "qty must be > 0"
    assert len(_submitted_ids(async_gateway.script)) == 1
    assert async_gateway.sleeps == []


async def test_async_deadline_exceeded_is_not_retried_by_default(
    async_gateway: Harness, async_client: AsyncExecutionClient
) -> None:
    async_gateway.script.fail("SubmitOrder", grpc.StatusCode.DEADLINE_EXCEEDED, 1, "slow venue")
    with pytest.raises(DeadlineExceeded):
        await async_client.submit(INTENT)
    assert len(_submitted_ids(async_gateway.script)) == 1


async def test_async_reads_retry_unavailable(
    async_gateway: Harness, async_client: AsyncExecutionClient
) -> None:
    script = async_gateway.script
    for method in ("GetOrder", "CancelOrder", "ListOrders", "GetPositions", "GetQuote"):
        script.fail(method, grpc.StatusCode.UNAVAILABLE, 1)

    assert (await async_client.get_order("ord-9")).order_id == "ord-9"
    assert (await async_client.cancel("ord-8")).order_id == "ord-8"
    orders = await async_client.list_orders(status=OrderStatus.ORDER_STATUS_FILLED)
    assert [r.order_id for r in orders] == ["ord-1", "ord-2"]
    assert [p.net_qty for p in await async_client.positions("mom_v2")] == [10]
    assert (await async_client.get_quote("NSE:INFY")).ltp == 1501.25

    assert len(script.calls) == 10
    assert len(async_gateway.sleeps) == 5


async def test_async_stream_fills_yields_events(
    async_gateway: Harness, async_client: AsyncExecutionClient
) -> None:
    async_gateway.script.events = _events()

    events = [e async for e in async_client.stream_fills(strategy_codes=["mom_v2"])]

    assert events == _events()
    assert async_gateway.script.requests("StreamFills") == [
        gateway_pb2.StreamFillsRequest(strategy_codes=["mom_v2"])
    ]


async def test_async_stream_fills_error_is_mapped_without_reconnect(
    async_gateway: Harness, async_client: AsyncExecutionClient
) -> None:
    async_gateway.script.fail("StreamFills", grpc.StatusCode.UNAVAILABLE, 1, "draining")
    with pytest.raises(Unavailable, match="draining"):
        [e async for e in async_client.stream_fills(reconnect=False)]
    assert len(async_gateway.script.requests("StreamFills")) == 1


async def test_async_stream_fills_reconnects_after_unavailable(
    async_gateway: Harness, async_client: AsyncExecutionClient
) -> None:
    async_gateway.script.fail("StreamFills", grpc.StatusCode.UNAVAILABLE, 2, "draining")
    async_gateway.script.events = _events()
    events = [e async for e in async_client.stream_fills(from_sequence=41)]
    assert events == _events()
    requests = async_gateway.script.requests("StreamFills")
    # Nothing was delivered before the failures, so each retry asks for 41 again.
    assert [r.from_sequence for r in requests] == [41, 41, 41]
    assert len(async_gateway.sleeps) == 2
    assert async_gateway.sleeps[1] > 0


async def test_async_stream_fills_reconnects_after_capacity_refusals_then_gives_up(
    async_gateway: Harness, async_client: AsyncExecutionClient
) -> None:
    async_gateway.script.stream_steps = [StreamStep(failure=CAPACITY)] * 4
    async_gateway.script.events = _events()
    assert [e async for e in async_client.stream_fills(from_sequence=41)] == _events()
    assert len(async_gateway.script.requests("StreamFills")) == 5
    _assert_backoff(async_gateway.sleeps, 4)

    async_gateway.script.calls.clear()
    async_gateway.sleeps.clear()
    async_gateway.script.stream_steps = [StreamStep(failure=CAPACITY)] * 20
    with pytest.raises(errors_module.ResourceExhausted, match="Concurrent RPC limit"):
        [e async for e in async_client.stream_fills(from_sequence=41)]
    assert len(async_gateway.script.requests("StreamFills")) == 1 + MAX_CAPACITY_RECONNECTS
    _assert_backoff(async_gateway.sleeps, MAX_CAPACITY_RECONNECTS)


async def test_async_publish_quotes_accepts_sync_and_async_iterables(
    async_gateway: Harness, async_client: AsyncExecutionClient
) -> None:
    quotes = [Quote(symbol="NSE:INFY", ltp=1500.0 + n / 20) for n in range(150)]

    async def feed() -> AsyncIterator[Quote]:
        for quote in quotes[:2]:
            yield quote

    assert await async_client.publish_quotes(quotes) == 150
    assert await async_client.publish_quotes(feed()) == 2

    assert async_gateway.script.quote_batches == [100, 50, 1, 1]


async def test_async_publish_quotes_reraises_feed_error(
    async_client: AsyncExecutionClient,
) -> None:
    async def feed() -> AsyncIterator[Quote]:
        yield Quote(symbol="NSE:INFY", ltp=1500.0)
        raise RuntimeError("feed disconnected")

    with pytest.raises(RuntimeError, match="feed disconnected"):
        await async_client.publish_quotes(feed())


async def test_async_wait_ready(async_client: AsyncExecutionClient) -> None:
    await async_client.wait_ready(5.0)
    async with AsyncExecutionClient(f"127.0.0.1:{_free_port()}") as idle:
        with pytest.raises(Unavailable, match=r"not ready after 0\.2s"):
            await idle.wait_ready(0.2)


# --------------------------------------------------------------------------- pure parts


def test_backoff_is_exponential_capped_and_jittered() -> None:
    low = RetryPolicy(retries=10, backoff=0.05, max_backoff=1.0, jitter=lambda: 0.0)
    high = RetryPolicy(retries=10, backoff=0.05, max_backoff=1.0, jitter=lambda: 1.0)
    assert [low.delay(n) for n in range(7)] == pytest.approx([0.025, 0.05, 0.1, 0.2, 0.4, 0.5, 0.5])
    assert [high.delay(n) for n in range(7)] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert high.delay(10_000) == 1.0


def test_retry_policy_codes() -> None:
    default = RetryPolicy(retries=2)
    assert default.should_retry(grpc.StatusCode.UNAVAILABLE, 1)
    assert not default.should_retry(grpc.StatusCode.UNAVAILABLE, 2)
    assert not default.should_retry(grpc.StatusCode.DEADLINE_EXCEEDED, 0)
    assert not default.should_retry(grpc.StatusCode.INTERNAL, 0)
    assert RetryPolicy(retry_deadline_exceeded=True).should_retry(
        grpc.StatusCode.DEADLINE_EXCEEDED, 0
    )
    with pytest.raises(ValueError, match="retries"):
        RetryPolicy(retries=-1)


def test_client_order_id_generation_and_checks() -> None:
    generated = client_order_id_or_new(None)
    assert len(generated) == 32
    int(generated, 16)
    assert client_order_id_or_new("x" * 64) == "x" * 64
    with pytest.raises(ValueError, match="65 chars"):
        client_order_id_or_new("x" * 65)
    with pytest.raises(ValueError, match="non-empty"):
        client_order_id_or_new("")


def test_channel_options_include_keepalive_and_let_caller_override() -> None:
    options = dict(
        channel_options({"grpc.keepalive_time_ms": 60_000, "grpc.primary_user_agent": "x"})
    )
    assert options["grpc.keepalive_time_ms"] == 60_000
    assert options["grpc.keepalive_timeout_ms"] == 10_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.primary_user_agent"] == "x"
    assert dict(channel_options(None)) == DEFAULT_CHANNEL_OPTIONS
    assert dict(channel_options([("grpc.keepalive_time_ms", 1)]))["grpc.keepalive_time_ms"] == 1


def test_stream_cursor_resumes_after_last_delivered_event() -> None:
    cursor = StreamCursor(stream_fills_request(["mom_v2"], [], 0, True))
    assert cursor.resume_request().from_sequence == 0
    for event in _events():
        cursor.delivered(event)
    resumed = cursor.resume_request()
    assert cursor.last_sequence == 42
    assert resumed == gateway_pb2.StreamFillsRequest(
        strategy_codes=["mom_v2"], from_sequence=43, include_order_updates=True
    )
    assert cursor.request.from_sequence == 0


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, errors_module.InvalidArgument),
        (grpc.StatusCode.ALREADY_EXISTS, errors_module.AlreadyExists),
        (grpc.StatusCode.NOT_FOUND, errors_module.NotFound),
        (grpc.StatusCode.FAILED_PRECONDITION, errors_module.FailedPrecondition),
        (grpc.StatusCode.UNAVAILABLE, errors_module.Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors_module.DeadlineExceeded),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors_module.ResourceExhausted),
        (grpc.StatusCode.OUT_OF_RANGE, errors_module.OutOfRange),
        (grpc.StatusCode.PERMISSION_DENIED, errors_module.PermissionDenied),
        (grpc.StatusCode.UNAUTHENTICATED, errors_module.Unauthenticated),
        (grpc.StatusCode.UNIMPLEMENTED, errors_module.Unimplemented),
        (grpc.StatusCode.INTERNAL, errors_module.Internal),
    ],
)
def test_from_rpc_error_picks_subclass(code: grpc.StatusCode, cls: type[ExecgwError]) -> None:
    error = from_rpc_error(_FakeRpcError(code, "why"))
    assert type(error) is cls
    assert error.code == code
    assert error.details == "why"
    assert isinstance(error, ExecgwError)


def test_from_rpc_error_keeps_codes_without_a_subclass() -> None:
    error = from_rpc_error(_FakeRpcError(grpc.StatusCode.ABORTED, "conflict"))
    assert type(error) is ExecgwError
    assert error.code == grpc.StatusCode.ABORTED
    assert str(error) == "ABORTED: conflict"
    bare = from_rpc_error(grpc.RpcError())
    assert (bare.code, bare.details) == (grpc.StatusCode.UNKNOWN, "")


def test_errors_survive_pickling() -> None:
    for error in (InvalidArgument("bad qty"), ExecgwError("conflict", grpc.StatusCode.ABORTED)):
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), copy.code, copy.details) == (type(error), error.code, error.details)


def test_the_default_jitter_leaves_the_module_level_random_alone() -> None:
    """A strategy that seeds `random` for its own reproducibility keeps its sequence
    however often the client retries: the jitter draws from a generator of its own."""
    random.seed(7)
    expected = [random.random() for _ in range(3)]
    random.seed(7)
    policy = RetryPolicy()
    draws = [policy.jitter() for _ in range(50)]
    assert [random.random() for _ in range(3)] == expected
    assert len(set(draws)) == 50
    assert all(0.0 <= d < 1.0 for d in draws)
