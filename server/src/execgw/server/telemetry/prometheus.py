"""A Prometheus scrape endpoint (`telemetry.prometheus_listen`): GET /metrics.

The text exposition format (0.0.4) is rendered here from the metrics SDK's own data, and
OpenMetrics 1.0 when the scraper asks for it (Accept: application/openmetrics-text),
which is the format that carries exemplars: a latency bucket then names a trace (and
the session) that landed in it.

The server is a few lines of asyncio on the gateway's loop, so collecting reads the
gateway's state from the thread that owns it. It is bounded like everything else: a
few connections at once, a small request, a deadline to send it, then the connection
closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    Sum,
)

from execgw.server.listen import ListenFailed, check_bindable
from execgw.server.telemetry import attributes as attr

log = logging.getLogger(__name__)

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
MAX_CONNECTIONS = 8
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_S = 5.0
# OpenMetrics: an exemplar's label names and values together, at most.
MAX_EXEMPLAR_LABEL_CHARS = 128

_UNITS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": "ratio"}
_INVALID = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(name: str, unit: str) -> str:
    """execgw.rpc.server.duration, unit s -> execgw_rpc_server_duration_seconds."""
    base = _INVALID.sub("_", name)
    suffix = _UNITS.get(unit, "")
    if suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    return base


def label_name(key: str) -> str:
    name = _INVALID_LABEL.sub("_", key)
    return f"_{name}" if name[:1].isdigit() else name


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(attributes: Mapping[str, Any] | None, extra: Iterable[tuple[str, str]] = ()) -> str:
    pairs = [(label_name(k), _value_text(v)) for k, v in sorted((attributes or {}).items())]
    pairs.extend(extra)
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(_value_text(v) for v in value)
    return str(value)


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


# Resource attributes that go on target_info: what tells one gateway's series apart.
_TARGET_INFO_KEYS = frozenset(
    {"service.name", "service.version", attr.SESSION_ID, attr.MODE, attr.DRY_RUN}
)


def render(data: MetricsData | None, *, openmetrics: bool = False) -> str:
    """The metrics as Prometheus text (or OpenMetrics with exemplars)."""
    out: list[str] = []
    if data is not None:
        for resource_metrics in data.resource_metrics:
            info = {
                k: v
                for k, v in resource_metrics.resource.attributes.items()
                if k in _TARGET_INFO_KEYS
            }
            family = "target" if openmetrics else "target_info"
            out.append(f"# HELP {family} Where these metrics come from")
            out.append(f"# TYPE {family} " + ("info" if openmetrics else "gauge"))
            out.append(f"target_info{_labels(info)} 1")
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    out.extend(_family(metric, openmetrics))
    if openmetrics:
        out.append("# EOF")
    return "\n".join(out) + "\n"


def _family(metric: Metric, openmetrics: bool) -> list[str]:
    name = metric.name
    base = metric_name(name, metric.unit or "")
    data = metric.data
    lines: list[str] = []
    help_text = (metric.description or name).replace("\\", "\\\\").replace("\n", "\\n")
    if isinstance(data, Sum) and data.is_monotonic:
        family = base.removesuffix("_total") if openmetrics else _total(base)
        lines.append(f"# HELP {family} {help_text}")
        lines.append(f"# TYPE {family} counter")
        sample = _total(base)
        for point in data.data_points:
            assert isinstance(point, NumberDataPoint)
            lines.append(f"{sample}{_labels(point.attributes)} {_number(point.value)}")
    elif isinstance(data, Sum | Gauge):
        lines.append(f"# HELP {base} {help_text}")
        lines.append(f"# TYPE {base} gauge")
        for point in data.data_points:
            assert isinstance(point, NumberDataPoint)
            lines.append(f"{base}{_labels(point.attributes)} {_number(point.value)}")
    elif isinstance(data, Histogram):
        lines.append(f"# HELP {base} {help_text}")
        lines.append(f"# TYPE {base} histogram")
        for histogram in data.data_points:
            lines.extend(_histogram(base, histogram, openmetrics))
    return lines


def _total(base: str) -> str:
    return base if base.endswith("_total") else base + "_total"


def _histogram(base: str, point: HistogramDataPoint, openmetrics: bool) -> list[str]:
    lines = []
    exemplars = _bucket_exemplars(point) if openmetrics else {}
    cumulative = 0
    bounds = [*point.explicit_bounds, math.inf]
    for index, (bound, count) in enumerate(zip(bounds, point.bucket_counts, strict=False)):
        cumulative += count
        labels = _labels(point.attributes, [("le", _number(float(bound)))])
        line = f"{base}_bucket{labels} {cumulative}"
        if index in exemplars:
            line += " " + exemplars[index]
        lines.append(line)
    lines.append(f"{base}_sum{_labels(point.attributes)} {_number(point.sum)}")
    lines.append(f"{base}_count{_labels(point.attributes)} {point.count}")
    return lines


def _bucket_exemplars(point: HistogramDataPoint) -> dict[int, str]:
    """Each exemplar, rendered, by the index of the bucket its value falls in."""
    found: dict[int, str] = {}
    bounds = list(point.explicit_bounds)
    for exemplar in point.exemplars or ():
        index = next((i for i, b in enumerate(bounds) if exemplar.value <= b), len(bounds))
        labels: list[tuple[str, str]] = []
        if exemplar.trace_id:
            labels.append(("trace_id", f"{exemplar.trace_id:032x}"))
            labels.append(("span_id", f"{exemplar.span_id or 0:016x}"))
        session = (exemplar.filtered_attributes or {}).get(attr.SESSION_ID)
        if session:
            labels.append(("session_id", str(session)))
        # The limit is on names and values together: shed the least useful first.
        for drop in ("span_id", "session_id"):
            if sum(len(k) + len(v) for k, v in labels) <= MAX_EXEMPLAR_LABEL_CHARS:
                break
            labels = [(k, v) for k, v in labels if k != drop]
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
        seconds = exemplar.time_unix_nano / 1e9
        found[index] = f"# {{{text}}} {_number(exemplar.value)} {seconds:.3f}"
    return found


class PrometheusEndpoint:
    """GET /metrics on `address`, answered from `collect` on the gateway's loop."""

    def __init__(self, address: str, collect: Callable[[], MetricsData | None]) -> None:
        self.address = address
        self._collect = collect
        self._server: asyncio.Server | None = None
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._rendering = asyncio.Lock()
        self.port = 0

    async def start(self) -> int:
        host, _, port = self.address.rpartition(":")
        try:
            check_bindable(self.address)
            self._server = await asyncio.start_server(
                self._serve,
                host.removeprefix("[").removesuffix("]"),
                int(port),
                limit=MAX_REQUEST_BYTES,
            )
        except ListenFailed as e:
            raise ListenFailed(f"telemetry.prometheus_listen: {e}") from None
        except OSError as e:
            raise ListenFailed(
                f"telemetry.prometheus_listen: cannot listen on {self.address}: {e.strerror}"
            ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("Prometheus metrics on http://%s:%d/metrics", host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), REQUEST_TIMEOUT_S)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._slots.locked():
            writer.close()  # over the connection limit: no slot, no answer
            return
        async with self._slots:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    head = await reader.readuntil(b"\r\n\r\n")
                    # Collected and rendered on a thread, one scrape at a time: however
                    # often it is scraped, the event loop (and the orders on it) never
                    # waits for a page.
                    async with self._rendering:
                        status, content_type, body = await asyncio.to_thread(self._answer, head)
                    writer.write(
                        (
                            f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                        ).encode("ascii")
                        + (b"" if head.startswith(b"HEAD ") else body)
                    )
                    await writer.drain()
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                pass  # too slow, too big, or gone: just close
            except ConnectionError:
                pass
            except Exception:
                log.exception("the Prometheus endpoint failed to answer")
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    def _answer(self, head: bytes) -> tuple[str, str, bytes]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET /metrics\n"
        if parts[1].split("?", 1)[0] != "/metrics":
            return "404 Not Found", "text/plain", b"GET /metrics\n"
        accept = next(
            (line.split(":", 1)[1] for line in lines[1:] if line.lower().startswith("accept:")),
            "",
        )
        openmetrics = "application/openmetrics-text" in accept
        body = render(self._collect(), openmetrics=openmetrics).encode("utf-8")
        return "200 OK", OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE, body
