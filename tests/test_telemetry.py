"""Every order is traced: the RPC span, the engine's order span under it, and the
journal commit; the gateway's own square-off orders are traced the same way."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from execgw.client import ExecutionClient, OrderStatus, market
from execgw.server.clock import ManualClock
from execgw.server.config import TelemetryConfig
from execgw.server.telemetry import JsonLinesSpanExporter
from execgw.v1 import market_data_pb2

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
else:
    from conftest import RunningGateway, make_config


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def traced(
    tmp_path: Path, clock: ManualClock, spans: InMemorySpanExporter
) -> Iterator[tuple[RunningGateway, ExecutionClient]]:
    spans.clear()
    running = RunningGateway(make_config(tmp_path), clock)
    client = ExecutionClient(running.target)
    try:
        client.publish_quotes([market_data_pb2.Quote(symbol="NSE:INFY", ltp=1500.0)])
        yield running, client
    finally:
        client.close()
        running.stop()


def test_submit_order_span_contains_the_order_span(
    traced: tuple[RunningGateway, ExecutionClient], spans: InMemorySpanExporter
) -> None:
    _, client = traced
    result = client.submit(market("NSE:INFY", "BUY", 10, strategy_code="S1"), "trace-1")
    assert result.status == OrderStatus.Value("ORDER_STATUS_FILLED")
    finished = spans.get_finished_spans()
    rpc = next(s for s in finished if s.name == "execgw.SubmitOrder")
    order = next(s for s in finished if s.name == "execgw.order")
    assert order.parent is not None
    assert order.parent.span_id == rpc.context.span_id
    assert order.context.trace_id == rpc.context.trace_id
    assert order.attributes is not None
    assert rpc.attributes is not None
    assert order.attributes["execgw.order_id"] == result.order_id
    assert order.attributes["execgw.client_order_id"] == "trace-1"
    assert order.attributes["execgw.status"] == "FILLED"
    assert order.attributes["execgw.filled_qty"] == 10
    assert order.attributes["execgw.internal"] is False
    assert rpc.attributes["execgw.order_id"] == result.order_id
    commits = [s for s in finished if s.name == "execgw.journal.commit"]
    assert commits
    assert all(int(str((s.attributes or {})["execgw.records"])) >= 1 for s in commits)


def test_rejections_carry_their_reason_on_the_span(
    traced: tuple[RunningGateway, ExecutionClient], spans: InMemorySpanExporter
) -> None:
    _, client = traced
    result = client.submit(market("NSE:TCS", "BUY", 1, strategy_code="S1"))
    assert result.status == OrderStatus.Value("ORDER_STATUS_REJECTED")
    order = next(s for s in spans.get_finished_spans() if s.name == "execgw.order")
    assert order.attributes is not None
    assert order.attributes["execgw.reject_reason"] == "NO_MARKET_DATA"


def test_mis_square_off_orders_are_traced_as_internal(
    traced: tuple[RunningGateway, ExecutionClient],
    spans: InMemorySpanExporter,
    clock: ManualClock,
) -> None:
    running, client = traced
    client.submit(market("NSE:INFY", "BUY", 10, strategy_code="S1"))
    spans.clear()
    clock.advance(timedelta(hours=6))  # 10:00 -> 16:00 IST, past the 15:20 square-off
    running.call(running.gateway.core.tick())
    orders = [s for s in spans.get_finished_spans() if s.name == "execgw.order"]
    assert len(orders) == 1
    attributes = orders[0].attributes
    assert attributes is not None
    assert attributes["execgw.internal"] is True
    assert attributes["execgw.side"] == "SELL"
    assert attributes["execgw.qty"] == 10
    assert attributes["execgw.status"] == "FILLED"


def test_jsonl_exporter_writes_one_span_per_line(tmp_path: Path) -> None:
    config = TelemetryConfig(exporter="jsonl", path=str(tmp_path / "t" / "spans.jsonl"))
    provider = TracerProvider()
    exporter = JsonLinesSpanExporter(Path(config.path))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for name in ("a", "b"):
        with tracer.start_as_current_span(name):
            pass
    provider.shutdown()
    lines = Path(config.path).read_text(encoding="utf-8").splitlines()
    assert [line.count('"name": ') for line in lines] == [1, 1]
    assert '"name": "a"' in lines[0]
    assert '"name": "b"' in lines[1]
