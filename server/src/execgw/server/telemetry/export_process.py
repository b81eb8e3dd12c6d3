"""The gateway's side of the span export process (telemetry.export_worker).

`ProcessSpanExporter` is the SpanExporter the gateway's batch processor hands its
batches to. It turns each batch into tuples of builtins (telemetry.span_wire),
marshals them and writes them to the export process, which makes the JSON lines or
OTLP messages and ships them. Encoding a span in the gateway held its interpreter lock
~5 µs as a JSON line and ~26 µs as an OTLP message; handing it over holds it ~2 µs.
With OTLP, SubmitOrder's rate with telemetry on went from 0.54 to 0.67 of its rate
with telemetry off (3 interleaved runs on a 2-core machine).

What stays as it was:
- the batch processor (telemetry.batching) queues, batches and drops as before; a batch
  that cannot be handed over is lost, never waited for past SEND_WAIT_S, and the loss
  is logged (at most once a minute) and counted in `lost`;
- `force_flush` returns True once every span handed over before it is exported;
- `shutdown` closes the input, and the export process exports what it holds first;
  once a stop is coming (`stopping_by`, tracing.SPANS_STOP_S), batches are handed over
  by its deadline or lost, and no export process starts again, so a stop stays short
  even with an exporter stuck on a collector.

The export process:
- starts with the gateway, which waits for its "ready": an exporter it cannot make (a
  jsonl path it cannot open, an OTLP setting it refuses) stops the start;
- runs in a session of its own and ignores SIGINT, SIGTERM and SIGHUP: the gateway's
  stop, closing its input, ends it, once its last spans are exported; if the gateway
  is killed, it exports what it was handed and exits;
- gets the environment's OTEL_*, proxy and locale variables and the like, never the
  gateway's secrets (broker credentials, the journal's HMAC key);
- logs at the gateway's level and in its format (--log-format), to the same stderr;
- if it dies, or takes no spans for SEND_WAIT_S (an exporter hung on a collector: it is
  killed), the spans it held are lost (said, but not counted: it held an unknown
  number), and another starts, at most every RESTART_EVERY_S.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import marshal
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

import execgw.server
from execgw.server.telemetry import logs
from execgw.server.telemetry.batching import SpansLost
from execgw.server.telemetry.export_worker import HEADER_BYTES
from execgw.server.telemetry.span_wire import SpanSender, builtins_only

log = logging.getLogger(__name__)

# Seconds a start waits for the export process's "ready" (it imports the SDK and, for
# OTLP, grpc: 0.1-0.4 s on an idle 2-core machine).
READY_WAIT_S = 30.0
# Seconds a batch may wait for the export process to take it: past that it is stuck
# (its exporter hung on a collector) and is killed.
SEND_WAIT_S = 30.0
# Seconds between two looks at a send's deadline while the pipe is full (a stop may
# bring it closer).
SEND_CHECK_EVERY_S = 0.25
# Seconds a stop waits for a batch on its way over, before killing the export process
# (and once more after).
LOCK_WAIT_S = 2.0
# Seconds a stop waits for the export process to export what it holds and exit (after
# tracing.SPANS_STOP_S at most for the last batches to be handed over).
EXIT_WAIT_S = 10.0
# Seconds to wait for a killed export process to be gone.
REAP_WAIT_S = 5.0
# Seconds at least between two starts of the export process.
RESTART_EVERY_S = 5.0
# Seconds between two warnings about lost spans.
LOSS_WARNING_EVERY_S = 60.0

# Where the export process can import execgw.server from when its own sys.path cannot
# (this process's was extended at run time: a test runner, an embedding application).
# Appended, never put first: it may be a site-packages, which must not shadow the
# standard library. The signals are ignored before anything else is imported.
_SERVER_ROOT = str(Path(execgw.server.__file__).resolve().parents[2])
_BOOT = (
    "import signal, sys\n"
    "for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):\n"
    "    signal.signal(stop, signal.SIG_IGN)\n"
    "sys.path.append(sys.argv.pop(1))\n"
    "from execgw.server.telemetry.export_worker import main\n"
    "sys.exit(main())\n"
)
# What of the environment the export process gets: what an exporter reads (OTEL_*,
# grpc's and the proxies', TLS roots), and what a Python process needs to run.
_ENVIRONMENT_PREFIXES = ("OTEL_", "GRPC_", "PYTHON", "LC_", "SSL_CERT_")
_ENVIRONMENT_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "TZ",
        "TMPDIR",
        "VIRTUAL_ENV",
        "REQUESTS_CA_BUNDLE",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "grpc_proxy",
        "no_grpc_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        # What some interpreters need to start at all (a custom build, an allocator).
        "LD_LIBRARY_PATH",
        "LD_PRELOAD",
    }
)


def export_environment(environment: Mapping[str, str]) -> dict[str, str]:
    return {
        name: value
        for name, value in environment.items()
        if name in _ENVIRONMENT_NAMES or name.startswith(_ENVIRONMENT_PREFIXES)
    }


class ExportProcessError(RuntimeError):
    """The export process could not make its exporter, or did not start."""


class Sent(enum.Enum):
    WHOLE = "whole"
    # Not taken in time, none of it written: the stream is intact.
    NOTHING = "nothing"
    # Not taken in time, part of it written: the export process would misread the rest
    # of its input, so it must go.
    CUT_SHORT = "cut short"


class _Answers:
    """The export process's answer lines, read with a deadline."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending = b""
        self._poll = select.poll()  # not select(): the fd may be past 1024
        self._poll.register(fd, select.POLLIN)
        self.ended = False  # the writer is gone

    def next_line(self, deadline: float) -> str | None:
        """The next line; None when the deadline passed or the writer is gone."""
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.ended:
                return None
            if not self._poll.poll(remaining * 1000):
                return None
            chunk = os.read(self._fd, 4096)
            if not chunk:
                self.ended = True
                return None
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode("utf-8", errors="replace")

    def close(self) -> None:
        os.close(self._fd)


class _ExportProcess:
    """One running export process: its input and its answers."""

    def __init__(self, kind: str, path: str) -> None:
        answers_fd, their_fd = os.pipe()
        level, log_format = logs.configured()
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-P",  # nothing from the working directory
                    "-c",
                    _BOOT,
                    _SERVER_ROOT,
                    kind,
                    "--path",
                    path,
                    "--answers",
                    str(their_fd),
                    "--log-level",
                    level,
                    "--log-format",
                    log_format,
                    "--parent",
                    str(os.getpid()),
                ],
                stdin=subprocess.PIPE,
                pass_fds=(their_fd,),
                env=export_environment(os.environ),
                # No terminal's Ctrl-C or hang-up: the gateway's stop ends it.
                start_new_session=True,
            )
        except BaseException:
            os.close(answers_fd)
            raise
        finally:
            os.close(their_fd)
        assert self.process.stdin is not None
        self._input = self.process.stdin.fileno()
        os.set_blocking(self._input, False)
        self._writable = select.poll()
        self._writable.register(self._input, select.POLLOUT)
        self.input_closed = False
        self.answers = _Answers(answers_fd)

    def wait_ready(self, timeout_s: float) -> str | None:
        """None once ready; else why not."""
        line = self.answers.next_line(time.monotonic() + timeout_s)
        if line == "ready":
            return None
        if line is not None:
            return line.removeprefix("failed: ")
        if self.answers.ended:
            code = self.process.wait()
            return f"the export process exited (code {code}) before it was ready"
        return f"the export process did not start within {timeout_s:.0f} s"

    def send(self, payload: bytes, deadline: Callable[[], float]) -> Sent:
        """Write one frame by `deadline()`, asked again while it waits (a stop may bring
        it closer). OSError if the export process is gone or its input closed."""
        if self.input_closed:
            raise BrokenPipeError("the export process's input is closed")
        frame = memoryview(len(payload).to_bytes(HEADER_BYTES, "big") + payload)
        size = len(frame)
        while frame:
            try:
                frame = frame[os.write(self._input, frame) :]
                continue
            except BlockingIOError:
                pass
            remaining = deadline() - time.monotonic()
            if remaining <= 0:
                return Sent.NOTHING if len(frame) == size else Sent.CUT_SHORT
            self._writable.poll(min(remaining, SEND_CHECK_EVERY_S) * 1000)
        return Sent.WHOLE

    def end_input(self) -> None:
        """Close its input: it exports what it has read, a frame cut short left out,
        and exits."""
        if not self.input_closed:
            self.input_closed = True
            # An error here: it is gone already, and what waited in the pipe with it.
            with contextlib.suppress(OSError):
                assert self.process.stdin is not None
                self.process.stdin.close()

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    def close(self, timeout_s: float) -> int | None:
        """Close its input and wait for it to exit (killed past `timeout_s`); its exit
        code, None if it had to be killed."""
        self.end_input()
        try:
            code: int | None = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            if timeout_s > 0:
                log.warning("the span export process did not exit in %.0f s: killed", timeout_s)
            self.kill()
            # Bounded: a process the kernel cannot end yet is reaped later, by Popen.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(REAP_WAIT_S)
            code = None
        self.answers.close()
        return code


class ProcessSpanExporter(SpanExporter):
    """Exports through an export process running `kind` (console, jsonl, otlp)."""

    def __init__(self, kind: str, path: str = "") -> None:
        self._kind = kind
        self._path = path
        self._lock = threading.Lock()
        self._sender = SpanSender()
        self._flushes = 0
        # Set by shutdown before it waits for the lock: no batch goes over, and no
        # export process starts, once a stop began.
        self._closing = False
        # Set once a stop is coming (stopping_by): sends end by then, nothing restarts.
        self._stop_deadline: float | None = None
        self._shut = False
        # Set when a stop gave up waiting for the lock: its holder closes the process.
        self._abandoned = False
        self._lost = SpansLost(LOSS_WARNING_EVERY_S)
        self._started_at = time.monotonic()
        self._process: _ExportProcess | None = self._start()

    def _start(self) -> _ExportProcess:
        process = _ExportProcess(self._kind, self._path)
        try:
            reason = process.wait_ready(READY_WAIT_S)
        except BaseException:
            process.close(0)
            raise
        if reason is not None:
            process.close(0)
            raise ExportProcessError(f"telemetry.exporter {self._kind}: {reason}")
        self._sender.restart()
        return process

    def _running(self) -> _ExportProcess | None:
        """The export process, started again if it is gone and it is time to."""
        process = self._process
        if process is not None and process.input_closed:
            # A stop closed its input: it exports what it read and exits; nothing more
            # goes to it.
            return None
        if process is not None and process.alive():
            return process
        if process is not None:
            code = process.close(0)
            self._process = None
            log.warning(
                "the span export process exited (code %s): the spans it held are lost", code
            )
        if self._stopping() or time.monotonic() - self._started_at < RESTART_EVERY_S:
            return None
        self._started_at = time.monotonic()
        try:
            started = self._start()
        except Exception as e:
            log.warning("cannot start the span export process again: %s", e)
            return None
        if self._stopping():
            # A stop began while it started (shutdown could not see it to end it).
            started.close(0)
            return None
        self._process = started
        log.warning("the span export process started again")
        return started

    def _stopping(self) -> bool:
        return self._closing or self._stop_deadline is not None

    def stopping_by(self, deadline: float) -> None:
        """A stop is coming: hand over what comes by `deadline` (time.monotonic()) at
        the latest, and start no export process again."""
        self._stop_deadline = deadline

    def _send_deadline(self) -> Callable[[], float]:
        """A send's deadline: SEND_WAIT_S from now, or a stop's, whichever comes first
        (a stop announced while it waits included)."""
        own = time.monotonic() + SEND_WAIT_S

        def deadline() -> float:
            stop = self._stop_deadline
            return own if stop is None else min(own, stop)

        return deadline

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            try:
                return self._export(spans)
            finally:
                self._close_after_stop()

    def _close_after_stop(self) -> None:
        """Under the lock: close the export process a stop left to this thread (it gave
        up waiting for the lock while this thread was stuck)."""
        if self._abandoned and not self._shut:
            self._shut = True
            process, self._process = self._process, None
            if process is not None:
                process.close(0)

    def _export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closing:
            return self._lose(len(spans), "the gateway is stopping")
        process = self._running()
        if process is None:
            return self._lose(len(spans), "no span export process is running")
        try:
            payload, left_out = self._payload(spans)
        except Exception:
            # What this batch would have sent first (a resource) never went over.
            self._sender.restart()
            log.exception("cannot encode %d spans for the export process", len(spans))
            return self._lose(len(spans), "spans that could not be encoded")
        if left_out:
            self._lose(left_out, "spans with a name or a time of no plain type")
        sending = len(spans) - left_out
        try:
            sent = process.send(payload, self._send_deadline())
        except OSError as e:  # it died under us (a broken pipe)
            return self._lose(sending, f"the export process is gone ({e})")
        if sent is Sent.WHOLE:
            return SpanExportResult.SUCCESS
        self._sender.restart()  # what this batch would have sent first
        if self._stopping():
            # The stop's deadline, not a stuck process: it exports what it has whole.
            process.end_input()
            return self._lose(sending, "the gateway's stop came first")
        log.warning(
            "the span export process took no spans for %.0f s (its exporter is stuck: "
            "a collector that does not answer?): killed",
            SEND_WAIT_S,
        )
        process.kill()
        return self._lose(sending, "the export process was stuck")

    def _payload(self, spans: Sequence[ReadableSpan]) -> tuple[bytes, int]:
        """The batch's frame, and how many of its spans it leaves out."""
        batch = self._sender.batch(spans)
        try:
            return marshal.dumps(("spans", batch)), 0
        except ValueError:
            # A value of a type the export process may not know (a str subclass of an
            # application's): as the plain value, or left out.
            plain, left_out = builtins_only(batch)
            return marshal.dumps(("spans", plain)), left_out

    def _lose(self, count: int, why: str) -> SpanExportResult:
        self._lost.count += count
        fresh = self._lost.unsaid()
        if fresh:
            log.warning("%d spans lost: %s", fresh, why)
        return SpanExportResult.FAILURE

    @property
    def lost(self) -> int:
        """Spans that could not be handed over (not those an export process held when
        it died: their number is unknown)."""
        return self._lost.count

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """True once everything handed over so far is exported."""
        deadline = time.monotonic() + timeout_millis / 1000
        if self._closing or not self._lock.acquire(timeout=max(0.0, timeout_millis / 1000)):
            return False
        try:
            process = self._process
            if self._closing or process is None or not process.alive():
                return False
            self._flushes += 1
            wanted = self._flushes
            try:
                sent = process.send(
                    marshal.dumps(("flush", wanted, timeout_millis)), lambda: deadline
                )
            except OSError:
                return False
            if sent is not Sent.WHOLE:
                if sent is Sent.CUT_SHORT:
                    process.kill()  # it would misread what follows
                return False
            while (line := process.answers.next_line(deadline)) is not None:
                # Earlier answers are those of flushes that timed out.
                if line == f"flushed {wanted} 1":
                    return True
                if line == f"flushed {wanted} 0":
                    return False
            return False
        finally:
            self._close_after_stop()
            self._lock.release()

    def shutdown(self) -> None:
        self._closing = True
        locked = self._lock.acquire(timeout=LOCK_WAIT_S)
        if not locked:
            # A batch is stuck on its way over: ending the export process ends the write.
            process = self._process
            if process is not None:
                log.warning("the span export process took no spans for a stop: killed")
                process.kill()
            # Set before waiting again: the holder, returning meanwhile, closes it then.
            self._abandoned = True
            locked = self._lock.acquire(timeout=LOCK_WAIT_S)
        if not locked:
            # Still stuck (a process the kernel cannot end yet): its pipes are not closed
            # under the thread holding the lock, which closes it once it returns
            # (_close_after_stop).
            log.warning("the span export process could not be stopped cleanly")
            return
        try:
            if self._shut:
                return
            self._shut = True
            process, self._process = self._process, None
        finally:
            self._lock.release()
        if process is not None:
            process.close(EXIT_WAIT_S)
        fresh = self._lost.unsaid(now=True)
        if fresh:
            log.warning("%d more spans lost (%d in all)", fresh, self._lost.count)
