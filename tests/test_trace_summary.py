"""`execgw trace summary` over the spans a real gateway wrote (telemetry.exporter jsonl),
and over a hand-made file with the per-stage spans the order path will have."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, set_span_in_context

from execgw.client import ExecutionClient, OrderStatus, limit, market, session
from execgw.server.cli import main
from execgw.server.clock import ManualClock
from execgw.server.telemetry import JsonLinesSpanExporter
from execgw.server.telemetry.summary import (
    SpanFile,
    SpanRecord,
    percentile,
    read_spans,
    summarize,
)

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TCS, publish
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TCS, publish

SESSION = "sum-1"
SUBMIT = "execgw.v1.ExecutionGateway/SubmitOrder"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["trace", "summary", *args])
    out, err = capsys.readouterr()
    return code, out, err


def sections(out: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for line in out.splitlines():
        entry = json.loads(line)
        found.setdefault(entry.pop("section"), []).append(entry)
    return found


@pytest.fixture
def span_file(tmp_path: Path, clock: ManualClock) -> tuple[Path, list[str]]:
    """A session of orders through a real gateway; its span file, once it stopped."""
    path = tmp_path / "traces.jsonl"
    config = make_config(
        tmp_path,
        telemetry={"exporter": "jsonl", "path": str(path), "session_id": SESSION},
    )
    running = RunningGateway(config, clock)
    submitted: list[str] = []
    try:
        with ExecutionClient(running.target) as client:
            publish(client, INFY, 1500.0)
            for qty in (1, 2, 3):
                filled = client.submit(market(INFY, "BUY", qty, strategy_code="S1"))
                assert filled.status == OrderStatus.Value("ORDER_STATUS_FILLED")
                submitted.append(filled.order_id)
            rejected = client.submit(market(TCS, "BUY", 1, strategy_code="S1"))
            resting = client.submit(limit(INFY, "BUY", 1, 1400.0, strategy_code="S1"))
            client.cancel(resting.order_id)
            submitted += [rejected.order_id, resting.order_id]
            with session("other"):
                client.submit(market(INFY, "SELL", 1, strategy_code="S1"))
    finally:
        running.stop()  # exports the last spans
    return path, submitted


def test_the_summary_of_a_session_through_a_real_gateway(
    span_file: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, submitted = span_file
    code, out, err = run(capsys, str(path), "--session", SESSION, "--json")
    assert code == 0, err
    found = sections(out)
    [header] = found["file"]
    assert header["session"] == SESSION
    assert set(header["sessions"]) >= {SESSION, "other"}
    assert header["unreadable_lines"] == 0
    orders = {(o["status"], o["reject_reason"]): o["count"] for o in found["orders"]}
    assert orders == {
        ("FILLED", None): 3,
        ("REJECTED", "NO_MARKET_DATA"): 1,
        ("CANCELLED", None): 1,  # placed, then cancelled: its last known status
    }
    stages = {s["stage"]: s for s in found["stage"]}
    assert stages[SUBMIT]["count"] == 5
    assert stages["execgw.order"]["count"] == 5
    assert stages["execgw.journal.commit"]["count"] >= 1
    for stage in stages.values():
        assert 0 <= stage["p50_ms"] <= stage["p90_ms"] <= stage["p99_ms"] <= stage["max_ms"]
    slowest = found["slowest"]
    assert sorted(o["order_id"] for o in slowest) == sorted(submitted)
    assert [o["latency_ms"] for o in slowest] == sorted(
        (o["latency_ms"] for o in slowest), reverse=True
    )
    submit_traces = {
        json.loads(line)["context"]["trace_id"][2:]
        for line in path.read_text("utf-8").splitlines()
        if json.loads(line)["name"] == SUBMIT
    }
    for order in slowest:
        assert order["trace_id"] in submit_traces
        assert order["slowest_stage"].startswith("execgw.stage.")
        assert order["slowest_stage_ms"] <= order["latency_ms"]
    code, out, _ = run(capsys, str(path), "--session", "other", "--json")
    assert code == 0
    assert [o["count"] for o in sections(out)["orders"]] == [1]


def test_the_summary_prints_tables_for_people(
    span_file: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = span_file
    code, out, _ = run(capsys, str(path), "--slowest", "2")
    assert code == 0
    for title in ("orders by status", "latency by stage", "slowest orders"):
        assert title in out
    for column in ("P50 MS", "P90 MS", "P99 MS", "MAX MS", "TRACE ID"):
        assert column in out
    assert "NO_MARKET_DATA" in out


def test_an_unknown_session_or_file_is_an_error_naming_what_is_there(
    span_file: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path, _ = span_file
    code, _, err = run(capsys, str(path), "--session", "nope")
    assert code == 1
    assert "no spans of session 'nope'" in err
    assert SESSION in err
    code, _, err = run(capsys, str(tmp_path / "missing.jsonl"))
    assert code == 1
    assert "cannot read" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    code, out, _ = run(capsys, str(empty))
    assert code == 0
    assert "no spans" in out


def _stage_file(path: Path) -> None:
    """Two orders with per-stage spans, as the reshaped order path will write them:
    server span > execgw.order > execgw.stage.<name>, with chosen durations (ms)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    tracer = provider.get_tracer("test")
    base = 1_800_000_000_000_000_000
    ms = 1_000_000
    for index, (order_id, stages) in enumerate(
        [("O1", {"validate": 1, "risk": 5, "venue": 2}), ("O2", {"validate": 3, "risk": 1})]
    ):
        start = base + index * 100 * ms
        total = sum(stages.values())
        server = tracer.start_span(
            SUBMIT, kind=SpanKind.SERVER, start_time=start, attributes={"execgw.session_id": "s"}
        )
        order = tracer.start_span(
            "execgw.order",
            context=set_span_in_context(server),
            start_time=start,
            attributes={
                "execgw.order_id": order_id,
                "execgw.status": "FILLED",
                "execgw.symbol": INFY,
                "execgw.side": "BUY",
                "execgw.qty": 1,
            },
        )
        at = start
        for name, duration in stages.items():
            stage = tracer.start_span(
                f"execgw.stage.{name}", context=set_span_in_context(order), start_time=at
            )
            at += duration * ms
            stage.end(end_time=at)
        order.end(end_time=at)
        server.end(end_time=at + ms)
        assert total
    provider.shutdown()
    with path.open("a", encoding="utf-8") as out:
        out.write("not json\n")


def test_stage_spans_are_summarized_by_name_and_name_each_orders_slowest_stage(
    tmp_path: Path,
) -> None:
    path = tmp_path / "stages.jsonl"
    _stage_file(path)
    summary = summarize(read_spans(path.read_text("utf-8").splitlines()))
    assert summary.unreadable == 1
    stages = {s.stage: s for s in summary.stages}
    assert [s.stage for s in summary.stages][:2] == [SUBMIT, "execgw.order"]
    risk = stages["execgw.stage.risk"]
    assert (risk.count, risk.p50_ms, risk.p99_ms, risk.max_ms) == (2, 1.0, 5.0, 5.0)
    assert stages["execgw.stage.venue"].count == 1
    slow = {o.order_id: o for o in summary.slowest}
    assert slow["O1"].latency_ms == 9.0  # the server span: 8 ms of stages, 1 ms after
    assert (slow["O1"].slowest_stage, slow["O1"].slowest_stage_ms) == ("execgw.stage.risk", 5.0)
    assert slow["O2"].slowest_stage == "execgw.stage.validate"
    assert [o.order_id for o in summary.slowest] == ["O1", "O2"]


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, q) for q in (0.5, 0.9, 0.99)] == [50.0, 90.0, 99.0]
    assert percentile([7.0], 0.99) == 7.0


def test_batch_stages_ending_after_the_answer_neither_set_the_status_nor_the_slowest() -> None:
    """The journal and publish stages are timed per batch and their spans end when the
    batch is published, after the caller's answer and possibly after the order's next
    span (a fill): the fill's status wins, and the slowest stage is one that ended
    within the call's latency."""

    def span(name: str, span_id: str, parent: str | None, start: int, end: int) -> SpanRecord:
        kind = "SpanKind.SERVER" if name.endswith("SubmitOrder") else "SpanKind.INTERNAL"
        trace_id = "f" if name == "execgw.fill" else "t"
        status = "FILLED" if name == "execgw.fill" else "PLACED"
        found = {} if name == "execgw.stage.risk" else {"execgw.order_id": "O1"}
        if found:
            found["execgw.status"] = status
        return SpanRecord(name, kind, trace_id, span_id, parent, start, end, found, SESSION)

    spans = [
        span("execgw.v1.ExecutionGateway/SubmitOrder", "s", None, 0, 1_000),
        span("execgw.order", "o", "s", 100, 600),
        span("execgw.stage.risk", "r", "o", 200, 300),
        span("execgw.stage.journal", "j", "s", 600, 900),
        span("execgw.stage.publish", "p", "s", 1_100, 1_600),
        span("execgw.fill", "x", None, 1_040, 1_050),
    ]
    found = summarize(SpanFile(spans=spans))
    assert [(o.status, o.count) for o in found.orders] == [("FILLED", 1)]
    (slowest,) = found.slowest
    assert slowest.status == "FILLED"
    assert slowest.slowest_stage == "execgw.stage.journal"
    assert slowest.latency_ms == 1.0
