"""The gateway's batch span processor: the SDK's BatchSpanProcessor, for less per span.

Every span of every order passes through `on_end` on the order path, and the SDK's
processor spends there a fork check (a getpid system call), two property lookups and a
wake-up check per span, and its worker re-checks its queue per batch under a lock. This
one appends to a deque (atomic under the GIL) and wakes the worker once per batch; the
worker exports in batches as the SDK's does:
- every `schedule_delay_s`, or as soon as `max_export_batch_size` spans wait;
- at most `max_queue_size` spans wait: past that new spans are dropped, never waited
  for, and the drops are logged (at most once a minute) and counted;
- `force_flush` exports every span ended before it, flushes the exporter, and waits for
  that, up to its timeout;
- `shutdown` exports what is left and shuts the exporter down.

The OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_SCHEDULE_DELAY (ms) and
OTEL_BSP_MAX_EXPORT_BATCH_SIZE variables are honoured as by the SDK's processor. The
gateway never forks after it starts exporting, so there is no fork handling.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

DEFAULT_MAX_EXPORT_BATCH_SIZE = 512
_SAMPLED = trace.TraceFlags.SAMPLED
# Seconds a shutdown waits for the last export.
SHUTDOWN_WAIT_S = 30.0
# Seconds between two warnings about dropped spans.
DROP_WARNING_EVERY_S = 60.0


def _from_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        log.warning("%s=%r is not a whole number: using %d", name, raw, default)
        return default
    if value <= 0:
        log.warning("%s=%r must be > 0: using %d", name, raw, default)
        return default
    return value


class SpansLost:
    """A count of lost spans, said in warnings at most once every `every_s` (each says
    how many since the last)."""

    __slots__ = ("_every_s", "_said", "_said_at", "count")

    def __init__(self, every_s: float) -> None:
        self._every_s = every_s
        self.count = 0
        self._said = 0
        self._said_at = float("-inf")

    def unsaid(self, *, now: bool = False) -> int:
        """How many were lost since the last warning, if one is due (or `now`); then
        they count as said. 0 if none, or if it is too soon."""
        fresh = self.count - self._said
        if not fresh:
            return 0
        at = time.monotonic()
        if not now and at - self._said_at < self._every_s:
            return 0
        self._said, self._said_at = self.count, at
        return fresh


class _Flush:
    """A force_flush call waiting for the worker."""

    __slots__ = ("deadline", "done", "exported")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline  # time.monotonic()
        self.done = threading.Event()
        self.exported = False


class SpanBatcher(SpanProcessor):
    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue_size: int,
        schedule_delay_s: float,
        max_export_batch_size: int = DEFAULT_MAX_EXPORT_BATCH_SIZE,
    ) -> None:
        """The OTEL_BSP_* variables, where set, override the arguments."""
        self._exporter = exporter
        self._max_queue = _from_env("OTEL_BSP_MAX_QUEUE_SIZE", max_queue_size)
        self._delay_s = _from_env("OTEL_BSP_SCHEDULE_DELAY", round(schedule_delay_s * 1000)) / 1000
        self._batch = min(
            _from_env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", max_export_batch_size), self._max_queue
        )
        self._queue: deque[ReadableSpan] = deque()
        self._wake = threading.Event()
        # Set once the worker was woken for a full batch: on_end sets the event once per
        # batch, not on every span past the threshold.
        self._woken = False
        # force_flush calls waiting for the worker to drain the queue.
        self._flushes: list[_Flush] = []
        self._flush_lock = threading.Lock()
        self._stopping = False
        self._dropped = SpansLost(DROP_WARNING_EVERY_S)
        self._worker = threading.Thread(target=self._run, name="execgw-spans", daemon=True)
        self._worker.start()

    # -- the order path ------------------------------------------------------------------

    def on_end(self, span: ReadableSpan) -> None:
        # The context as ReadableSpan holds it, its flags as SpanContext (a tuple) does:
        # two property calls fewer, on every span.
        context = span._context
        if context is None or not context[3] & _SAMPLED:
            return
        if self._stopping:
            self._dropped.count += 1  # shut down: counted as lost, as one past the queue is
            return
        queue = self._queue
        waiting = len(queue)
        if waiting >= self._max_queue:
            self._dropped.count += 1
            return
        queue.append(span)
        if waiting >= self._batch - 1 and not self._woken:
            self._woken = True
            self._wake.set()

    # -- the worker -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._delay_s)
            self._wake.clear()
            self._woken = False
            with self._flush_lock:
                flushes, self._flushes = self._flushes, []
            self._drain()
            self._warn_drops()
            self._flushed(flushes)
            if self._stopping:
                self._drain()  # what raced in while it stopped
                with self._flush_lock:
                    # A flush asked for while it stopped (force_flush checks _stopping
                    # under this lock, so none comes later): everything is exported now.
                    flushes, self._flushes = self._flushes, []
                self._flushed(flushes)
                return

    def _flushed(self, flushes: list[_Flush]) -> None:
        """Answer these flushes, the queue drained: once the exporter has flushed too
        (an exporter that hands spans on, to a process or a connection, holds some)."""
        if not flushes:
            return
        remaining_s = max(f.deadline for f in flushes) - time.monotonic()
        try:
            # The SDK's base exporter answers None: it holds nothing, so that is a yes.
            answer = self._exporter.force_flush(max(0, round(remaining_s * 1000)))
            exported = answer is not False
        except Exception:
            log.exception("flushing the span exporter failed")
            exported = False
        for flush in flushes:
            flush.exported = exported
            flush.done.set()

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            count = min(len(queue), self._batch)
            batch = [queue.popleft() for _ in range(count)]
            # As the SDK's processor: an instrumented client inside the exporter (an
            # OTLP call) must not trace itself back into the queue.
            token = otel_context.attach(
                otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True)
            )
            try:
                self._exporter.export(batch)
            except Exception:  # an exporter's bug loses spans, never the worker
                log.exception("exporting %d spans failed", count)
            finally:
                otel_context.detach(token)

    @property
    def dropped(self) -> int:
        """Spans dropped: past the queue, or ended after the shutdown."""
        return self._dropped.count

    def _warn_drops(self) -> None:
        fresh = self._dropped.unsaid(now=self._stopping)
        if fresh:
            log.warning(
                "%d spans dropped: more than %d waited for the exporter", fresh, self._max_queue
            )

    # -- SpanProcessor --------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """False once shut down, as the SDK's processor answers."""
        flush = _Flush(time.monotonic() + timeout_millis / 1000)
        with self._flush_lock:
            if self._stopping:
                return False
            self._flushes.append(flush)
        self._wake.set()
        return flush.done.wait(timeout_millis / 1000) and flush.exported

    def shutdown(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        # As the SDK's processor: a hung exporter does not hang the gateway's stop.
        self._worker.join(SHUTDOWN_WAIT_S)
        self._exporter.shutdown()
