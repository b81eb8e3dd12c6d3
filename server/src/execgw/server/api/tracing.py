"""Telemetry at the edge: one interceptor around every RPC of both services.

For each call it
- continues the caller's trace from W3C `traceparent`/`tracestate` metadata, and reads
  the call's session from `x-execgw-session` (else the configured telemetry.session_id);
  no other metadata is read, so credentials and free text never reach a span;
- opens the server span ("execgw.v1.ExecutionGateway/SubmitOrder", kind SERVER, rpc.*
  attributes) and makes it current for the whole call, streams included: the core
  captures that context with each command, so the engine's "execgw.order" span is its
  child, and every log line of the call carries its trace, span and session ids;
- records the RPC's latency (and SubmitOrder's, by the order's status) with the
  session on the exemplar;
- for an order result (SubmitOrder, CancelOrder, GetOrder), puts the order's execgw.*
  attributes on the span, and logs one INFO line per SubmitOrder and CancelOrder
  outcome.

It is the outermost interceptor, so its span also covers refusals by authentication,
limits and request decoding. Health checking and reflection are not traced.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Iterable
from contextvars import Token
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from execgw.server.api.errors import invalid_argument_status
from execgw.server.api.method_handlers import (
    Context,
    Continuation,
    Handler,
    WrappedHandlers,
    behavior_of,
    rebuild,
)
from execgw.server.telemetry import attributes as attr
from execgw.server.telemetry import scope as scopes
from execgw.server.telemetry.logs import FIELDS_ATTRIBUTE
from execgw.server.telemetry.metrics import GatewayMetrics
from execgw.server.telemetry.spans import tracer
from execgw.server.validation import InvalidRequest
from execgw.v1 import gateway_pb2, market_data_pb2, orders_pb2

log = logging.getLogger("execgw.server.orders")
# One DEBUG line per traced call: method, status and latency, with the trace ids.
rpc_log = logging.getLogger("execgw.server.rpc")

TRACED_SERVICES = frozenset(
    {
        gateway_pb2.DESCRIPTOR.services_by_name["ExecutionGateway"].full_name,
        market_data_pb2.DESCRIPTOR.services_by_name["MarketData"].full_name,
    }
)
# The only metadata this interceptor reads.
TRACE_CONTEXT_KEYS = frozenset({"traceparent", "tracestate"})
_PROPAGATOR = TraceContextTextMapPropagator()
# RPCs whose outcome is an order, logged one INFO line each.
ORDER_OUTCOME_RPCS = frozenset({"SubmitOrder", "CancelOrder"})
# Server span status per OpenTelemetry's RPC conventions: these codes are the server's
# fault; the others are the caller's (or a result) and leave the span unset.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def rpc_span() -> trace.Span:
    """The call's server span (the interceptor's), for a servicer to add attributes to;
    the interceptor ends it."""
    return trace.get_current_span()


@dataclass(slots=True)
class _Call:
    service: str
    method: str
    response: Any = None
    attributes: dict[str, AttributeValue] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.service}/{self.method}"


class _Opened(NamedTuple):
    """A traced call's span, scope and context token, and when it started."""

    span: trace.Span
    scope: scopes.Scope
    token: Token[otel_context.Context]
    started: float


class TelemetryInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, scope: scopes.Scope, metrics: GatewayMetrics) -> None:
        self._scope = scope
        self._metrics = metrics
        self._wrapped = WrappedHandlers()

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        full_name = handler_call_details.method
        found = self._wrapped.get(full_name, handler)
        if found is not None:
            return found
        return self._wrapped.keep(full_name, handler, self._traced(full_name, handler))

    def _traced(self, full_name: str, handler: Handler) -> Handler:
        service, _, method = full_name.lstrip("/").partition("/")
        if service not in TRACED_SERVICES:
            return handler
        inner = behavior_of(handler)
        if inspect.isasyncgenfunction(inner):

            async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
                call = _Call(service, method)
                opened = await self._open(call, context)
                error: BaseException | None = None
                try:
                    async for response in inner(request, context):
                        yield response
                except BaseException as e:
                    error = e
                    raise
                finally:
                    self._close(opened, call, context, error)

            behavior: Any = generator
        elif inspect.iscoroutinefunction(inner):

            async def coroutine(request: Any, context: Context) -> Any:
                call = _Call(service, method)
                opened = await self._open(call, context)
                error: BaseException | None = None
                try:
                    call.response = await inner(request, context)
                    return call.response
                except BaseException as e:
                    error = e
                    raise
                finally:
                    self._close(opened, call, context, error)

            behavior = coroutine
        else:  # a synchronous behavior: none in these services
            return handler
        return rebuild(handler, behavior, request_deserializer=handler.request_deserializer)

    async def _open(self, call: _Call, context: Context) -> _Opened:
        """The call's span, started and current; a malformed session aborts the call
        (INVALID_ARGUMENT) with the span open, so that it is traced too. Written out
        rather than as a context manager: it runs around every call, and an async
        generator's frames cost more than the rest of it."""
        metadata = context.invocation_metadata() or ()
        session, session_ok = _session(metadata, self._scope.session_id)
        scope = self._scope.with_session(session)
        carrier = _trace_carrier(metadata)
        # No trace context: the call starts a trace of its own, under nothing current.
        remote = _PROPAGATOR.extract(carrier) if carrier else otel_context.Context()
        parent = scopes.in_scope(scope, remote)
        span = tracer.start_span(
            call.name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                attr.RPC_SYSTEM: "grpc",
                attr.RPC_SERVICE: call.service,
                attr.RPC_METHOD: call.method,
            },
        )
        opened = _Opened(
            span,
            scope,
            otel_context.attach(trace.set_span_in_context(span, parent)),
            time.perf_counter(),
        )
        if not session_ok:
            try:
                await context.abort_with_status(
                    invalid_argument_status(
                        InvalidRequest(f"metadata[{attr.SESSION_METADATA_KEY}]", attr.SESSION_RULE)
                    )
                )
            except BaseException as e:
                self._close(opened, call, context, e)
                raise
        return opened

    def _close(
        self, opened: _Opened, call: _Call, context: Context, error: BaseException | None
    ) -> None:
        try:
            self._finish(
                call,
                context,
                opened.span,
                opened.scope,
                error,
                time.perf_counter() - opened.started,
            )
        finally:
            opened.span.end()
            otel_context.detach(opened.token)

    def _finish(
        self,
        call: _Call,
        context: Context,
        span: trace.Span,
        scope: scopes.Scope,
        error: BaseException | None,
        elapsed: float,
    ) -> None:
        code = _final_code(context, error)
        span.set_attribute(attr.RPC_GRPC_STATUS_CODE, code.value[0])
        if code in _SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, code.name))
        if error is not None and not isinstance(error, grpc.aio.AbortError | GeneratorExit):
            span.record_exception(error)
        result = _order_result(call.response)
        if result is not None and span.is_recording():
            # What the servicer did not set already (it sets what it knows first).
            present = getattr(span, "attributes", None) or {}
            span.set_attributes(
                {k: v for k, v in order_attributes(result).items() if k not in present}
            )
        if self._metrics.enabled:
            measured: dict[str, AttributeValue] = {
                attr.RPC_SERVICE: call.service,
                attr.RPC_METHOD: call.method,
                attr.RPC_GRPC_STATUS_CODE: code.value[0],
            }
            if call.method == "SubmitOrder" and result is not None:
                measured[attr.STATUS] = _enum_name(_STATUSES, result.status)
                if result.reject_reason:
                    measured[attr.REJECT_REASON] = _enum_name(_REASONS, result.reject_reason)
            if scope.session_id:
                measured[attr.SESSION_ID] = scope.session_id  # the exemplar's, not a label
            self._metrics.rpc_duration.record(elapsed, measured)
        if call.method in ORDER_OUTCOME_RPCS:
            log_order_outcome(call.method, result, code, context, elapsed)
        if rpc_log.isEnabledFor(logging.DEBUG):
            rpc_log.debug("%s %s (%.3f ms)", call.name, code.name, elapsed * 1000)


def _trace_carrier(metadata: Iterable[tuple[str, Any]]) -> dict[str, str]:
    return {
        key: value
        for key, value in metadata
        if key in TRACE_CONTEXT_KEYS and isinstance(value, str)
    }


def _session(metadata: Iterable[tuple[str, Any]], default: str) -> tuple[str, bool]:
    """The call's session, and whether what it sent is a valid one."""
    for key, value in metadata:
        if key == attr.SESSION_METADATA_KEY:
            if isinstance(value, str) and attr.valid_session_id(value):
                return value, True
            return default, False
    return default, True


def _final_code(context: Context, error: BaseException | None) -> grpc.StatusCode:
    if error is not None and not isinstance(error, grpc.aio.AbortError):
        if not isinstance(error, Exception):
            return grpc.StatusCode.CANCELLED  # the call ended under us (the client left)
        return grpc.StatusCode.UNKNOWN
    code: object = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        return _CODES_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    if error is None and context.cancelled():
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.OK


def _order_result(response: Any) -> orders_pb2.ExecutionResult | None:
    result = getattr(response, "result", None)
    return result if isinstance(result, orders_pb2.ExecutionResult) else None


def _names(enum: Any, prefix: str) -> dict[int, str]:
    """An enum's value names without their prefix, as the engine names them (FILLED)."""
    return {v.number: v.name.removeprefix(prefix) for v in enum.DESCRIPTOR.values}


_SIDES = _names(orders_pb2.Side, "SIDE_")
_STATUSES = _names(orders_pb2.OrderStatus, "ORDER_STATUS_")
_REASONS = _names(orders_pb2.RejectReason, "REJECT_REASON_")


def _enum_name(names: dict[int, str], number: int) -> str:
    return names.get(number) or str(number)


def order_attributes(result: orders_pb2.ExecutionResult) -> dict[str, AttributeValue]:
    """An order's span attributes, named and valued as the engine's order span has them."""
    found: dict[str, AttributeValue] = {
        attr.ORDER_ID: result.order_id,
        attr.CLIENT_ORDER_ID: result.client_order_id,
        attr.STRATEGY: result.strategy_code,
        attr.SYMBOL: result.symbol,
        attr.SIDE: _enum_name(_SIDES, result.side),
        attr.QTY: result.qty,
        attr.FILLED_QTY: result.filled_qty,
        attr.STATUS: _enum_name(_STATUSES, result.status),
        attr.DRY_RUN: result.dry_run,
    }
    if result.reject_reason:
        found[attr.REJECT_REASON] = _enum_name(_REASONS, result.reject_reason)
    return found


def log_order_outcome(
    rpc: str,
    result: orders_pb2.ExecutionResult | None,
    code: grpc.StatusCode,
    context: Context,
    elapsed: float,
) -> None:
    """One INFO line for the outcome of a SubmitOrder or CancelOrder call."""
    if not log.isEnabledFor(logging.INFO):
        return
    millis = round(elapsed * 1000, 3)
    if result is None:
        # What the caller got wrong is worth repeating; a failure of the gateway's own
        # (UNAVAILABLE, INTERNAL) has its cause logged where it happened, not here.
        details = "" if code in _SERVER_ERRORS else str(context.details() or "")[:200]
        log.info(
            "%s failed: %s%s (%.3f ms)",
            rpc,
            code.name,
            f" {details}" if details else "",
            millis,
            extra={FIELDS_ATTRIBUTE: {"rpc": rpc, "code": code.name, "ms": millis}},
        )
        return
    fields: dict[str, Any] = {"rpc": rpc, **order_attributes(result), "ms": millis}
    fields = {key.removeprefix("execgw."): value for key, value in fields.items()}
    if result.avg_price_decimal:
        fields["avg_price"] = result.avg_price_decimal
    text = (
        f"order {result.order_id} {fields['status']}"
        + (f" {fields['reject_reason']}" if "reject_reason" in fields else "")
        + f": {fields['side']} {result.qty} {result.symbol} strategy {result.strategy_code}"
        + f" filled {result.filled_qty}"
        + (f" @ {result.avg_price_decimal}" if result.avg_price_decimal else "")
        + (" (dry run)" if result.dry_run else "")
        + (f" - {result.message}" if result.message and "reject_reason" in fields else "")
        + f" [{rpc}, client_order_id {result.client_order_id}, {millis:.3f} ms]"
    )
    log.info("%s", text, extra={FIELDS_ATTRIBUTE: fields})
