"""Trace context and sessions on the clients' calls.

Every attempt of every call (retries and stream reconnects included) goes through
`ClientTelemetry.start`, the clients' own thin interceptor: it adds the session
metadata and, when opentelemetry-api is importable, opens a CLIENT span named as
OpenTelemetry's RPC conventions say ("execgw.v1.ExecutionGateway/SubmitOrder") under
the caller's current span and sends it as W3C `traceparent`, so the gateway's spans
become children of the strategy's. Without an OpenTelemetry SDK in the strategy's
process the span is a no-op and the caller's own trace context (if any) is what goes
out; without opentelemetry-api at all only the session is sent.

opentelemetry-api is optional (`pip install execgw-client[tracing]`): the client works
without it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeAlias

import grpc

from execgw.v1 import gateway_pb2, market_data_pb2

try:
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    TRACING = True
except ImportError:  # opentelemetry-api is not installed: sessions only
    TRACING = False

__all__ = ["SESSION_METADATA_KEY", "ClientTelemetry", "check_session_id", "session"]

# The metadata key that names a call's session (the gateway's telemetry.session_id
# otherwise): an attribute on the gateway's spans, exemplars and log lines of the call.
SESSION_METADATA_KEY = "x-execgw-session"
_SESSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")

Metadata: TypeAlias = tuple[tuple[str, str], ...]

_current_session: ContextVar[str | None] = ContextVar("execgw_client_session", default=None)

# Request message full name -> (service full name, method), from the descriptors.
_METHODS: dict[str, tuple[str, str]] = {
    method.input_type.full_name: (service.full_name, method.name)
    for module in (gateway_pb2, market_data_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
}
_SUBMIT_ORDERS = ("execgw.v1.ExecutionGateway", "SubmitOrders")
_PUBLISH_QUOTES = (
    market_data_pb2.DESCRIPTOR.services_by_name["MarketData"].full_name,
    "PublishQuotes",
)


def check_session_id(session_id: str) -> str:
    if not isinstance(session_id, str) or not _SESSION_RE.fullmatch(session_id):
        raise ValueError(
            "session_id must be 1-64 characters of A-Z a-z 0-9 . _ : - starting with a "
            f"letter or digit, got {session_id!r}"
        )
    return session_id


@contextmanager
def session(session_id: str) -> Iterator[None]:
    """Calls made inside (in this thread, or this asyncio task and the tasks it starts)
    belong to `session_id`, whatever session their client was made with::

        with execgw.client.session("rehearsal-2026-11-27"):
            gw.submit(market("NSE:INFY", "BUY", 10, strategy_code="A"))
    """
    token = _current_session.set(check_session_id(session_id))
    try:
        yield
    finally:
        _current_session.reset(token)


class CallTrace:
    """One call attempt: the metadata to send, and its client span (if tracing)."""

    __slots__ = ("_span", "metadata")

    def __init__(self, metadata: Metadata | None, span: Any = None) -> None:
        self.metadata = metadata
        self._span = span

    def end(self, error: BaseException | None = None) -> None:
        """End the span with the call's status: OK, or the error's."""
        span, self._span = self._span, None
        if span is None:
            return
        if error is None:
            code = grpc.StatusCode.OK
        elif isinstance(error, grpc.RpcError):
            code = getattr(error, "code", lambda: grpc.StatusCode.UNKNOWN)()
        elif isinstance(error, Exception):
            code = grpc.StatusCode.UNKNOWN
        else:  # GeneratorExit, CancelledError: the caller stopped the call
            code = grpc.StatusCode.CANCELLED
        if isinstance(code, grpc.StatusCode):
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                span.set_status(otel_trace.Status(otel_trace.StatusCode.ERROR, code.name))
        span.end()


class ClientTelemetry:
    """What the clients add to each call: their auth metadata, the session, the trace."""

    __slots__ = ("_base", "session_id")

    def __init__(self, base: Metadata | None, session_id: str | None) -> None:
        self._base = base
        self.session_id = None if session_id is None else check_session_id(session_id)

    def start(self, request: Any, *, method: tuple[str, str] | None = None) -> CallTrace:
        """Begin one attempt of the call whose request is `request` (or name it with
        `method`, (service, method), for a request stream)."""
        session_id = _current_session.get() or self.session_id
        metadata = self._base or ()
        if session_id:
            metadata = (*metadata, (SESSION_METADATA_KEY, session_id))
        if not TRACING:
            return CallTrace(metadata or None)
        service, name = method or _METHODS.get(
            request.DESCRIPTOR.full_name, ("execgw.v1", type(request).__name__)
        )
        attributes: dict[str, Any] = {
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": name,
        }
        if session_id:
            attributes["execgw.session_id"] = session_id
        span = _tracer.start_span(
            f"{service}/{name}", kind=otel_trace.SpanKind.CLIENT, attributes=attributes
        )
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=otel_trace.set_span_in_context(span))
        if carrier:
            metadata = (*metadata, *carrier.items())
        return CallTrace(metadata or None, span)

    def start_publish(self) -> CallTrace:
        return self.start(None, method=_PUBLISH_QUOTES)

    def start_submit_orders(self) -> CallTrace:
        return self.start(None, method=_SUBMIT_ORDERS)


if TRACING:
    _tracer = otel_trace.get_tracer("execgw.client")
    _PROPAGATOR = TraceContextTextMapPropagator()
