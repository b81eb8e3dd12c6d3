"""The clients carry the strategy's trace and session to the gateway: the strategy's span
is the parent of the client's span of the call, which is the parent of the gateway's
server span, under which the engine's order span runs. Sync and asyncio alike; and
without opentelemetry installed the client still works and still sends the session."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from execgw.client import AsyncExecutionClient, ExecutionClient, market, session
from execgw.server.clock import ManualClock

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TIMEOUT_S, publish
    from tests.telemetry_helpers import Recorder, attributes, is_child, rpc, spans
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TIMEOUT_S, publish
    from telemetry_helpers import Recorder, attributes, is_child, rpc, spans

__all__ = ["spans"]

REPO = Path(__file__).resolve().parent.parent
tracer = trace.get_tracer("strategy")


@pytest.fixture
def running(tmp_path: Path, clock: ManualClock, spans: Recorder) -> Iterator[RunningGateway]:
    gateway = RunningGateway(make_config(tmp_path), clock)
    try:
        with ExecutionClient(gateway.target) as client:
            publish(client, INFY, 1500.0)
        spans.clear()
        yield gateway
    finally:
        gateway.stop()


def _assert_chain(spans: Recorder, strategy: ReadableSpan, method: str) -> ReadableSpan:
    """strategy -> client span -> server span, one trace; returns the server span."""
    [client_span] = [s for s in spans.named(rpc(method), SpanKind.CLIENT) if is_child(s, strategy)]
    [server] = [s for s in spans.servers(method) if is_child(s, client_span)]
    assert attributes(client_span)["rpc.method"] == method
    assert attributes(client_span)["rpc.grpc.status_code"] == 0
    assert server.context.trace_id == strategy.context.trace_id
    return server


def test_the_sync_clients_span_is_the_parent_of_the_gateways_spans(
    running: RunningGateway, spans: Recorder
) -> None:
    with ExecutionClient(running.target) as client:
        with tracer.start_as_current_span("strategy.decide"):
            result = client.submit(market(INFY, "BUY", 5, strategy_code="S1"))
        [strategy] = spans.named("strategy.decide")
        server = _assert_chain(spans, strategy, "SubmitOrder")
        [order] = [s for s in spans.named("execgw.order") if is_child(s, server)]
        assert attributes(order)["execgw.order_id"] == result.order_id


def test_the_async_clients_span_is_the_parent_of_the_gateways_spans(
    running: RunningGateway, spans: Recorder
) -> None:
    async def strategy() -> str:
        async with AsyncExecutionClient(running.target) as client:
            with tracer.start_as_current_span("strategy.async"):
                result = await client.submit(market(INFY, "SELL", 5, strategy_code="S1"))
                await client.get_order(result.order_id)
            return result.order_id

    order_id = asyncio.run(asyncio.wait_for(strategy(), TIMEOUT_S))
    [parent] = spans.named("strategy.async")
    server = _assert_chain(spans, parent, "SubmitOrder")
    [order] = [s for s in spans.named("execgw.order") if is_child(s, server)]
    assert attributes(order)["execgw.order_id"] == order_id
    _assert_chain(spans, parent, "GetOrder")


def test_a_stream_is_one_client_span_per_connection(
    running: RunningGateway, spans: Recorder
) -> None:
    with ExecutionClient(running.target) as client:
        client.submit(market(INFY, "BUY", 1, strategy_code="S1"))
        with tracer.start_as_current_span("strategy.listen"):
            for _ in client.stream_fills(from_sequence=1, reconnect=False):
                break  # leaving the loop cancels the call: the span ends CANCELLED
    [parent] = spans.named("strategy.listen")
    [stream] = spans.named(rpc("StreamFills"), SpanKind.CLIENT)
    assert is_child(stream, parent)
    assert attributes(stream)["rpc.grpc.status_code"] == 1  # CANCELLED


def test_the_async_client_sends_its_session_and_a_per_call_one(
    running: RunningGateway, spans: Recorder
) -> None:
    async def calls() -> None:
        async with AsyncExecutionClient(running.target, session_id="async-desk") as client:
            await client.get_quote(INFY)
            with session("async-call"):
                await client.get_quote(INFY)

    asyncio.run(asyncio.wait_for(calls(), TIMEOUT_S))
    sessions = sorted(str(attributes(s)["execgw.session_id"]) for s in spans.servers("GetQuote"))
    assert sessions == ["async-call", "async-desk"]


_WITHOUT_OPENTELEMETRY = """
import asyncio, sys
sys.modules["opentelemetry"] = None  # any import of it now fails, as if not installed
import execgw.client as c
from execgw.client import _tracing
assert not _tracing.TRACING
with c.ExecutionClient(TARGET, session_id="no-otel") as gw:
    placed = gw.submit(c.market("NSE:INFY", "BUY", 1, strategy_code="S1"), "no-otel-1")
    with c.session("no-otel-call"):
        gw.get_order(placed.order_id)
async def main():
    async with c.AsyncExecutionClient(TARGET, session_id="no-otel-async") as agw:
        await agw.get_quote("NSE:INFY")
asyncio.run(main())
print(c.OrderStatus.Name(placed.status))
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""


def test_the_client_works_without_opentelemetry_and_still_sends_the_session(
    running: RunningGateway, spans: Recorder
) -> None:
    script = _WITHOUT_OPENTELEMETRY.replace("TARGET", repr(running.target))
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["ORDER_STATUS_FILLED", "['opentelemetry']"]
    submit = spans.server("SubmitOrder")
    assert submit.parent is None  # no trace context came: the gateway's span is the root
    assert attributes(submit)["execgw.session_id"] == "no-otel"
    assert attributes(spans.server("GetOrder"))["execgw.session_id"] == "no-otel-call"
    assert attributes(spans.server("GetQuote"))["execgw.session_id"] == "no-otel-async"


def test_the_client_distribution_needs_no_opentelemetry() -> None:
    project = tomllib.loads((REPO / "client" / "pyproject.toml").read_text("utf-8"))["project"]
    assert not [d for d in project["dependencies"] if "opentelemetry" in d]
    assert project["optional-dependencies"]["tracing"] == ["opentelemetry-api>=1.30"]


def test_a_malformed_session_id_is_refused_by_the_client() -> None:
    for bad in ("", "has space", "x" * 65, "-starts-with-dash", "é"):
        with pytest.raises(ValueError, match="session_id"):
            ExecutionClient("127.0.0.1:1", session_id=bad)
        with pytest.raises(ValueError, match="session_id"), session(bad):
            pass
