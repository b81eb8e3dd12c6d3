"""ExecutionGateway servicer: validates and translates, then awaits the core."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from opentelemetry import trace

from execgw.server.api import auth, convert, paging
from execgw.server.api.errors import abort_for, status_for, unary, write_stream
from execgw.server.api.streaming import FillStream, validate_heartbeat_interval
from execgw.server.api.tracing import rpc_span
from execgw.server.core import GatewayCore
from execgw.server.domain import Order, OrderIntent
from execgw.server.errors import Forbidden, GatewayUnavailable
from execgw.server.instruments import InstrumentRegistry
from execgw.server.journal import Journal
from execgw.server.ledger import OrderPage
from execgw.server.telemetry.spans import tracer
from execgw.server.validation import (
    MAX_ACTOR_LENGTH,
    MAX_REASON_LENGTH,
    InvalidRequest,
    Violations,
    validate_client_order_id,
    validate_filter_values,
    validate_intent,
    validate_order_id,
    validate_strategy_code,
    validate_symbol,
    validate_text,
)
from execgw.v1 import gateway_pb2, gateway_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
# Time kept back from a caller's deadline to answer with the order as it stands.
ACK_WAIT_MARGIN_S = 0.25
# Requests of one SubmitOrders stream in progress at once (read, not yet answered).
SUBMIT_STREAM_IN_FLIGHT = 64


class ExecutionGatewayServicer(gateway_pb2_grpc.ExecutionGatewayServicer):
    def __init__(
        self,
        core: GatewayCore,
        instruments: InstrumentRegistry,
        open_journal: Callable[[], Journal],
        *,
        require_client_order_id: bool = True,
        venue_unavailable: Callable[[], str | None] = lambda: None,
        venue_ack_wait_s: float = 0.0,
    ) -> None:
        """`venue_unavailable` says why the venue cannot take orders now (None: it can);
        `venue_ack_wait_s` is how long SubmitOrder waits for a broker's first answer."""
        self._core = core
        self._instruments = instruments
        self._open_journal = open_journal
        self._require_client_order_id = require_client_order_id
        self._venue_unavailable = venue_unavailable
        self._venue_ack_wait_s = venue_ack_wait_s

    @unary
    async def SubmitOrder(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: gateway_pb2.SubmitOrderRequest, context: Context
    ) -> gateway_pb2.SubmitOrderResponse:
        # The interceptor's server span, which continues the strategy's trace.
        order = await self._submit(request, context, rpc_span())
        return gateway_pb2.SubmitOrderResponse(result=convert.result(order))

    async def SubmitOrders(  # noqa: N802
        self,
        request_iterator: AsyncIterator[gateway_pb2.SubmitOrdersRequest],
        context: Context,
    ) -> AsyncIterator[gateway_pb2.SubmitOrdersResponse]:
        """SubmitOrder per request, answered in request order, at most
        SUBMIT_STREAM_IN_FLIGHT at a time: the next request is read only when a slot is
        free, so a fast sender is held back by flow control, not buffered here."""
        slots = asyncio.Semaphore(SUBMIT_STREAM_IN_FLIGHT)
        answers: asyncio.Queue[asyncio.Task[gateway_pb2.SubmitOrdersResponse] | None]
        answers = asyncio.Queue()

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await slots.acquire()
                    # Each runs at once, so the requests of one stream share a batch.
                    answers.put_nowait(asyncio.create_task(self._submit_one(request, context)))
            finally:
                answers.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (answer := await answers.get()) is not None:
                response = await answer
                slots.release()
                yield response
            # Raises the reader's error: a request that is no valid message aborted the
            # call there (INVALID_ARGUMENT naming it).
            await reader
        finally:
            reader.cancel()

    async def _submit_one(
        self, request: gateway_pb2.SubmitOrdersRequest, context: Context
    ) -> gateway_pb2.SubmitOrdersResponse:
        """One request of a SubmitOrders stream: SubmitOrder's answer, or the status it
        would have ended with, for this request alone."""
        # The key is echoed only when valid: an answer must not carry a caller's
        # unchecked megabytes back (up to 64 answers wait per stream).
        response = gateway_pb2.SubmitOrdersResponse(
            client_order_id=_echoable(request.client_order_id)
        )
        try:
            with tracer.start_as_current_span("execgw.SubmitOrders.request") as span:
                order = await self._submit(request, context, span)
        except Exception as e:
            if isinstance(e, Forbidden):
                await auth.record_denial(e)  # journaled, as SubmitOrder's refusal is
            code, message = status_for(e)
            response.error_code = code.value[0]
            response.error_message = message
        else:
            response.result.CopyFrom(convert.result(order))
            response.client_order_id = order.client_order_id
        return response

    async def _submit(
        self,
        request: gateway_pb2.SubmitOrderRequest | gateway_pb2.SubmitOrdersRequest,
        context: Context,
        span: trace.Span,
    ) -> Order:
        # Not made current: nothing inside starts a span (saves the context switch).
        with tracer.start_span("execgw.stage.validate"):
            found = Violations()  # in field order: the intent's, then the key's
            intent = found.value(self._intent, request)
            found.check(
                validate_client_order_id,
                request.client_order_id,
                required=self._require_client_order_id,
            )
            found.raise_if_any()
        if intent is None:
            raise AssertionError("an invalid intent passed validation")
        # Only once valid: the span never carries a caller's unchecked text.
        span.set_attributes(
            {
                "execgw.client_order_id": request.client_order_id,
                "execgw.symbol": intent.symbol,
                "execgw.strategy_code": intent.strategy_code,
            }
        )
        auth.check_strategy(intent.strategy_code, "intent.strategy_code")
        problem = self._venue_unavailable()
        if problem is not None:
            # Refused before anything is journaled: nothing was sent, a retry is safe.
            raise GatewayUnavailable(problem)
        order = await self._core.submit(intent, request.client_order_id, auth.order_caller())
        # A broker answers later; give it a moment so the caller usually gets its
        # verdict (PLACED, REJECTED with the broker's text) rather than SUBMITTED.
        order = await self._core.wait_for_venue(order, self._ack_wait(context))
        outcome = {"execgw.order_id": order.order_id, "execgw.status": order.status.value}
        if order.reject_reason is not None:
            outcome["execgw.reject_reason"] = order.reject_reason.value
        span.set_attributes(outcome)
        return order

    def _ack_wait(self, context: Context) -> float:
        """The configured wait for a broker's answer, within the caller's own deadline
        (less a margin to answer in), so a short deadline gets SUBMITTED, not an error."""
        remaining = context.time_remaining()
        if remaining is None:
            return self._venue_ack_wait_s
        return max(0.0, min(self._venue_ack_wait_s, remaining - ACK_WAIT_MARGIN_S))

    @unary
    async def CancelOrder(  # noqa: N802
        self, request: gateway_pb2.CancelOrderRequest, context: Context
    ) -> gateway_pb2.CancelOrderResponse:
        validate_order_id(request.order_id)
        order = await self._core.cancel(request.order_id, auth.scope())
        return gateway_pb2.CancelOrderResponse(result=convert.result(order))

    @unary
    async def GetOrder(  # noqa: N802
        self, request: gateway_pb2.GetOrderRequest, context: Context
    ) -> gateway_pb2.GetOrderResponse:
        validate_order_id(request.order_id)
        order = await self._core.get_order(request.order_id, auth.scope())
        return gateway_pb2.GetOrderResponse(result=convert.result(order))

    @unary
    async def ListOrders(  # noqa: N802
        self, request: gateway_pb2.ListOrdersRequest, context: Context
    ) -> gateway_pb2.ListOrdersResponse:
        found = Violations()
        found.check(validate_strategy_code, request.strategy_code, "strategy_code", required=False)
        if request.symbol:
            found.check(validate_symbol, request.symbol, "symbol")
        status = found.value(convert.status, request.status)
        limit = found.value(paging.page_size, request.page_size)
        filters = paging.OrderFilters(request.strategy_code, request.status, request.symbol)
        after = found.value(paging.resume_after, request.page_token, filters)
        found.raise_if_any()
        auth.check_strategy(request.strategy_code, "strategy_code")
        if limit is None or after is None:
            raise AssertionError("an invalid page passed validation")
        orders, more = await self._core.list_orders(
            strategy_code=request.strategy_code,
            status=status,
            symbol=request.symbol,
            after=after,
            limit=limit,
        )
        # Where the next page starts: after every order the engine looked at, on this page
        # or not, so a filter that matches little still moves on (the page may be short).
        resume = orders.scanned_to if isinstance(orders, OrderPage) else ""
        response = gateway_pb2.ListOrdersResponse()
        size = 0
        for index, order in enumerate(orders):
            result = convert.result(order)
            size += result.ByteSize()
            # Always one order, so that paging moves on whatever the orders' size.
            if index and size > paging.MAX_PAGE_BYTES:
                more = True
                resume = response.results[-1].order_id
                break
            response.results.append(result)
        if more:
            resume = resume or response.results[-1].order_id
            response.next_page_token = paging.next_page_token(resume, filters)
        return response

    @unary
    async def GetPositions(  # noqa: N802
        self, request: gateway_pb2.GetPositionsRequest, context: Context
    ) -> gateway_pb2.GetPositionsResponse:
        validate_strategy_code(request.strategy_code, "strategy_code", required=False)
        auth.check_strategy(request.strategy_code, "strategy_code")
        positions = await self._core.positions(request.strategy_code)
        return gateway_pb2.GetPositionsResponse(positions=[convert.position(p) for p in positions])

    async def StreamFills(  # type: ignore[override]  # noqa: N802
        self, request: gateway_pb2.StreamFillsRequest, context: Context
    ) -> None:
        # context.write, not yield: a subscriber that leaves mid-write is a normal end
        # of its stream, handled here rather than logged by gRPC as a servicer error.
        try:
            _validate_stream_request(request)
            # Denied, not narrowed: a subscriber must never believe it sees everything.
            auth.check_strategies(request.strategy_codes, "strategy_codes")
        except (InvalidRequest, Forbidden) as e:
            await abort_for(e, context)
        await write_stream(
            context,
            lambda: FillStream(
                request,
                bus=self._core.bus,
                open_journal=self._open_journal,
                trading_day_of=self._core.trading_day_of,
            ).run(context),
        )

    @unary
    async def GetRiskState(  # noqa: N802
        self, request: gateway_pb2.GetRiskStateRequest, context: Context
    ) -> gateway_pb2.GetRiskStateResponse:
        validate_strategy_code(request.strategy_code, "strategy_code", required=False)
        auth.check_strategy(request.strategy_code, "strategy_code")
        response = convert.risk_state(await self._core.risk_report(request.strategy_code))
        scope = auth.scope()
        if scope is not None:
            # Account-wide breakers govern every strategy; other strategies' are theirs.
            own = [b for b in response.breakers if not b.strategy_code or b.strategy_code in scope]
            del response.breakers[:]
            response.breakers.extend(own)
        return response

    @unary
    async def HaltTrading(  # noqa: N802
        self, request: gateway_pb2.HaltTradingRequest, context: Context
    ) -> gateway_pb2.HaltTradingResponse:
        _validate_kill_switch(request)
        actor = auth.actor(request.actor, context.peer())
        reason = request.reason or "no reason given"
        rpc_span().set_attributes(
            {"execgw.actor": actor, "execgw.strategy_code": request.strategy_code}
        )
        outcome = await self._core.halt(request.strategy_code, actor, reason)
        return gateway_pb2.HaltTradingResponse(
            state=convert.trading_state(outcome.state),
            cancelled_orders=outcome.cancelled_orders,
        )

    @unary
    async def ResumeTrading(  # noqa: N802
        self, request: gateway_pb2.ResumeTradingRequest, context: Context
    ) -> gateway_pb2.ResumeTradingResponse:
        _validate_kill_switch(request)
        actor = auth.actor(request.actor, context.peer())
        reason = request.reason or "no reason given"
        rpc_span().set_attributes(
            {"execgw.actor": actor, "execgw.strategy_code": request.strategy_code}
        )
        outcome = await self._core.resume(request.strategy_code, actor, reason)
        return gateway_pb2.ResumeTradingResponse(
            state=convert.trading_state(outcome.state),
            still_tripped=[b.value for b in outcome.still_tripped],
        )

    @unary
    async def PreviewOrder(  # noqa: N802
        self, request: gateway_pb2.PreviewOrderRequest, context: Context
    ) -> gateway_pb2.PreviewOrderResponse:
        intent = self._intent(request)
        auth.check_strategy(intent.strategy_code, "intent.strategy_code")
        preview = await self._core.preview(intent, auth.order_caller())
        failed = preview.first_failure
        return gateway_pb2.PreviewOrderResponse(
            accepted=failed is None,
            reject_reason=convert.reject_reason(None if failed is None else failed.reason),
            message="" if failed is None else failed.message,
            checks=[
                gateway_pb2.CheckResult(name=c.name.value, passed=c.passed, message=c.message)
                for c in preview.checks
            ],
        )

    def _intent(
        self,
        request: gateway_pb2.SubmitOrderRequest
        | gateway_pb2.SubmitOrdersRequest
        | gateway_pb2.PreviewOrderRequest,
    ) -> OrderIntent:
        """The request's intent, validated exactly as SubmitOrder validates it."""
        if not request.HasField("intent"):
            raise InvalidRequest("intent", "is required")
        return validate_intent(convert.raw_intent(request.intent), self._instruments)


def _validate_stream_request(request: gateway_pb2.StreamFillsRequest) -> None:
    found = Violations()
    # Too many values: one violation for the list, not one per value.
    if found.check(validate_filter_values, list(request.strategy_codes), "strategy_codes"):
        for index, code in enumerate(request.strategy_codes):
            found.check(validate_strategy_code, code, f"strategy_codes[{index}]")
    if found.check(validate_filter_values, list(request.symbols), "symbols"):
        for index, symbol in enumerate(request.symbols):
            found.check(validate_symbol, symbol, f"symbols[{index}]")
    found.check(validate_heartbeat_interval, request.heartbeat_interval_ms)
    found.raise_if_any()


def _validate_kill_switch(
    request: gateway_pb2.HaltTradingRequest | gateway_pb2.ResumeTradingRequest,
) -> None:
    found = Violations()
    found.check(validate_strategy_code, request.strategy_code, "strategy_code", required=False)
    found.check(validate_text, request.reason, "reason", MAX_REASON_LENGTH)
    found.check(validate_text, request.actor, "actor", MAX_ACTOR_LENGTH)
    found.raise_if_any()


def _echoable(client_order_id: str) -> str:
    try:
        validate_client_order_id(client_order_id)
    except InvalidRequest:
        return ""
    return client_order_id
