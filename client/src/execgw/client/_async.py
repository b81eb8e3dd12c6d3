"""asyncio client: the same API as ``ExecutionClient``, awaited."""

# ASYNC109 prefers asyncio.timeout() over timeout parameters, but a gRPC deadline
# travels to the server and the API must match the sync client's.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
)
from types import TracebackType
from typing import Self, TypeVar

import grpc
import grpc.aio

from execgw.client._common import (
    DEFAULT_BACKOFF,
    DEFAULT_MAX_BACKOFF,
    DEFAULT_RETRIES,
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT,
    ChannelOptions,
    ClientCert,
    OrderToSubmit,
    RequestErrors,
    RetryPolicy,
    StatusLike,
    StreamCursor,
    Verify,
    aquote_requests,
    auth_metadata,
    channel_credentials,
    check_timeout,
    check_token_transport,
    client_order_id_or_new,
    is_capacity_refusal,
    list_orders_request,
    quote_batch_size,
    should_reconnect,
    stream_fills_request,
    submit_orders_request,
)
from execgw.client._common import channel_options as merge_channel_options
from execgw.client._tracing import ClientTelemetry
from execgw.client.errors import Unavailable, error_for_code, from_rpc_error, rpc_error_code
from execgw.v1 import gateway_pb2, gateway_pb2_grpc, market_data_pb2, market_data_pb2_grpc
from execgw.v1.market_data_pb2 import Quote
from execgw.v1.orders_pb2 import ExecutionEvent, ExecutionResult, OrderIntent, Position

__all__ = ["AsyncExecutionClient"]

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class AsyncExecutionClient:
    """asyncio client of the execgw gateway; see ``ExecutionClient`` for the semantics.

    Create it inside the event loop that will use it: a grpc.aio channel is bound
    to the loop it was first used on.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        retry_deadline_exceeded: bool = False,
        channel_options: ChannelOptions | None = None,
        auth: str | None = None,
        tls: bool | None = None,
        verify: Verify | None = None,
        cert: ClientCert | None = None,
        session_id: str | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        check_timeout(timeout)
        self.target = target
        self.timeout = timeout
        self.retry_policy = RetryPolicy(
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            retry_deadline_exceeded=retry_deadline_exceeded,
        )
        self._sleep = sleep
        # `authorization: Bearer <auth>` on every call; never in repr or errors. With
        # it, the session and the trace context (execgw.client._tracing).
        self._telemetry = ClientTelemetry(auth_metadata(auth), session_id)
        options = merge_channel_options(channel_options)
        credentials = channel_credentials(tls=tls, verify=verify, cert=cert)
        self.tls = credentials is not None
        check_token_transport(target, auth, self.tls)
        self._channel = (
            grpc.aio.insecure_channel(target, options=options)
            if credentials is None
            else grpc.aio.secure_channel(target, credentials, options=options)
        )
        self._gateway = gateway_pb2_grpc.ExecutionGatewayStub(self._channel)
        self._market = market_data_pb2_grpc.MarketDataStub(self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        tls = ", tls=True" if self.tls else ""
        return f"AsyncExecutionClient({self.target!r}, timeout={self.timeout}{tls})"

    async def close(self) -> None:
        """Close the channel; open streams end with CANCELLED."""
        await self._channel.close()

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the channel is connected; raise Unavailable after ``timeout`` seconds."""
        check_timeout(timeout)
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except TimeoutError:
            raise Unavailable(f"{self.target} not ready after {timeout}s") from None

    async def _unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp],
        request: _Req,
        timeout: float | None,
    ) -> _Resp:
        check_timeout(timeout)
        deadline = self.timeout if timeout is None else timeout
        retries_done = 0
        while True:
            attempt = self._telemetry.start(request)
            try:
                response = await method(request, timeout=deadline, metadata=attempt.metadata)
            except grpc.RpcError as exc:
                attempt.end(exc)
                if not self.retry_policy.should_retry(rpc_error_code(exc), retries_done):
                    raise from_rpc_error(exc) from exc
            except BaseException as exc:
                attempt.end(exc)
                raise
            else:
                attempt.end()
                return response
            await self._sleep(self.retry_policy.delay(retries_done))
            retries_done += 1

    async def submit(
        self,
        intent: OrderIntent,
        client_order_id: str | None = None,
        *,
        timeout: float | None = None,
    ) -> ExecutionResult:
        """Submit an order; a rejected order is a result with status REJECTED, not an error.

        Every retry sends the same ``client_order_id`` (generated when not given),
        so the gateway places the order at most once however often it is retried.
        """
        request = gateway_pb2.SubmitOrderRequest(
            intent=intent, client_order_id=client_order_id_or_new(client_order_id)
        )
        return (await self._unary(self._gateway.SubmitOrder, request, timeout)).result

    async def submit_orders(
        self,
        orders: Iterable[OrderToSubmit] | AsyncIterable[OrderToSubmit],
        *,
        timeout: float | None = None,
    ) -> AsyncIterator[gateway_pb2.SubmitOrdersResponse]:
        """Submit orders over one SubmitOrders stream, yielding one answer per order in
        the order given: ``(intent, client_order_id)`` pairs, a None id generated.

        Each order is validated, risk-checked and journaled as ``submit`` does; an order
        ``submit`` would have raised for comes back with ``error_code`` and
        ``error_message`` set instead, and the rest go on. The stream is not retried
        (``orders`` may be a live generator): after an error that ends it, resubmit the
        unanswered orders with the same ids, which places each at most once. No deadline
        unless ``timeout`` is given. An exception raised by ``orders`` propagates as itself.
        """
        check_timeout(timeout)
        errors = RequestErrors()
        requests = errors.awatch(_submit_orders_requests(orders))
        traced = self._telemetry.start_submit_orders()
        call = self._gateway.SubmitOrders(requests, timeout=timeout, metadata=traced.metadata)
        try:
            async for response in call:
                yield response
        except asyncio.CancelledError as exc:
            traced.end(errors.error or exc)
            errors.reraise()  # grpc.aio cancels the call when the request iterator raises
            raise
        except grpc.RpcError as exc:
            traced.end(errors.error or exc)
            errors.reraise()
            raise from_rpc_error(exc) from exc
        except BaseException as exc:
            traced.end(exc)
            call.cancel()
            raise
        traced.end()

    async def cancel(self, order_id: str, *, timeout: float | None = None) -> ExecutionResult:
        """Cancel a resting order; the result says whether it took effect."""
        request = gateway_pb2.CancelOrderRequest(order_id=order_id)
        return (await self._unary(self._gateway.CancelOrder, request, timeout)).result

    async def get_order(self, order_id: str, *, timeout: float | None = None) -> ExecutionResult:
        request = gateway_pb2.GetOrderRequest(order_id=order_id)
        return (await self._unary(self._gateway.GetOrder, request, timeout)).result

    async def list_orders(
        self,
        *,
        strategy_code: str | None = None,
        status: StatusLike | None = None,
        symbol: str | None = None,
        page_size: int = 0,
        timeout: float | None = None,
    ) -> list[ExecutionResult]:
        """Today's orders, oldest first; None filters match everything.

        Follows every page (``page_size`` orders each; 0 is the gateway's default), one
        call per page, each with its own ``timeout`` and retries. Orders placed while
        it pages come last or in a later listing, never twice.
        """
        results: list[ExecutionResult] = []
        page_token = ""
        while True:
            page = await self.list_orders_page(
                strategy_code=strategy_code,
                status=status,
                symbol=symbol,
                page_size=page_size,
                page_token=page_token,
                timeout=timeout,
            )
            results.extend(page.results)
            page_token = page.next_page_token
            if not page_token:
                return results

    async def list_orders_page(
        self,
        *,
        strategy_code: str | None = None,
        status: StatusLike | None = None,
        symbol: str | None = None,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> gateway_pb2.ListOrdersResponse:
        """One page of today's orders: ``results`` and the ``next_page_token`` to pass
        back, with the same filters, for the next page ("" after the last one). A page
        may hold fewer than ``page_size`` orders, even none, and still not be the last:
        the gateway looks at a bounded number of orders per page."""
        request = list_orders_request(strategy_code, status, symbol, page_size, page_token)
        return await self._unary(self._gateway.ListOrders, request, timeout)

    async def positions(
        self, strategy_code: str | None = None, *, timeout: float | None = None
    ) -> list[Position]:
        request = gateway_pb2.GetPositionsRequest(strategy_code=strategy_code or "")
        return list((await self._unary(self._gateway.GetPositions, request, timeout)).positions)

    async def risk_state(
        self, strategy_code: str | None = None, *, timeout: float | None = None
    ) -> gateway_pb2.GetRiskStateResponse:
        """Trading states, every counter next to its limit, and tripped breakers."""
        request = gateway_pb2.GetRiskStateRequest(strategy_code=strategy_code or "")
        return await self._unary(self._gateway.GetRiskState, request, timeout)

    async def halt(
        self,
        reason: str,
        *,
        actor: str = "",
        strategy_code: str | None = None,
        timeout: float | None = None,
    ) -> gateway_pb2.HaltTradingResponse:
        """The kill switch: nothing new passes, resting orders in scope are cancelled."""
        request = gateway_pb2.HaltTradingRequest(
            reason=reason, actor=actor, strategy_code=strategy_code or ""
        )
        return await self._unary(self._gateway.HaltTrading, request, timeout)

    async def resume(
        self,
        reason: str,
        *,
        actor: str = "",
        strategy_code: str | None = None,
        timeout: float | None = None,
    ) -> gateway_pb2.ResumeTradingResponse:
        """Clear the halt and the tripped breakers of the account or one strategy."""
        request = gateway_pb2.ResumeTradingRequest(
            reason=reason, actor=actor, strategy_code=strategy_code or ""
        )
        return await self._unary(self._gateway.ResumeTrading, request, timeout)

    async def preview(
        self, intent: OrderIntent, *, timeout: float | None = None
    ) -> gateway_pb2.PreviewOrderResponse:
        """Every check SubmitOrder would run, with nothing placed or counted."""
        request = gateway_pb2.PreviewOrderRequest(intent=intent)
        return await self._unary(self._gateway.PreviewOrder, request, timeout)

    async def get_quote(self, symbol: str, *, timeout: float | None = None) -> Quote:
        request = market_data_pb2.GetQuoteRequest(symbol=symbol)
        return (await self._unary(self._market.GetQuote, request, timeout)).quote

    def stream_fills(
        self,
        *,
        strategy_codes: Iterable[str] = (),
        symbols: Iterable[str] = (),
        from_sequence: int = 0,
        include_order_updates: bool = False,
        include_risk_events: bool = False,
        reconnect: bool = True,
        heartbeats: bool = False,
    ) -> AsyncGenerator[ExecutionEvent, None]:
        """Async-iterate fills (and order updates / risk events if asked).

        Replay, reconnection and heartbeats behave as in ``ExecutionClient.stream_fills``.
        Wrap in ``contextlib.aclosing`` to cancel the call promptly when you stop early.
        """
        cursor = StreamCursor(
            stream_fills_request(
                strategy_codes, symbols, from_sequence, include_order_updates, include_risk_events
            )
        )
        return self._stream_fills(cursor, reconnect=reconnect, heartbeats=heartbeats)

    async def _stream_fills(
        self, cursor: StreamCursor, *, reconnect: bool, heartbeats: bool
    ) -> AsyncGenerator[ExecutionEvent, None]:
        attempt = 0
        # Capacity refusals in a row with no progress in between (see should_reconnect).
        refusals = 0
        while True:
            position = cursor.position
            request = cursor.resume_request()
            traced = self._telemetry.start(request)
            call = self._gateway.StreamFills(request, metadata=traced.metadata)
            error: grpc.RpcError | None = None
            try:
                async for response in call:
                    attempt = 0  # the stream works again: the next failure backs off anew
                    if cursor.take(response.event, heartbeats=heartbeats):
                        yield response.event
            except grpc.RpcError as exc:
                error = exc
            except asyncio.CancelledError as exc:
                traced.end(exc)
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # our caller is being cancelled: let it
                # The channel was closed under the stream: report it like the sync client.
                raise error_for_code(grpc.StatusCode.CANCELLED, "the client was closed") from None
            except BaseException as exc:  # the caller stopped iterating, or worse
                traced.end(exc)
                raise
            finally:
                call.cancel()
            traced.end(error)
            if error is None:
                return  # the gateway ended the stream on purpose
            if cursor.position > position:
                refusals = 0  # events came: the next refusal is a new one
            if not reconnect or not should_reconnect(error, refusals):
                raise from_rpc_error(error) from error
            if is_capacity_refusal(error):
                refusals += 1
            await self._sleep(self.retry_policy.delay(attempt))
            attempt += 1

    async def publish_quotes(
        self,
        quotes: Iterable[Quote] | AsyncIterable[Quote],
        *,
        batch_size: int | None = None,
        timeout: float | None = None,
    ) -> int:
        """Stream quotes to the gateway; return how many it applied.

        Batching, deadline and retry behave as in ``ExecutionClient.publish_quotes``;
        an async iterable counts as a live feed. Quotes refused by the gateway's price
        band are not counted; ``publish_quotes_report`` says which and why.
        """
        response = await self.publish_quotes_report(quotes, batch_size=batch_size, timeout=timeout)
        return response.accepted

    async def publish_quotes_report(
        self,
        quotes: Iterable[Quote] | AsyncIterable[Quote],
        *,
        batch_size: int | None = None,
        timeout: float | None = None,
    ) -> market_data_pb2.PublishQuotesResponse:
        """As ``publish_quotes``, returning the whole response: the quotes applied
        and those the price band refused (``refused_count``, ``refused``)."""
        check_timeout(timeout)
        errors = RequestErrors()
        requests = errors.awatch(aquote_requests(quotes, quote_batch_size(quotes, batch_size)))
        traced = self._telemetry.start_publish()
        try:
            response = await self._market.PublishQuotes(
                requests, timeout=timeout, metadata=traced.metadata
            )
        except asyncio.CancelledError as exc:
            traced.end(errors.error or exc)
            # grpc.aio cancels the call when the request iterator raises.
            errors.reraise()
            raise
        except grpc.RpcError as exc:
            traced.end(errors.error or exc)
            errors.reraise()
            raise from_rpc_error(exc) from exc
        except BaseException as exc:
            traced.end(exc)
            raise
        traced.end()
        return response


async def _submit_orders_requests(
    orders: Iterable[OrderToSubmit] | AsyncIterable[OrderToSubmit],
) -> AsyncIterator[gateway_pb2.SubmitOrdersRequest]:
    if isinstance(orders, AsyncIterable):
        async for order in orders:
            yield submit_orders_request(order)
    else:
        for order in orders:
            yield submit_orders_request(order)
