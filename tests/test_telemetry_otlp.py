"""OTLP export to a real OTLP/gRPC receiver in this process: a grpc server implementing
the collector's TraceService and MetricsService Export, from opentelemetry-proto.

The gateway is configured the standard way, through OTEL_EXPORTER_OTLP_* variables
(endpoint, headers); the test flushes the gateway's telemetry rather than waiting for
an export interval, then checks that spans and metrics arrived with the session."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from execgw.client import ExecutionClient, OrderStatus, market, session
from execgw.server.app import Gateway
from execgw.server.clock import ManualClock
from execgw.server.config import ConfigError

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, publish
    from tests.telemetry_helpers import recorder
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, publish
    from telemetry_helpers import recorder

SESSION = "otlp-run"
HEADER = ("x-collector-key", "k-123")


@dataclass
class Collector:
    """What the stand-in collector received, with the metadata of each Export."""

    port: int = 0
    spans: list[trace_service_pb2.ExportTraceServiceRequest] = field(default_factory=list)
    metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    def Export(  # noqa: N802
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self._collector.lock:
            self._collector.spans.append(request)
            self._collector.headers.append(dict(context.invocation_metadata()))
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    def Export(  # noqa: N802
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: Any
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        with self._collector.lock:
            self._collector.metrics.append(request)
            self._collector.headers.append(dict(context.invocation_metadata()))
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.fixture
def collector() -> Iterator[Collector]:
    found = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(found), server)  # type: ignore[no-untyped-call]
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(found), server)  # type: ignore[no-untyped-call]
    found.port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield found
    finally:
        server.stop(None)


@pytest.fixture
def otlp_env(collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"{HEADER[0]}={HEADER[1]}")
    # Long: only the test's flush exports, so what arrives is what it asked for.
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "600000")
    for name in ("PROTOCOL", "TRACES_PROTOCOL", "METRICS_PROTOCOL"):
        monkeypatch.delenv(f"OTEL_EXPORTER_OTLP_{name}", raising=False)


def _attributes(values: Iterable[KeyValue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in values:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out


def test_spans_and_metrics_reach_an_otlp_collector_with_the_session(
    tmp_path: Path, clock: ManualClock, collector: Collector, otlp_env: None
) -> None:
    recorder()  # the process's SDK provider, whichever test module installs it first
    config = make_config(tmp_path, telemetry={"exporter": "otlp", "session_id": SESSION})
    running = RunningGateway(config, clock)
    try:
        with ExecutionClient(running.target) as client:
            publish(client, INFY, 1500.0)
            result = client.submit(market(INFY, "BUY", 2, strategy_code="S1"))
            assert result.status == OrderStatus.Value("ORDER_STATUS_FILLED")
            with session("otlp-call"):
                client.get_order(result.order_id)
        assert running.gateway.telemetry.flush()
    finally:
        running.stop()

    spans = [
        (span, _attributes(span.attributes))
        for request in collector.spans
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    # The client's spans of the calls (this process has an SDK) share the RPC names.
    client_kind = 3  # SPAN_KIND_CLIENT
    by_name = {span.name: found for span, found in spans if span.kind != client_kind}
    submit = by_name["execgw.v1.ExecutionGateway/SubmitOrder"]
    assert submit["execgw.session_id"] == SESSION
    assert submit["execgw.order_id"] == result.order_id
    assert by_name["execgw.order"]["execgw.session_id"] == SESSION
    assert by_name["execgw.v1.ExecutionGateway/GetOrder"]["execgw.session_id"] == "otlp-call"
    assert all(h.get(HEADER[0]) == HEADER[1] for h in collector.headers)

    resources = [
        _attributes(resource_metrics.resource.attributes)
        for request in collector.metrics
        for resource_metrics in request.resource_metrics
    ]
    assert resources
    assert all(r["execgw.session_id"] == SESSION for r in resources)
    metrics = {
        metric.name: metric
        for request in collector.metrics
        for resource_metrics in request.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    }
    orders = metrics["execgw.orders"].sum.data_points
    statuses = {_attributes(p.attributes)["execgw.status"]: p.as_int for p in orders}
    assert statuses["FILLED"] == 1
    latency = [
        point
        for point in metrics["execgw.rpc.server.duration"].histogram.data_points
        if _attributes(point.attributes)["rpc.method"] == "SubmitOrder"
    ]
    assert sum(p.count for p in latency) == 1
    assert _attributes(latency[0].attributes)["execgw.status"] == "FILLED"
    # Exemplars are sampled per export: the flush's carries this one, the final
    # export as the gateway stopped has none left.
    exemplars = [
        exemplar
        for request in collector.metrics
        for resource_metrics in request.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name == "execgw.rpc.server.duration"
        for point in metric.histogram.data_points
        if _attributes(point.attributes)["rpc.method"] == "SubmitOrder"
        for exemplar in point.exemplars
    ]
    assert exemplars
    assert _attributes(exemplars[0].filtered_attributes)["execgw.session_id"] == SESSION
    assert exemplars[0].trace_id.hex() != "0" * 32
    assert "execgw.journal.commit.duration" in metrics
    assert "execgw.core.queue_depth" in metrics


def test_an_otlp_protocol_other_than_grpc_stops_start_up(
    tmp_path: Path, clock: ManualClock, otlp_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    config = make_config(tmp_path, telemetry={"exporter": "otlp"})

    async def start() -> None:
        await Gateway(config, clock=clock).start()

    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        asyncio.run(start())
