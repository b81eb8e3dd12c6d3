"""The gateway's batch span processor (telemetry/batching.py): batches, drops past its
queue, flushes, shuts down, and honours OTEL_BSP_*; with real spans of a real SDK
provider and an exporter that records what it gets."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import Decision, StaticSampler

from execgw.server.telemetry.batching import SpanBatcher


class Recorder(SpanExporter):
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[str]] = []
        self.exported = threading.Event()
        self.shut = False
        # While cleared, export blocks: the queue fills up behind it.
        self._gate = gate

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._gate is not None:
            self._gate.wait(10)
        self.batches.append([span.name for span in spans])
        self.exported.set()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.shut = True

    @property
    def names(self) -> list[str]:
        return [name for batch in self.batches for name in batch]


def spans(n: int, prefix: str = "s", *, sampled: bool = True) -> list[ReadableSpan]:
    # Recorded but not sampled: a processor sees the span end and must not export it.
    record_only = StaticSampler(Decision.RECORD_ONLY)
    provider = TracerProvider() if sampled else TracerProvider(sampler=record_only)
    tracer = provider.get_tracer("test")
    made = []
    for i in range(n):
        span = tracer.start_span(f"{prefix}{i}")
        span.end()
        made.append(span)
    return made  # type: ignore[return-value]


def batcher(exporter: SpanExporter, **kwargs: int) -> SpanBatcher:
    return SpanBatcher(
        exporter,
        max_queue_size=kwargs.get("queue", 1000),
        schedule_delay_s=3600.0,  # only a full batch or a flush exports
        max_export_batch_size=kwargs.get("batch", 4),
    )


def test_a_full_batch_is_exported_without_waiting_for_the_delay() -> None:
    recorder = Recorder()
    processor = batcher(recorder, batch=4)
    try:
        for span in spans(4):
            processor.on_end(span)
        assert recorder.exported.wait(10)
        assert recorder.names == ["s0", "s1", "s2", "s3"]
    finally:
        processor.shutdown()


def test_force_flush_exports_every_span_ended_before_it_in_batches_in_order() -> None:
    recorder = Recorder()
    processor = batcher(recorder, batch=4, queue=1000)
    try:
        made = spans(10)
        for span in made[:3]:
            processor.on_end(span)
        assert processor.force_flush(10_000)
        assert recorder.names == ["s0", "s1", "s2"]
        for span in made[3:]:
            processor.on_end(span)
        assert processor.force_flush(10_000)
        assert recorder.names == [f"s{i}" for i in range(10)]
        assert all(len(batch) <= 4 for batch in recorder.batches)
    finally:
        processor.shutdown()


class HoldingRecorder(Recorder):
    """An exporter that holds what it exported until flushed (as the export process
    does), answering its flushes with `answer`."""

    def __init__(self, answer: bool | None) -> None:
        super().__init__()
        self.answer = answer
        self.calls: list[str] = []
        self.timeouts: list[int] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls.append("export")
        return super().export(spans)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self.calls.append("flush")
        self.timeouts.append(timeout_millis)
        return self.answer  # type: ignore[return-value]


@pytest.mark.parametrize(("answer", "flushed"), [(True, True), (False, False), (None, True)])
def test_force_flush_flushes_the_exporter_after_the_queue_and_says_what_it_said(
    answer: bool | None, flushed: bool
) -> None:
    recorder = HoldingRecorder(answer)
    processor = batcher(recorder, batch=4)
    try:
        for span in spans(6):
            processor.on_end(span)
        assert processor.force_flush(10_000) is flushed
        # Both batches went to the exporter before it was asked to flush them; the
        # SDK's base exporter's None is "nothing held": flushed.
        assert recorder.calls[-3:] == ["export", "export", "flush"]
        assert 0 < recorder.timeouts[-1] <= 10_000
    finally:
        processor.shutdown()


def test_spans_past_the_queue_are_dropped_and_counted_never_waited_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    processor = batcher(recorder, batch=2, queue=4)
    try:
        made = spans(12)
        # The first batch wakes the worker, which blocks in export (gate closed) after
        # taking 2; the queue then fills to 4 and the rest are dropped.
        processor.on_end(made[0])
        processor.on_end(made[1])
        for span in made[2:]:
            processor.on_end(span)
        assert processor.dropped >= 4
        kept = 12 - processor.dropped
        gate.set()
        assert processor.force_flush(10_000)
        assert len(recorder.names) == kept
        assert recorder.names == sorted(recorder.names, key=lambda name: int(name[1:]))
    finally:
        gate.set()
        processor.shutdown()
    assert "spans dropped" in caplog.text


def test_unsampled_spans_are_not_exported() -> None:
    recorder = Recorder()
    processor = batcher(recorder)
    try:
        for span in spans(3, sampled=False):
            processor.on_end(span)
        assert processor.force_flush(10_000)
        assert recorder.names == []
    finally:
        processor.shutdown()


def test_shutdown_exports_what_is_left_then_shuts_the_exporter_and_ignores_later_spans() -> None:
    recorder = Recorder()
    processor = batcher(recorder, batch=100)
    made = spans(5)
    for span in made[:3]:
        processor.on_end(span)
    processor.shutdown()
    assert recorder.names == ["s0", "s1", "s2"]
    assert recorder.shut
    processor.on_end(made[3])
    assert processor.dropped == 1  # a span after shutdown is counted lost
    assert not processor.force_flush(1_000)  # as the SDK's processor answers
    assert recorder.names == ["s0", "s1", "s2"]
    processor.shutdown()  # twice is harmless


def test_a_flush_asked_for_while_it_shuts_down_is_answered_not_left_to_time_out() -> None:
    """From review: a flush asked for while the worker made its last export, as it
    stopped, was never answered and waited out its whole timeout."""
    gate = threading.Event()
    entered = threading.Event()

    class Held(Recorder):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            entered.set()
            return super().export(spans)

    processor = batcher(Held(gate), batch=1000)
    processor.on_end(spans(1)[0])
    stopper = threading.Thread(target=processor.shutdown, daemon=True)
    stopper.start()
    assert entered.wait(30)  # the stopping worker is inside its export
    answers: list[bool] = []
    flusher = threading.Thread(
        target=lambda: answers.append(processor.force_flush(600_000)), daemon=True
    )
    flusher.start()
    gate.set()
    stopper.join(30)
    flusher.join(30)
    assert not stopper.is_alive()
    assert not flusher.is_alive(), "the flush was left to wait out its timeout"
    assert answers == [False]  # asked once shut down, as the SDK's processor answers


def test_the_exporter_runs_with_instrumentation_suppressed() -> None:
    from opentelemetry import context as otel_context

    seen: list[object] = []

    class Looking(Recorder):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            seen.append(otel_context.get_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY))
            return super().export(spans)

    processor = batcher(Looking())
    try:
        for span in spans(2):
            processor.on_end(span)
        assert processor.force_flush(10_000)
    finally:
        processor.shutdown()
    assert seen == [True]


def test_an_exporter_that_raises_loses_its_batch_not_the_worker() -> None:
    class Failing(Recorder):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            if not self.batches:
                self.batches.append([])
                raise RuntimeError("collector bug")
            return super().export(spans)

    recorder = Failing()
    processor = batcher(recorder, batch=2)
    try:
        made = spans(4)
        processor.on_end(made[0])
        processor.on_end(made[1])
        assert processor.force_flush(10_000)
        processor.on_end(made[2])
        processor.on_end(made[3])
        assert processor.force_flush(10_000)
        assert recorder.names == ["s2", "s3"]
    finally:
        processor.shutdown()


def test_otel_bsp_variables_override_the_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "7")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "250")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "3")
    processor = batcher(Recorder(), batch=100, queue=1000)
    try:
        assert (processor._max_queue, processor._delay_s, processor._batch) == (7, 0.25, 3)
    finally:
        processor.shutdown()
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "lots")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "-1")
    processor = batcher(Recorder(), batch=100, queue=1000)
    try:
        # Unusable values fall back to the arguments; a batch is never above the queue.
        assert (processor._max_queue, processor._batch) == (1000, 3)
        assert processor._delay_s == 3600.0
    finally:
        processor.shutdown()
