"""GatewayTracer (telemetry/spans.py): the gateway's light spans behave as the SDK's do
for everything an exporter, a sampler or a span processor can see."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, cast

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from execgw.server.telemetry import scope as scopes
from execgw.server.telemetry.jsonl import JsonLinesSpanExporter, _direct_line, _Hexes
from execgw.server.telemetry.spans import GatewayTracer, RecordedSpan
from execgw.server.telemetry.tracing import GatewayPipelines, ScopeSampler

SCOPE = scopes.Scope("rehearsal-1", "live", True)


def _setup(
    sampler: Sampler | None = None, limits: SpanLimits | None = None
) -> tuple[GatewayTracer, InMemorySpanExporter, TracerProvider]:
    provider = TracerProvider(sampler=sampler or ScopeSampler(), span_limits=limits)
    exported = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    return GatewayTracer("execgw.test", provider=provider), exported, provider


def _by_name(exported: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exported.get_finished_spans()}


def test_a_tree_of_spans_reaches_the_processors_with_parents_scope_and_attributes() -> None:
    tracer, exported, _ = _setup()
    token = otel_context.attach(scopes.in_scope(SCOPE))
    try:
        with tracer.start_as_current_span(
            "rpc", kind=SpanKind.SERVER, attributes={"rpc.method": "SubmitOrder"}
        ) as rpc:
            assert trace.get_current_span() is rpc
            with tracer.start_as_current_span("order", attributes={"execgw.qty": 5}) as order:
                order.set_attribute("execgw.status", "FILLED")
                order.add_event("execgw.risk.near_limit", {"execgw.breaker": "max_loss"})
            later = tracer.start_span(
                "late", start_time=10, links=[trace.Link(rpc.get_span_context())]
            )
            later.end(end_time=20)
    finally:
        otel_context.detach(token)
    spans = _by_name(exported)
    assert set(spans) == {"rpc", "order", "late"}
    rpc_span, order_span, late = spans["rpc"], spans["order"], spans["late"]
    assert isinstance(order_span, RecordedSpan)
    assert rpc_span.parent is None
    assert rpc_span.kind is SpanKind.SERVER
    assert order_span.parent is not None
    assert order_span.parent.span_id == rpc_span.context.span_id
    assert order_span.context.trace_id == rpc_span.context.trace_id
    assert order_span.context.span_id != rpc_span.context.span_id
    # A child of a sampled span of the tracer is made on a short path: its context is
    # what SpanContext's own constructor makes of the same values.
    made = order_span.context
    assert made == SpanContext(
        made.trace_id, made.span_id, False, rpc_span.context.trace_flags, TraceState()
    )
    assert made.is_valid
    assert not made.is_remote
    assert made.trace_state == TraceState()
    # every span carries the scope (the sampler's stamp), the child too (no sampler call)
    for span in spans.values():
        assert span.attributes is not None
        assert span.attributes["execgw.session_id"] == "rehearsal-1"
        assert span.attributes["execgw.mode"] == "live"
        assert span.attributes["execgw.dry_run"] is True
    assert dict(order_span.attributes or {})["execgw.qty"] == 5
    assert dict(order_span.attributes or {})["execgw.status"] == "FILLED"
    assert [e.name for e in order_span.events] == ["execgw.risk.near_limit"]
    assert late.start_time == 10
    assert late.end_time == 20
    assert [link.context.span_id for link in late.links] == [rpc_span.context.span_id]
    assert order_span.context.trace_flags.sampled
    assert order_span.instrumentation_scope is not None
    assert order_span.instrumentation_scope.name == "execgw.test"
    assert '"execgw.session_id": "rehearsal-1"' in order_span.to_json()


def test_a_remote_parent_is_continued_and_its_trace_state_kept() -> None:
    tracer, exported, _ = _setup()
    remote = SpanContext(
        0xABC,
        0xDEF,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("k", "v")]),
    )
    parent = trace.set_span_in_context(NonRecordingSpan(remote))
    tracer.start_span("rpc", context=parent).end()
    (span,) = exported.get_finished_spans()
    assert span.context.trace_id == 0xABC
    assert span.parent is not None
    assert span.parent.span_id == 0xDEF
    assert span.context.trace_state.get("k") == "v"


@pytest.mark.parametrize(
    ("flags", "state"),
    [
        (TraceFlags(1), TraceState([("k", "v")])),
        (TraceFlags(3), TraceState()),  # sampled, random trace id
        (TraceFlags(0), TraceState([("k", "v")])),  # not sampled: the sampler is asked
    ],
)
def test_roots_and_remote_children_are_what_the_sdks_own_tracer_makes(
    flags: TraceFlags, state: TraceState
) -> None:
    """A root, or a child of a remote parent, skips the sampler when its answer is
    known (ParentBased's defaults); flags, trace state, attributes and whether it
    records are then exactly the SDK's."""
    tracer, exported, provider = _setup()
    sdk = provider.get_tracer("execgw.test")
    remote = trace.set_span_in_context(
        NonRecordingSpan(SpanContext(0xABC, 0xDEF, True, flags, state)),
        scopes.in_scope(SCOPE),
    )
    token = otel_context.attach(scopes.in_scope(SCOPE))
    try:
        for context in (None, remote):
            for maker in (tracer, sdk):
                span = maker.start_span(
                    f"{'sdk' if maker is sdk else 'ours'}-{context is None}",
                    context=context,
                    kind=SpanKind.SERVER,
                    attributes={"rpc.method": "SubmitOrder", "execgw.mode": "paper"},
                )
                span.end()
    finally:
        otel_context.detach(token)
    spans = _by_name(exported)
    for root in (True, False):
        ours, theirs = spans.get(f"ours-{root}"), spans.get(f"sdk-{root}")
        assert (ours is None) == (theirs is None)
        if ours is None or theirs is None:
            assert not root
            assert not flags.sampled
            continue
        assert ours.context.trace_flags == theirs.context.trace_flags
        assert ours.context.trace_state == theirs.context.trace_state
        assert ours.context.is_valid
        assert not ours.context.is_remote
        assert dict(ours.attributes or {}) == dict(theirs.attributes or {})
        assert dict(ours.attributes or {})["execgw.mode"] == "live"  # the scope wins
        if not root:
            assert ours.context.trace_id == 0xABC
            assert ours.parent is not None
            assert ours.parent.span_id == 0xDEF


def test_the_sampler_decides_roots_and_children_follow_an_unsampled_parent() -> None:
    tracer, exported, _ = _setup(sampler=ParentBased(ALWAYS_OFF))
    with tracer.start_as_current_span("root") as root:
        assert not root.is_recording()
        with tracer.start_as_current_span("child") as child:
            assert not child.is_recording()
            assert child.get_span_context().trace_id == root.get_span_context().trace_id
    assert exported.get_finished_spans() == ()


def test_a_sampler_that_drops_children_of_sampled_parents_is_asked() -> None:
    """Only a parent-based sampler whose local sampled parents are always on is skipped."""
    sampler = ParentBased(ALWAYS_ON, local_parent_sampled=ALWAYS_OFF)
    tracer, exported, _ = _setup(sampler=sampler)
    with tracer.start_as_current_span("root"), tracer.start_as_current_span("child") as child:
        assert not child.is_recording()
    assert [s.name for s in exported.get_finished_spans()] == ["root"]


def test_values_are_cut_to_the_providers_limit_and_nones_dropped() -> None:
    tracer, exported, _ = _setup(limits=SpanLimits(max_attribute_length=8, max_events=1))
    given: dict[str, Any] = {"long": "x" * 20, "none": None, "n": 7}
    span = tracer.start_span("s", attributes=given)
    span.set_attribute("tags", ["abcdefghijk", "ok"])
    span.add_event("first", {"text": "y" * 20})
    span.add_event("second")  # over max_events
    span.end()
    (found,) = exported.get_finished_spans()
    attributes = dict(found.attributes or {})
    assert attributes["long"] == "x" * 8
    assert "none" not in attributes
    assert attributes["n"] == 7
    assert attributes["tags"] == ("abcdefgh", "ok")
    assert [e.name for e in found.events] == ["first"]
    assert dict(found.events[0].attributes or {})["text"] == "y" * 8


def test_an_exception_is_recorded_and_sets_the_status_and_the_span_is_final_after_end() -> None:
    tracer, exported, _ = _setup()
    with pytest.raises(ValueError, match="bad qty"), tracer.start_as_current_span("order") as span:
        raise ValueError("bad qty")
    span.set_attribute("after", 1)
    span.add_event("after")
    span.end()  # twice: exported once
    (found,) = exported.get_finished_spans()
    assert found.status.status_code is StatusCode.ERROR
    assert found.status.description == "ValueError: bad qty"
    (event,) = found.events
    assert event.name == "exception"
    assert dict(event.attributes or {})["exception.type"] == "ValueError"
    assert "after" not in dict(found.attributes or {})
    assert trace.get_current_span() is trace.INVALID_SPAN  # the context was restored


def test_status_ok_is_final_and_unset_changes_nothing() -> None:
    tracer, exported, _ = _setup()
    span = tracer.start_span("s")
    span.set_status(StatusCode.UNSET)
    span.set_status(StatusCode.OK)
    span.set_status(StatusCode.ERROR, "late")
    span.end()
    (found,) = exported.get_finished_spans()
    assert found.status.status_code is StatusCode.OK


def test_without_an_sdk_provider_spans_do_not_record() -> None:
    tracer = GatewayTracer("execgw.test", provider=trace.NoOpTracerProvider())
    with tracer.start_as_current_span("s") as span:
        assert not span.is_recording()
        span.set_attribute("k", "v")  # harmless


def test_values_the_exporters_cannot_encode_are_dropped_and_lists_copied() -> None:
    tracer, exported, _ = _setup()
    tags = ["a", "b"]
    given: dict[str, Any] = {"object": object(), "mapping": {"k": 1}, "raw": b"bytes", "tags": tags}
    span = tracer.start_span("s", attributes=given)
    span.set_attribute("later", ["x", object()])  # type: ignore[list-item]
    tags.append("c")  # after the fact: the span keeps what it was given
    span.end()
    (found,) = exported.get_finished_spans()
    attributes = dict(found.attributes or {})
    assert "object" not in attributes
    assert "mapping" not in attributes
    assert "later" not in attributes
    assert attributes["raw"] == "bytes"
    assert attributes["tags"] == ("a", "b")


def test_the_scope_wins_over_a_span_attribute_of_the_same_name_as_the_sdk_has_it() -> None:
    tracer, exported, _ = _setup()
    token = otel_context.attach(scopes.in_scope(SCOPE))
    try:
        with tracer.start_as_current_span("root", attributes={"execgw.dry_run": False}):
            tracer.start_span("child", attributes={"execgw.dry_run": False}).end()
    finally:
        otel_context.detach(token)
    for span in exported.get_finished_spans():
        assert dict(span.attributes or {})["execgw.dry_run"] is True, span.name


def test_unlimited_counts_stay_unlimited_and_the_span_length_limit_applies() -> None:
    limits = SpanLimits(
        max_span_attributes=SpanLimits.UNSET,
        max_events=SpanLimits.UNSET,
        max_span_attribute_length=4,
    )
    tracer, exported, _ = _setup(limits=limits)
    span = tracer.start_span("s", attributes={f"k{i}": "long value" for i in range(200)})
    for i in range(200):
        span.add_event(f"e{i}")
    span.end()
    (found,) = exported.get_finished_spans()
    attributes = dict(found.attributes or {})
    assert len([k for k in attributes if k.startswith("k")]) == 200
    assert attributes["k0"] == "long"
    assert len(found.events) == 200


def test_a_dropped_root_keeps_the_random_trace_id_flag() -> None:
    tracer, _, _ = _setup(sampler=ParentBased(ALWAYS_OFF))
    span = tracer.start_span("root")
    flags = span.get_span_context().trace_flags
    assert not flags.sampled
    assert flags.random_trace_id


def test_the_jsonl_exporters_direct_line_is_byte_for_byte_its_general_one(tmp_path: Path) -> None:
    """The jsonl exporter writes the gateway's spans directly (events and links included;
    no status, no trace state); that line must be exactly what the general encoder
    writes, and every other span must take the general path."""
    tracer, exported, _ = _setup()
    exporter = JsonLinesSpanExporter(tmp_path / "spans.jsonl")
    encode = exporter._encoder.encode
    token = otel_context.attach(scopes.in_scope(SCOPE))
    try:
        with tracer.start_as_current_span(
            "rpc",
            kind=SpanKind.SERVER,
            attributes={
                "text": 'é "quoted" \\ \n\t\x00',
                "n": -(2**40),
                "f": 1.5,
                "b": False,
                "seq": ("x", "y"),
            },
        ):
            tracer.start_span("plain child").end()
            with tracer.start_as_current_span("with event") as evented:
                evented.add_event("e", {"k": "v", "seq": ("a", "b"), "n": 3})
                evented.add_event("bare")
            linked = tracer.start_span(
                "with link",
                links=[
                    trace.Link(evented.get_span_context()),
                    trace.Link(evented.get_span_context(), {"why": "batch", "n": 2}),
                ],
            )
            linked.end()
            failed = tracer.start_span("with status")
            failed.set_status(StatusCode.ERROR, "boom")
            failed.end()
        remote = SpanContext(1, 2, True, TraceFlags(1), TraceState([("k", "v")]))
        tracer.start_span(
            "with trace state", context=trace.set_span_in_context(NonRecordingSpan(remote))
        ).end()
    finally:
        otel_context.detach(token)
    spans = _by_name(exported)
    resource = exporter._resource(next(iter(spans.values())).resource)

    def general(span: ReadableSpan) -> bytes:
        return encode({**exporter._entry(span), "resource": resource})

    direct = {
        name for name, span in spans.items() if _direct_line(span, _Hexes(), resource, encode)
    }
    assert direct == {"rpc", "plain child", "with event", "with link"}
    hexes = _Hexes()  # shared, as in a batch: the trace's id formatted once
    for name in direct:
        span = spans[name]
        assert encode(_direct_line(span, hexes, resource, encode)) == general(span), name
    # A whole batch, both paths mixed: each line exactly the general one.
    batch = list(spans.values())
    assert exporter._lines(batch) == b"".join(general(span) + b"\n" for span in batch)
    exporter.export(list(spans.values()))
    exporter.shutdown()
    lines = (tmp_path / "spans.jsonl").read_bytes().splitlines()
    assert len(lines) == len(spans)
    decoded = {entry["name"]: entry for entry in map(json.loads, lines)}
    assert decoded["rpc"]["attributes"]["text"] == 'é "quoted" \\ \n\t\x00'
    assert decoded["rpc"]["attributes"]["seq"] == ["x", "y"]
    assert decoded["plain child"]["parent_id"] == decoded["rpc"]["context"]["span_id"]
    assert decoded["with trace state"]["context"]["trace_state"] != "[]"
    assert decoded["rpc"]["resource"]["attributes"]


def test_spans_reach_the_gateways_pipelines_and_a_processor_added_later() -> None:
    """Spans reach the members of the gateways' pipelines; a processor added to the
    provider afterwards (or a pipeline attached or detached) is seen at once."""
    provider = TracerProvider(sampler=ScopeSampler())
    pipelines = GatewayPipelines()
    provider.add_span_processor(pipelines)
    tracer = GatewayTracer("execgw.test", provider=provider)
    first, later = InMemorySpanExporter(), InMemorySpanExporter()
    attached = SimpleSpanProcessor(first)
    pipelines.attach(attached)
    with tracer.start_as_current_span("a"):
        tracer.start_span("a-child").end()
    provider.add_span_processor(SimpleSpanProcessor(later))
    tracer.start_span("b").end()
    pipelines.detach(attached)
    tracer.start_span("c").end()
    assert sorted(s.name for s in first.get_finished_spans()) == ["a", "a-child", "b"]
    assert [s.name for s in later.get_finished_spans()] == ["b", "c"]


def test_a_pipeline_member_with_an_on_start_is_called_with_the_span() -> None:
    started: list[str] = []

    class Starter(SimpleSpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            started.append(span.name)

    provider = TracerProvider(sampler=ScopeSampler())
    pipelines = GatewayPipelines()
    provider.add_span_processor(pipelines)
    tracer = GatewayTracer("execgw.test", provider=provider)
    exported = InMemorySpanExporter()
    pipelines.attach(Starter(exported))
    with tracer.start_as_current_span("root"):
        tracer.start_span("child").end()
    assert started == ["root", "child"]
    assert sorted(s.name for s in exported.get_finished_spans()) == ["child", "root"]


def test_a_parent_based_subclass_with_its_own_answer_is_always_asked() -> None:
    """From review: only ParentBased's own should_sample may be skipped; a subclass that
    adds attributes must be asked for roots and children alike."""

    class Tagging(ParentBased):
        def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
            result = super().should_sample(*args, **kwargs)
            tagged: dict[str, Any] = dict(result.attributes or {})
            tagged["app.tag"] = "t"
            return SamplingResult(result.decision, tagged, result.trace_state)

    tracer, exported, _ = _setup(sampler=Tagging(ALWAYS_ON))
    with tracer.start_as_current_span("root"):
        tracer.start_span("child").end()
    for span in exported.get_finished_spans():
        assert dict(span.attributes or {})["app.tag"] == "t", span.name


def test_a_count_limit_of_zero_keeps_nothing_as_the_sdk_does() -> None:
    tracer, exported, _ = _setup(limits=SpanLimits(max_links=0, max_span_attributes=0))
    with tracer.start_as_current_span("root", attributes={"a": 1}) as root:
        tracer.start_span(
            "child", links=[trace.Link(root.get_span_context())], attributes={"b": 2}
        ).end()
    for span in exported.get_finished_spans():
        assert list(span.links) == []
        assert dict(span.attributes or {}) == {}


def test_set_attributes_keeps_what_set_attribute_one_by_one_keeps() -> None:
    """The bulk setter is written out for speed: it must cut, drop, copy and count
    exactly as set_attribute does, and change nothing once the span ended."""
    tracer, exported, _ = _setup(limits=SpanLimits(max_attribute_length=4, max_span_attributes=5))
    given: dict[str, Any] = {
        "long": "abcdefgh",
        "none": None,
        "n": 7,
        "tags": ["abcdefg", "ok"],
        "object": object(),
        "raw": b"bytes!",
        "first": "replaced",
        "over": "the count",
        "last": "too",
    }
    one_by_one = tracer.start_span("one by one", attributes={"first": 1, "other": 2})
    for key, value in given.items():
        one_by_one.set_attribute(key, value)
    together = tracer.start_span("together", attributes={"first": 1, "other": 2})
    together.set_attributes(given)
    for span in (one_by_one, together):
        span.end()
        span.set_attributes({"after": "end"})
    spans = _by_name(exported)
    expected = dict(spans["one by one"].attributes or {})
    assert dict(spans["together"].attributes or {}) == expected
    assert expected == {"first": "repl", "other": 2, "long": "abcd", "n": 7, "tags": ("abcd", "ok")}


def test_a_span_msgspec_cannot_write_costs_only_itself(tmp_path: Path) -> None:
    """A lone surrogate (an undecodable file name in an exception message) or a number
    key is written through the standard library; a key no JSON can hold drops that span
    alone. The rest of the batch is written as always."""
    tracer, exported, _ = _setup()
    tracer.start_span("before", attributes={"k": "v"}).end()
    surrogate = tracer.start_span("surrogate")
    surrogate.add_event("exception", {"exception.message": "no such file: caf\udce9"})
    surrogate.end()
    numbered = tracer.start_span("numbered")
    cast(Any, numbered)._values[7] = "seven"  # as an instrumentation could leave it
    numbered.end()
    hopeless = tracer.start_span("hopeless")
    cast(Any, hopeless)._values[("a", "b")] = 1
    hopeless.end()
    tracer.start_span("after").end()
    exporter = JsonLinesSpanExporter(tmp_path / "spans.jsonl")
    assert exporter.export(exported.get_finished_spans()) is SpanExportResult.SUCCESS
    exporter.shutdown()
    lines = (tmp_path / "spans.jsonl").read_bytes().splitlines()
    written = {entry["name"]: entry for entry in map(json.loads, lines)}
    assert list(written) == ["before", "surrogate", "numbered", "after"]
    message = written["surrogate"]["events"][0]["attributes"]["exception.message"]
    assert message == "no such file: caf\udce9"
    assert written["numbered"]["attributes"]["7"] == "seven"
    assert written["before"]["attributes"]["k"] == "v"


def test_the_gateways_spans_leave_the_module_level_random_alone() -> None:
    """Ids under the SDK's default generator are drawn from the gateway's own generator:
    an application (or a test framework) watching or seeding `random` sees no draw."""
    tracer, exported, _ = _setup()
    state = random.getstate()
    with tracer.start_as_current_span("root"):
        tracer.start_span("child").end()
    assert random.getstate() == state
    ids = {(s.context.trace_id, s.context.span_id) for s in exported.get_finished_spans()}
    assert len(ids) == 2
    assert all(t and s for t, s in ids)
