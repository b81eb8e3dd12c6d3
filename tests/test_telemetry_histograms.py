"""telemetry/histograms.py: the gateway's own explicit-bucket histograms report what the
SDK's Histogram instrument (same bounds, same view, trace-based exemplars) reports for
the same measurements, cumulative and delta, through a pull reader and an exporter."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics import MeterProvider, TraceBasedExemplarFilter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, use_span

from execgw.server.telemetry.histograms import BucketHistogram, Histograms, HistogramsExporter

BOUNDS = (0.001, 0.01, 0.1, 1.0)
KEYS = ("rpc.method", "execgw.status")
SCOPE = InstrumentationScope("execgw.server", "1")
RESOURCE = Resource({"service.name": "execgw-test"})
tracer = TracerProvider().get_tracer("test")

# (value, attributes, sampled span?): values on bounds, between them, past the last,
# zero; a session that is no dimension; measurements in and out of sampled spans;
# dimensions given falsy values, or None.
MEASUREMENTS: list[tuple[float, dict[str, Any], bool]] = [
    (0.0, {"rpc.method": "SubmitOrder", "execgw.status": "FILLED"}, False),
    (0.001, {"rpc.method": "SubmitOrder", "execgw.status": "FILLED", "s": "a"}, True),
    (0.0011, {"rpc.method": "SubmitOrder", "execgw.status": "FILLED"}, True),
    (0.5, {"rpc.method": "SubmitOrder", "execgw.status": "REJECTED", "s": "b"}, True),
    (1.0, {"rpc.method": "GetOrder"}, False),
    (7.5, {"rpc.method": "GetOrder", "s": "c"}, True),
    (0.01, {"rpc.method": "SubmitOrder", "execgw.status": "FILLED", "s": "d"}, True),
    # Falsy values are values (a status code of 0 is gRPC's OK), and so is a None given.
    (0.02, {"rpc.method": "", "execgw.status": 0, "s": False}, True),
    (0.03, {"rpc.method": None, "s": "e"}, True),
    (0.04, {"execgw.status": None}, False),
]
IGNORED = [(-1.0, {"rpc.method": "GetOrder"}), (math.nan, {}), (math.inf, {})]


def _sdk(temporality: AggregationTemporality) -> tuple[Any, InMemoryMetricReader]:
    reader = InMemoryMetricReader(preferred_temporality={HistogramInstrument: temporality})
    provider = MeterProvider(
        metric_readers=[reader],
        views=[View(instrument_name="h", attribute_keys=set(KEYS))],
        exemplar_filter=TraceBasedExemplarFilter(),
    )
    histogram = provider.get_meter("execgw.server").create_histogram(
        "h", unit="s", description="d", explicit_bucket_boundaries_advisory=BOUNDS
    )
    return histogram, reader


def _record_all(instruments: Sequence[Any], measurements: Sequence[Any]) -> None:
    for value, attributes, sampled in measurements:
        if sampled:
            with tracer.start_as_current_span("call"):
                for instrument in instruments:
                    instrument.record(value, attributes)
        else:
            for instrument in instruments:
                instrument.record(value, attributes)


def _points(data: MetricsData | None, name: str) -> dict[frozenset[Any], HistogramDataPoint]:
    assert data is not None
    found = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        assert isinstance(point, HistogramDataPoint)
                        found[frozenset((point.attributes or {}).items())] = point
    return found


def _comparable(point: HistogramDataPoint) -> tuple[Any, ...]:
    return (
        list(point.bucket_counts),
        list(point.explicit_bounds),
        point.count,
        point.sum,
        point.min,
        point.max,
        sorted(
            (e.value, e.trace_id, e.span_id, dict(e.filtered_attributes or {}))
            for e in point.exemplars
        ),
    )


def _ours(temporality: AggregationTemporality) -> tuple[Any, Any]:
    histograms = Histograms(SCOPE, RESOURCE)
    reader = histograms.reader(temporality)  # made before the histogram: still sees it
    histogram = histograms.add(
        BucketHistogram("h", unit="s", description="d", boundaries=BOUNDS, dimensions=KEYS)
    )
    return histogram, reader


def test_points_and_exemplars_are_the_sdks_cumulative_and_delta() -> None:
    for temporality in (AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA):
        sdk, sdk_reader = _sdk(temporality)
        ours, reader = _ours(temporality)
        for batch in (MEASUREMENTS, MEASUREMENTS[2:5]):
            _record_all([sdk, ours], batch)
            for value, attributes in IGNORED:
                ours.record(value, attributes)
            expected = _points(sdk_reader.get_metrics_data(), "h")
            got = _points(reader.add_to(None), "h")
            assert got.keys() == expected.keys(), temporality
            for key, point in expected.items():
                assert _comparable(got[key]) == _comparable(point), (temporality, key)
                assert got[key].time_unix_nano >= got[key].start_time_unix_nano
        # Nothing new: a delta reader has nothing to report.
        if temporality is AggregationTemporality.DELTA:
            assert reader.add_to(None) is None


def test_a_measurement_outside_a_sampled_span_has_no_exemplar() -> None:
    ours, reader = _ours(AggregationTemporality.CUMULATIVE)
    unsampled = NonRecordingSpan(SpanContext(1, 2, False, TraceFlags(0)))
    with use_span(unsampled):
        ours.record(0.5, {"rpc.method": "GetOrder", "s": "x"})
    [point] = _points(reader.add_to(None), "h").values()
    assert point.count == 1
    assert list(point.exemplars) == []


def test_an_exemplar_keeps_the_attributes_as_recorded_not_as_later_changed() -> None:
    ours, reader = _ours(AggregationTemporality.CUMULATIVE)
    attributes: dict[str, Any] = {"rpc.method": "SubmitOrder", "execgw.session_id": "s1"}
    with tracer.start_as_current_span("call"):
        ours.record(0.5, attributes)
    attributes["execgw.session_id"] = "s2"
    attributes["rpc.method"] = "GetOrder"
    [(key, point)] = _points(reader.add_to(None), "h").items()
    assert dict(key) == {"rpc.method": "SubmitOrder"}
    assert [dict(e.filtered_attributes or {}) for e in point.exemplars] == [
        {"execgw.session_id": "s1"}
    ]


def test_collected_histograms_join_the_gateways_scope_in_a_readers_data() -> None:
    sdk_provider = MeterProvider(metric_readers=[pull := InMemoryMetricReader()], resource=RESOURCE)
    sdk_provider.get_meter("execgw.server", "1").create_counter("c").add(1)
    ours, reader = _ours(AggregationTemporality.CUMULATIVE)
    ours.record(0.002, {"rpc.method": "GetOrder"})
    data = reader.add_to(pull.get_metrics_data())
    assert data is not None
    [resource_metrics] = data.resource_metrics
    [scope_metrics] = resource_metrics.scope_metrics
    assert scope_metrics.scope.name == "execgw.server"
    assert [m.name for m in scope_metrics.metrics] == ["c", "h"]


class _Recording(MetricExporter):
    def __init__(self, temporality: AggregationTemporality) -> None:
        super().__init__(preferred_temporality={HistogramInstrument: temporality})
        self.exported: list[MetricsData] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exported.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def test_an_exporter_sends_them_in_the_temporality_it_prefers() -> None:
    histograms = Histograms(SCOPE, RESOURCE)
    inner = _Recording(AggregationTemporality.DELTA)
    exporter = HistogramsExporter(inner, histograms)
    histogram = histograms.add(BucketHistogram("h", unit="s", description="d", boundaries=BOUNDS))
    empty = MetricsData(resource_metrics=[])
    histogram.record(0.5)
    histogram.record(0.5)
    exporter.export(empty)
    histogram.record(2.0)
    exporter.export(empty)
    exporter.export(empty)
    counts = [[p.count for p in _points(data, "h").values()] for data in inner.exported]
    assert counts == [[2], [1], []]
    assert exporter._preferred_temporality == inner._preferred_temporality


def test_whole_numbers_sum_to_a_whole_number_as_in_the_sdk() -> None:
    sdk, sdk_reader = _sdk(AggregationTemporality.CUMULATIVE)
    ours, reader = _ours(AggregationTemporality.CUMULATIVE)
    _record_all([sdk, ours], [(3, {"rpc.method": "A"}, True), (5, {"rpc.method": "A"}, False)])
    [expected] = _points(sdk_reader.get_metrics_data(), "h").values()
    [got] = _points(reader.add_to(None), "h").values()
    assert (got.sum, type(got.sum)) == (expected.sum, type(expected.sum)) == (8, int)
    assert [dict(e.filtered_attributes or {}) for e in got.exemplars] == [{}]
    assert got.exemplars[0].filtered_attributes == expected.exemplars[0].filtered_attributes
