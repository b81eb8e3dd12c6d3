"""The JSON-lines span exporter: one object per finished span, appended to a file an
operator can grep and `execgw trace summary` reads.

The objects have the layout of the SDK's ReadableSpan.to_json (name, context, kind,
parent_id, start_time, end_time, status, attributes, events, links, resource), encoded
at a fraction of its cost, because the exporter shares the machine's cores with the
order path (it runs in the export process, telemetry.export_worker; a test or an
application may run it in-process, sharing the interpreter too):
- a span whose attributes are a plain dict (the gateway's own, as the export process
  receives them) becomes a `_Line` struct, and a whole batch is encoded by msgspec in
  one call; in the export process, straight from the tuples the span crossed as
  (`export_wire`), with no ReadableSpan rebuilt;
- what the spans of a batch repeat is formatted once: the resource, the trace id an
  order's spans share, the parent id its stages share, the second their times fall in.
Any other span (a status, a trace state, attributes not in a plain dict) takes the
general path, `_entry`, which the direct one must match byte for byte. A span msgspec
cannot encode (a lone surrogate in a string, a key that is not a string) is written by
the standard library's encoder instead, alone: it never costs the rest of its batch.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import msgspec
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, SpanContext, SpanKind, StatusCode
from opentelemetry.trace.span import TraceState

from execgw.server.telemetry.span_wire import (
    RESOURCE_KEY_AT,
    SpanReceiver,
    WireBatch,
    WireContext,
    WireSpan,
)

log = logging.getLogger(__name__)


class _Context(msgspec.Struct):
    """A span's context as `to_json` writes it."""

    trace_id: str
    span_id: str
    trace_state: str


class _Line(msgspec.Struct):
    """One exported span, field for field (and in the order of) `to_json`'s object."""

    name: str
    context: _Context
    kind: str
    parent_id: str | None
    start_time: str
    end_time: str
    status: msgspec.Raw
    attributes: dict[str, Any]
    events: msgspec.Raw
    links: msgspec.Raw
    resource: msgspec.Raw


_KINDS = {kind: str(kind) for kind in SpanKind}
_WIRE_KINDS = {kind.value: text for kind, text in _KINDS.items()}
_NO_TRACE_STATE = repr(TraceState())
_UNSET_STATUS = {"status_code": StatusCode.UNSET.name}
_UNSET_STATUS_JSON = msgspec.Raw(msgspec.json.encode(_UNSET_STATUS))
_EMPTY = msgspec.Raw(b"[]")
# Resources whose JSON is kept: a process has one or two.
_MAX_RESOURCES = 8
# What msgspec raises for a value it cannot write as JSON.
_UNENCODABLE = (msgspec.EncodeError, TypeError, ValueError, UnicodeEncodeError, OverflowError)


class JsonLinesSpanExporter(SpanExporter):
    """Appends each batch of spans to `path`, one JSON object per line."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._file: IO[bytes] | None = path.open("ab")
        self._lock = threading.Lock()
        self._encoder = msgspec.json.Encoder()
        # Each resource's JSON, encoded once: the same on every span.
        self._resources: dict[int, tuple[Resource, msgspec.Raw]] = {}

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._write(self._lines(spans))

    def export_wire(self, batch: WireBatch, receiver: SpanReceiver) -> SpanExportResult:
        """export() for a batch as it crossed to the export process, written with the
        same bytes as export(receiver.spans(batch)): the gateway's spans straight from
        their tuples (no ReadableSpan rebuilt, ~2 µs a span less), any other one rebuilt
        first."""
        return self._write(self._wire_lines(batch, receiver))

    def _write(self, lines: bytes) -> SpanExportResult:
        with self._lock:
            if self._file is None:
                return SpanExportResult.FAILURE
            try:
                self._file.write(lines)
                self._file.flush()
            except OSError as e:  # a full disk loses spans, never an order
                log.warning("cannot write spans to %s: %s", self._path, e)
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def _lines(self, spans: Sequence[ReadableSpan]) -> bytes:
        """The spans' lines, as written to the file."""
        encode = self._encoder.encode
        hexes = _Hexes()
        entries: list[_Line | dict[str, Any]] = []
        add = entries.append
        resource: Resource | None = None
        encoded_resource = _EMPTY
        for index, span in enumerate(spans):
            if index == 0 or span.resource is not resource:
                resource = span.resource
                encoded_resource = self._resource(resource)
            add(self._line(span, hexes, encoded_resource, encode))
        try:
            return self._encoder.encode_lines(entries)
        except _UNENCODABLE:
            return self._one_by_one(spans, entries)

    def _wire_lines(self, batch: WireBatch, receiver: SpanReceiver) -> bytes:
        """_lines for a batch as it crossed: the same lines."""
        receiver.take_shared(batch)
        encode = self._encoder.encode
        hexes = _Hexes()
        contexts: dict[WireContext, SpanContext] = {}
        entries: list[_Line | dict[str, Any]] = []
        add = entries.append
        resource_key: int | None = None
        encoded_resource = _EMPTY
        for index, wire in enumerate(batch[2]):
            if index == 0 or wire[RESOURCE_KEY_AT] != resource_key:
                resource_key = wire[RESOURCE_KEY_AT]
                encoded_resource = self._resource(receiver.resource(resource_key))
            try:
                line = _wire_line(wire, hexes, encoded_resource, encode)
            except _UNENCODABLE:
                line = None  # its events or links: the general path, then _one_by_one
            if line is None:
                add(self._line(receiver.span(wire, contexts), hexes, encoded_resource, encode))
            else:
                add(line)
        try:
            return self._encoder.encode_lines(entries)
        except _UNENCODABLE:
            spans = [receiver.span(wire, contexts) for wire in batch[2]]
            return self._one_by_one(spans, entries)

    def _line(
        self,
        span: ReadableSpan,
        hexes: _Hexes,
        encoded_resource: msgspec.Raw,
        encode: Callable[[Any], bytes],
    ) -> _Line | dict[str, Any]:
        """One span's line: directly, or (another kind of span) by the general path."""
        try:
            line = _direct_line(span, hexes, encoded_resource, encode)
        except _UNENCODABLE:
            line = None  # its events or links: the general path, then _one_by_one
        if line is not None:
            return line
        entry = self._entry(span)
        entry["resource"] = encoded_resource
        return entry

    def _one_by_one(
        self, spans: Sequence[ReadableSpan], entries: list[_Line | dict[str, Any]]
    ) -> bytes:
        """The batch's lines when one of them is not valid for msgspec: that one through
        the standard library (which escapes a lone surrogate, and writes number keys as
        strings), and dropped, counted, if it cannot be written at all."""
        lines: list[bytes] = []
        dropped = 0
        for span, entry in zip(spans, entries, strict=True):
            try:
                lines.append(self._encoder.encode(entry) + b"\n")
                continue
            except _UNENCODABLE:
                pass
            plain = self._entry(span)
            plain["resource"] = msgspec.json.decode(self._resource(span.resource))
            try:
                text = json.dumps(plain, separators=(",", ":"), allow_nan=True)
            except (TypeError, ValueError):
                dropped += 1
                continue
            lines.append(text.encode() + b"\n")
        if dropped:
            log.warning("%d spans could not be written as JSON and were dropped", dropped)
        return b"".join(lines)

    def _entry(self, span: ReadableSpan) -> dict[str, Any]:
        """The general path: any span, as `to_json` has it (less its resource)."""
        parent = span.parent
        return {
            "name": span.name,
            "context": _context(span.context),
            "kind": _KINDS[span.kind],
            "parent_id": None if parent is None else f"0x{parent.span_id:016x}",
            "start_time": _iso(span.start_time),
            "end_time": _iso(span.end_time),
            "status": _status(span),
            "attributes": _attributes(span),
            "events": [_event_entry(event) for event in span.events],
            "links": [_link_entry(link) for link in span.links],
        }

    def _resource(self, resource: Resource | None) -> msgspec.Raw:
        if resource is None:  # not the SDK's spans; written as to_json would
            return msgspec.Raw(b"null")
        cached = self._resources.get(id(resource))
        if cached is None or cached[0] is not resource:
            value = {"attributes": dict(resource.attributes), "schema_url": resource.schema_url}
            if len(self._resources) >= _MAX_RESOURCES:
                self._resources.clear()
            cached = self._resources[id(resource)] = (
                resource,
                msgspec.Raw(self._encoder.encode(value)),
            )
        return cached[1]

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class _Hexes:
    """Ids as `to_json` writes them, each formatted once per batch: an order's spans
    share a trace id, and its stages their parent's span id."""

    __slots__ = ("parents", "traces")

    def __init__(self) -> None:
        self.traces: dict[int, str] = {}
        self.parents: dict[int, str] = {}

    def trace(self, trace_id: int) -> str:
        found = self.traces.get(trace_id)
        if found is None:
            found = self.traces[trace_id] = f"0x{trace_id:032x}"
        return found

    def parent(self, span_id: int) -> str:
        found = self.parents.get(span_id)
        if found is None:
            found = self.parents[span_id] = f"0x{span_id:016x}"
        return found


def _direct_line(
    span: ReadableSpan, hexes: _Hexes, resource: msgspec.Raw, encode: Callable[[Any], bytes]
) -> _Line | None:
    """`_entry`'s line made directly, for a span whose attributes are a plain dict (the
    gateway's own) with no trace state, no status, and links and events without trace
    state: every span of an order. Any other span returns None."""
    values = getattr(span, "_attributes", None)
    if type(values) is not dict:
        return None
    context = span._context
    status = span._status
    start = span._start_time
    end = span._end_time
    if (
        context is None
        or context.trace_state
        or status.status_code is not StatusCode.UNSET
        or status.description
        or start is None
        or end is None
    ):
        return None
    events = _EMPTY
    if span._events:
        found = _direct_events(span._events, encode)
        if found is None:
            return None
        events = found
    links = _EMPTY
    if span._links:
        found = _direct_links(span._links, encode)
        if found is None:
            return None
        links = found
    parent = span._parent
    return _Line(
        span._name,
        _Context(hexes.trace(context.trace_id), f"0x{context.span_id:016x}", _NO_TRACE_STATE),
        _KINDS[span._kind],
        None if parent is None else hexes.parent(parent.span_id),
        _iso_text(start),
        _iso_text(end),
        _UNSET_STATUS_JSON,
        values,
        events,
        links,
        resource,
    )


def _wire_line(
    wire: WireSpan, hexes: _Hexes, resource: msgspec.Raw, encode: Callable[[Any], bytes]
) -> _Line | None:
    """_direct_line for a span as it crossed (span_wire.WireSpan), from its tuple: for
    the spans _direct_line takes, with a context sent as local and without trace state;
    None for any other."""
    context, parent, start, end = wire[1], wire[2], wire[4], wire[5]
    attributes, events, links, status = wire[6], wire[7], wire[8], wire[9]
    if (
        context is None
        or len(context) != 3  # remote, or with a trace state
        or status is not None  # set, or with a description
        or start is None
        or end is None
        or type(attributes) is not dict
    ):
        return None
    encoded_events = _EMPTY
    if events:
        if any(event[2] is None or len(event) > 3 for event in events):
            # No time (the rebuilt Event takes one), or attributes the SDK's limits cut:
            # as the rebuilt span has them.
            return None
        encoded_events = msgspec.Raw(encode([_event_fields(e[0], e[2], e[1]) for e in events]))
    encoded_links = _EMPTY
    if links:
        if any((len(link[0]) != 3 and link[0][4]) or len(link) > 2 for link in links):
            return None  # a trace state, or attributes the SDK's limits cut
        encoded_links = msgspec.Raw(
            encode(
                [
                    {
                        "context": _context_fields(k[0][0], k[0][1], _NO_TRACE_STATE),
                        "attributes": dict(k[1] or {}),
                    }
                    for k in links
                ]
            )
        )
    return _Line(
        wire[0],
        _Context(hexes.trace(context[0]), f"0x{context[1]:016x}", _NO_TRACE_STATE),
        _WIRE_KINDS[wire[3]],
        None if parent is None else hexes.parent(parent[1]),
        _iso_text(start),
        _iso_text(end),
        _UNSET_STATUS_JSON,
        attributes,
        encoded_events,
        encoded_links,
        resource,
    )


def _direct_events(events: Sequence[Event], encode: Callable[[Any], bytes]) -> msgspec.Raw | None:
    """The events' JSON, or None for one without a time (the general path writes null)."""
    if any(event.timestamp is None for event in events):
        return None
    return msgspec.Raw(encode([_event_entry(event) for event in events]))


def _direct_links(links: Sequence[Link], encode: Callable[[Any], bytes]) -> msgspec.Raw | None:
    """The links' JSON, or None for one with a trace state."""
    if any(link.context.trace_state for link in links):
        return None
    return msgspec.Raw(encode([_link_entry(link) for link in links]))


def _event_entry(event: Event) -> dict[str, Any]:
    return _event_fields(event.name, event.timestamp, event.attributes)


def _event_fields(name: str, timestamp: int | None, attributes: Any) -> dict[str, Any]:
    """An event's object, from an Event's fields or a wire event's."""
    return {"name": name, "timestamp": _iso(timestamp), "attributes": dict(attributes or {})}


def _link_entry(link: Link) -> dict[str, Any]:
    return {"context": _context(link.context), "attributes": dict(link.attributes or {})}


def _context(context: SpanContext | None) -> dict[str, str] | None:
    if context is None:
        return None
    state = context.trace_state
    return _context_fields(
        context.trace_id, context.span_id, repr(state) if state else _NO_TRACE_STATE
    )


def _context_fields(trace_id: int, span_id: int, trace_state: str) -> dict[str, str]:
    """A context's object, from a SpanContext's fields or a wire context's."""
    return {
        "trace_id": f"0x{trace_id:032x}",
        "span_id": f"0x{span_id:016x}",
        "trace_state": trace_state,
    }


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    """The span's attributes as a dict: the gateway's own spans, and those the export
    process rebuilt, hold one already (read here after the span ended, when nothing
    changes it any more)."""
    own = getattr(span, "_attributes", None)
    return own if isinstance(own, dict) else dict(span.attributes or {})


# The last second formatted, and its text: spans come in bursts within one second.
_last_second: tuple[int, str] = (-1, "")


def _iso(nanoseconds: int | None) -> str | None:
    return None if nanoseconds is None else _iso_text(nanoseconds)


def _iso_text(nanoseconds: int) -> str:
    """As the SDK writes times: UTC, microseconds, a Z."""
    global _last_second
    seconds, nanos = divmod(nanoseconds, 1_000_000_000)
    cached = _last_second
    if cached[0] != seconds:
        cached = _last_second = (
            seconds,
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)),
        )
    return f"{cached[1]}.{nanos // 1000:06d}Z"


def _status(span: ReadableSpan) -> dict[str, str]:
    if span.status.status_code is StatusCode.UNSET and not span.status.description:
        return _UNSET_STATUS
    status: dict[str, str] = {"status_code": span.status.status_code.name}
    if span.status.description:
        status["description"] = span.status.description
    return status
