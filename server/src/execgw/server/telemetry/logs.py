"""Log lines that say which trace, span and session they belong to.

`execgw serve --log-format text|json`. Every record gets trace_id, span_id and
session_id from the current OpenTelemetry context (empty outside any traced work): the
text format appends them to the line when there are any, the JSON format has them as
fields, one object per line. A record may carry structured fields in
`extra={"execgw": {...}}` (the order outcome lines do); the JSON format puts them under
"fields" and the text format leaves them to the message.

The grpc library's own DEBUG lines (its I/O engine, its polling) stay out of
`--log-level DEBUG`: its logger is held at INFO, as is asyncio's.
"""

from __future__ import annotations

import atexit
import copy
import json
import logging
import logging.handlers
import queue
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from opentelemetry import trace

from execgw.server.telemetry import scope as scopes

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries whose DEBUG output is noise to an operator debugging the gateway.
QUIET_LOGGERS = ("grpc", "asyncio")
FIELDS_ATTRIBUTE = "execgw"


class TraceContextFilter(logging.Filter):
    """Adds trace_id, span_id and session_id (hex, or "") to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = f"{context.trace_id:032x}"
            record.span_id = f"{context.span_id:016x}"
        else:
            record.trace_id = record.span_id = ""
        record.session_id = scopes.current_session()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [
            f"{name}={value}"
            for name, value in (
                ("trace_id", getattr(record, "trace_id", "")),
                ("span_id", getattr(record, "span_id", "")),
                ("session", getattr(record, "session_id", "")),
            )
            if value
        ]
        if not ids:
            return line
        # After the message's first line, so a traceback stays below it.
        first, newline, rest = line.partition("\n")
        return f"{first} [{' '.join(ids)}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the
    trace ids, fields, and the exception's traceback as text."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("trace_id", "span_id", "session_id"):
            value = getattr(record, key, "")
            if value:
                entry[key] = value
        fields = getattr(record, FIELDS_ATTRIBUTE, None)
        if isinstance(fields, dict) and fields:
            entry["fields"] = fields
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to stderr, on the listener's thread."""


class _Enqueue(logging.handlers.QueueHandler):
    """The handler configure_logging installs (and replaces on a second call).

    Logging on the event loop must never wait for stderr: a stalled pipe or log
    shipper would stall the single writer with it. Lines go through a bounded queue to
    a thread; when it is full they are dropped and counted, never waited for."""

    def __init__(self, capacity: int) -> None:
        super().__init__(queue.Queue(capacity))
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The message and traceback as text now (arguments may change later), with
        # the record's own fields kept for the JSON formatter.
        record = copy.copy(record)
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


LOG_QUEUE_CAPACITY = 10_000
_listener: logging.handlers.QueueListener | None = None
# What configure_logging was last asked for: the span export process logs alike.
_configured: tuple[str, LogFormat] = ("WARNING", "text")


def configured() -> tuple[str, LogFormat]:
    """The level and format configure_logging set (WARNING and text if it was not
    called: a test, an embedding application)."""
    return _configured


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """The root logger's one handler (stderr), in `log_format`, at `level`.

    Like logging.basicConfig, it leaves a root logger that someone else gave handlers
    (a test runner capturing logs) alone."""
    global _listener, _configured
    root = logging.getLogger()
    if any(not isinstance(h, _Enqueue) for h in root.handlers):
        return
    _configured = (level.upper(), log_format)
    writer = _Handler(sys.stderr)
    writer.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler = _Enqueue(LOG_QUEUE_CAPACITY)
    # On the logging thread: the trace context is the caller's.
    handler.addFilter(TraceContextFilter())
    for old in list(root.handlers):
        root.removeHandler(old)
    if _listener is not None:
        _listener.stop()
    _listener = logging.handlers.QueueListener(handler.queue, writer)
    _listener.start()
    atexit.register(_stop_listener)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))


def _stop_listener() -> None:
    """At exit: write what is queued."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None
