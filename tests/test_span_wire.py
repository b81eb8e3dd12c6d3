"""telemetry/span_wire.py: a span that crosses to the export process is, for every
exporter, the span that was sent: the same JSON (`to_json`, which reads every field an
exporter reads) and the same counts of what the SDK's limits dropped."""

from __future__ import annotations

import marshal
import tempfile
import threading
from enum import Enum, IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, TraceFlags

from execgw.server.telemetry import span_wire
from execgw.server.telemetry.jsonl import JsonLinesSpanExporter
from execgw.server.telemetry.span_wire import (
    ReceivedResource,
    SpanReceiver,
    SpanSender,
    builtins_only,
)
from execgw.server.telemetry.spans import GatewayTracer

if TYPE_CHECKING:
    from tests.span_samples import REMOTE, SAMPLED, Tag, gateway_spans
else:
    from span_samples import REMOTE, SAMPLED, Tag, gateway_spans


def _crossed(sender: SpanSender, receiver: SpanReceiver, spans: list[ReadableSpan]) -> list[Any]:
    """The spans as the export process rebuilds them, through a real marshal."""
    payload = marshal.dumps(("spans", sender.batch(spans)))
    return receiver.spans(marshal.loads(payload)[1])


def _same(sent: ReadableSpan, received: ReadableSpan) -> None:
    assert received.to_json() == sent.to_json()
    # What the OTLP exporter sends, which reads more than to_json (drop counts of
    # events and links among them).
    assert encode_spans([received]) == encode_spans([sent])
    assert received.dropped_attributes == sent.dropped_attributes
    assert received.dropped_events == sent.dropped_events
    assert received.dropped_links == sent.dropped_links
    assert received.instrumentation_scope == sent.instrumentation_scope
    assert received.context is not None
    assert sent.context is not None
    assert received.context.is_valid == sent.context.is_valid
    assert received.context.trace_flags == sent.context.trace_flags
    assert isinstance(received.context.trace_flags, TraceFlags)


def test_the_gateways_spans_cross_unchanged() -> None:
    spans = gateway_spans()
    received = _crossed(SpanSender(), SpanReceiver(), spans)
    assert len(received) == len(spans) == 4
    for sent, got in zip(spans, received, strict=True):
        _same(sent, got)
    by_name = {span.name: span for span in received}
    # What the fast path of a local context leaves out is put back as it was.
    assert by_name["rpc"].parent == REMOTE
    assert by_name["rpc"].parent.trace_state == REMOTE.trace_state
    assert by_name["root"].parent is None
    assert by_name["commit"].links[1].context == REMOTE


def test_sdk_spans_cross_with_what_their_limits_dropped() -> None:
    provider = TracerProvider(
        span_limits=SpanLimits(
            max_span_attributes=2,
            max_events=1,
            max_links=1,
            max_event_attributes=1,
            max_link_attributes=1,
        )
    )
    recorded = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    sdk = provider.get_tracer("someone.else", "0.1", schema_url="https://example.com/s")
    span = sdk.start_span(
        "theirs",
        attributes={"a": 1, "b": 2, "c": 3},
        links=[trace.Link(REMOTE), trace.Link(REMOTE, {"k": "v", "k2": "w"})],
    )
    span.add_event("one", {"x": 1})
    span.add_event("two", {"x": 1, "y": 2})
    span.end()
    sent = recorded.get_finished_spans()[0]
    assert (sent.dropped_attributes, sent.dropped_events, sent.dropped_links) == (1, 1, 1)
    assert sent.events[0].dropped_attributes == 1
    assert sent.links[0].dropped_attributes == 1
    (got,) = _crossed(SpanSender(), SpanReceiver(), [sent])
    _same(sent, got)
    assert got.events[0].dropped_attributes == 1
    assert got.links[0].dropped_attributes == 1


def test_a_plain_readable_span_without_a_scope_or_times_crosses() -> None:
    sent = ReadableSpan("bare", context=REMOTE, resource=Resource({}))
    (got,) = _crossed(SpanSender(), SpanReceiver(), [sent])
    _same(sent, got)
    assert got.instrumentation_scope is None
    assert got.start_time is None
    assert got.end_time is None


def test_a_resource_and_a_scope_cross_once_and_again_to_a_new_receiver() -> None:
    spans = gateway_spans()
    sender, receiver = SpanSender(), SpanReceiver()
    first = sender.batch(spans[:2])
    assert len(first[0]) == 1
    assert len(first[1]) == 1
    receiver.spans(first)
    second = sender.batch(spans[2:])
    assert second[0] == {}
    assert second[1] == {}
    for sent, got in zip(spans[2:], receiver.spans(second), strict=True):
        _same(sent, got)
    sender.restart()  # a new export process
    third = sender.batch(spans[:1])
    assert len(third[0]) == 1
    assert len(third[1]) == 1
    (got,) = SpanReceiver().spans(third)
    _same(spans[0], got)


def test_past_max_shared_resources_the_sender_forgets_and_sends_again(monkeypatch: Any) -> None:
    monkeypatch.setattr(span_wire, "MAX_SHARED", 3)
    sender, receiver = SpanSender(), SpanReceiver()
    resources = [Resource({"n": i}) for i in range(5)]
    scope = InstrumentationScope("s")
    spans = [
        ReadableSpan(f"s{i}", context=REMOTE, resource=r, instrumentation_scope=scope)
        for i, r in enumerate(resources)
    ]
    for _ in range(2):  # every resource, twice over, across the forgetting
        for span in spans:
            (got,) = _crossed(sender, receiver, [span])
            _same(span, got)


_VALUES = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(st.text(max_size=5), max_size=3).map(tuple),
    st.lists(st.integers(min_value=0, max_value=9), max_size=3).map(tuple),
)


@settings(max_examples=60, deadline=None)
@given(attributes=st.dictionaries(st.text(min_size=1, max_size=10), _VALUES, max_size=6))
def test_any_valid_attributes_cross_unchanged(attributes: dict[str, Any]) -> None:
    provider = TracerProvider()
    recorded = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    tracer = GatewayTracer("execgw.test", provider=provider)
    span = tracer.start_span("s", attributes=attributes)
    span.add_event("e", attributes)
    span.end()
    sent = recorded.get_finished_spans()[0]
    (got,) = _crossed(SpanSender(), SpanReceiver(), [sent])
    _same(sent, got)
    assert dict(got.attributes or {}) == dict(sent.attributes or {})


def test_a_received_span_has_every_field_readable_span_init_sets() -> None:
    """The receiver sets ReadableSpan's fields itself (for speed): an SDK that adds one
    must fail here, not in an exporter."""
    sent = ReadableSpan("plain", context=REMOTE, resource=Resource({}))
    (got,) = _crossed(SpanSender(), SpanReceiver(), [sent])
    assert set(vars(got)) - {"_drops"} == set(vars(sent))


def test_values_marshal_does_not_take_cross_as_plain_values_or_not_at_all() -> None:
    lock = threading.Lock()
    sent = ReadableSpan(
        Tag("named"),
        context=REMOTE,
        resource=Resource({"service.name": Tag("svc")}),
        attributes={"tag": Tag("fx"), "n": True, "lock": lock, "tags": (Tag("a"), "b")},  # type: ignore[dict-item]
    )
    batch = SpanSender().batch([sent])
    with pytest.raises(ValueError, match="unmarshallable"):
        marshal.dumps(batch)
    plain, left_out = builtins_only(batch)
    assert left_out == 0
    (got,) = SpanReceiver().spans(marshal.loads(marshal.dumps(plain)))
    assert type(got.name) is str
    assert got.name == "named"
    assert dict(got.attributes or {}) == {"tag": "fx", "n": True, "tags": ("a", "b")}
    assert type((got.attributes or {})["tag"]) is str
    assert dict(got.resource.attributes) == {"service.name": "svc"}
    # Everything else as it was.
    usual = SpanSender().batch(gateway_spans())
    assert builtins_only(usual) == (usual, 0)


class Side(str, Enum):  # noqa: UP042 (the mixin str() misreads, unlike StrEnum)
    BUY = "buy"


class Level(IntEnum):
    HIGH = 3


def test_enums_of_an_application_cross_as_their_values() -> None:
    sent = ReadableSpan(
        "s",
        context=REMOTE,
        resource=Resource({}),
        attributes={"side": Side.BUY, "level": Level.HIGH, "sides": (Side.BUY,)},
    )
    plain, left_out = builtins_only(SpanSender().batch([sent]))
    (got,) = SpanReceiver().spans(marshal.loads(marshal.dumps(plain)))
    assert dict(got.attributes or {}) == {"side": "buy", "level": 3, "sides": ("buy",)}
    assert type((got.attributes or {})["level"]) is int
    assert left_out == 0


def test_a_span_with_a_name_of_no_plain_type_is_left_out_alone() -> None:
    good = ReadableSpan("good", context=REMOTE, resource=Resource({}))
    bad = ReadableSpan(object(), context=REMOTE, resource=Resource({}))  # type: ignore[arg-type]
    plain, left_out = builtins_only(SpanSender().batch([good, bad, good]))
    assert left_out == 1
    assert [span.name for span in SpanReceiver().spans(plain)] == ["good", "good"]


class Version:
    """An application's version object, as an instrumentation scope may be given."""

    def __str__(self) -> str:
        return "1.2.3"


class Url:
    """A schema URL object of an application's, whose text is a str subclass."""

    def __str__(self) -> str:
        return Tag("https://s")


def test_a_scope_or_resource_of_other_types_still_crosses_with_its_spans() -> None:
    scope = InstrumentationScope("app", Version())  # type: ignore[arg-type]
    sent = ReadableSpan(
        "s",
        context=REMOTE,
        resource=Resource({"service.name": "svc"}, schema_url=Url()),  # type: ignore[arg-type]
        instrumentation_scope=scope,
    )
    sender = SpanSender()
    plain, left_out = builtins_only(sender.batch([sent]))
    assert left_out == 0
    receiver = SpanReceiver()
    (got,) = receiver.spans(marshal.loads(marshal.dumps(plain)))
    assert got.instrumentation_scope is not None
    assert got.instrumentation_scope.version == "1.2.3"
    assert got.resource.schema_url == "https://s"
    # The next batch finds them there.
    (again,) = receiver.spans(marshal.loads(marshal.dumps(builtins_only(sender.batch([sent]))[0])))
    assert again.instrumentation_scope == got.instrumentation_scope


def test_a_received_resource_hashes_and_compares_as_a_resource() -> None:
    """The OTLP encoder groups spans by resource: a received one must fall in the same
    group as an equal Resource, and stay the key it was."""
    attributes: dict[str, Any] = {"service.name": "execgw", "n": 3, "tags": ("a", "b")}
    received = ReceivedResource(attributes, "https://s")
    plain = Resource(attributes, "https://s")
    assert hash(received) == hash(plain)
    assert received == plain
    assert plain == received
    assert received != ReceivedResource({**attributes, "n": 4}, "https://s")
    assert {plain: 1}[received] == 1


def _jsonl_both_ways(tmp_path: Path, batches: list[list[ReadableSpan]]) -> tuple[bytes, bytes]:
    """The JSON lines of these batches as the export process writes them (straight
    from the wire tuples) and as the spans rebuilt from them write: through one sender
    and a real marshal, each way with a receiver of its own."""
    sender = SpanSender()
    rebuilt, straight = SpanReceiver(), SpanReceiver()
    by_spans = JsonLinesSpanExporter(tmp_path / "rebuilt.jsonl")
    by_wire = JsonLinesSpanExporter(tmp_path / "straight.jsonl")
    for spans in batches:
        payload = marshal.dumps(("spans", sender.batch(spans)))
        by_spans.export(rebuilt.spans(marshal.loads(payload)[1]))
        by_wire.export_wire(marshal.loads(payload)[1], straight)
    by_spans.shutdown()
    by_wire.shutdown()
    return (tmp_path / "straight.jsonl").read_bytes(), (tmp_path / "rebuilt.jsonl").read_bytes()


def test_the_export_process_writes_a_crossed_batchs_lines_as_its_rebuilt_spans_would(
    tmp_path: Path,
) -> None:
    """Straight from the tuples for the gateway's own spans, the general path for the
    rest (a status, a remote context, a trace state, drops, on the span or on an event
    or a link), in batches that share a resource sent once."""
    spans = gateway_spans()
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=1, max_events=1))
    recorded = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    sdk = provider.get_tracer("someone.else")
    theirs = sdk.start_span("theirs", attributes={"a": 1, "b": 2}, links=[trace.Link(REMOTE)])
    theirs.add_event("one", {"x": 1})
    theirs.add_event("two")
    theirs.end()
    # A plain span but for its trace state (its remote parent's).
    GatewayTracer("execgw.test", provider=provider).start_span(
        "in a traced call", context=trace.set_span_in_context(trace.NonRecordingSpan(REMOTE))
    ).end()
    # Plain spans (a local context without trace state) but for a status; for an event
    # or a link whose attributes the SDK's limits cut; and plain ones linked to a
    # remote context without trace state.
    failed = GatewayTracer("execgw.test", provider=provider).start_span("failed")
    failed.set_status(trace.Status(trace.StatusCode.ERROR, "broker said no"))
    failed.end()
    cut = BoundedAttributes(maxlen=1, attributes={"a": 1, "b": 2}, immutable=True)
    remote_plain = SpanContext(0xAB, 0xCD, True, TraceFlags(TraceFlags.SAMPLED))
    by_hand = [
        ReadableSpan(
            name,
            context=SAMPLED,
            resource=Resource({"by": "hand"}),
            attributes={"k": "v"},
            events=events,
            links=links,
            start_time=1_700_000_000_123_456_789,
            end_time=1_700_000_001_000_000_000,
        )
        for name, events, links in (
            ("event cut", [Event("e", cut, timestamp=5)], []),
            ("link cut", [], [trace.Link(SAMPLED, cut)]),
            ("remote link", [Event("e", {"x": 1}, timestamp=5)], [trace.Link(remote_plain)]),
        )
    ]
    batches = [spans[:2], spans[2:], [*recorded.get_finished_spans(), *by_hand], spans]
    straight, rebuilt = _jsonl_both_ways(tmp_path, batches)
    assert straight == rebuilt
    assert straight.count(b"\n") == sum(len(b) for b in batches)


def test_a_line_msgspec_cannot_write_goes_alone_the_same_way_from_the_tuples(
    tmp_path: Path,
) -> None:
    """In the span's attributes, or in an event's (the tuple's line fails as it is made,
    and the span is rebuilt)."""
    provider = TracerProvider()
    recorded = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    tracer = GatewayTracer("execgw.test", provider=provider)
    for attributes in ({"ok": "x"}, {"bad": "\ud800"}, {"ok": "y"}):
        tracer.start_span("s", attributes=attributes).end()
    in_event = tracer.start_span("event")
    in_event.add_event("e", {"bad": "\ud800"})
    in_event.end()
    straight, rebuilt = _jsonl_both_ways(tmp_path, [list(recorded.get_finished_spans())])
    assert straight == rebuilt
    assert straight.count(b"\n") == 4


@settings(max_examples=40, deadline=None)
@given(attributes=st.dictionaries(st.text(min_size=1, max_size=10), _VALUES, max_size=6))
def test_any_valid_attributes_write_the_same_lines_from_the_tuples(
    attributes: dict[str, Any],
) -> None:
    provider = TracerProvider()
    recorded = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    tracer = GatewayTracer("execgw.test", provider=provider)
    with tracer.start_as_current_span("parent", attributes=attributes) as parent:
        # Linked to a local context (no trace state): its line comes from the tuple too.
        link = trace.Link(parent.get_span_context(), {"k": 1})
        span = tracer.start_span("s", attributes=attributes, links=[link])
        span.add_event("e", attributes)
        span.end()
    with tempfile.TemporaryDirectory() as directory:
        straight, rebuilt = _jsonl_both_ways(Path(directory), [list(recorded.get_finished_spans())])
    assert straight == rebuilt
