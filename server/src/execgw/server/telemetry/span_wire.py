"""Finished spans as they cross to the span export process: tuples of builtins,
marshalled a batch at a time, and rebuilt there as ReadableSpans for its exporter (the
jsonl exporter writes most of them straight from the tuples: jsonl.export_wire).

A span becomes a tuple of builtins (ints, strings, dicts, tuples) and is marshalled in
~2 µs, against ~5 for its JSON line and ~26 for its OTLP message: that encoding, the
exporter's real work, runs in the export process, off the gateway's interpreter lock.
What the spans of a batch share (their resource and instrumentation scope) crosses
once per export process, by key. marshal takes builtins only, of their exact types, so
nothing crosses that the export process would have to import; a value of another type
(a str subclass) crosses as its plain value (builtins_only).

Everything an exporter reads crosses: name, context, parent, kind, times, attributes,
events, links, status, resource, scope, and the counts of attributes, events, links
and event and link attributes the SDK's limits dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.span import DEFAULT_TRACE_STATE, TraceFlags, TraceState
from opentelemetry.util.types import Attributes

# (trace_id, span_id, trace_flags) for a local context without trace state, else
# (trace_id, span_id, is_remote, trace_flags, trace_state as (key, value) pairs)
WireContext = tuple[int, int, int] | tuple[int, int, bool, int, tuple[tuple[str, str], ...]]
# (name, context, parent, kind, start, end, attributes, events, links, status,
#  resource key, scope key, dropped (attributes, events, links))
WireSpan = tuple[Any, ...]
# Where a WireSpan holds its resource's key.
RESOURCE_KEY_AT = 10
# (resources sent for the first time: key -> (attributes, schema_url); scopes sent for
#  the first time: key -> (name, version, schema_url, attributes); the spans)
WireBatch = tuple[
    dict[int, tuple[dict[str, Any], str]],
    dict[int, tuple[str, str | None, str | None, dict[str, Any]]],
    list[WireSpan],
]

_KINDS = {kind.value: kind for kind in SpanKind}
_CODES = {code.value: code for code in StatusCode}
_UNSET = Status(StatusCode.UNSET)
_NO_DROPS = (0, 0, 0)
_PLAIN = (list, tuple)
# Resources and scopes a sender remembers having sent: past this many (a process has a
# handful) it forgets them all and sends each again.
MAX_SHARED = 64


def _context(context: SpanContext) -> WireContext:
    # Read as SpanContext's tuple holds it: (trace_id, span_id, is_remote, flags, state).
    state = context[4]
    if context[2] is False and (state is DEFAULT_TRACE_STATE or not state):
        return (context[0], context[1], int(context[3]))  # a local span's, the usual
    return (context[0], context[1], context[2], int(context[3]), tuple(state.items()))


def _plain(attributes: Attributes | Mapping[str, Any]) -> dict[str, Any] | None:
    """A plain copy; None stays None (to_json writes null for it, {} for an empty one)."""
    return None if attributes is None else dict(attributes)


def _event(event: Event) -> tuple[Any, ...]:
    found = (event.name, _plain(event.attributes), event.timestamp)
    dropped = event.dropped_attributes
    return (*found, dropped) if dropped else found


def _link(link: Link) -> tuple[Any, ...]:
    found = (_context(link.context), _plain(link.attributes))
    dropped = link.dropped_attributes
    return (*found, dropped) if dropped else found


def builtins_only(batch: WireBatch) -> tuple[WireBatch, int]:
    """The batch with every value of a type marshal does not take made a builtin, and
    how many spans it had to leave out: a subclass of str, int or float becomes its
    plain value (an enum mixed with str its value, as str's own methods read it); any
    other object is dropped from the attributes holding it (as the SDK drops a value
    it cannot take), and a span that has one where a name or a number must be is left
    out alone."""
    resources, scopes, spans = batch
    kept = [plain for span in spans if (plain := _plain_value(span)) is not _DROPPED]
    # What spans share is never left out (the receiver must have every key it was
    # told of): a name or version of another type goes as its text.
    shared_resources = {
        key: (_plain_value(attributes), _text(schema_url))
        for key, (attributes, schema_url) in resources.items()
    }
    shared_scopes = {
        key: (_text(name), _text(version), _text(schema_url), _plain_value(attributes))
        for key, (name, version, schema_url, attributes) in scopes.items()
    }
    return (shared_resources, shared_scopes, kept), len(spans) - len(kept)


def _text(value: Any) -> Any:
    """A plain str (or None) as it is; anything else as its text, a plain str too."""
    if value is None or type(value) is str:
        return value
    try:
        return str.__str__(value if isinstance(value, str) else str(value))
    except Exception:  # a __str__ that raises, or returns no str
        return f"<{type(value).__name__}>"


def _plain_value(value: Any) -> Any:
    kind = type(value)
    if value is None or kind in (str, int, float, bool, bytes):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, tuple | list):
        items = [_plain_value(item) for item in value]
        if any(item is _DROPPED for item in items):
            return _DROPPED
        return items if kind is list else tuple(items)
    if isinstance(value, dict):
        found = {_plain_value(k): _plain_value(v) for k, v in value.items()}
        return {k: v for k, v in found.items() if k is not _DROPPED and v is not _DROPPED}
    return _DROPPED


_DROPPED = object()


class SpanSender:
    """Turns batches of finished spans into WireBatches (the exporting thread's side)."""

    def __init__(self) -> None:
        # What the receiver already has, held so that an id cannot be reused meanwhile.
        self._resources: dict[int, Resource] = {}
        self._scopes: dict[int, InstrumentationScope | None] = {}

    def restart(self) -> None:
        """A new receiver has nothing yet."""
        self._resources.clear()
        self._scopes.clear()

    def batch(self, spans: Sequence[ReadableSpan]) -> WireBatch:
        resources: dict[int, tuple[dict[str, Any], str]] = {}
        scopes: dict[int, tuple[str, str | None, str | None, dict[str, Any]]] = {}
        wire = [self._span(span, resources, scopes) for span in spans]
        return resources, scopes, wire

    def _span(
        self,
        span: ReadableSpan,
        resources: dict[int, tuple[dict[str, Any], str]],
        scopes: dict[int, tuple[str, str | None, str | None, dict[str, Any]]],
    ) -> WireSpan:
        resource = span._resource
        resource_key = id(resource)
        if _first_time(self._resources, resource_key, resource):
            resources[resource_key] = (dict(resource.attributes), resource.schema_url)
        scope = span._instrumentation_scope
        scope_key = id(scope)
        if _first_time(self._scopes, scope_key, scope) and scope is not None:
            scopes[scope_key] = (
                scope.name,
                scope.version,
                scope.schema_url,
                dict(scope.attributes or {}),
            )
        context = span._context
        parent = span._parent
        status = span._status
        attributes = span._attributes
        events = span._events
        links = span._links
        if type(attributes) is dict and type(events) in _PLAIN and type(links) in _PLAIN:
            # Plain containers (the gateway's own spans): the SDK's limits dropped nothing.
            drops = _NO_DROPS
        else:
            attributes = _plain(attributes)
            found = (span.dropped_attributes, span.dropped_events, span.dropped_links)
            drops = _NO_DROPS if found == _NO_DROPS else found
        return (
            span._name,
            None if context is None else _context(context),
            None if parent is None else _context(parent),
            span._kind._value_,
            span._start_time,
            span._end_time,
            attributes,
            tuple([_event(e) for e in events]) if events else (),
            tuple([_link(k) for k in links]) if links else (),
            None
            if status.status_code is StatusCode.UNSET and not status.description
            else (status.status_code._value_, status.description),
            resource_key,
            None if scope is None else scope_key,
            drops,
        )


def _first_time(sent: dict[int, Any], key: int, shared: object) -> bool:
    """Whether `shared` (a resource, a scope) is new to the receiver; it is not, from
    now on. Past MAX_SHARED, what was sent is forgotten, and sent again."""
    if sent.get(key) is shared:
        return False
    if len(sent) >= MAX_SHARED:
        sent.clear()
    sent[key] = shared
    return True


class ReceivedResource(Resource):
    """A Resource whose hash is computed once. The OTLP encoder groups each span by its
    resource, hashing it every time, and Resource's hash is a JSON dump of its
    attributes: ~17% of encoding a span. Its attributes never change (a Resource's are
    immutable), so neither does its hash."""

    def __init__(self, attributes: dict[str, Any], schema_url: str | None = None) -> None:
        super().__init__(attributes, schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


class ReceivedSpan(ReadableSpan):
    """A span rebuilt in the export process, with the drop counts it was sent with."""

    _drops = _NO_DROPS

    @property
    def dropped_attributes(self) -> int:
        return self._drops[0]

    @property
    def dropped_events(self) -> int:
        return self._drops[1]

    @property
    def dropped_links(self) -> int:
        return self._drops[2]


_FLAGS = {value: TraceFlags(value) for value in range(256)}


def _span_context(wire: WireContext) -> SpanContext:
    """The context as sent (its flags made once per value)."""
    if len(wire) == 3:
        trace_id, span_id, flags = wire
        return SpanContext(trace_id, span_id, False, _FLAGS[flags], DEFAULT_TRACE_STATE)
    trace_id, span_id, is_remote, flags, items = wire
    return SpanContext(trace_id, span_id, is_remote, _FLAGS[flags], TraceState(list(items)))


class SpanReceiver:
    """Rebuilds the spans of WireBatches (the export process's side)."""

    def __init__(self) -> None:
        self._resources: dict[int, Resource] = {}
        self._scopes: dict[int, InstrumentationScope] = {}

    def spans(self, batch: WireBatch) -> list[ReadableSpan]:
        self.take_shared(batch)
        # An order's spans share their parent (the call's span): each context made once.
        contexts: dict[WireContext, SpanContext] = {}
        return [self.span(span, contexts) for span in batch[2]]

    def take_shared(self, batch: WireBatch) -> None:
        """What the batch sends for the first time, that its spans (and later ones) name."""
        resources, scopes, _ = batch
        for key, (attributes, schema_url) in resources.items():
            self._resources[key] = ReceivedResource(attributes, schema_url)
        for key, (name, version, scope_schema_url, scope_attributes) in scopes.items():
            self._scopes[key] = InstrumentationScope(
                name, version, scope_schema_url, scope_attributes
            )

    def resource(self, key: int) -> Resource:
        """A resource taken from this or an earlier batch."""
        return self._resources[key]

    def span(self, wire: WireSpan, contexts: dict[WireContext, SpanContext]) -> ReadableSpan:
        """One span of a batch whose shared part was taken; `contexts`: those made for
        the batch's spans so far."""
        (
            name,
            context,
            parent,
            kind,
            start,
            end,
            attributes,
            events,
            links,
            status,
            resource_key,
            scope_key,
            drops,
        ) = wire
        if parent is not None:
            made = contexts.get(parent)
            if made is None:
                made = contexts[parent] = _span_context(parent)
            parent = made
        span = ReceivedSpan.__new__(ReceivedSpan)
        # ReadableSpan.__init__'s fields, as it sets them (it would make a Resource and a
        # Status per span when given none).
        span.__dict__ = {
            "_name": name,
            "_context": None if context is None else _span_context(context),
            "_kind": _KINDS[kind],
            "_instrumentation_info": None,
            "_instrumentation_scope": None if scope_key is None else self._scopes[scope_key],
            "_parent": parent,
            "_start_time": start,
            "_end_time": end,
            "_attributes": attributes,
            "_events": tuple([_received_event(*e) for e in events]) if events else (),
            "_links": tuple([_received_link(*k) for k in links]) if links else (),
            "_resource": self._resources[resource_key],
            "_status": _UNSET if status is None else Status(_CODES[status[0]], status[1]),
            "_drops": drops,
        }
        return span


def _with_drops(attributes: dict[str, Any] | None, dropped: int) -> Attributes:
    """Attributes that say `dropped` were left out, as the SDK's BoundedAttributes do
    (what Event and Link read their dropped_attributes from)."""
    if not dropped:
        return attributes
    bounded = BoundedAttributes(attributes=attributes, immutable=True)
    bounded.dropped = dropped
    return bounded


def _received_event(
    name: str, attributes: dict[str, Any] | None, timestamp: int | None, dropped: int = 0
) -> Event:
    return Event(name, _with_drops(attributes, dropped), timestamp=timestamp)


def _received_link(
    context: WireContext, attributes: dict[str, Any] | None, dropped: int = 0
) -> Link:
    return Link(_span_context(context), _with_drops(attributes, dropped))
