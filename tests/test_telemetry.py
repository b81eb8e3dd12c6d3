"""Spans through a real gateway: the server span of every RPC, the engine's order span
under it, the journal commit, their attributes, sessions, and what never goes in.

Spans are recorded in memory (telemetry_helpers); each is ended before its RPC answers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind

from execgw.client import (
    ExecutionClient,
    InvalidArgument,
    NotFound,
    OrderStatus,
    Unauthenticated,
    limit,
    market,
    session,
)
from execgw.server.clock import ManualClock
from execgw.server.config import TelemetryConfig
from execgw.server.domain import Product
from execgw.server.telemetry import JsonLinesSpanExporter
from execgw.v1 import gateway_pb2, gateway_pb2_grpc

if TYPE_CHECKING:
    from tests.auth_helpers import TOKENS, auth_section
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TCS, publish, quote
    from tests.sim_session import Session
    from tests.sim_session import config as sim_config
    from tests.sim_session import intent as sim_intent
    from tests.telemetry_helpers import (
        ALL_RPCS,
        Recorder,
        attributes,
        is_child,
        rpc,
        spans,
    )
else:
    from auth_helpers import TOKENS, auth_section
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TCS, publish, quote
    from sim_session import Session
    from sim_session import config as sim_config
    from sim_session import intent as sim_intent
    from telemetry_helpers import ALL_RPCS, Recorder, attributes, is_child, rpc, spans

__all__ = ["spans"]  # the fixture, imported for the tests below

SESSION = "rehearsal-1"


@pytest.fixture
def traced(
    tmp_path: Path, clock: ManualClock, spans: Recorder
) -> Iterator[tuple[RunningGateway, ExecutionClient]]:
    config = make_config(tmp_path, telemetry={"session_id": SESSION})
    running = RunningGateway(config, clock)
    client = ExecutionClient(running.target)
    try:
        publish(client, INFY, 1500.0)
        spans.clear()
        yield running, client
    finally:
        client.close()
        running.stop()


def _order_span_under(spans: Recorder, server: ReadableSpan) -> ReadableSpan:
    [order] = [s for s in spans.named("execgw.order") if is_child(s, server)]
    return order


def test_a_filled_order_is_a_server_span_with_the_order_span_under_it(
    traced: tuple[RunningGateway, ExecutionClient], spans: Recorder
) -> None:
    _, client = traced
    result = client.submit(market(INFY, "BUY", 10, strategy_code="S1"), "trace-1")
    assert result.status == OrderStatus.Value("ORDER_STATUS_FILLED")
    server = spans.server("SubmitOrder")
    assert server.kind is SpanKind.SERVER
    # The client's span of the call (the test process has an SDK) is the server's parent.
    client_span = spans.one(rpc("SubmitOrder"), SpanKind.CLIENT)
    assert client_span.parent is None
    assert is_child(server, client_span)
    order = _order_span_under(spans, server)
    expected = {
        "execgw.order_id": result.order_id,
        "execgw.client_order_id": "trace-1",
        "execgw.strategy_code": "S1",
        "execgw.symbol": INFY,
        "execgw.side": "BUY",
        "execgw.qty": 10,
        "execgw.filled_qty": 10,
        "execgw.status": "FILLED",
        "execgw.session_id": SESSION,
        "execgw.mode": "paper",
        "execgw.dry_run": False,
    }
    for span in (server, order):
        found = attributes(span)
        assert {k: found.get(k) for k in expected} == expected, span.name
        assert "execgw.reject_reason" not in found
    assert attributes(order)["execgw.internal"] is False
    assert attributes(server)["rpc.system"] == "grpc"
    assert attributes(server)["rpc.service"] == "execgw.v1.ExecutionGateway"
    assert attributes(server)["rpc.method"] == "SubmitOrder"
    assert attributes(server)["rpc.grpc.status_code"] == 0
    # One child span per stage: validate under the RPC, risk and venue under the order,
    # and the batch-wide journal commit and publish in the order's own trace, linked to
    # the batch's commit span.
    [validate] = [s for s in spans.named("execgw.stage.validate") if is_child(s, server)]
    assert sorted(s.name for s in spans.children(order)) == [
        "execgw.stage.risk",
        "execgw.stage.venue",
    ]
    for stage in ("execgw.stage.journal", "execgw.stage.publish"):
        [stage_span] = [s for s in spans.named(stage) if is_child(s, server)]
        assert attributes(stage_span)["execgw.order_id"] == result.order_id
        assert attributes(stage_span)["execgw.session_id"] == SESSION
    [journal] = [s for s in spans.named("execgw.stage.journal") if is_child(s, server)]
    commit_ids = {c.context.span_id for c in spans.named("execgw.journal.commit")}
    assert [link.context.span_id for link in journal.links] in ([i] for i in commit_ids)
    assert validate.end_time is not None
    assert journal.start_time is not None
    assert validate.end_time <= journal.start_time
    # The commit that made the order durable: ended before the order was answered.
    commits = spans.named("execgw.journal.commit")
    assert commits
    for commit in commits:
        assert int(str(attributes(commit)["execgw.records"])) >= 1
        assert attributes(commit)["execgw.session_id"] == SESSION


def test_a_rejected_order_carries_its_reason_on_both_spans(
    traced: tuple[RunningGateway, ExecutionClient], spans: Recorder
) -> None:
    _, client = traced
    result = client.submit(market(TCS, "BUY", 1, strategy_code="S1"))
    assert result.status == OrderStatus.Value("ORDER_STATUS_REJECTED")
    server = spans.server("SubmitOrder")
    order = _order_span_under(spans, server)
    for span in (server, order):
        assert attributes(span)["execgw.status"] == "REJECTED"
        assert attributes(span)["execgw.reject_reason"] == "NO_MARKET_DATA"
    # A rejection is a result, not a failed call.
    assert attributes(server)["rpc.grpc.status_code"] == 0
    assert not server.status.is_ok or server.status.status_code.name == "UNSET"


def test_a_resting_order_filled_later_is_placed_in_one_trace_and_seen_filled_later(
    traced: tuple[RunningGateway, ExecutionClient], spans: Recorder
) -> None:
    _, client = traced
    placed = client.submit(limit(INFY, "BUY", 5, 1490.0, strategy_code="S1"))
    assert placed.status == OrderStatus.Value("ORDER_STATUS_PLACED")
    submit = spans.server("SubmitOrder")
    order = _order_span_under(spans, submit)
    assert attributes(order)["execgw.status"] == "PLACED"
    publish(client, INFY, 1489.0)  # crosses the limit: the order fills under this call
    publish_span = spans.server("PublishQuotes")
    assert publish_span.context.trace_id != submit.context.trace_id
    assert attributes(publish_span)["execgw.session_id"] == SESSION
    filled = client.get_order(placed.order_id)
    assert filled.status == OrderStatus.Value("ORDER_STATUS_FILLED")
    get = spans.server("GetOrder")
    assert attributes(get)["execgw.order_id"] == placed.order_id
    assert attributes(get)["execgw.status"] == "FILLED"
    # The later fill has its own span, in a trace of its own, linked to the order's span.
    [fill] = spans.named("execgw.fill")
    assert attributes(fill)["execgw.order_id"] == placed.order_id
    assert attributes(fill)["execgw.status"] == "FILLED"
    assert [link.context.span_id for link in fill.links] == [order.context.span_id]
    assert fill.parent is None
    # In the session the order was placed in, so a session's summary sees it filled.
    assert attributes(fill)["execgw.session_id"] == SESSION


def test_a_cancel_has_its_venue_journal_and_publish_stages_under_its_call(
    traced: tuple[RunningGateway, ExecutionClient], spans: Recorder
) -> None:
    _, client = traced
    placed = client.submit(limit(INFY, "BUY", 5, 1490.0, strategy_code="S1"))
    spans.clear()
    client.cancel(placed.order_id)
    cancel = spans.server("CancelOrder")
    stages = {s.name: s for s in spans.spans if s.context.trace_id == cancel.context.trace_id}
    venue = stages["execgw.stage.venue"]
    assert is_child(venue, cancel)
    assert attributes(venue)["execgw.order_id"] == placed.order_id
    assert attributes(venue)["execgw.venue"] == "paper"
    assert attributes(venue)["execgw.status"] == "CANCELLED"
    for name in ("execgw.stage.journal", "execgw.stage.publish"):
        assert attributes(stages[name])["execgw.order_id"] == placed.order_id
        assert attributes(stages[name])["execgw.session_id"] == SESSION


def test_the_risk_span_records_failed_checks_and_breakers_near_their_limit(
    tmp_path: Path, clock: ManualClock, spans: Recorder
) -> None:
    config = make_config(
        tmp_path,
        telemetry={"session_id": SESSION},
        execution={"circuit_breakers": {"max_trades_per_day": 5}},
    )
    running = RunningGateway(config, clock)
    try:
        with ExecutionClient(running.target) as client:
            publish(client, INFY, 1500.0)
            for n in range(4):
                client.submit(market(INFY, "BUY", 1, strategy_code="S1"), f"near-{n}")
            spans.clear()
            client.submit(market(INFY, "BUY", 1, strategy_code="S1"), "near-4")
            [risk] = spans.named("execgw.stage.risk")
            near = [e for e in risk.events if e.name == "execgw.risk.near_limit"]
            assert [dict(e.attributes or {}) for e in near] == [
                {
                    "execgw.breaker": "max_trades_per_day",
                    "execgw.scope": "account",
                    "execgw.value": "4",
                    "execgw.limit": "5",
                }
            ]
            spans.clear()
            rejected = client.submit(market(INFY, "BUY", 1, strategy_code="S1"), "near-5")
            assert rejected.status == OrderStatus.Value("ORDER_STATUS_REJECTED")
            [risk] = spans.named("execgw.stage.risk")
            failed = [
                dict(e.attributes or {}) for e in risk.events if e.name == "execgw.risk.failed"
            ]
            assert {"execgw.reject_reason": "MAX_TRADES_PER_DAY"}.items() <= failed[0].items()
    finally:
        running.stop()


def test_a_loss_near_its_limit_is_reported_on_the_valuation_of_the_latest_quote(
    tmp_path: Path, clock: ManualClock, spans: Recorder
) -> None:
    """The risk span reads the valuation the breakers were last evaluated on: after a
    quote moves a position's loss near the limit, the next order's span says so."""
    config = make_config(
        tmp_path,
        telemetry={"session_id": SESSION},
        execution={"circuit_breakers": {"max_daily_loss_rupees": 1000.0}},
    )
    running = RunningGateway(config, clock)
    try:
        with ExecutionClient(running.target) as client:
            publish(client, INFY, 1500.0)
            client.submit(market(INFY, "BUY", 10, strategy_code="S1"), "loss-0")

            def near_limits() -> list[dict[str, object]]:
                spans.clear()
                client.submit(limit(INFY, "BUY", 1, 1.0, strategy_code="S1"))
                [risk] = spans.named("execgw.stage.risk")
                return [
                    dict(e.attributes or {})
                    for e in risk.events
                    if e.name == "execgw.risk.near_limit"
                    and (e.attributes or {}).get("execgw.breaker") == "max_daily_loss_rupees"
                ]

            assert near_limits() == []
            filled = client.get_order(client.list_orders(strategy_code="S1")[0].order_id)
            fill_price = float(filled.avg_price_decimal)
            publish(client, INFY, fill_price - 85.0)  # 10 x 85 = 850 of a 1000 limit
            [near] = near_limits()
            assert float(str(near["execgw.limit"])) == 1000
            assert float(str(near["execgw.value"])) == pytest.approx(850.0)
    finally:
        running.stop()


def test_every_rpc_of_both_services_is_traced_with_its_status_code(
    traced: tuple[RunningGateway, ExecutionClient], spans: Recorder
) -> None:
    running, client = traced
    resting = client.submit(limit(INFY, "BUY", 1, 1450.0, strategy_code="S1"))
    client.cancel(resting.order_id)
    client.get_order(resting.order_id)
    client.list_orders(strategy_code="S1")
    client.positions("S1")
    client.risk_state()
    client.preview(market(INFY, "BUY", 1, strategy_code="S1"))
    client.halt("telemetry test")
    client.resume("telemetry test")
    client.get_quote(INFY)
    client.publish_quotes([quote(INFY, 1500.5)])
    (answer,) = client.submit_orders([(market(INFY, "BUY", 1, strategy_code="S1"), None)])
    assert answer.result.order_id
    for _ in client.stream_fills(from_sequence=1, include_order_updates=True, reconnect=False):
        break  # one replayed event, then leave: the server span ends with the call
    with pytest.raises(NotFound):
        client.get_order("O9999999999")
    with pytest.raises(InvalidArgument):
        client.submit(market("not a symbol", "BUY", 1, strategy_code="S1"))
    # Health checks are not traced: probes would drown the orders.
    with grpc.insecure_channel(running.target) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    running.call(running.gateway.telemetry.stop())  # nothing to flush; idempotent
    servers = [s for s in spans.spans if s.kind is SpanKind.SERVER]
    assert sorted({s.name for s in servers}) == ALL_RPCS
    assert not [s for s in servers if "Health" in s.name]
    codes = {(s.name, attributes(s)["rpc.grpc.status_code"]) for s in servers}
    assert (rpc("GetOrder"), grpc.StatusCode.NOT_FOUND.value[0]) in codes
    assert (rpc("SubmitOrder"), grpc.StatusCode.INVALID_ARGUMENT.value[0]) in codes
    assert (rpc("StreamFills"), grpc.StatusCode.CANCELLED.value[0]) in codes
    cancel = spans.server("CancelOrder")
    assert attributes(cancel)["execgw.status"] == "CANCELLED"
    for span in servers:
        assert attributes(span)["execgw.session_id"] == SESSION, span.name


def test_halt_and_resume_spans_name_who_acted_and_on_which_scope(
    traced: tuple[RunningGateway, ExecutionClient], spans: Recorder
) -> None:
    _, client = traced
    client.halt("desk check", actor="ops-anna", strategy_code="S1")
    client.resume("desk check done", actor="ops-anna", strategy_code="S1")
    for method in ("HaltTrading", "ResumeTrading"):
        found = attributes(spans.server(method))
        assert found["execgw.actor"] == "ops-anna", method
        assert found["execgw.strategy_code"] == "S1", method
        assert "desk check" not in str(found), method  # the reason is free text: never on a span


def test_mis_square_off_orders_are_traced_as_internal_in_the_gateway_session(
    traced: tuple[RunningGateway, ExecutionClient], spans: Recorder, clock: ManualClock
) -> None:
    running, client = traced
    client.submit(market(INFY, "BUY", 10, strategy_code="S1"))
    spans.clear()
    clock.advance(timedelta(hours=6))  # 10:00 -> 16:00 IST, past the 15:20 square-off

    async def tick() -> None:  # as the gateway's own timer task runs it: in its session
        with running.gateway.telemetry.entered():
            await running.gateway.core.tick()

    running.call(tick())
    [order] = spans.named("execgw.order")
    found = attributes(order)
    assert found["execgw.internal"] is True
    assert found["execgw.side"] == "SELL"
    assert found["execgw.qty"] == 10
    assert found["execgw.status"] == "FILLED"
    assert found["execgw.session_id"] == SESSION


def test_a_call_names_its_own_session_per_client_and_per_call(
    traced: tuple[RunningGateway, ExecutionClient], spans: Recorder
) -> None:
    running, client = traced
    with ExecutionClient(running.target, session_id="desk-a") as desk:
        desk.submit(market(INFY, "BUY", 1, strategy_code="S1"), "per-client")
        with session("desk-b.2026-11-27"):
            desk.submit(market(INFY, "BUY", 1, strategy_code="S1"), "per-call")
    client.submit(market(INFY, "BUY", 1, strategy_code="S1"), "default")
    seen = {}
    for server in spans.servers("SubmitOrder"):
        order = _order_span_under(spans, server)
        assert attributes(order)["execgw.session_id"] == attributes(server)["execgw.session_id"]
        seen[attributes(server)["execgw.client_order_id"]] = attributes(server)["execgw.session_id"]
    assert seen == {"per-client": "desk-a", "per-call": "desk-b.2026-11-27", "default": SESSION}


def test_a_malformed_session_is_refused_naming_the_metadata_key(
    traced: tuple[RunningGateway, ExecutionClient], spans: Recorder
) -> None:
    running, _ = traced
    with grpc.insecure_channel(running.target) as channel:
        stub = gateway_pb2_grpc.ExecutionGatewayStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.SubmitOrder(
                gateway_pb2.SubmitOrderRequest(
                    intent=market(INFY, "BUY", 1, strategy_code="S1"), client_order_id="x"
                ),
                metadata=(("x-execgw-session", "no spaces allowed"),),
                timeout=5,
            )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "x-execgw-session" in str(info.value.details())
    assert spans.named("execgw.order") == []  # refused before the order path
    with pytest.raises(ValueError, match="session_id"):
        ExecutionClient(running.target, session_id="no spaces allowed")


_SECRET_TEXT = "SECRET-free-text-4242"


def test_an_invalid_client_order_id_never_reaches_a_span(
    traced: tuple[RunningGateway, ExecutionClient], spans: Recorder
) -> None:
    running, _ = traced
    huge = "my password is hunter2 " + "x" * 100_000
    with grpc.insecure_channel(running.target) as channel:
        stub = gateway_pb2_grpc.ExecutionGatewayStub(channel)
        request = gateway_pb2.SubmitOrderRequest(
            intent=market(INFY, "BUY", 1, strategy_code="S1"), client_order_id=huge
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub.SubmitOrder(request, timeout=5)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    # The server span of a failed call may end just after the caller has its answer.
    pause = threading.Event()
    for _ in range(500):
        if spans.named(rpc("SubmitOrder"), SpanKind.SERVER):
            break
        pause.wait(0.01)
    server = spans.server("SubmitOrder")
    assert "execgw.client_order_id" not in attributes(server)
    assert all(
        len(str(value)) <= 256 for span in spans.spans for value in attributes(span).values()
    )


def test_credentials_and_free_text_never_reach_a_span(
    tmp_path: Path, clock: ManualClock, spans: Recorder
) -> None:
    config = make_config(tmp_path, auth=auth_section(), telemetry={"session_id": SESSION})
    running = RunningGateway(config, clock)
    try:
        with (
            ExecutionClient(running.target, auth=TOKENS["feed"]) as feed,
            ExecutionClient(running.target, auth=TOKENS["strat-a"]) as strategy,
        ):
            publish(feed, INFY, 1500.0)
            intent = market(INFY, "BUY", 1, strategy_code="A", product="NRML")
            intent.tag = _SECRET_TEXT[:20]
            intent.reason = _SECRET_TEXT
            intent.metadata.CopyFrom(struct_pb2.Struct(fields={"note": _value(_SECRET_TEXT)}))
            strategy.submit(intent)
            # Metadata that is not the session or trace context is never read.
            with grpc.insecure_channel(running.target) as channel:
                stub = gateway_pb2_grpc.ExecutionGatewayStub(channel)
                stub.GetRiskState(
                    gateway_pb2.GetRiskStateRequest(strategy_code="A"),
                    metadata=(
                        ("authorization", f"Bearer {TOKENS['strat-a']}"),
                        ("x-desk-note", _SECRET_TEXT),
                    ),
                    timeout=5,
                )
            with (
                pytest.raises(Unauthenticated),
                ExecutionClient(running.target, auth="not-a-token-" + _SECRET_TEXT) as stranger,
            ):
                stranger.get_quote(INFY)
    finally:
        running.stop()
    recorded = spans.spans
    assert spans.servers("SubmitOrder")
    forbidden = [*TOKENS.values(), _SECRET_TEXT, _SECRET_TEXT[:20], "Bearer"]
    for span in recorded:
        texts = [span.name, *(str(v) for v in (span.attributes or {}).values())]
        texts += [str(e.attributes) for e in span.events]
        for text in texts:
            for secret in forbidden:
                assert secret not in text, (span.name, text)
        for key in span.attributes or {}:
            assert key.startswith(("execgw.", "rpc.")), (span.name, key)


def _value(text: str) -> Any:
    value = struct_pb2.Value()
    value.string_value = text
    return value


def test_jsonl_exporter_writes_one_span_per_line_as_the_sdk_would(tmp_path: Path) -> None:
    config = TelemetryConfig(exporter="jsonl", path=str(tmp_path / "t" / "spans.jsonl"))
    provider = TracerProvider()
    kept = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(Path(config.path))))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("a", attributes={"execgw.qty": 3}) as a:
        a.add_event("execgw.risk.near_limit", {"execgw.breaker": "max_trades_per_day"})
        with tracer.start_as_current_span("b", links=[Link(a.get_span_context())]):
            pass
    provider.shutdown()
    lines = Path(config.path).read_text(encoding="utf-8").splitlines()
    written = sorted((json.loads(line) for line in lines), key=lambda s: str(s["name"]))
    assert [s["name"] for s in written] == ["a", "b"]
    # The SDK's own to_json, field for field (its times round through a float).
    sdk = sorted(
        (json.loads(span.to_json(indent=None)) for span in kept.get_finished_spans()),
        key=lambda s: str(s["name"]),
    )
    for ours, theirs in zip(written, sdk, strict=True):
        times = [(ours, theirs, "start_time"), (ours, theirs, "end_time")]
        times += [
            (mine, sdks, "timestamp")
            for mine, sdks in zip(ours["events"], theirs["events"], strict=True)
        ]
        for mine, sdks, key in times:
            assert abs(_micros(mine.pop(key)) - _micros(sdks.pop(key))) <= 1
        assert ours == theirs


def _micros(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return round(moment.timestamp() * 1_000_000)


def test_a_later_outcome_no_rpc_answers_is_one_info_line(
    traced: tuple[RunningGateway, ExecutionClient],
    spans: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, client = traced
    caplog.set_level("INFO", logger="execgw.server.orders")
    placed = client.submit(limit(INFY, "BUY", 5, 1490.0, strategy_code="S1"), "later-1")
    caplog.clear()
    publish(client, INFY, 1489.0)  # fills the resting order: no RPC of its own answers
    lines = [r for r in caplog.records if placed.order_id in r.getMessage()]
    assert [r.getMessage() for r in lines] == [
        f"order {placed.order_id} FILLED after OrderFilled (5 filled)"
    ]
    assert Decimal(lines[0].__dict__["execgw"]["avg_price"]) == Decimal("1490")
    caplog.clear()
    client.cancel(client.submit(limit(INFY, "BUY", 5, 1400.0, strategy_code="S1")).order_id)
    assert not [r for r in caplog.records if "after OrderCancelled" in r.getMessage()]


def test_a_dry_run_order_has_the_full_span_tree_with_the_would_be_call(
    tmp_path: Path, clock: ManualClock, spans: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("KITE_API_KEY", "KITE_API_SECRET", "KITE_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    config = make_config(
        tmp_path,
        mode="live",
        execution={"dry_run": True, "dry_run_fills": "simulate"},
        broker={"kite": {"root": "http://127.0.0.1:9"}},  # never called
        telemetry={"session_id": "rehearsal-1"},
    )
    running = RunningGateway(config, clock)
    try:
        with ExecutionClient(running.target) as client:
            publish(client, INFY, 1500.0)
            spans.clear()
            result = client.submit(market(INFY, "BUY", 10, strategy_code="S1"), "dry-1")
        assert result.dry_run
        assert result.order_id.endswith("-DRY")
        assert result.status == OrderStatus.Value("ORDER_STATUS_FILLED")
        server = spans.server("SubmitOrder")
        order = _order_span_under(spans, server)
        assert sorted(s.name for s in spans.children(server)) == [
            "execgw.order",
            "execgw.stage.journal",
            "execgw.stage.publish",
            "execgw.stage.validate",
        ]
        assert sorted(s.name for s in spans.children(order)) == [
            "execgw.stage.risk",
            "execgw.stage.venue",
        ]
        found = attributes(order)
        assert found["execgw.dry_run"] is True
        assert found["execgw.mode"] == "live"
        assert found["execgw.session_id"] == "rehearsal-1"
        assert found["execgw.venue"] == "kite-dry-run"
        assert {k: v for k, v in found.items() if k.startswith("execgw.venue.request.")} == {
            "execgw.venue.request.variety": "regular",
            "execgw.venue.request.exchange": "NSE",
            "execgw.venue.request.tradingsymbol": "INFY",
            "execgw.venue.request.transaction_type": "BUY",
            "execgw.venue.request.quantity": "10",
            "execgw.venue.request.product": "MIS",
            "execgw.venue.request.order_type": "MARKET",
            "execgw.venue.request.validity": "DAY",
            "execgw.venue.request.tag": found["execgw.venue.request.tag"],
            "execgw.venue.request.market_protection": "-1",
        }
        [venue] = spans.named("execgw.stage.venue")
        assert attributes(venue)["execgw.status"] == "FILLED"
    finally:
        running.stop()


def test_near_limits_count_what_the_order_itself_set_off_before_its_risk_check(
    spans: Recorder,
) -> None:
    """The MIS square-off that an order's own arrival sets off (no tick came since
    15:20) realizes the loss before the order's risk check: the loss is counted once,
    realized, not again as the unrealized figure the breakers last saw."""
    execution = {
        "slippage_bps": 0.0,
        "circuit_breakers": {
            "max_daily_loss_rupees": 1000.0,
            "max_trades_per_day": 1_000_000,
            "max_trades_per_strategy_per_day": 1_000_000,
        },
    }
    session = Session(sim_config(execution), start=datetime(2026, 11, 27, 9, 40, tzinfo=UTC))
    session.quote("1000.00")
    session.submit(sim_intent("BUY", 10, product=Product.MIS), "mis-buy")
    session.quote("950.00")  # 500 unrealized loss, half the limit: not near it
    session.clock.advance(timedelta(minutes=10, seconds=1))  # past the square-off
    spans.clear()
    session.submit(sim_intent("BUY", 1, "1.00"), "cnc-after")  # squares off, then routes
    [risk] = spans.named("execgw.stage.risk")
    assert [e for e in risk.events if e.name == "execgw.risk.near_limit"] == []
    assert session.engine._risk.book.realized_total == Decimal("-500.00")
