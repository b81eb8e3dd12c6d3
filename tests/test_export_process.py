"""telemetry/export_process.py with a real export process: what it writes is what the
in-process exporter writes, a flush means written, a stop exports what was handed
over, and a dead, interrupted or orphaned export process does what it says."""

from __future__ import annotations

import contextlib
import json
import logging
import marshal
import os
import resource
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from execgw.server.config import TelemetryConfig
from execgw.server.telemetry import batching, export_process, export_worker, logs, tracing
from execgw.server.telemetry.batching import SpanBatcher
from execgw.server.telemetry.export_process import ExportProcessError, ProcessSpanExporter, Sent
from execgw.server.telemetry.jsonl import JsonLinesSpanExporter

if TYPE_CHECKING:
    from tests.span_samples import SAMPLED, Tag, gateway_spans
else:
    from span_samples import SAMPLED, Tag, gateway_spans

FLUSH_MS = 20_000


def _sdk_spans(n: int, prefix: str = "sdk") -> list[ReadableSpan]:
    provider = TracerProvider()
    recorded = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    tracer = provider.get_tracer("someone.else")
    for i in range(n):
        span = tracer.start_span(f"{prefix}{i}", attributes={"i": i})
        span.add_event("e", {"i": i})
        span.end()
    return list(recorded.get_finished_spans())


def _in_process_lines(tmp_path: Path, spans: list[ReadableSpan]) -> bytes:
    path = tmp_path / "in-process.jsonl"
    exporter = JsonLinesSpanExporter(path)
    exporter.export(spans)
    exporter.shutdown()
    return path.read_bytes()


def _pid(exporter: ProcessSpanExporter) -> int:
    process = exporter._process
    assert process is not None
    return process.process.pid


def test_a_flushed_file_is_what_the_in_process_exporter_writes(tmp_path: Path) -> None:
    spans = gateway_spans() + _sdk_spans(3)
    path = tmp_path / "spans.jsonl"
    exporter = ProcessSpanExporter("jsonl", str(path))
    try:
        assert exporter.export(spans[:3]) is SpanExportResult.SUCCESS
        assert exporter.export(spans[3:]) is SpanExportResult.SUCCESS
        assert exporter.force_flush(FLUSH_MS) is True
        # Read before the stop: the flush's answer means the lines are in the file.
        assert path.read_bytes() == _in_process_lines(tmp_path, spans)
    finally:
        exporter.shutdown()
    assert exporter.export(spans) is SpanExportResult.FAILURE  # stopped
    assert exporter.force_flush(FLUSH_MS) is False


def test_a_stop_exports_everything_handed_over_first(tmp_path: Path) -> None:
    spans = _sdk_spans(600)
    path = tmp_path / "spans.jsonl"
    exporter = ProcessSpanExporter("jsonl", str(path))
    for start in range(0, len(spans), 100):
        exporter.export(spans[start : start + 100])
    pid = _pid(exporter)
    exporter.shutdown()  # no flush
    assert path.read_bytes() == _in_process_lines(tmp_path, spans)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # exited and reaped


def test_an_exporter_it_cannot_make_stops_the_start_and_says_why(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ExportProcessError) as raised:
        ProcessSpanExporter("jsonl", str(blocker / "spans.jsonl"))
    message = str(raised.value)
    assert message.startswith("telemetry.exporter jsonl: ")
    assert "a-file" in message


def test_a_dead_export_process_is_started_again_and_the_loss_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = ProcessSpanExporter("jsonl", str(path))
    try:
        first = _pid(exporter)
        assert exporter._process is not None
        exporter._process.process.kill()
        exporter._process.process.wait()
        # Too soon after its start: no second one yet, and the batch is lost.
        monkeypatch.setattr(export_process, "RESTART_EVERY_S", 3600.0)
        with caplog.at_level(logging.WARNING, logger=export_process.__name__):
            assert exporter.export(_sdk_spans(2, "lost")) is SpanExportResult.FAILURE
        assert "the span export process exited (code -9)" in caplog.text
        assert exporter._process is None
        monkeypatch.setattr(export_process, "RESTART_EVERY_S", 0.0)
        kept = _sdk_spans(2, "kept")
        with caplog.at_level(logging.WARNING, logger=export_process.__name__):
            assert exporter.export(kept) is SpanExportResult.SUCCESS
        assert "started again" in caplog.text
        assert _pid(exporter) != first
        assert exporter.force_flush(FLUSH_MS) is True
        assert path.read_bytes() == _in_process_lines(tmp_path, kept)
    finally:
        exporter.shutdown()


def test_a_terminals_interrupt_leaves_it_running(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = ProcessSpanExporter("jsonl", str(path))
    try:
        for stop in (signal.SIGINT, signal.SIGTERM):
            os.kill(_pid(exporter), stop)
        spans = _sdk_spans(3)
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        assert exporter.force_flush(FLUSH_MS) is True
        assert path.read_bytes() == _in_process_lines(tmp_path, spans)
    finally:
        exporter.shutdown()


def test_a_stop_ends_an_export_process_that_stopped_taking_spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_process, "EXIT_WAIT_S", 0.2)
    monkeypatch.setattr(export_process, "LOCK_WAIT_S", 0.2)
    exporter = ProcessSpanExporter("jsonl", str(tmp_path / "spans.jsonl"))
    pid = _pid(exporter)
    os.kill(pid, signal.SIGSTOP)  # as a process hung on a collector: it reads nothing
    results: list[SpanExportResult] = []
    # More than a pipe holds: the write blocks until the export process reads.
    big = _sdk_spans(3000)
    writer = threading.Thread(target=lambda: results.append(exporter.export(big)))
    writer.start()
    try:
        began = time.monotonic()
        exporter.shutdown()  # before or after the writer took the lock: it returns
        # Bounded by its waits (0.2 s each), not by the send's 30 s.
        assert time.monotonic() - began < 10
        writer.join(30)
        assert not writer.is_alive()
        assert results == [SpanExportResult.FAILURE]
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # killed and reaped
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


GATEWAY = textwrap.dedent(
    """
    import os, signal, sys
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from execgw.server.telemetry.export_process import ProcessSpanExporter

    provider = TracerProvider()
    recorded = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    for i in range(40):
        provider.get_tracer("t").start_span(f"s{i}").end()
    spans = recorded.get_finished_spans()
    exporter = ProcessSpanExporter("jsonl", sys.argv[1])
    exporter.export(spans[:20])
    assert exporter.force_flush(20_000)
    exporter.export(spans[20:])  # handed over, never flushed
    print(exporter._process.process.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_it_outlives_a_killed_gateway_only_to_export_what_it_was_handed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spans.jsonl"
    gateway = subprocess.run(
        [sys.executable, "-c", GATEWAY, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert gateway.returncode == -signal.SIGKILL, gateway.stderr
    pid = int(gateway.stdout.strip())
    try:
        exited = os.pidfd_open(pid)
    except ProcessLookupError:
        exited = None  # gone already
    if exited is not None:
        try:
            # Readable once the process has exited.
            readable, _, _ = select.select([exited], [], [], 30)
            assert readable, "the export process outlived its gateway"
        finally:
            os.close(exited)
    names = [line.split('"name": "', 1)[1].split('"', 1)[0] for line in _lines(path)]
    assert names == [f"s{i}" for i in range(40)]


def _lines(path: Path) -> list[str]:
    return [json.dumps(json.loads(line)) for line in path.read_text().splitlines()]


class _Recorded(subprocess.Popen):  # type: ignore[type-arg]
    """Popen, remembering every process it started."""

    started: ClassVar[list[subprocess.Popen[bytes]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _Recorded.started.append(self)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen[bytes]]:
    """The export processes a test starts."""
    _Recorded.started = []
    monkeypatch.setattr(subprocess, "Popen", _Recorded)
    return _Recorded.started


def test_an_export_process_that_dies_at_once_is_said_so_at_once(
    monkeypatch: pytest.MonkeyPatch, started: list[subprocess.Popen[bytes]]
) -> None:
    monkeypatch.setattr(export_process, "_BOOT", "import sys; sys.exit(3)")
    with pytest.raises(ExportProcessError, match=r"exited \(code 3\) before it was ready"):
        ProcessSpanExporter("jsonl", "unused.jsonl")
    assert [p.returncode for p in started] == [3]


def test_an_export_process_that_never_answers_is_killed(
    monkeypatch: pytest.MonkeyPatch, started: list[subprocess.Popen[bytes]]
) -> None:
    monkeypatch.setattr(export_process, "READY_WAIT_S", 0.5)
    monkeypatch.setattr(export_process, "_BOOT", "import time; time.sleep(600)")
    with pytest.raises(ExportProcessError, match="did not start within"):
        ProcessSpanExporter("jsonl", "unused.jsonl")
    assert [p.returncode for p in started] == [-signal.SIGKILL]


def test_a_stop_starts_no_export_process_while_the_queue_drains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list[subprocess.Popen[bytes]]
) -> None:
    """The batch processor drains its queue at a stop: its exports, once the stop began,
    must not start a new export process (which could be stuck as the last one was)."""
    monkeypatch.setattr(export_process, "LOCK_WAIT_S", 0.2)
    monkeypatch.setattr(export_process, "RESTART_EVERY_S", 0.0)
    monkeypatch.setattr(batching, "SHUTDOWN_WAIT_S", 0.2)
    exporter = ProcessSpanExporter("jsonl", str(tmp_path / "spans.jsonl"))
    processor = SpanBatcher(exporter, max_queue_size=10_000, schedule_delay_s=3600.0)
    os.kill(started[0].pid, signal.SIGSTOP)
    try:
        for span in _sdk_spans(4000):  # full batches: the worker blocks writing one
            processor.on_end(span)
        processor.shutdown()
        processor._worker.join(30)  # it drains the rest of the queue after the stop
        assert not processor._worker.is_alive()
        assert len(started) == 1
        assert started[0].wait(30) == -signal.SIGKILL
        assert exporter.lost > 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(started[0].pid, signal.SIGKILL)


def test_a_span_with_values_of_other_types_crosses_and_the_next_batches_too(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = ProcessSpanExporter("jsonl", str(path))
    try:
        odd = ReadableSpan(
            "odd",
            context=SAMPLED,
            resource=Resource({"service.name": "svc"}),
            attributes={"tag": Tag("fx"), "lock": threading.Lock()},  # type: ignore[dict-item]
            start_time=1,
            end_time=2,
        )
        assert exporter.export([odd]) is SpanExportResult.SUCCESS
        later = _sdk_spans(2)
        assert exporter.export(later) is SpanExportResult.SUCCESS
        assert exporter.force_flush(FLUSH_MS) is True
    finally:
        exporter.shutdown()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["name"] for line in lines] == ["odd", "sdk0", "sdk1"]
    assert lines[0]["attributes"] == {"tag": "fx"}


def test_lost_spans_are_counted_and_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(export_process, "RESTART_EVERY_S", 3600.0)
    exporter = ProcessSpanExporter("jsonl", str(tmp_path / "spans.jsonl"))
    assert exporter._process is not None
    exporter._process.process.kill()
    exporter._process.process.wait()
    with caplog.at_level(logging.WARNING, logger=export_process.__name__):
        assert exporter.export(_sdk_spans(2)) is SpanExportResult.FAILURE
        assert exporter.export(_sdk_spans(3)) is SpanExportResult.FAILURE  # within the minute
        exporter.shutdown()
    assert exporter.lost == 5
    assert "2 spans lost: no span export process is running" in caplog.text
    assert "3 more spans lost (5 in all)" in caplog.text


def test_a_flush_that_timed_out_does_not_answer_the_next(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = ProcessSpanExporter("jsonl", str(path))
    try:
        pid = _pid(exporter)
        os.kill(pid, signal.SIGSTOP)
        assert exporter.force_flush(100) is False  # its answer comes later
        os.kill(pid, signal.SIGCONT)
        spans = _sdk_spans(300)
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        assert exporter.force_flush(FLUSH_MS) is True
        assert path.read_bytes() == _in_process_lines(tmp_path, spans)
    finally:
        exporter.shutdown()


def test_it_works_with_descriptors_past_select_s_limit(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        if hard != resource.RLIM_INFINITY and hard < 1200:
            pytest.skip(f"at most {hard} open files here")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    held: list[int] = []
    try:
        while not held or held[-1] < 1030:
            held.append(os.open(os.devnull, os.O_RDONLY))
        path = tmp_path / "spans.jsonl"
        exporter = ProcessSpanExporter("jsonl", str(path))
        try:
            spans = _sdk_spans(2)
            assert exporter.export(spans) is SpanExportResult.SUCCESS
            assert exporter.force_flush(FLUSH_MS) is True
        finally:
            exporter.shutdown()
        assert path.read_bytes() == _in_process_lines(tmp_path, spans)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_no_export_process_for_a_gateway_that_cannot_attach(
    monkeypatch: pytest.MonkeyPatch, started: list[subprocess.Popen[bytes]]
) -> None:
    monkeypatch.setattr(tracing, "_pipelines", lambda resource, *, create: None)
    pipeline = tracing.SpanPipeline(TelemetryConfig(exporter="jsonl"), Resource({}))
    assert not pipeline.exporting
    pipeline.close()
    assert started == []


def test_secrets_stay_out_of_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list[subprocess.Popen[bytes]]
) -> None:
    monkeypatch.setenv("KITE_ACCESS_TOKEN", "kite-secret")
    monkeypatch.setenv("EXECGW_JOURNAL_HMAC_KEY", "hmac-secret")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=desk")
    exporter = ProcessSpanExporter("jsonl", str(tmp_path / "spans.jsonl"))
    try:
        environment = Path(f"/proc/{started[0].pid}/environ").read_bytes().split(b"\0")
    finally:
        exporter.shutdown()
    assert b"OTEL_EXPORTER_OTLP_HEADERS=x-team=desk" in environment
    assert not [v for v in environment if b"secret" in v]


def test_it_logs_in_the_gateways_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(logs, "_configured", ("INFO", "json"))
    exporter = ProcessSpanExporter("jsonl", str(tmp_path / "spans.jsonl"))
    try:
        process = exporter._process
        assert process is not None
        deadline = time.monotonic() + 30
        assert process.send(b"not marshal", lambda: deadline) is Sent.WHOLE
        assert exporter.force_flush(FLUSH_MS) is True  # read after the bad frame
    finally:
        exporter.shutdown()
    (line,) = [line for line in capfd.readouterr().err.splitlines() if "could not be read" in line]
    assert json.loads(line)["level"] == "ERROR"


def _fill_pipe(exporter: ProcessSpanExporter) -> None:
    """Fill the export process's input (it must not be reading) with frames of no
    one's, each written whole or not at all, until it takes no more."""
    process = exporter._process
    assert process is not None
    filler = marshal.dumps(("flush", -1, 0))
    while process.send(filler, time.monotonic) is Sent.WHOLE:
        pass


def test_a_flush_behind_a_full_pipe_fails_without_killing_the_export_process(
    tmp_path: Path,
) -> None:
    """Nothing of the flush was written: the stream is intact and the export process
    (and the spans it holds) must live on."""
    path = tmp_path / "spans.jsonl"
    exporter = ProcessSpanExporter("jsonl", str(path))
    try:
        pid = _pid(exporter)
        os.kill(pid, signal.SIGSTOP)
        handed = _sdk_spans(20)
        assert exporter.export(handed) is SpanExportResult.SUCCESS
        _fill_pipe(exporter)
        assert exporter.force_flush(50) is False
        os.kill(pid, signal.SIGCONT)
        assert exporter.force_flush(FLUSH_MS) is True
        assert _pid(exporter) == pid  # the same export process
        assert path.read_bytes() == _in_process_lines(tmp_path, handed)
    finally:
        exporter.shutdown()


def test_a_stop_during_a_restart_leaves_no_export_process_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list[subprocess.Popen[bytes]]
) -> None:
    monkeypatch.setattr(export_process, "RESTART_EVERY_S", 0.0)
    monkeypatch.setattr(export_process, "LOCK_WAIT_S", 0.1)
    exporter = ProcessSpanExporter("jsonl", str(tmp_path / "spans.jsonl"))
    started[0].kill()
    started[0].wait()
    starting, stopped = threading.Event(), threading.Event()
    ready = export_process._ExportProcess.wait_ready

    def ready_after_the_stop(process: Any, timeout_s: float) -> str | None:
        starting.set()
        stopped.wait(30)  # the stop comes while the new one starts
        return ready(process, timeout_s)

    monkeypatch.setattr(export_process._ExportProcess, "wait_ready", ready_after_the_stop)
    results: list[SpanExportResult] = []
    restarting = threading.Thread(target=lambda: results.append(exporter.export(_sdk_spans(1))))
    restarting.start()
    try:
        assert starting.wait(30)
        exporter.shutdown()
    finally:
        stopped.set()
        restarting.join(30)
    assert results == [SpanExportResult.FAILURE]
    assert len(started) == 2
    assert all(process.poll() is not None for process in started)


def test_a_pipelines_stop_is_bounded_with_a_stuck_export_process(
    monkeypatch: pytest.MonkeyPatch, started: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """The batch processor's worker, stuck handing a batch over, gives up by the stop's
    deadline: the stop does not wait for the send's own 30 s, and starts nothing."""
    monkeypatch.setattr(tracing, "SPANS_STOP_S", 0.5)
    monkeypatch.setattr(tracing, "FLUSH_TIMEOUT_MS", 200)
    monkeypatch.setattr(export_process, "EXIT_WAIT_S", 0.2)
    monkeypatch.setattr(export_process, "RESTART_EVERY_S", 0.0)
    config = TelemetryConfig(exporter="jsonl", path=str(tmp_path / "spans.jsonl"))
    pipeline = tracing.SpanPipeline(config, Resource({}))
    assert pipeline.exporting
    assert pipeline._processor is not None
    os.kill(started[0].pid, signal.SIGSTOP)
    for span in _sdk_spans(4000):
        pipeline._processor.on_end(span)
    began = time.monotonic()
    try:
        pipeline.close()
        assert time.monotonic() - began < 10
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(started[0].pid, signal.SIGKILL)
    assert len(started) == 1
    assert started[0].wait(30) == -signal.SIGKILL


def test_an_orphaned_export_process_stops_exporting_after_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exits: list[int] = []
    exited = threading.Event()

    def record_exit(code: int) -> None:
        exits.append(code)
        exited.set()

    monkeypatch.setattr(export_worker, "ORPHAN_EXIT_S", 0.1)
    monkeypatch.setattr(os, "_exit", record_exit)
    monkeypatch.setattr(logging, "shutdown", lambda: None)  # the test runner's handlers
    monkeypatch.setattr(export_worker, "_exited", threading.Event())
    # A parent it never had: gone from the first check.
    export_worker._watch_parent(-1, check_every_s=0.01)
    assert exited.wait(30)
    assert exits == [3]


def test_an_export_process_that_finished_is_not_cut_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exits: list[int] = []
    monkeypatch.setattr(export_worker, "ORPHAN_EXIT_S", 30.0)
    monkeypatch.setattr(os, "_exit", exits.append)
    done = threading.Event()
    done.set()  # serving ended: the gateway's stop closed its input
    monkeypatch.setattr(export_worker, "_exited", done)
    watcher = export_worker._watch_parent(-1, check_every_s=0.01)
    watcher.join(30)
    assert not watcher.is_alive()
    assert exits == []


def test_a_gateway_whose_export_process_cannot_start_exits_4(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "listen: 127.0.0.1:0\n"
        f"journal:\n  path: {tmp_path / 'journal.db'}\n"
        f"telemetry:\n  exporter: jsonl\n  path: {blocker / 'spans.jsonl'}\n",
        encoding="utf-8",
    )
    run = subprocess.run(
        [sys.executable, "-m", "execgw.server.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 4, run.stderr
    assert "cannot start: telemetry.exporter jsonl: " in run.stderr


def test_an_export_process_that_takes_nothing_for_send_wait_s_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch small enough to go whole or not at all, behind a full pipe: the process
    is stuck (not a frame cut short), and goes."""
    monkeypatch.setattr(export_process, "SEND_WAIT_S", 0.1)
    monkeypatch.setattr(export_process, "RESTART_EVERY_S", 3600.0)
    exporter = ProcessSpanExporter("jsonl", str(tmp_path / "spans.jsonl"))
    try:
        assert exporter._process is not None
        child = exporter._process.process
        os.kill(child.pid, signal.SIGSTOP)
        _fill_pipe(exporter)
        with caplog.at_level(logging.WARNING, logger=export_process.__name__):
            assert exporter.export(_sdk_spans(1)) is SpanExportResult.FAILURE
        assert child.wait(30) == -signal.SIGKILL
        assert "took no spans for 0 s" in caplog.text
        assert exporter.lost == 1
    finally:
        exporter.shutdown()


def test_a_stop_cuts_short_a_send_already_waiting(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    started: list[subprocess.Popen[bytes]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The worker is already waiting on a full pipe (its own deadline 30 s away) when
    the stop comes: it gives up by the stop's deadline, and the export process is left
    to export what it has and exit, not killed for it."""
    monkeypatch.setattr(tracing, "SPANS_STOP_S", 0.5)
    monkeypatch.setattr(tracing, "FLUSH_TIMEOUT_MS", 200)
    monkeypatch.setattr(export_process, "EXIT_WAIT_S", 20.0)
    config = TelemetryConfig(exporter="jsonl", path=str(tmp_path / "spans.jsonl"))
    pipeline = tracing.SpanPipeline(config, Resource({}))
    exporter = pipeline._exporter
    assert exporter is not None
    assert pipeline._processor is not None
    child = started[0]
    handed = _sdk_spans(20, "handed")
    assert exporter.export(handed) is SpanExportResult.SUCCESS  # not flushed
    os.kill(child.pid, signal.SIGSTOP)
    _fill_pipe(exporter)
    waiting = threading.Event()
    send = export_process._ExportProcess.send

    def noted(process: Any, payload: bytes, deadline: Any) -> Sent:
        waiting.set()
        return send(process, payload, deadline)

    end_input = export_process._ExportProcess.end_input

    def end_and_resume(process: Any) -> None:
        end_input(process)
        # Its input closed by the stop, it may run again: to export what it has, and exit
        # (by the second call, from the stop's close, it may have exited already).
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGCONT)

    monkeypatch.setattr(export_process._ExportProcess, "send", noted)
    monkeypatch.setattr(export_process._ExportProcess, "end_input", end_and_resume)
    for span in _sdk_spans(512):  # a full batch: the worker takes it at once
        pipeline._processor.on_end(span)
    assert waiting.wait(30)
    began = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger=export_process.__name__):
            pipeline.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGCONT)
    assert time.monotonic() - began < 15
    assert child.wait(30) == 0  # it finished: not killed
    assert len(started) == 1
    # What it was handed before, it exported; and said nothing of losing it.
    assert (tmp_path / "spans.jsonl").read_bytes() == _in_process_lines(tmp_path, handed)
    assert "the spans it held are lost" not in caplog.text


def test_spans_left_out_are_not_counted_twice_when_the_batch_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_process, "SEND_WAIT_S", 0.05)
    exporter = ProcessSpanExporter("jsonl", str(tmp_path / "spans.jsonl"))
    try:
        assert exporter._process is not None
        os.kill(exporter._process.process.pid, signal.SIGSTOP)
        _fill_pipe(exporter)
        nameless = ReadableSpan(object(), context=SAMPLED, resource=Resource({}))  # type: ignore[arg-type]
        assert exporter.export([*_sdk_spans(2), nameless]) is SpanExportResult.FAILURE
        assert exporter.lost == 3
    finally:
        exporter.shutdown()
