"""Helpers for the telemetry tests: spans recorded in memory, and ways to find them.

The gateway's spans go through the process-wide OpenTelemetry SDK provider (the engine
and the core use module-level tracers), so the tests install one provider once, with
one recorder that keeps spans only while a test has armed it: spans of the rest of the
suite are not kept. Nothing here waits on the wall clock; spans are ended before the
RPC that made them answers, except the journal commit's, which ends before the batch
answers too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind

from execgw.v1 import gateway_pb2, market_data_pb2

GATEWAY = gateway_pb2.DESCRIPTOR.services_by_name["ExecutionGateway"].full_name
MARKET = market_data_pb2.DESCRIPTOR.services_by_name["MarketData"].full_name
# Every RPC of both services, as their span names.
ALL_RPCS = sorted(
    f"{service.full_name}/{method.name}"
    for module in (gateway_pb2, market_data_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
)


def rpc(method: str) -> str:
    service = MARKET if method in ("PublishQuotes", "GetQuote") else GATEWAY
    return f"{service}/{method}"


class Recorder(SpanProcessor):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReadableSpan] = []
        self.armed = False

    def on_end(self, span: ReadableSpan) -> None:
        if self.armed:
            with self._lock:
                self._spans.append(span)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()

    @property
    def spans(self) -> list[ReadableSpan]:
        with self._lock:
            return list(self._spans)

    def named(self, name: str, kind: SpanKind | None = None) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name and kind in (None, s.kind)]

    def one(self, name: str, kind: SpanKind | None = None) -> ReadableSpan:
        found = self.named(name, kind)
        assert len(found) == 1, (name, [(s.name, s.kind) for s in self.spans])
        return found[0]

    def server(self, method: str) -> ReadableSpan:
        """The one server span of `method` (the client's span of it has the same name)."""
        return self.one(rpc(method), SpanKind.SERVER)

    def servers(self, method: str) -> list[ReadableSpan]:
        return self.named(rpc(method), SpanKind.SERVER)

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        return [
            s
            for s in self.spans
            if s.parent is not None and s.parent.span_id == parent.context.span_id
        ]


_recorder: Recorder | None = None
_lock = threading.Lock()


def recorder() -> Recorder:
    """The process's span recorder, on the global SDK provider (installed if need be)."""
    global _recorder
    with _lock:
        if _recorder is None:
            provider = trace.get_tracer_provider()
            if not isinstance(provider, TracerProvider):
                provider = TracerProvider()
                trace.set_tracer_provider(provider)
            assert isinstance(trace.get_tracer_provider(), TracerProvider)
            _recorder = Recorder()
            provider.add_span_processor(_recorder)
        return _recorder


@pytest.fixture
def spans() -> Iterator[Recorder]:
    found = recorder()
    found.clear()
    found.armed = True
    try:
        yield found
    finally:
        found.armed = False
        found.clear()


def attributes(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


def is_child(child: ReadableSpan, parent: ReadableSpan) -> bool:
    return (
        child.parent is not None
        and child.parent.span_id == parent.context.span_id
        and child.context.trace_id == parent.context.trace_id
    )


def names(found: Sequence[ReadableSpan]) -> list[str]:
    return [s.name for s in found]
