"""Metrics through a real gateway, read where an operator reads them: its Prometheus
endpoint. Order, fill and breaker metrics come from the bus as each commit is
published, before its callers are answered, so a scrape right after a call sees it."""

from __future__ import annotations

import asyncio
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from execgw.client import ExecutionClient, OrderStatus, limit, market
from execgw.server.app import Gateway
from execgw.server.clock import ManualClock
from execgw.server.listen import ListenFailed
from execgw.server.telemetry.prometheus import label_name, metric_name, render

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TCS, TIMEOUT_S, StreamSubscriptions, publish, stream_reader
    from tests.telemetry_helpers import Recorder, spans
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TCS, TIMEOUT_S, StreamSubscriptions, publish, stream_reader
    from telemetry_helpers import Recorder, spans

__all__ = ["spans"]

SESSION = "prom-1"
Sample = tuple[str, frozenset[tuple[str, str]]]
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: # .*)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@pytest.fixture
def metered(
    tmp_path: Path, clock: ManualClock, spans: Recorder
) -> Iterator[tuple[RunningGateway, ExecutionClient, int]]:
    config = make_config(
        tmp_path,
        telemetry={"session_id": SESSION, "prometheus_listen": "127.0.0.1:0"},
    )
    running = RunningGateway(config, clock)
    client = ExecutionClient(running.target)
    try:
        publish(client, INFY, 1500.0)
        endpoint = running.gateway.telemetry.prometheus
        assert endpoint is not None
        yield running, client, endpoint.port
    finally:
        client.close()
        running.stop()


def scrape(port: int, *, openmetrics: bool = False, path: str = "/metrics") -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if openmetrics:
        request.add_header("Accept", "application/openmetrics-text; version=1.0.0")
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        body: bytes = response.read()
        return body.decode("utf-8")


def samples(text: str) -> dict[Sample, float]:
    found: dict[Sample, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        assert match is not None, line
        name, labels, value = match.groups()
        found[(name, frozenset(_LABEL.findall(labels or "")))] = float(value)
    return found


def total(found: dict[Sample, float], name: str, **labels: str) -> float:
    """The sum over the series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and wanted <= set(ls))


def test_orders_fills_and_latencies_move_with_the_orders(
    metered: tuple[RunningGateway, ExecutionClient, int],
) -> None:
    _, client, port = metered
    before = samples(scrape(port))
    assert total(before, "execgw_orders_total") == 0
    filled = client.submit(market(INFY, "BUY", 10, strategy_code="S1"))
    rejected = client.submit(market(TCS, "BUY", 1, strategy_code="S1"))
    resting = client.submit(limit(INFY, "SELL", 3, 1550.0, strategy_code="S1"))
    client.cancel(resting.order_id)
    assert [r.status for r in (filled, rejected, resting)] == [
        OrderStatus.Value(f"ORDER_STATUS_{s}") for s in ("FILLED", "REJECTED", "PLACED")
    ]
    after = samples(scrape(port))
    orders = "execgw_orders_total"
    assert total(after, orders, execgw_event="accepted") == 2
    assert total(after, orders, execgw_status="FILLED") == 1
    assert total(after, orders, execgw_status="CANCELLED") == 1
    assert (
        total(after, orders, execgw_status="REJECTED", execgw_reject_reason="NO_MARKET_DATA") == 1
    )
    assert total(after, orders, execgw_dry_run="false", execgw_internal="false") == 5
    assert total(after, "execgw_fills_total", execgw_side="BUY") == 1
    assert total(after, "execgw_fills_qty_total", execgw_side="BUY") == 10
    rpcs = "execgw_rpc_server_duration_seconds_count"
    submit = {"rpc_method": "SubmitOrder"}
    assert total(after, rpcs, execgw_status="FILLED", **submit) == 1
    assert total(after, rpcs, execgw_status="PLACED", **submit) == 1
    assert total(after, rpcs, execgw_reject_reason="NO_MARKET_DATA", **submit) == 1
    assert total(after, rpcs, rpc_grpc_status_code="0", **submit) == 3
    assert total(after, rpcs, rpc_method="CancelOrder") == 1
    assert total(after, "execgw_journal_commit_duration_seconds_count") >= 4
    assert total(after, "execgw_journal_commit_records_sum") >= 6
    assert total(after, "execgw_journal_commit_commands_count") >= 4
    assert ("execgw_core_queue_depth", frozenset()) in after
    [info] = [labels for name, labels in after if name == "target_info"]
    assert ("execgw_session_id", SESSION) in info
    assert ("execgw_mode", "paper") in info
    # The session is never a dimension: a caller could name a new one per call.
    for name, labels in after:
        if name != "target_info":
            assert not [k for k, _ in labels if "session" in k], name


def test_breaker_state_per_scope_follows_halts_and_resumes(
    metered: tuple[RunningGateway, ExecutionClient, int],
) -> None:
    _, client, port = metered
    idle = samples(scrape(port))
    switch = {"execgw_breaker": "kill_switch"}
    assert total(idle, "execgw_trading_state", execgw_scope="account") == 0
    assert total(idle, "execgw_breaker_tripped") == 0
    client.halt("metrics", strategy_code="S1")
    client.halt("metrics")
    halted = samples(scrape(port))
    assert total(halted, "execgw_breaker_tripped", execgw_scope="account", **switch) == 1
    assert total(halted, "execgw_breaker_tripped", execgw_scope="S1", **switch) == 1
    assert total(halted, "execgw_trading_state", execgw_scope="account") == 2
    assert total(halted, "execgw_trading_state", execgw_scope="S1") == 2
    client.resume("metrics")
    resumed = samples(scrape(port))
    assert total(resumed, "execgw_breaker_tripped", execgw_scope="account", **switch) == 0
    assert total(resumed, "execgw_trading_state", execgw_scope="account") == 0
    # The strategy's own halt stands until it is resumed itself.
    assert total(resumed, "execgw_trading_state", execgw_scope="S1") == 2


def test_stream_subscribers_are_counted_with_their_lag(
    metered: tuple[RunningGateway, ExecutionClient, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    running, _, port = metered
    subscribed = StreamSubscriptions(running, monkeypatch)
    assert total(samples(scrape(port)), "execgw_stream_subscribers") == 0
    with stream_reader(running, subscribed, include_order_updates=True):
        live = samples(scrape(port))
        assert total(live, "execgw_stream_subscribers") == 1
        assert total(live, "execgw_stream_lag_max") >= 0
        assert ("execgw_stream_lag_total", frozenset()) in live
        assert total(live, "execgw_stream_overflows_total") == 0


def test_openmetrics_exemplars_name_the_trace_and_the_session(
    metered: tuple[RunningGateway, ExecutionClient, int], spans: Recorder
) -> None:
    _, client, port = metered
    client.submit(market(INFY, "BUY", 1, strategy_code="S1"))
    trace_id = f"{spans.server('SubmitOrder').context.trace_id:032x}"
    text = scrape(port, openmetrics=True)
    assert text.endswith("# EOF\n")
    [exemplar] = [
        line
        for line in text.splitlines()
        if line.startswith("execgw_rpc_server_duration_seconds_bucket")
        and 'rpc_method="SubmitOrder"' in line
        and " # {" in line
    ]
    assert f'trace_id="{trace_id}"' in exemplar
    assert f'session_id="{SESSION}"' in exemplar
    assert "# TYPE execgw_orders counter" in text  # OpenMetrics names the family without _total


def test_the_endpoint_answers_get_metrics_only(
    metered: tuple[RunningGateway, ExecutionClient, int],
) -> None:
    _, _, port = metered
    with pytest.raises(urllib.error.HTTPError) as missing:
        scrape(port, path="/other")
    assert missing.value.code == 404
    post = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(post, timeout=TIMEOUT_S)
    assert refused.value.code == 405
    # A request head larger than the endpoint takes is not answered: the connection closes.
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as raw:
        raw.sendall(b"GET /metrics HTTP/1.1\r\nX-Padding: " + b"a" * 20_000 + b"\r\n\r\n")
        assert raw.recv(1024) == b""
    assert "execgw_core_queue_depth" in scrape(port)  # and it still serves


def test_a_prometheus_port_in_use_stops_start_up_naming_the_key(
    tmp_path: Path, clock: ManualClock
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = make_config(tmp_path, telemetry={"prometheus_listen": f"127.0.0.1:{port}"})

        async def start() -> None:
            await Gateway(config, clock=clock).start()

        with pytest.raises(ListenFailed, match=r"telemetry\.prometheus_listen"):
            asyncio.run(start())
    # Everything it took was released: the same journal starts again.
    running = RunningGateway(make_config(tmp_path), clock)
    running.stop()


def test_without_a_reader_there_are_no_metrics(tmp_path: Path, clock: ManualClock) -> None:
    running = RunningGateway(make_config(tmp_path), clock)
    try:
        assert running.gateway.telemetry.metrics.enabled is False
        assert running.gateway.telemetry.collect() is None
        assert running.gateway.core.on_commit is None
    finally:
        running.stop()


def test_prometheus_names_and_labels() -> None:
    assert metric_name("execgw.rpc.server.duration", "s") == "execgw_rpc_server_duration_seconds"
    assert metric_name("execgw.orders", "{event}") == "execgw_orders"
    assert label_name("rpc.grpc.status_code") == "rpc_grpc_status_code"
    assert render(None) == "\n"
    assert render(None, openmetrics=True) == "# EOF\n"
