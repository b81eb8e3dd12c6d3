"""One gateway's telemetry: its span pipeline, its metrics and their readers (Prometheus
endpoint, OTLP), the server interceptor, and the scope its own tasks run in.

The gateway (app.Gateway) makes one, puts its interceptor outermost, starts it before
the core, runs the core's tasks inside `entered()` so that their spans belong to the
configured session, and stops it after the core, so the last spans and metrics are
exported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.util.types import AttributeValue

from execgw.server.api.tracing import TelemetryInterceptor
from execgw.server.config import GatewayConfig
from execgw.server.core import GatewayCore
from execgw.server.telemetry import attributes as attr
from execgw.server.telemetry import scope as scopes
from execgw.server.telemetry.histograms import Histograms, HistogramsExporter, HistogramsReader
from execgw.server.telemetry.metrics import METER_NAME, GatewayMetrics, meter_provider
from execgw.server.telemetry.outcomes import log_later_outcomes
from execgw.server.telemetry.prometheus import PrometheusEndpoint
from execgw.server.telemetry.tracing import FLUSH_TIMEOUT_MS, SpanPipeline, check_otlp_protocol

log = logging.getLogger(__name__)


def _server_version() -> str:
    try:
        return version("execgw-server")
    except PackageNotFoundError:
        return "unknown"


def resource(config: GatewayConfig) -> Resource:
    attributes: dict[str, AttributeValue] = {
        "service.name": config.telemetry.service_name,
        "service.version": _server_version(),
        attr.MODE: config.mode,
        attr.DRY_RUN: config.execution.dry_run,
    }
    if config.telemetry.session_id:
        attributes[attr.SESSION_ID] = config.telemetry.session_id
    # OTEL_RESOURCE_ATTRIBUTES adds to these.
    return Resource.create(attributes)


class GatewayTelemetry:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        section = config.telemetry
        self.scope = scopes.Scope(section.session_id, config.mode, config.execution.dry_run)
        self._resource = resource(config)
        self._histograms = Histograms(
            InstrumentationScope(METER_NAME, _server_version()), self._resource
        )
        self._pull: InMemoryMetricReader | None = None
        self._pull_histograms: HistogramsReader | None = None
        self._meters: MeterProvider | None = None
        self._spans: SpanPipeline | None = None
        self.prometheus: PrometheusEndpoint | None = None
        self.metrics = GatewayMetrics()  # no-op until start
        self.interceptor = TelemetryInterceptor(self.scope, self.metrics)

    async def start(self, core: GatewayCore) -> None:
        """Before the gRPC server is built (it takes `interceptor`) and the core starts:
        bind the Prometheus port, attach the span pipeline, make the metrics and hook
        them to the core and its bus."""
        section = self.config.telemetry
        if section.exporter == "otlp":
            check_otlp_protocol("TRACES", "METRICS")
        readers: list[MetricReader] = []
        if section.prometheus_listen:
            self._pull = InMemoryMetricReader()
            readers.append(self._pull)
            self._pull_histograms = self._histograms.reader(AggregationTemporality.CUMULATIVE)
            self.prometheus = PrometheusEndpoint(section.prometheus_listen, self.collect)
            await self.prometheus.start()
        if section.exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter,
            )

            # Interval: OTEL_METRIC_EXPORT_INTERVAL; endpoint etc.: OTEL_EXPORTER_OTLP_*.
            exporter = HistogramsExporter(OTLPMetricExporter(), self._histograms)
            readers.append(PeriodicExportingMetricReader(exporter))
        self._spans = SpanPipeline(section, self._resource)
        if readers:
            self._meters = meter_provider(readers, self._resource)
            metrics = GatewayMetrics(
                self._meters.get_meter(METER_NAME, _server_version()), self._histograms
            )
            self.metrics = metrics
            self.interceptor = TelemetryInterceptor(self.scope, metrics)
            metrics.watch(core.bus, lambda: core.queue_depth)
            core.on_commit = metrics.on_commit

    async def started(self, core: GatewayCore) -> None:
        """Once the core runs: the breakers as they stand (tripped ones from the journal),
        and the log of order outcomes no RPC answers."""
        core.bus.observe(log_later_outcomes)
        if self.metrics.enabled:
            self.metrics.seed(await core.risk_report())

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run inside: tasks started here (the core's writer and timer, the feed) and
        their spans belong to the configured session."""
        with scopes.entered(self.scope):
            yield

    def collect(self) -> MetricsData | None:
        """The metrics as they stand (the Prometheus endpoint's reader); None without one."""
        if self._pull is None or self._pull_histograms is None:
            return None
        return self._pull_histograms.add_to(self._pull.get_metrics_data())

    def flush(self) -> bool:
        """Export every span ended and every metric recorded so far (blocking)."""
        done = True if self._spans is None else self._spans.flush()
        if self._meters is not None:
            done = self._meters.force_flush(FLUSH_TIMEOUT_MS) and done
        return done

    async def stop(self) -> None:
        """After the core: close the endpoint, export what is left, let go of exporters."""
        if self.prometheus is not None:
            await self.prometheus.stop()
            self.prometheus = None
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        if self._spans is not None:
            self._spans.close()
            self._spans = None
        if self._meters is not None:
            try:
                self._meters.shutdown(FLUSH_TIMEOUT_MS)
            except Exception as e:  # exporting is best effort; stopping is not
                log.warning("exporting the last metrics failed: %s", e)
            self._meters = None
