"""Where spans go: nowhere, the console, a JSON-lines file, or an OTLP/gRPC collector.

Spans are created through the OpenTelemetry API everywhere (the engine and the core
hold module-level tracers of the global provider), so the SDK provider is the global
one, installed once per process. What a gateway adds to it is a span pipeline (an
exporter, running in an export process of its own, behind a batch processor), attached
when it starts and flushed and detached when it stops; and, once per provider, the
scope processor that stamps every span with the session, mode and dry_run of the work
it belongs to (telemetry.scope).

A process that installed its own SDK provider first (a test, or an application that
embeds the gateway) keeps it: the gateway attaches to it instead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    ReadableSpan,
    Span,
    SpanLimits,
    SpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from execgw.server.config import ConfigError, TelemetryConfig
from execgw.server.telemetry import scope as scopes
from execgw.server.telemetry.batching import SpanBatcher
from execgw.server.telemetry.export_process import ProcessSpanExporter

log = logging.getLogger(__name__)
# Longest span attribute value kept (longer ones are cut), whoever sent it.
MAX_ATTRIBUTE_LENGTH = 256

# How long a stopping gateway waits for its last spans to be exported.
FLUSH_TIMEOUT_MS = 5_000
# Seconds from the start of a stop by which the last batches are handed over to the
# export process (or lost); it then has export_process.EXIT_WAIT_S to export them.
# With the gateway's own stop (its grace for calls, the core, the metrics), a stop
# stays within the service unit's TimeoutStopSec (60 s).
SPANS_STOP_S = 15.0
# Spans waiting for the exporter at most (unless OTEL_BSP_MAX_QUEUE_SIZE says); past it
# new spans are dropped, never waited for.
SPAN_QUEUE_SIZE = 16_384
# Seconds between exports of a quiet gateway (unless OTEL_BSP_SCHEDULE_DELAY says): the
# SDK's 5 s left a new user's first `execgw trace summary` with nothing to read. A busy
# gateway exports every 512 spans anyway.
EXPORT_DELAY_S = 1.0


class ScopeSampler(Sampler):
    """Samples as `delegate` does (every trace, or as its parent was) and gives each
    span, as it is made, the session, mode and dry_run of its scope: the cheapest place
    to add attributes to every span, the engine's and the core's included."""

    def __init__(self, delegate: Sampler | None = None) -> None:
        self._delegate = delegate or ParentBased(ALWAYS_ON)

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        result = self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )
        found = scopes.current(parent_context)
        if found is None or result.decision is Decision.DROP:
            return result
        if not result.attributes:
            # The usual case (the delegate adds none): the scope's attributes as they
            # are, read-only already, with no dict built per span.
            return SamplingResult(result.decision, found.attributes, result.trace_state)
        merged = dict(result.attributes)
        merged.update(found.attributes)
        return SamplingResult(result.decision, merged, result.trace_state)

    @property
    def delegate(self) -> Sampler:
        return self._delegate

    def get_description(self) -> str:
        return f"ScopeSampler{{{self._delegate.get_description()}}}"


def _env_sampler() -> Sampler:
    """The sampler OTEL_TRACES_SAMPLER (and _ARG) names; by default every trace the
    caller did not sample out (parentbased_always_on), as the SDK would choose."""
    return TracerProvider(shutdown_on_exit=False).sampler


class ScopeSpanProcessor(SpanProcessor):
    """The same stamp for a provider the gateway did not make (and so whose sampler is
    not a ScopeSampler): set as each span starts."""

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        found = scopes.current(parent_context)
        if found is not None:
            span.set_attributes(found.attributes)


class GatewayPipelines(SpanProcessor):
    """The span processors of the gateways running in this process, attached and
    detached as they start and stop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: tuple[SpanProcessor, ...] = ()
        # The members whose on_start does something (a batch processor's does not): the
        # call is made for every span.
        self._starters: tuple[SpanProcessor, ...] = ()

    def attach(self, processor: SpanProcessor) -> None:
        with self._lock:
            self._members = (*self._members, processor)
            self._starters = _starters(self._members)

    def detach(self, processor: SpanProcessor) -> None:
        with self._lock:
            self._members = tuple(p for p in self._members if p is not processor)
            self._starters = _starters(self._members)

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        for member in self._starters:
            member.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for member in self._members:
            member.on_end(span)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return all(member.force_flush(timeout_millis) for member in self._members)


def _starters(members: tuple[SpanProcessor, ...]) -> tuple[SpanProcessor, ...]:
    idle = (SpanProcessor.on_start, BatchSpanProcessor.on_start)
    return tuple(m for m in members if type(m).on_start not in idle)


_install_lock = threading.Lock()
# The pipelines installed on each SDK provider, by the provider's id (and the provider,
# so that a recycled id cannot match).
_installed: dict[int, tuple[TracerProvider, GatewayPipelines]] = {}


def _pipelines(resource: Resource, *, create: bool) -> GatewayPipelines | None:
    """The span pipelines of the global SDK provider; with `create`, install one if the
    process has none yet. None when there is no SDK provider to attach to."""
    with _install_lock:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            if not create:
                return None
            if not isinstance(provider, trace.ProxyTracerProvider):
                log.warning(
                    "the process already has a tracer provider that is not the OpenTelemetry "
                    "SDK's (%s): the gateway's spans cannot be exported",
                    type(provider).__name__,
                )
                return None
            provider = TracerProvider(
                resource=resource,
                sampler=ScopeSampler(_env_sampler()),
                # Attribute values come from callers too: none may grow a span (and the
                # export queue behind it) beyond this many characters.
                span_limits=SpanLimits(max_attribute_length=MAX_ATTRIBUTE_LENGTH),
            )
            trace.set_tracer_provider(provider)
        entry = _installed.get(id(provider))
        if entry is not None and entry[0] is provider:
            return entry[1]
        pipelines = GatewayPipelines()
        if not isinstance(provider.sampler, ScopeSampler):
            provider.add_span_processor(ScopeSpanProcessor())
        provider.add_span_processor(pipelines)
        _installed[id(provider)] = (provider, pipelines)
        return pipelines


def check_otlp_protocol(*signals: str) -> None:
    """The OTLP exporter here speaks gRPC: a protocol variable asking for another is a
    configuration mistake, said at start-up rather than by spans that never arrive."""
    names = ["OTEL_EXPORTER_OTLP_PROTOCOL", *(f"OTEL_EXPORTER_OTLP_{s}_PROTOCOL" for s in signals)]
    for name in names:
        value = os.environ.get(name, "").strip()
        if value and value != "grpc":
            raise ConfigError(
                f"{name}={value!r}: telemetry.exporter otlp speaks OTLP over gRPC only; "
                "unset it or set it to grpc"
            )


def span_exporter(config: TelemetryConfig) -> ProcessSpanExporter | None:
    """The configured exporter, running in an export process of its own
    (telemetry.export_process); None for none."""
    if config.exporter == "none":
        return None
    if config.exporter == "otlp":
        check_otlp_protocol("TRACES")
    return ProcessSpanExporter(config.exporter, config.path if config.exporter == "jsonl" else "")


class SpanPipeline:
    """One gateway's exporter, attached to the global provider while the gateway runs."""

    def __init__(self, config: TelemetryConfig, resource: Resource) -> None:
        self._processor: SpanBatcher | None = None
        self._pipelines = pipelines = _pipelines(resource, create=config.exporter != "none")
        # Only with somewhere to attach it: an export process nothing feeds would outlive
        # the gateway's stop (close() has no processor to shut down).
        self._exporter = exporter = None if pipelines is None else span_exporter(config)
        if exporter is not None and pipelines is not None:
            # Exports on its own thread and drops spans (never blocks) when its queue is
            # full: OTEL_BSP_* tune it. Its queue here holds a few seconds of a busy
            # day's spans, not the SDK's 2048.
            self._processor = SpanBatcher(
                exporter, max_queue_size=SPAN_QUEUE_SIZE, schedule_delay_s=EXPORT_DELAY_S
            )
            pipelines.attach(self._processor)

    @property
    def exporting(self) -> bool:
        return self._processor is not None

    def flush(self, timeout_millis: int = FLUSH_TIMEOUT_MS) -> bool:
        """Export every span ended so far; False when that did not finish in time."""
        return True if self._processor is None else self._processor.force_flush(timeout_millis)

    def close(self) -> None:
        """Export what is left and let go of the exporter (its file, its channel)."""
        if self._processor is None or self._pipelines is None or self._exporter is None:
            return
        self._pipelines.detach(self._processor)
        # The batch processor waits up to 30 s for its worker; the worker's batches are
        # handed over by then or lost, so that a stop stays short.
        self._exporter.stopping_by(time.monotonic() + SPANS_STOP_S)
        self._processor.force_flush(FLUSH_TIMEOUT_MS)
        self._processor.shutdown()
        self._processor = None
