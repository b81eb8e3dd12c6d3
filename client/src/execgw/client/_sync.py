"""Blocking client, for strategies that run in threads or plain scripts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Self, TypeVar

import grpc

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
    auth_metadata,
    channel_credentials,
    check_timeout,
    check_token_transport,
    client_order_id_or_new,
    is_capacity_refusal,
    list_orders_request,
    quote_batch_size,
    quote_requests,
    should_reconnect,
    stream_fills_request,
    submit_orders_request,
)
from execgw.client._common import channel_options as merge_channel_options
from execgw.client._tracing import ClientTelemetry
from execgw.client.errors import Unavailable, from_rpc_error, rpc_error_code
from execgw.v1 import gateway_pb2, gateway_pb2_grpc, market_data_pb2, market_data_pb2_grpc
from execgw.v1.market_data_pb2 import Quote
from execgw.v1.orders_pb2 import ExecutionEvent, ExecutionResult, OrderIntent, Position

__all__ = ["ExecutionClient"]

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class ExecutionClient:
    """Blocking client of the execgw gateway; one instance per process is enough.

    ``timeout`` is the deadline of each attempt of a unary call. Unary calls are
    retried ``retries`` times after UNAVAILABLE (and DEADLINE_EXCEEDED when
    ``retry_deadline_exceeded``), waiting an exponentially growing, jittered
    ``backoff`` capped at ``max_backoff``; ``sleep`` is injectable so tests do not
    wait. Failures raise ``execgw.client.errors.ExecgwError`` subclasses.

    ``auth`` is the bearer token of a gateway with authentication on (``execgw token
    new`` makes one); it goes out as ``authorization: Bearer <auth>`` metadata on every
    call, retries and stream reconnects included, and never appears in the repr or in
    an error.

    TLS, the way httpx offers it: ``verify`` is the CA bundle (a path or PEM bytes)
    the gateway's certificate must chain to, or True for gRPC's default roots;
    ``cert`` is a (certificate chain, private key) pair for a gateway that requires
    client certificates (mTLS). Giving either, or ``tls=True``, makes the channel TLS;
    with none of them it is plaintext, for a gateway on loopback. ``verify=False``
    is refused: gRPC cannot skip checking the gateway's certificate.

    Telemetry: ``session_id`` names the session of every call (``x-execgw-session``
    metadata; the gateway's spans, exemplars and log lines of the call carry it);
    ``with execgw.client.session("id"):`` names another for the calls inside. With
    opentelemetry-api installed (``execgw-client[tracing]``) each call attempt is a
    CLIENT span under the caller's current span, sent as W3C ``traceparent``.
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
        sleep: Callable[[float], object] = time.sleep,
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
            grpc.insecure_channel(target, options=options)
            if credentials is None
            else grpc.secure_channel(target, credentials, options=options)
        )
        self._gateway = gateway_pb2_grpc.ExecutionGatewayStub(self._channel)
        self._market = market_data_pb2_grpc.MarketDataStub(self._channel)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        tls = ", tls=True" if self.tls else ""
        return f"ExecutionClient({self.target!r}, timeout={self.timeout}{tls})"

    def close(self) -> None:
        """Close the channel; open streams end with CANCELLED."""
        self._channel.close()

    def wait_ready(self, timeout: float) -> None:
        """Block until the channel is connected; raise Unavailable after ``timeout`` seconds."""
        check_timeout(timeout)
        future = grpc.channel_ready_future(self._channel)
        try:
            future.result(timeout=timeout)
        except grpc.FutureTimeoutError:
            future.cancel()  # otherwise it keeps a connectivity subscription alive
            raise Unavailable(f"{self.target} not ready after {timeout}s") from None

    def _unary(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Req, _Resp],
        request: _Req,
        timeout: float | None,
    ) -> _Resp:
        check_timeout(timeout)
        deadline = self.timeout if timeout is None else timeout
        retries_done = 0
        while True:
            attempt = self._telemetry.start(request)
            try:
                response = method(request, timeout=deadline, metadata=attempt.metadata)
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
            self._sleep(self.retry_policy.delay(retries_done))
            retries_done += 1

    def submit(
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
        return self._unary(self._gateway.SubmitOrder, request, timeout).result

    def submit_orders(
        self, orders: Iterable[OrderToSubmit], *, timeout: float | None = None
    ) -> Iterator[gateway_pb2.SubmitOrdersResponse]:
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
        requests = errors.watch(submit_orders_request(order) for order in orders)
        traced = self._telemetry.start_submit_orders()
        call = self._gateway.SubmitOrders(requests, timeout=timeout, metadata=traced.metadata)
        try:
            yield from call
        except grpc.RpcError as exc:
            traced.end(errors.error or exc)
            errors.reraise()
            raise from_rpc_error(exc) from exc
        except BaseException as exc:
            traced.end(exc)
            call.cancel()
            raise
        traced.end()

    def cancel(self, order_id: str, *, timeout: float | None = None) -> ExecutionResult:
        """Cancel a resting order; the result says whether it took effect."""
        request = gateway_pb2.CancelOrderRequest(order_id=order_id)
        return self._unary(self._gateway.CancelOrder, request, timeout).result

    def get_order(self, order_id: str, *, timeout: float | None = None) -> ExecutionResult:
        request = gateway_pb2.GetOrderRequest(order_id=order_id)
        return self._unary(self._gateway.GetOrder, request, timeout).result

    def list_orders(
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
            page = self.list_orders_page(
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

    def list_orders_page(
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
        return self._unary(self._gateway.ListOrders, request, timeout)

    def positions(
        self, strategy_code: str | None = None, *, timeout: float | None = None
    ) -> list[Position]:
        request = gateway_pb2.GetPositionsRequest(strategy_code=strategy_code or "")
        return list(self._unary(self._gateway.GetPositions, request, timeout).positions)

    def risk_state(
        self, strategy_code: str | None = None, *, timeout: float | None = None
    ) -> gateway_pb2.GetRiskStateResponse:
        """Trading states, every counter next to its limit, and tripped breakers."""
        request = gateway_pb2.GetRiskStateRequest(strategy_code=strategy_code or "")
        return self._unary(self._gateway.GetRiskState, request, timeout)

    def halt(
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
        return self._unary(self._gateway.HaltTrading, request, timeout)

    def resume(
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
        return self._unary(self._gateway.ResumeTrading, request, timeout)

    def preview(
        self, intent: OrderIntent, *, timeout: float | None = None
    ) -> gateway_pb2.PreviewOrderResponse:
        """Every check SubmitOrder would run, with nothing placed or counted."""
        request = gateway_pb2.PreviewOrderRequest(intent=intent)
        return self._unary(self._gateway.PreviewOrder, request, timeout)

    def get_quote(self, symbol: str, *, timeout: float | None = None) -> Quote:
        request = market_data_pb2.GetQuoteRequest(symbol=symbol)
        return self._unary(self._market.GetQuote, request, timeout).quote

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
    ) -> Iterator[ExecutionEvent]:
        """Yield fills (and order updates / risk events if asked), with no deadline.

        ``from_sequence`` replays from the gateway's journal first. With ``reconnect``
        (the default) a dropped stream, a gateway restart or a slow-consumer cut-off
        reconnects with backoff and resumes right after the last event accounted for,
        never yielding an event twice. A RESOURCE_EXHAUSTED without a resume point (the
        gateway's call or stream limit, or an event over a size limit) is retried with
        backoff 5 times in a row, then raises. OUT_OF_RANGE (history no longer retained)
        and other errors raise. Heartbeats are consumed unless ``heartbeats`` is set.
        Breaking out of the loop cancels the call.
        """
        cursor = StreamCursor(
            stream_fills_request(
                strategy_codes, symbols, from_sequence, include_order_updates, include_risk_events
            )
        )
        return self._stream_fills(cursor, reconnect=reconnect, heartbeats=heartbeats)

    def _stream_fills(
        self, cursor: StreamCursor, *, reconnect: bool, heartbeats: bool
    ) -> Iterator[ExecutionEvent]:
        # Separate generator so argument errors raise at the call, not at first next().
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
                for response in call:
                    attempt = 0  # the stream works again: the next failure backs off anew
                    if cursor.take(response.event, heartbeats=heartbeats):
                        yield response.event
            except grpc.RpcError as exc:
                error = exc
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
            self._sleep(self.retry_policy.delay(attempt))
            attempt += 1

    def publish_quotes(
        self,
        quotes: Iterable[Quote],
        *,
        batch_size: int | None = None,
        timeout: float | None = None,
    ) -> int:
        """Stream quotes to the gateway; return how many it applied.

        ``quotes`` may be a live feed (a generator), so there is no deadline unless
        ``timeout`` is given, and the call is not retried: a replayed quote could
        fill resting orders a second time. A collection (list, tuple) goes out 100
        quotes per request; any other iterable one per request, so a live feed is
        never held back waiting for a batch to fill. ``batch_size`` overrides both.
        An exception raised by ``quotes`` propagates as itself. Quotes refused by the
        gateway's price band are not counted; ``publish_quotes_report`` says which
        and why.
        """
        return self.publish_quotes_report(quotes, batch_size=batch_size, timeout=timeout).accepted

    def publish_quotes_report(
        self,
        quotes: Iterable[Quote],
        *,
        batch_size: int | None = None,
        timeout: float | None = None,
    ) -> market_data_pb2.PublishQuotesResponse:
        """As ``publish_quotes``, returning the whole response: the quotes applied
        and those the price band refused (``refused_count``, ``refused``)."""
        check_timeout(timeout)
        errors = RequestErrors()
        requests = errors.watch(quote_requests(quotes, quote_batch_size(quotes, batch_size)))
        traced = self._telemetry.start_publish()
        try:
            response = self._market.PublishQuotes(
                requests, timeout=timeout, metadata=traced.metadata
            )
        except grpc.RpcError as exc:
            traced.end(errors.error or exc)
            errors.reraise()
            raise from_rpc_error(exc) from exc
        except BaseException as exc:
            traced.end(exc)
            raise
        traced.end()
        return response
