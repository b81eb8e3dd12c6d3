"""The jsonl exporter's lines, from a span reduced to plain values.

A line is the JSON object the SDK's ReadableSpan.to_json makes (name, context, kind,
parent_id, start_time, end_time, status, attributes, events, links, resource), with no
whitespace. Both the exporter in the gateway's process and the span writer process
(span_writer) format lines here, so the two write the same bytes.

A `PlainSpan` is what this needs of a span with no trace state and an unset status
(every span of an order): plain values that msgpack carries to the writer process.
Trace ids are 16 bytes there (msgpack has no 128-bit integers), ints in process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

# The text of an empty TraceState, as to_json writes it.
NO_TRACE_STATE = "[]"
# By SpanKind value: what to_json writes for each.
KIND_NAMES = (
    "SpanKind.INTERNAL",
    "SpanKind.SERVER",
    "SpanKind.CLIENT",
    "SpanKind.PRODUCER",
    "SpanKind.CONSUMER",
)
_KIND_FIELDS = tuple(f',"kind":"{kind}","parent_id":' for kind in KIND_NAMES)
# Span names kept encoded at most: past it a name is encoded each time.
_MAX_NAMES = 1024

# An event: (name, timestamp in ns, attributes).
PlainEvent = tuple[str, int, dict[str, Any]]
# A link: (trace id, span id, attributes).
PlainLink = tuple[int | bytes, int, dict[str, Any]]
# (name, trace id, span id, kind value, parent span id or None, start ns, end ns,
#  attributes, events, links)
PlainSpan = tuple[
    str,
    int | bytes,
    int,
    int,
    int | None,
    int,
    int,
    dict[str, Any],
    list[PlainEvent],
    list[PlainLink],
]


def _trace_hex(trace_id: int | bytes) -> str:
    if isinstance(trace_id, bytes):
        return trace_id.hex()
    return f"{trace_id:032x}"


# The last second formatted, and its text: spans come in bursts within one second.
_last_second: tuple[int, str] = (-1, "")


def iso(nanoseconds: int | None) -> str | None:
    """As the SDK writes times: UTC, microseconds, a Z."""
    global _last_second
    if nanoseconds is None:
        return None
    seconds, nanos = divmod(nanoseconds, 1_000_000_000)
    cached = _last_second
    if cached[0] != seconds:
        cached = _last_second = (
            seconds,
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)),
        )
    return f"{cached[1]}.{nanos // 1000:06d}Z"


class LineFormatter:
    def __init__(self) -> None:
        self._encode: Callable[[Any], bytes] = msgspec.json.Encoder().encode
        # Span names as JSON strings: a gateway uses a handful, on every order.
        self._names: dict[str, str] = {}

    def line(
        self,
        name: str,
        trace_id: int | bytes,
        span_id: int,
        kind: int,
        parent_id: int | None,
        start: int,
        end: int,
        attributes: dict[str, Any],
        events: list[PlainEvent],
        links: list[PlainLink],
    ) -> str:
        """The span's line less its closing brace (the resource and the brace follow)."""
        encode = self._encode
        encoded_name = self._names.get(name)
        if encoded_name is None:
            encoded_name = encode(name).decode()
            if len(self._names) < _MAX_NAMES:
                self._names[name] = encoded_name
        return (
            f'{{"name":{encoded_name},"context":{{"trace_id":"0x{_trace_hex(trace_id)}",'
            f'"span_id":"0x{span_id:016x}","trace_state":"{NO_TRACE_STATE}"}}'
            + _KIND_FIELDS[kind]
            + ("null" if parent_id is None else f'"0x{parent_id:016x}"')
            + f',"start_time":"{iso(start)}","end_time":"{iso(end)}",'
            '"status":{"status_code":"UNSET"},"attributes":'
            + encode(attributes).decode()
            + f',"events":{self._events(events) if events else "[]"}'
            + f',"links":{self._links(links) if links else "[]"}'
        )

    def _events(self, events: list[PlainEvent]) -> str:
        encode = self._encode
        return (
            "["
            + ",".join(
                '{"name":'
                + encode(name).decode()
                + f',"timestamp":"{iso(timestamp)}","attributes":'
                + encode(attributes).decode()
                + "}"
                for name, timestamp, attributes in events
            )
            + "]"
        )

    def _links(self, links: list[PlainLink]) -> str:
        encode = self._encode
        return (
            "["
            + ",".join(
                f'{{"context":{{"trace_id":"0x{_trace_hex(trace_id)}",'
                f'"span_id":"0x{span_id:016x}","trace_state":"{NO_TRACE_STATE}"}},'
                '"attributes":' + encode(attributes).decode() + "}"
                for trace_id, span_id, attributes in links
            )
            + "]"
        )
