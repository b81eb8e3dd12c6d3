"""Spans of the shapes the export process receives, for its tests."""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from execgw.server.telemetry import scope as scopes
from execgw.server.telemetry.spans import GatewayTracer, RecordedSpan
from execgw.server.telemetry.tracing import ScopeSampler

REMOTE = SpanContext(
    0x0AF7651916CD43DD8448EB211C80319C,
    0x00F067AA0BA902B7,
    True,
    TraceFlags(TraceFlags.SAMPLED),
    TraceState([("vendor", "v1"), ("other", "x")]),
)


class Tag(str):
    """A str of an application's own: the export process could not import its class."""


# A local parent's context, sampled.
SAMPLED = SpanContext(0x1F, 0x2F, False, TraceFlags(TraceFlags.SAMPLED))


def gateway_spans() -> list[ReadableSpan]:
    """The gateway's own spans, of every shape an order's trace has and a few more."""
    provider = TracerProvider(
        sampler=ScopeSampler(), resource=Resource({"service.name": "execgw", "n": 3})
    )
    recorded = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    tracer = GatewayTracer("execgw.test", "1.2", provider=provider)
    token = otel_context.attach(
        scopes.in_scope(
            scopes.Scope("rehearsal-1", "live", True),
            trace.set_span_in_context(trace.NonRecordingSpan(REMOTE)),
        )
    )
    try:
        with tracer.start_as_current_span(
            "rpc",
            kind=SpanKind.SERVER,
            attributes={"rpc.method": "SubmitOrder", "n": 7, "f": 1.5, "b": False},
        ) as rpc:
            with tracer.start_as_current_span("order", attributes={"tags": ("a", "b")}) as order:
                order.add_event("execgw.risk.near_limit", {"execgw.breaker": "max_loss"})
                order.add_event("bare")
                order.set_status(Status(StatusCode.ERROR, "broker said no"))
            tracer.start_span(
                "commit",
                links=[trace.Link(rpc.get_span_context(), {"why": "batch"}), trace.Link(REMOTE)],
                start_time=10,
            ).end(end_time=20)
            rpc.set_status(StatusCode.OK)
    finally:
        otel_context.detach(token)
    root = tracer.start_span("root", context=otel_context.Context())
    root.end()
    spans = list(recorded.get_finished_spans())
    assert all(isinstance(span, RecordedSpan) for span in spans)
    return spans
