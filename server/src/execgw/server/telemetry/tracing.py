"""Where spans go: nowhere, the console, a JSON-lines file, or an OTLP/gRPC collector.

Spans are created through the OpenTelemetry API everywhere (the engine and the core
hold module-level tracers of the global provider), so the SDK provider is the global
one, installed once per process. What a gateway adds to it is a span pipeline (an
exporter behind a batch processor), attached when it starts and flushed and detached
when it stops; and, once per provider, the scope processor that stamps every span with
the session, mode and dry_run of the work it belongs to (telemetry.scope).

A process that installed its own SDK provider first (a test, or an application that
embeds the gateway) keeps it: the gateway attaches to it instead.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import msgspec
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
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, StatusCode
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from execgw.server.config import ConfigError, TelemetryConfig
from execgw.server.telemetry import scope as scopes
from execgw.server.telemetry.batching import SpanBatcher
from execgw.server.telemetry.jsonl_lines import (
    LineFormatter,
    PlainEvent,
    PlainLink,
    PlainSpan,
    iso,
)
from execgw.server.telemetry.span_writer import SpanWriter, frame

log = logging.getLogger(__name__)
# Longest span attribute value kept (longer ones are cut), whoever sent it.
MAX_ATTRIBUTE_LENGTH = 256

# How long a stopping gateway waits for its last spans to be exported.
FLUSH_TIMEOUT_MS = 5_000
# Spans waiting for the exporter at most (unless OTEL_BSP_MAX_QUEUE_SIZE says); past it
# new spans are dropped, never waited for.
SPAN_QUEUE_SIZE = 16_384
# Seconds between exports of a quiet gateway (unless OTEL_BSP_SCHEDULE_DELAY says): the
# SDK's 5 s left a new user's first `execgw trace summary` with nothing to read. A busy
# gateway exports every 512 spans anyway.
EXPORT_DELAY_S = 1.0
# Seconds a stopping gateway waits for the span writer process to write what it has.
WRITER_STOP_S = 10.0


class JsonLinesSpanExporter(SpanExporter):
    """One JSON object per finished span, appended to a file an operator can grep and
    `execgw trace summary` reads.

    The objects are those of the SDK's ReadableSpan.to_json (name, context, kind,
    parent_id, start_time, end_time, status, attributes, events, links, resource),
    encoded at a fraction of its cost (jsonl_lines). With `writer_process` (the
    gateway's exporter) they are formatted and written by a process of their own
    (span_writer), which takes the work off the interpreter the order path runs in;
    if that process cannot start or dies, spans are written here instead."""

    def __init__(self, path: Path, *, writer_process: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()
        self._encoder = msgspec.json.Encoder()
        self._formatter = LineFormatter()
        # Each resource's line ending, encoded once (the same on every span), and the
        # index the writer process knows it by.
        self._resources: dict[int, tuple[Resource, str, int]] = {}
        self._writer: SpanWriter | None = None
        self._file: IO[bytes] | None = None
        self._closed = False
        if writer_process:
            try:
                self._writer = SpanWriter(path)
            except OSError as e:
                log.warning("cannot start the span writer process (%s): spans written here", e)
        if self._writer is None:
            self._file = path.open("ab")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if self._closed:
                return SpanExportResult.FAILURE
            writer = self._writer
            if writer is not None and writer.alive:
                sent = self._send(writer, spans)
                if sent is not None:
                    return sent
            return self._write(self._lines(spans).encode())

    def _send(self, writer: SpanWriter, spans: Sequence[ReadableSpan]) -> SpanExportResult | None:
        """Spans to the writer process; None when it is gone (write them here)."""
        frames: list[bytes] = []
        items: list[Any] = []
        for span in spans:
            ending, index, fresh = self._ending(span.resource)
            if fresh:
                frames.append(frame(["r", index, ending]))
            plain = _plain(span, wire=True)
            if plain is None:
                items.append(self._general_line(span) + ending)
            else:
                items.append((*plain, index))
        try:
            frames.append(frame(["s", items]))
        except (OverflowError, TypeError, ValueError):
            # A value msgpack cannot carry (an int past 64 bits): these spans as lines.
            frames.append(frame(["s", [self._lines(spans)]]))
        if writer.send(b"".join(frames)):
            return SpanExportResult.SUCCESS
        return None

    def _lines(self, spans: Sequence[ReadableSpan]) -> str:
        parts: list[str] = []
        add = parts.append
        for span in spans:
            plain = _plain(span, wire=False)
            add(self._general_line(span) if plain is None else self._formatter.line(*plain))
            # The entry's closing brace gives way to the resource, already encoded.
            add(self._ending(span.resource)[0])
        return "".join(parts)

    def _general_line(self, span: ReadableSpan) -> str:
        return self._encoder.encode(self._entry(span))[:-1].decode()

    def _write(self, lines: bytes) -> SpanExportResult:
        if self._file is None:
            self._file = self._path.open("ab")
        try:
            self._file.write(lines)
            self._file.flush()
        except OSError as e:  # a full disk loses spans, never an order
            log.warning("cannot write spans to %s: %s", self._path, e)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def _entry(self, span: ReadableSpan) -> dict[str, Any]:
        parent = span.parent
        return {
            "name": span.name,
            "context": _context(span.context),
            "kind": _KINDS[span.kind],
            "parent_id": None if parent is None else f"0x{parent.span_id:016x}",
            "start_time": iso(span.start_time),
            "end_time": iso(span.end_time),
            "status": _status(span),
            "attributes": _attributes(span),
            "events": [
                {
                    "name": event.name,
                    "timestamp": iso(event.timestamp),
                    "attributes": dict(event.attributes or {}),
                }
                for event in span.events
            ],
            "links": [
                {"context": _context(link.context), "attributes": dict(link.attributes or {})}
                for link in span.links
            ],
        }

    def _ending(self, resource: Resource) -> tuple[str, int, bool]:
        """`,"resource":{...}}` and the line's end for spans of `resource`, its index,
        and whether it is new."""
        cached = self._resources.get(id(resource))
        if cached is not None and cached[0] is resource:
            return cached[1], cached[2], False
        value = {"attributes": dict(resource.attributes), "schema_url": resource.schema_url}
        ending = ',"resource":' + self._encoder.encode(value).decode() + "}\n"
        index = len(self._resources)
        self._resources[id(resource)] = (resource, ending, index)
        return ending, index, True

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            if self._writer is not None:
                self._writer.close(WRITER_STOP_S)
            if self._file is not None:
                self._file.close()
                self._file = None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Whether every span exported so far is in the file."""
        with self._lock:
            writer = self._writer
            if writer is None or not writer.alive:
                return True
            return writer.flush(timeout_millis / 1000) or not writer.alive


_KINDS = {kind: str(kind) for kind in SpanKind}
_KIND_FIELDS = {kind: f',"kind":"{kind}","parent_id":' for kind in SpanKind}


def _plain(span: ReadableSpan, *, wire: bool) -> PlainSpan | None:
    """The span as jsonl_lines formats it, for the gateway's own spans (their attributes
    in a plain dict) with no trace state and no status, and links without trace state:
    every span of an order. Any other span is None and takes the general path. `wire`:
    for msgpack (trace ids as bytes)."""
    values = getattr(span, "_values", None)
    context = span._context
    status = span._status
    end = span._end_time
    if (
        type(values) is not dict
        or context is None
        or context.trace_state
        or status.status_code is not StatusCode.UNSET
        or status.description
        or end is None
    ):
        return None
    events: list[PlainEvent] = []
    for event in span._events:
        if event.timestamp is None:
            return None
        events.append((event.name, event.timestamp, dict(event.attributes or {})))
    links: list[PlainLink] = []
    for link in span._links:
        linked = link.context
        if linked.trace_state:
            return None
        links.append(
            (
                linked.trace_id.to_bytes(16) if wire else linked.trace_id,
                linked.span_id,
                dict(link.attributes or {}),
            )
        )
    parent = span._parent
    return (
        span._name,
        context.trace_id.to_bytes(16) if wire else context.trace_id,
        context.span_id,
        span._kind.value,
        None if parent is None else parent.span_id,
        span._start_time or 0,
        end,
        values,
        events,
        links,
    )


_NO_TRACE_STATE = repr(TraceState())


def _context(context: SpanContext | None) -> dict[str, str] | None:
    if context is None:
        return None
    state = context.trace_state
    return {
        "trace_id": f"0x{context.trace_id:032x}",
        "span_id": f"0x{context.span_id:016x}",
        "trace_state": repr(state) if state else _NO_TRACE_STATE,
    }


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    """The span's attributes as a dict: the gateway's own spans hold one already (read
    here after the span ended, when nothing changes it any more)."""
    own = getattr(span, "_values", None)
    return own if isinstance(own, dict) else dict(span.attributes or {})


_UNSET_STATUS = {"status_code": StatusCode.UNSET.name}


def _status(span: ReadableSpan) -> dict[str, str]:
    if span.status.status_code is StatusCode.UNSET and not span.status.description:
        return _UNSET_STATUS
    status: dict[str, str] = {"status_code": span.status.status_code.name}
    if span.status.description:
        status["description"] = span.status.description
    return status


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

    @property
    def members(self) -> tuple[SpanProcessor, ...]:
        return self._members

    @property
    def starters(self) -> tuple[SpanProcessor, ...]:
        return self._starters

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


def span_exporter(config: TelemetryConfig) -> SpanExporter | None:
    if config.exporter == "none":
        return None
    if config.exporter == "console":
        return ConsoleSpanExporter()
    if config.exporter == "jsonl":
        return JsonLinesSpanExporter(Path(config.path), writer_process=True)
    check_otlp_protocol("TRACES")
    # Imported here: only a gateway that exports over OTLP pays for loading it.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    # Endpoint, headers, TLS, compression and timeout: OTEL_EXPORTER_OTLP_[TRACES_]*.
    return OTLPSpanExporter()


class SpanPipeline:
    """One gateway's exporter, attached to the global provider while the gateway runs."""

    def __init__(self, config: TelemetryConfig, resource: Resource) -> None:
        exporter = span_exporter(config)
        self._processor: SpanBatcher | None = None
        self._pipelines = _pipelines(resource, create=exporter is not None)
        if exporter is not None and self._pipelines is not None:
            # Exports on its own thread and drops spans (never blocks) when its queue is
            # full: OTEL_BSP_* tune it. Its queue here holds a few seconds of a busy
            # day's spans, not the SDK's 2048.
            self._processor = SpanBatcher(
                exporter, max_queue_size=SPAN_QUEUE_SIZE, schedule_delay_s=EXPORT_DELAY_S
            )
            self._pipelines.attach(self._processor)

    @property
    def exporting(self) -> bool:
        return self._processor is not None

    def flush(self, timeout_millis: int = FLUSH_TIMEOUT_MS) -> bool:
        """Export every span ended so far; False when that did not finish in time."""
        return True if self._processor is None else self._processor.force_flush(timeout_millis)

    def close(self) -> None:
        """Export what is left and let go of the exporter (its file, its channel)."""
        if self._processor is None or self._pipelines is None:
            return
        self._pipelines.detach(self._processor)
        self._processor.force_flush(FLUSH_TIMEOUT_MS)
        self._processor.shutdown()
        self._processor = None
