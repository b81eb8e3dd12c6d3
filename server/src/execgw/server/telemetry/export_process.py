"""The gateway's side of the span export process (telemetry.export_worker).

`ProcessSpanExporter` is the SpanExporter the gateway's batch processor hands its
batches to. It turns each batch into tuples (telemetry.span_wire), pickles them and
writes them to the export process, which makes the JSON lines or OTLP messages and
ships them. Measured on a 2-core machine, a span cost the gateway ~5 µs of the
interpreter lock to encode as a JSON line (an OTLP message costs more), against ~1 µs
to cross: with 8 spans an order, the encoding alone took ~8% of the order path's
throughput, because the exporting thread shares the lock with the event loop.

What stays as it was:
- the batch processor (telemetry.batching) queues, batches and drops exactly as before;
  a batch the export process cannot take (it is gone) is lost, never waited for;
- `force_flush` returns once every span handed over before it is exported, or False;
- `shutdown` closes the input, and the export process exports what it holds first.

The export process starts with the gateway, which waits for its "ready": a bad
exporter (an OTLP variable it refuses, a jsonl path it cannot open) stops the start,
as it did in-process. If it dies later, the next batch starts another, at most once
every RESTART_EVERY_S; the spans it held are lost, and said so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

import execgw.server
from execgw.server.config import ConfigError
from execgw.server.telemetry.export_worker import HEADER_BYTES
from execgw.server.telemetry.span_wire import SpanSender

log = logging.getLogger(__name__)

# Seconds a start waits for the export process's "ready" (it imports the SDK and, for
# OTLP, grpc: well under a second on an idle machine).
READY_WAIT_S = 30.0
# Seconds a shutdown waits for the export process to export what it holds and exit.
EXIT_WAIT_S = 30.0
# Seconds at least between two starts of the export process after it died.
RESTART_EVERY_S = 5.0
# Where the export process can import execgw.server from when its own sys.path cannot
# (this process's was extended at run time: a test runner, an embedding application).
# Appended, never put first: it may be a site-packages, which must not shadow the
# standard library.
_SERVER_ROOT = str(Path(execgw.server.__file__).resolve().parents[2])
_BOOT = (
    "import sys; sys.path.append(sys.argv.pop(1)); "
    "from execgw.server.telemetry.export_worker import main; sys.exit(main())"
)


class ExportProcessError(ConfigError):
    """The export process could not make its exporter, or did not answer."""


class _Answers:
    """The export process's answer lines, read with a deadline."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending = b""

    def next_line(self, deadline: float) -> str | None:
        """The next line; None when the deadline passed or the writer is gone."""
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([self._fd], [], [], remaining)
            if not readable:
                return None
            chunk = os.read(self._fd, 4096)
            if not chunk:
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
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _BOOT,
                    _SERVER_ROOT,
                    kind,
                    "--path",
                    path,
                    "--answers",
                    str(their_fd),
                ],
                stdin=subprocess.PIPE,
                pass_fds=(their_fd,),
            )
        except BaseException:
            os.close(answers_fd)
            raise
        finally:
            os.close(their_fd)
        self.input: IO[bytes] = self.process.stdin  # type: ignore[assignment]
        self.answers = _Answers(answers_fd)

    def wait_ready(self, timeout_s: float) -> str | None:
        """None once ready; else why not."""
        line = self.answers.next_line(time.monotonic() + timeout_s)
        if line == "ready":
            return None
        if line is None:
            return f"no answer within {timeout_s:.0f} s"
        return line.removeprefix("failed: ")

    def send(self, message: object) -> None:
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self.input.write(len(payload).to_bytes(HEADER_BYTES, "big"))
        self.input.write(payload)
        self.input.flush()

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self, timeout_s: float) -> int | None:
        """Close its input and wait for it to exit; its exit code (None: killed)."""
        # An error here: it is gone already, and what waited in the pipe with it.
        with contextlib.suppress(OSError):
            self.input.close()
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("the span export process did not exit in %.0f s: killed", timeout_s)
            self.process.kill()
            self.process.wait()
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
        self._shut = False
        self._started_at = time.monotonic()
        self._process: _ExportProcess | None = self._start()

    def _start(self) -> _ExportProcess:
        process = _ExportProcess(self._kind, self._path)
        reason = process.wait_ready(READY_WAIT_S)
        if reason is not None:
            process.close(EXIT_WAIT_S)
            raise ExportProcessError(f"telemetry.exporter {self._kind}: {reason}")
        self._sender.restart()
        return process

    def _running(self) -> _ExportProcess | None:
        """The export process, started again if it died and it is time to."""
        process = self._process
        if process is not None and process.alive():
            return process
        if process is not None:
            code = process.close(0)
            self._process = None
            log.warning(
                "the span export process exited (code %s): the spans it held are lost",
                code,
            )
        if time.monotonic() - self._started_at < RESTART_EVERY_S:
            return None
        self._started_at = time.monotonic()
        try:
            self._process = self._start()
        except (ExportProcessError, OSError) as e:
            log.warning("cannot start the span export process again: %s", e)
            return None
        log.warning("the span export process started again")
        return self._process

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if self._shut:
                return SpanExportResult.FAILURE
            process = self._running()
            if process is None:
                return SpanExportResult.FAILURE
            try:
                process.send(("spans", self._sender.batch(spans)))
            except OSError as e:  # it died under us (a broken pipe)
                log.warning("cannot hand %d spans to the export process: %s", len(spans), e)
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """True once everything handed over so far is exported."""
        deadline = time.monotonic() + timeout_millis / 1000
        with self._lock:
            process = self._process
            if self._shut or process is None or not process.alive():
                return False
            self._flushes += 1
            wanted = self._flushes
            try:
                process.send(("flush", wanted, timeout_millis))
            except OSError:
                return False
            while (line := process.answers.next_line(deadline)) is not None:
                # Earlier answers are those of flushes that timed out.
                if line == f"flushed {wanted} 1":
                    return True
                if line == f"flushed {wanted} 0":
                    return False
            return False

    def shutdown(self) -> None:
        if not self._lock.acquire(timeout=EXIT_WAIT_S):
            # A batch is stuck on its way over (the export process stopped reading: an
            # exporter hung on a collector): end it, which ends the write with an error.
            process = self._process
            if process is not None:
                log.warning("the span export process took no spans for %.0f s: killed", EXIT_WAIT_S)
                process.process.kill()
            self._lock.acquire()
        try:
            if self._shut:
                return
            self._shut = True
            process, self._process = self._process, None
        finally:
            self._lock.release()
        if process is not None:
            process.close(EXIT_WAIT_S)
