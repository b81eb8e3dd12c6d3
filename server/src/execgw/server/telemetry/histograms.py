"""Explicit-bucket histograms the order path records into for a few list updates.

The SDK's Histogram.record costs ~15 µs on this hardware (the measurement object, its
attributes cleaned and hashed, the view's filter, the exemplar reservoir), and the
gateway records one per RPC and three per journal commit: with metrics on, that was
the largest single cost telemetry added to an order. These histograms aggregate as the
SDK's explicit-bucket aggregation does, with the same exemplars (the trace, span and
session of the last sampled measurement in each bucket), and hand their points to the
metric readers as ordinary SDK `Metric`s when they collect: the Prometheus endpoint
renders them next to the SDK's instruments, and the OTLP exporter sends them in the
same request (`HistogramsExporter`).

Each reader has its own series of every histogram (`Histograms.series`), in the
temporality it asks for, as the SDK keeps one storage per reader.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from time import time_ns
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, TraceFlags
from opentelemetry.util.types import AttributeValue

_SAMPLED = TraceFlags.SAMPLED

# What a histogram is split by: its dimensions' values, in key order (_ABSENT: not given).
_Key = tuple[object, ...]
# A dimension a measurement did not give (a None it gave is a value, as for the SDK).
_ABSENT = object()
# A sampled measurement: value, time, its span's context, and its attributes as given
# (those not among the dimensions go on the exemplar, picked out when collected).
_Exemplar = tuple[float, int, SpanContext, dict[str, AttributeValue]]


@dataclass(slots=True)
class _Point:
    """One attribute set's aggregation since its series started (or last collected)."""

    counts: list[int]
    start_ns: int
    count: int = 0
    # An int while every value is (batch sizes): rendered as the SDK renders it.
    total: int | float = 0
    low: float = math.inf
    high: float = -math.inf
    # The last sampled measurement per bucket.
    exemplars: dict[int, _Exemplar] = field(default_factory=dict)


class _Series:
    """One reader's view of one histogram."""

    def __init__(self, buckets: int, temporality: AggregationTemporality) -> None:
        self.temporality = temporality
        self._buckets = buckets
        self._points: dict[_Key, _Point] = {}
        self._started = time_ns()
        # Recording runs on the loop, collecting on an exporter's thread.
        self._lock = threading.Lock()

    def add(
        self,
        key: _Key,
        bucket: int,
        value: float,
        exemplar: _Exemplar | None,
    ) -> None:
        with self._lock:
            point = self._points.get(key)
            if point is None:
                point = self._points[key] = _Point([0] * self._buckets, self._started)
            point.counts[bucket] += 1
            point.count += 1
            point.total += value
            if value < point.low:
                point.low = value
            if value > point.high:
                point.high = value
            if exemplar is not None:
                point.exemplars[bucket] = exemplar

    def take(self, now: int) -> list[tuple[_Key, _Point]]:
        """The points to report now. Exemplars are reported once, as the SDK's
        reservoir does; a delta series starts over."""
        with self._lock:
            if self.temporality is AggregationTemporality.DELTA:
                taken = list(self._points.items())
                self._points = {}
                self._started = now
                return taken
            taken = [
                (key, replace(point, counts=list(point.counts)))
                for key, point in self._points.items()
            ]
            for point in self._points.values():
                point.exemplars = {}
            return taken


class BucketHistogram:
    """A histogram with fixed bucket bounds, split by `dimensions` (every other attribute
    a measurement carries, such as the session, goes on its exemplar only)."""

    def __init__(
        self,
        name: str,
        *,
        unit: str,
        description: str,
        boundaries: Sequence[float],
        dimensions: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.boundaries = tuple(float(b) for b in boundaries)
        self._dimensions = tuple(sorted(dimensions))
        self._no_key: _Key = (_ABSENT,) * len(self._dimensions)
        self._series: list[_Series] = []

    def series(self, temporality: AggregationTemporality) -> _Series:
        added = _Series(len(self.boundaries) + 1, temporality)
        self._series = [*self._series, added]
        return added

    def record(self, value: float, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        """As the SDK's Histogram.record: negative and non-finite values are ignored."""
        if not self._series or not (value >= 0 and math.isfinite(value)):
            return
        # Per measurement only what is cheap (the order path records one per call);
        # the attribute sets are made when collected.
        key: _Key = self._no_key
        if attributes:
            given: Mapping[str, object] = attributes
            # Each dimension's value, or _ABSENT (a None given is a value, as for the SDK).
            key = tuple(map(given.get, self._dimensions, self._no_key))
        # OpenTelemetry's buckets hold (previous bound, bound]: a value on a bound is in
        # the bucket that bound closes.
        bucket = bisect_left(self.boundaries, value)
        exemplar = None
        context = trace.get_current_span().get_span_context()
        # The trace-based filter: a sampled span's (its flags read as the tuple holds them).
        if context[3] & _SAMPLED and context.is_valid:
            # A copy: the caller's dict may change once recorded.
            exemplar = (value, time_ns(), context, dict(attributes) if attributes else {})
        for series in self._series:
            series.add(key, bucket, value, exemplar)

    def collect(self, series: _Series, now: int) -> Metric | None:
        taken = series.take(now)
        if not taken:
            return None
        dimensions = self._dimensions
        points = [
            HistogramDataPoint(
                attributes={
                    k: v  # type: ignore[misc]
                    for k, v in zip(dimensions, key, strict=True)
                    if v is not _ABSENT
                },
                start_time_unix_nano=point.start_ns,
                time_unix_nano=now,
                count=point.count,
                sum=point.total,
                bucket_counts=point.counts,
                explicit_bounds=list(self.boundaries),
                min=point.low,
                max=point.high,
                exemplars=[
                    Exemplar(
                        {k: v for k, v in given.items() if k not in dimensions},
                        value,
                        at,
                        context.span_id,
                        context.trace_id,
                    )
                    for _, (value, at, context, given) in sorted(point.exemplars.items())
                ],
            )
            for key, point in taken
        ]
        return Metric(
            name=self.name,
            description=self.description,
            unit=self.unit,
            data=Histogram(data_points=points, aggregation_temporality=series.temporality),
        )


class Histograms:
    """The gateway's histograms, and what each reader collects of them."""

    def __init__(self, scope: InstrumentationScope, resource: Resource) -> None:
        self._scope = scope
        self._resource = resource
        self._histograms: list[BucketHistogram] = []
        self._readers: list[HistogramsReader] = []

    def add(self, histogram: BucketHistogram) -> BucketHistogram:
        """`histogram`, collected by every reader from now on."""
        self._histograms.append(histogram)
        for reader in self._readers:
            reader.add(histogram)
        return histogram

    def reader(self, temporality: AggregationTemporality) -> HistogramsReader:
        """What one metric reader collects: every histogram, made before or after, in
        `temporality`."""
        reader = HistogramsReader(self, temporality)
        for histogram in self._histograms:
            reader.add(histogram)
        self._readers.append(reader)
        return reader

    def merged(self, data: MetricsData | None, metrics: list[Metric]) -> MetricsData | None:
        """`data` (a reader's collection of the SDK's instruments) with `metrics` added
        under the gateway's instrumentation scope."""
        if not metrics:
            return data
        resource_metrics = list(data.resource_metrics) if data is not None else []
        if not resource_metrics:
            resource_metrics = [ResourceMetrics(self._resource, [], "")]
        first = resource_metrics[0]
        scopes = list(first.scope_metrics)
        for index, scope_metrics in enumerate(scopes):
            if scope_metrics.scope.name == self._scope.name:
                scopes[index] = replace(scope_metrics, metrics=[*scope_metrics.metrics, *metrics])
                break
        else:
            scopes.append(ScopeMetrics(self._scope, metrics, ""))
        resource_metrics[0] = replace(first, scope_metrics=scopes)
        return MetricsData(resource_metrics=resource_metrics)


class HistogramsReader:
    def __init__(self, histograms: Histograms, temporality: AggregationTemporality) -> None:
        self._histograms = histograms
        self._temporality = temporality
        self._series: list[tuple[BucketHistogram, _Series]] = []

    def add(self, histogram: BucketHistogram) -> None:
        self._series = [*self._series, (histogram, histogram.series(self._temporality))]

    def add_to(self, data: MetricsData | None) -> MetricsData | None:
        now = time_ns()
        metrics = [m for h, s in self._series if (m := h.collect(s, now)) is not None]
        return self._histograms.merged(data, metrics)


def histogram_temporality(exporter: MetricExporter) -> AggregationTemporality:
    """The temporality `exporter` wants histograms in (OTEL_EXPORTER_OTLP_METRICS_
    TEMPORALITY_PREFERENCE for the OTLP exporter)."""
    preferred: Any = getattr(exporter, "_preferred_temporality", None) or {}
    found = preferred.get(HistogramInstrument)
    return found if isinstance(found, AggregationTemporality) else AggregationTemporality.CUMULATIVE


class HistogramsExporter(MetricExporter):
    """`inner`, sent the gateway's histograms with every export.

    The reader calls it only when the SDK's instruments collected something; the
    gateway's observable gauges always do (GatewayMetrics.watch), so every collection,
    the last one at shutdown included, carries the histograms. The histograms are
    explicit-bucket ones whatever OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_
    AGGREGATION says."""

    def __init__(self, inner: MetricExporter, histograms: Histograms) -> None:
        super().__init__(
            preferred_temporality=getattr(inner, "_preferred_temporality", None),
            preferred_aggregation=getattr(inner, "_preferred_aggregation", None),
        )
        self._inner = inner
        self._reader = histograms.reader(histogram_temporality(inner))

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        merged = self._reader.add_to(metrics_data)
        assert merged is not None
        return self._inner.export(merged, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)
