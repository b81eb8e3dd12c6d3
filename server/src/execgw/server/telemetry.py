"""OpenTelemetry tracing setup. Spans are created through the API everywhere; this
module decides where they go (nowhere, the console, or a JSON-lines file)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)

from execgw.server.config import TelemetryConfig


class JsonLinesSpanExporter(SpanExporter):
    """One JSON object per finished span, appended to a file an operator can grep."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for span in spans:
                self._file.write(span.to_json(indent=None) + "\n")
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def configure_tracing(config: TelemetryConfig) -> TracerProvider | None:
    """Install the global tracer provider; None when tracing is off."""
    if config.exporter == "none":
        return None
    exporter: SpanExporter = (
        ConsoleSpanExporter()
        if config.exporter == "console"
        else JsonLinesSpanExporter(Path(config.path))
    )
    provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider
