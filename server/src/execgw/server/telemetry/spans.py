"""The gateway's own spans, made for a fraction of what the SDK's spans cost.

An order makes seven or eight spans (the RPC's, the order's, its stages', the commit's).
The SDK's span costs ~35 µs to start and end on this hardware: a lock per span,
attribute values validated one by one into a BoundedAttributes, the sampler consulted
for every child, a second ReadableSpan copied at the end. With traces on, that alone
took a third of the gateway's throughput.

`GatewayTracer` makes the same spans for the global SDK provider, through the same
sampler, id generator, resource, limits and span processors (so exporters, the batch
processor and a test's in-memory recorder all see ordinary ReadableSpans), at ~5 µs:
- a `RecordedSpan` is the ReadableSpan handed to the processors, with no copy;
- it has no lock: a span of the gateway is only touched by the task that made it;
- attribute values are the gateway's own (strings, numbers, booleans), bounded in
  length as the provider's limits say, not revalidated;
- a child of a sampled local span skips the sampler when the sampler is parent-based
  with the default `local_parent_sampled` (always on): the answer is known.

Without an SDK provider (telemetry off) it hands out the API's non-recording spans, as
`trace.get_tracer` would.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from random import Random
from time import time_ns
from types import TracebackType
from typing import Any, NamedTuple, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes, AttributeValue

from execgw.server.telemetry import scope as scopes
from execgw.server.telemetry.tracing import ScopeSampler

log = logging.getLogger(__name__)

_UNSET = Status(StatusCode.UNSET)


class _Backend(NamedTuple):
    """What one SDK provider makes spans with."""

    provider: TracerProvider
    sampler: Sampler
    processor: SpanProcessor
    resource: Resource
    ids: IdGenerator
    scope: InstrumentationScope
    # The provider's ids come from the SDK's default generator (random bits): the
    # gateway draws them itself (_IDS).
    random_ids: bool
    # Longest string attribute value kept; None: no limit.
    max_length: int | None
    max_attributes: int
    max_events: int
    max_links: int
    # The sampler would sample every child of a sampled local span: no need to ask it.
    children_follow_parent: bool
    # Nor for a root, or a child of a sampled remote span.
    roots_sampled: bool
    # The sampler adds the scope's attributes itself (else a span processor does).
    stamps_scope: bool


def _started(
    backend: _Backend,
    name: str,
    own: SpanContext,
    parent: SpanContext | None,
    kind: SpanKind,
    found: dict[str, AttributeValue],
    links: Sequence[Link],
    start_time: int | None,
    context: otel_context.Context | None,
) -> RecordedSpan:
    """The span made and handed to the processors' on_start."""
    if len(found) > backend.max_attributes:  # the SDK keeps the latest
        found = dict(_latest(list(found.items()), backend.max_attributes))
    span = RecordedSpan(
        backend,
        name,
        own,
        parent,
        kind,
        found,
        links,
        time_ns() if start_time is None else start_time,
    )
    backend.processor.on_start(span, parent_context=context)  # type: ignore[arg-type]
    return span


def _plain_parent_based(sampler: Sampler) -> ParentBased | None:
    """The sampler as a ParentBased whose answers are ParentBased's own (not a subclass
    with its own should_sample, which must be asked), under our ScopeSampler or not."""
    if type(sampler) is ScopeSampler:
        sampler = sampler.delegate
    if isinstance(sampler, ParentBased) and type(sampler).should_sample is (
        ParentBased.should_sample
    ):
        return sampler
    return None


def _follows_parent(sampler: Sampler) -> bool:
    found = _plain_parent_based(sampler)
    return found is not None and getattr(found, "_local_parent_sampled", None) is ALWAYS_ON


def _samples_roots(sampler: Sampler) -> bool:
    """Whether the sampler samples every root span and every child of a sampled remote
    parent, adding no attributes of its own (ParentBased's defaults)."""
    found = _plain_parent_based(sampler)
    return (
        found is not None
        and getattr(found, "_root", None) is ALWAYS_ON
        and getattr(found, "_remote_parent_sampled", None) is ALWAYS_ON
    )


_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)
_SAMPLED_RANDOM = trace.TraceFlags(trace.TraceFlags.SAMPLED | trace.TraceFlags.RANDOM_TRACE_ID)


def _stamp_scope(
    backend: _Backend, found: dict[str, AttributeValue], context: otel_context.Context
) -> None:
    """What ScopeSampler would add: the scope's values, which win over the span's."""
    if backend.stamps_scope:
        scope = context.get(scopes.KEY)
        if isinstance(scope, scopes.Scope):
            found.update(scope.stamp)


# Where the gateway's random ids come from when the provider's generator is the SDK's
# default (random bits): the same draw, from a generator of its own. The module-level
# `random` the SDK's generator uses is shared with the rest of the process (a test
# framework watching it, an application seeding it); the gateway's spans leave it alone.
_IDS = Random()


def _random_id(bits: int) -> int:
    """`bits` random bits, never 0 (the invalid id): as the SDK's generator draws."""
    while True:
        drawn = _IDS.getrandbits(bits)
        if drawn:
            return drawn


def _span_id(backend: _Backend) -> int:
    return _random_id(64) if backend.random_ids else backend.ids.generate_span_id()


def _trace_id(backend: _Backend) -> int:
    return _random_id(128) if backend.random_ids else backend.ids.generate_trace_id()


def _limit(value: int | None) -> int:
    """A count limit as SpanLimits resolves it: None is no limit."""
    return sys.maxsize if value is None else value


class RecordedSpan(ReadableSpan, trace.Span):
    """A recording span of the gateway: the ReadableSpan its processors receive."""

    # What every span starts with, held by the class: fewer fields to set per span.
    _instrumentation_info = None
    _end_time: int | None = None
    _status = _UNSET
    # A list of its own once the span has an event.
    _events: Sequence[Event] = ()
    _links: tuple[Link, ...] = ()

    def __init__(
        self,
        backend: _Backend,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, AttributeValue],
        links: Sequence[Link],
        start_time: int,
    ) -> None:
        # ReadableSpan's fields, set here rather than through its __init__ (which would
        # make a Resource when given none, among other things).
        self._name = name
        self._context = context
        self._kind = kind
        self._instrumentation_scope = backend.scope
        self._parent = parent
        self._start_time = start_time
        self._attributes = self._values = attributes
        if links:
            self._links = _latest(links, backend.max_links)
        self._resource = backend.resource
        self._backend = backend

    # -- trace.Span

    def get_span_context(self) -> SpanContext:
        return cast(SpanContext, self._context)  # set from a SpanContext, never None

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if self._end_time is not None:
            return
        attributes = self._values
        limit = self._backend.max_length
        if type(value) is str:  # the commonest value: no call to _bounded
            bounded: Any = value if limit is None or len(value) <= limit else value[:limit]
        else:
            bounded = _bounded(value, limit)
        if bounded is None or (
            key not in attributes and len(attributes) >= self._backend.max_attributes
        ):
            return
        attributes[key] = bounded

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._end_time is not None or len(self._events) >= self._backend.max_events:
            return
        bounded = None
        if attributes:
            limit = self._backend.max_length
            bounded = {
                k: cut for k, v in attributes.items() if (cut := _bounded(v, limit)) is not None
            }
        events = self._events
        if not isinstance(events, list):
            events = self._events = []
        events.append(Event(name, bounded, timestamp=time_ns() if timestamp is None else timestamp))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if self._end_time is None and len(self._links) < self._backend.max_links:
            self._links = (*self._links, Link(context, attributes))

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # As the SDK's span: OK is final, UNSET is no change.
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        kind = type(exception)
        module = kind.__module__
        found: dict[str, AttributeValue] = {
            "exception.type": kind.__qualname__
            if module in ("", "builtins")
            else f"{module}.{kind.__qualname__}",
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            found.update(attributes)
        self.add_event("exception", found, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = time_ns() if end_time is None else end_time
        self._backend.processor.on_end(self)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if exc_val is not None and self.is_recording():
            self.record_exception(exc_val, escaped=True)
            self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        self.end()


_PRIMITIVES = (str, bool, int, float)


def _latest(items: Sequence[Any], limit: int) -> tuple[Any, ...]:
    """The last `limit` items, as the SDK keeps them (a limit of 0 keeps none)."""
    return tuple(items[len(items) - limit :]) if limit > 0 else ()


def _bounded_all(
    attributes: Mapping[str, AttributeValue], limit: int | None
) -> dict[str, AttributeValue]:
    found: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        # Strings (most values) within the limit, numbers as they are.
        if type(value) is str:
            found[key] = value if limit is None or len(value) <= limit else value[:limit]
        elif type(value) in _PRIMITIVES:
            found[key] = value
        elif (cut := _bounded(value, limit)) is not None:
            found[key] = cut
    return found


def _bounded(value: Any, limit: int | None) -> Any:
    """A valid attribute value, strings cut to `limit`; None for one the SDK would drop
    (a None, a mapping, an object): the exporters encode only these types."""
    if isinstance(value, str):
        return value if limit is None or len(value) <= limit else value[:limit]
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, bytes):
        return _bounded(value.decode("utf-8", errors="replace"), limit)
    if isinstance(value, list | tuple):
        # A copy: a caller's list changed later must not change the span.
        items = tuple(_bounded(v, limit) for v in value)
        return items if all(v is not None for v in items) else None
    return None


# What the API hands out while no provider is set, and whether the environment names a
# provider for it to load on first use (then it must be asked each time).
_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
_PROXY = (
    None
    if _PROVIDER_FROM_ENV or getattr(trace, "_TRACER_PROVIDER", None) is not None
    else trace.get_tracer_provider()
)


class GatewayTracer:
    """Starts the gateway's spans; the subset of `trace.Tracer` the gateway uses."""

    def __init__(
        self, name: str, version: str | None = None, provider: trace.TracerProvider | None = None
    ) -> None:
        """`provider`: this one rather than the global provider (tests)."""
        self._name = name
        self._version = version
        self._provider = provider
        # The backend of the provider last seen (the global provider rarely changes), or
        # the tracer of a provider that is not the SDK's (spans that do not record).
        self._backend: _Backend | None = None
        self._fallback: tuple[trace.TracerProvider, trace.Tracer] | None = None

    def _resolve(self) -> _Backend | trace.Tracer:
        # The global provider as the API keeps it: get_tracer_provider() also reads the
        # environment on every call until one is set, which is every span with tracing off.
        provider = self._provider or getattr(trace, "_TRACER_PROVIDER", None)
        if provider is None:
            fallback = self._fallback
            if fallback is not None and fallback[0] is _PROXY and not _PROVIDER_FROM_ENV:
                return fallback[1]  # none set yet (tracing off): spans that do not record
            provider = trace.get_tracer_provider()
        backend = self._backend
        if backend is not None and backend.provider is provider:
            return backend
        fallback = self._fallback
        if fallback is not None and fallback[0] is provider:
            return fallback[1]
        sdk = provider.get_tracer(self._name, self._version)
        if not isinstance(provider, TracerProvider) or not isinstance(sdk, SdkTracer):
            self._fallback = (provider, sdk)
            return sdk
        processor = getattr(sdk, "span_processor", None)
        instrumentation = getattr(sdk, "_instrumentation_scope", None)
        limits = getattr(sdk, "_span_limits", None)
        if processor is None or instrumentation is None or limits is None:
            # An SDK this module does not know: its own spans, at its own cost.
            log.warning("unknown OpenTelemetry SDK tracer layout: using the SDK's spans")
            self._fallback = (provider, sdk)
            return sdk
        backend = self._backend = _Backend(
            provider=provider,
            sampler=sdk.sampler,
            processor=processor,
            resource=sdk.resource,
            ids=sdk.id_generator,
            random_ids=type(sdk.id_generator) is RandomIdGenerator,
            scope=instrumentation,
            max_length=limits.max_span_attribute_length
            if limits.max_span_attribute_length is not None
            else limits.max_attribute_length,
            max_attributes=_limit(limits.max_span_attributes),
            max_events=_limit(limits.max_events),
            max_links=_limit(limits.max_links),
            children_follow_parent=_follows_parent(sdk.sampler),
            roots_sampled=_samples_roots(sdk.sampler),
            stamps_scope=isinstance(sdk.sampler, ScopeSampler),
        )
        return backend

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, AttributeValue] | None = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
    ) -> trace.Span:
        backend = self._resolve()
        if not isinstance(backend, _Backend):
            return backend.start_span(name, context, kind, attributes, links, start_time=start_time)
        links = links or ()
        holder = otel_context.get_current() if context is None else context
        parent_span = holder.get(_SPAN_KEY)
        if (
            type(parent_span) is RecordedSpan
            and parent_span._backend is backend
            and backend.children_follow_parent
        ):
            known: SpanContext = parent_span._context  # type: ignore[assignment]
            if known[3] & _SAMPLED:  # trace_flags, read as SpanContext's tuple holds it
                return self._child(
                    backend, name, known, holder, context, kind, attributes, links, start_time
                )
        parent = trace.get_current_span(context).get_span_context()
        if not parent.is_valid:
            parent_context: SpanContext | None = None
            trace_id = _trace_id(backend)
        else:
            parent_context = parent
            trace_id = parent.trace_id
        limit = backend.max_length
        found = _bounded_all(attributes, limit) if attributes else {}
        trace_state: TraceState | None
        if (
            parent_context is not None
            and backend.children_follow_parent
            and not parent.is_remote
            and parent.trace_flags.sampled
        ):
            flags = parent.trace_flags
            trace_state = parent.trace_state
            _stamp_scope(backend, found, holder)
        elif backend.roots_sampled and (
            parent_context is None or (parent.is_remote and parent.trace_flags.sampled)
        ):
            # The sampler's answer is known too: a root or a sampled remote parent is
            # sampled (ParentBased's defaults), with the parent's trace state.
            if parent_context is None:
                random = backend.ids.is_trace_id_random()
                trace_state = None
            else:
                random = parent.trace_flags.random_trace_id
                trace_state = parent.trace_state
            flags = _SAMPLED_RANDOM if random else _SAMPLED
            _stamp_scope(backend, found, holder)
        else:
            result = backend.sampler.should_sample(context, trace_id, name, kind, attributes, links)
            if parent_context is None:
                random = backend.ids.is_trace_id_random()
            else:
                random = parent_context.trace_flags.random_trace_id
            sampled = result.decision is Decision.RECORD_AND_SAMPLE
            flags = trace.TraceFlags(
                (trace.TraceFlags.SAMPLED if sampled else 0)
                | (trace.TraceFlags.RANDOM_TRACE_ID if random else 0)
            )
            if result.decision is Decision.DROP:
                span_id = _span_id(backend)
                return trace.NonRecordingSpan(
                    SpanContext(trace_id, span_id, False, flags, result.trace_state)
                )
            trace_state = result.trace_state
            # The sampler's answer: the span's own attributes as given (kept as bounded
            # above) and what the sampler adds or replaces, which wins as in the SDK.
            given = attributes or {}
            for key, value in (result.attributes or {}).items():
                if key in given and value is given[key]:
                    continue
                if (cut := _bounded(value, limit)) is not None:
                    found[key] = cut
        own = SpanContext(trace_id, _span_id(backend), False, flags, trace_state)
        return _started(backend, name, own, parent_context, kind, found, links, start_time, context)

    def _child(
        self,
        backend: _Backend,
        name: str,
        parent: SpanContext,
        holder: otel_context.Context,
        context: otel_context.Context | None,
        kind: SpanKind,
        attributes: Mapping[str, AttributeValue] | None,
        links: Sequence[Link],
        start_time: int | None,
    ) -> RecordedSpan:
        """start_span for the commonest span: a child of a sampled span of this tracer,
        under a sampler that samples such children. Nothing to look up: the trace, its
        flags and state are the parent's, the scope is in the context at hand."""
        found = _bounded_all(attributes, backend.max_length) if attributes else {}
        _stamp_scope(backend, found, holder)
        span_id = _span_id(backend)
        # SpanContext's own constructor validates ids a generator already made valid.
        own = tuple.__new__(
            SpanContext,
            # The parent's trace id, flags and state, read as its tuple holds them.
            (parent[0], span_id, False, parent[3], parent[4], True),
        )
        return _started(backend, name, own, parent, kind, found, links, start_time, context)

    def start_as_current_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, AttributeValue] | None = None,
        links: Sequence[Link] = (),
    ) -> _Current:
        """The span, current inside the block and ended after it; an exception that
        leaves the block is recorded on it and sets its status, as the SDK does."""
        return _Current(self.start_span(name, context, kind, attributes, links))


class _Current:
    """`trace.use_span(span, end_on_exit=True)` without its two generator frames."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self._token: object = None

    def __enter__(self) -> trace.Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        span = self._span
        otel_context.detach(self._token)  # type: ignore[arg-type]
        # As use_span: Exception only (GeneratorExit and the like are no errors).
        if isinstance(exc_val, Exception) and span.is_recording():
            span.record_exception(exc_val)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        span.end()


# The gateway's spans (the engine's, the core's, the interceptor's) all come from here.
tracer = GatewayTracer("execgw.server")
