"""Telemetry: traces, metrics and trace-aware logs (README, "Telemetry").

- attributes: the span and metric attribute keys, span names, the session metadata key
- scope: the session (and mode, dry_run) carried in the OpenTelemetry context
- tracing: choosing the exporter (none, console, jsonl, OTLP), the sampler, and the
  global provider's span pipelines
- jsonl: the JSON-lines span exporter
- export_process, export_worker, span_wire: the exporter runs in a process of its own,
  which receives the finished spans as marshalled tuples
- metrics: the instruments and what feeds them (bus events, core hooks)
- prometheus: the scrape endpoint
- logs: text and JSON log formats with trace, span and session ids
- gateway: one gateway's telemetry, tying these together
- summary: `execgw trace summary` over a jsonl span file

Spans are created through the OpenTelemetry API where the work happens (api.tracing's
interceptor, the engine, the core); nothing here is imported by the order path.
"""

from execgw.server.telemetry.jsonl import JsonLinesSpanExporter

__all__ = ["JsonLinesSpanExporter"]
