"""`execgw trace summary`: what a span file (telemetry.exporter jsonl) says about orders.

Pure functions over the file's lines, so the command and the tests share them:
- orders by their last known status and reject reason: every span that names an order
  (execgw.order_id) and its status says where the order stood when that span ended,
  and the latest one wins, so a later fill or cancel moves the order on; the journal
  and publish stages are left out of this (their spans end when the batch is
  published, after the callers' answers and possibly after the order's next spans);
- latency per stage: every span name is a stage (the RPC spans, execgw.order,
  execgw.journal.commit, and any execgw.stage.<name> child spans the order path
  has), with p50, p90, p99 (nearest rank) and max in milliseconds;
- the slowest orders: each order's latency is that of the server RPC span its
  execgw.order span runs under (else of the order span itself), with its trace id and
  the slowest stage inside it that ended within that latency (publishing comes after
  the answer).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from execgw.server.telemetry import attributes as attr

DEFAULT_SLOWEST = 10
SERVER_KIND = "SpanKind.SERVER"
CLIENT_KIND = "SpanKind.CLIENT"


@dataclass(frozen=True, slots=True)
class SpanRecord:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str | None
    start_us: int
    end_us: int
    attributes: dict[str, Any]
    session_id: str

    @property
    def duration_ms(self) -> float:
        return (self.end_us - self.start_us) / 1000

    @property
    def stage(self) -> str:
        """The name a stage is reported under; a client's span of an RPC is told apart
        from the server's span of the same RPC."""
        return f"{self.name} (client)" if self.kind == CLIENT_KIND else self.name


@dataclass(slots=True)
class SpanFile:
    spans: list[SpanRecord] = field(default_factory=list)
    unreadable: int = 0
    # Every session in the file, the spans of which were kept or not.
    sessions_seen: set[str] = field(default_factory=set)

    @property
    def sessions(self) -> list[str]:
        return sorted(self.sessions_seen)


def _hex(value: Any) -> str:
    text = str(value or "")
    return text[2:] if text.startswith("0x") else text


def _micros(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return round(moment.timestamp() * 1_000_000)


def parse_span(line: str) -> SpanRecord | None:
    """One line of the jsonl exporter's output; None when it is not a finished span."""
    try:
        data = json.loads(line)
        context = data["context"]
        attributes = dict(data.get("attributes") or {})
        resource = (data.get("resource") or {}).get("attributes") or {}
        start, end = data.get("start_time"), data.get("end_time")
        if not (isinstance(start, str) and isinstance(end, str)):
            return None
        session = attributes.get(attr.SESSION_ID) or resource.get(attr.SESSION_ID) or ""
        return SpanRecord(
            name=str(data["name"]),
            kind=str(data.get("kind", "")),
            trace_id=_hex(context["trace_id"]),
            span_id=_hex(context["span_id"]),
            parent_id=_hex(data.get("parent_id")) or None,
            start_us=_micros(start),
            end_us=_micros(end),
            attributes=attributes,
            session_id=str(session),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def read_spans(lines: Iterable[str], session_id: str | None = None) -> SpanFile:
    found = SpanFile()
    for line in lines:
        if not line.strip():
            continue
        span = parse_span(line)
        if span is None:
            found.unreadable += 1
            continue
        if span.session_id:
            found.sessions_seen.add(span.session_id)
        if session_id is None or span.session_id == session_id:
            found.spans.append(span)
    return found


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest rank: the smallest value with at least `fraction` of the values at or
    below it."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True, slots=True)
class StageLatency:
    stage: str
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True, slots=True)
class OrderCount:
    status: str
    reject_reason: str
    count: int


@dataclass(frozen=True, slots=True)
class SlowOrder:
    order_id: str
    status: str
    reject_reason: str
    symbol: str
    side: str
    qty: int | None
    latency_ms: float
    trace_id: str
    slowest_stage: str
    slowest_stage_ms: float | None


@dataclass(frozen=True, slots=True)
class Summary:
    spans: int
    unreadable: int
    sessions: list[str]
    orders: list[OrderCount]
    stages: list[StageLatency]
    slowest: list[SlowOrder]


def _stage_rank(span: SpanRecord) -> tuple[int, str]:
    name = span.stage
    if span.kind == SERVER_KIND:
        return (0, name)
    if span.kind == CLIENT_KIND:
        return (1, name)
    if name == attr.ORDER_SPAN:
        return (2, name)
    if name.startswith(attr.STAGE_SPAN_PREFIX):
        return (3, name)
    if name == attr.JOURNAL_COMMIT_SPAN:
        return (4, name)
    return (5, name)


def stage_latencies(spans: list[SpanRecord]) -> list[StageLatency]:
    by_stage: dict[str, list[float]] = defaultdict(list)
    rank: dict[str, tuple[int, str]] = {}
    for span in spans:
        by_stage[span.stage].append(span.duration_ms)
        rank.setdefault(span.stage, _stage_rank(span))
    out = []
    for stage in sorted(by_stage, key=lambda s: rank[s]):
        values = sorted(by_stage[stage])
        out.append(
            StageLatency(
                stage,
                len(values),
                percentile(values, 0.50),
                percentile(values, 0.90),
                percentile(values, 0.99),
                values[-1],
            )
        )
    return out


@dataclass(slots=True)
class _Order:
    order_id: str
    status: str = ""
    reject_reason: str = ""
    status_at: int = -1
    symbol: str = ""
    side: str = ""
    qty: int | None = None
    order_span: SpanRecord | None = None


_BATCH_STAGES = frozenset({attr.JOURNAL_STAGE, attr.PUBLISH_STAGE})


def _orders(spans: list[SpanRecord]) -> dict[str, _Order]:
    orders: dict[str, _Order] = {}
    for span in sorted(spans, key=lambda s: s.end_us):
        order_id = span.attributes.get(attr.ORDER_ID)
        if not order_id or span.kind == CLIENT_KIND:
            continue
        order = orders.setdefault(str(order_id), _Order(str(order_id)))
        found = span.attributes
        status = None if span.name in _BATCH_STAGES else found.get(attr.STATUS)
        if status and span.end_us >= order.status_at:
            order.status = str(status)
            order.reject_reason = str(found.get(attr.REJECT_REASON) or "")
            order.status_at = span.end_us
        order.symbol = order.symbol or str(found.get(attr.SYMBOL) or "")
        order.side = order.side or str(found.get(attr.SIDE) or "")
        if order.qty is None and isinstance(found.get(attr.QTY), int):
            order.qty = int(found[attr.QTY])
        if span.name == attr.ORDER_SPAN and order.order_span is None:
            order.order_span = span
    return orders


def order_counts(orders: Iterable[_Order]) -> list[OrderCount]:
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for order in orders:
        counts[(order.status or "UNKNOWN", order.reject_reason)] += 1
    return [
        OrderCount(status, reason, count)
        for (status, reason), count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


def _slowest(orders: Iterable[_Order], spans: list[SpanRecord], limit: int) -> list[SlowOrder]:
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    children: dict[tuple[str, str], list[SpanRecord]] = defaultdict(list)
    for span in spans:
        if span.parent_id:
            children[(span.trace_id, span.parent_id)].append(span)
    found = []
    for order in orders:
        anchor = order.order_span
        if anchor is None:
            continue
        root = anchor
        parent = by_id.get((anchor.trace_id, anchor.parent_id or ""))
        while parent is not None:
            if parent.kind == SERVER_KIND:
                root = parent
                break
            parent = by_id.get((parent.trace_id, parent.parent_id or ""))
        inside = _descendants(root, children)
        stages = [
            s
            for s in inside
            if s.name.startswith(attr.STAGE_SPAN_PREFIX) and s.end_us <= root.end_us
        ] or [s for s in inside if s.end_us <= root.end_us]
        slowest = max(stages, key=lambda s: s.duration_ms, default=None)
        found.append(
            SlowOrder(
                order_id=order.order_id,
                status=order.status,
                reject_reason=order.reject_reason,
                symbol=order.symbol,
                side=order.side,
                qty=order.qty,
                latency_ms=root.duration_ms,
                trace_id=root.trace_id,
                slowest_stage="" if slowest is None else slowest.name,
                slowest_stage_ms=None if slowest is None else slowest.duration_ms,
            )
        )
    found.sort(key=lambda o: (-o.latency_ms, o.order_id))
    return found[:limit]


def _descendants(
    root: SpanRecord, children: dict[tuple[str, str], list[SpanRecord]]
) -> list[SpanRecord]:
    out: list[SpanRecord] = []
    todo = list(children.get((root.trace_id, root.span_id), ()))
    while todo:
        span = todo.pop()
        out.append(span)
        todo.extend(children.get((span.trace_id, span.span_id), ()))
    return out


def summarize(found: SpanFile, *, slowest: int = DEFAULT_SLOWEST) -> Summary:
    orders = _orders(found.spans)
    return Summary(
        spans=len(found.spans),
        unreadable=found.unreadable,
        sessions=found.sessions,
        orders=order_counts(orders.values()),
        stages=stage_latencies(found.spans),
        slowest=_slowest(orders.values(), found.spans, slowest),
    )
