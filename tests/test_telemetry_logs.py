"""Log lines that name their trace, span and session: the formats on their own, and
`execgw serve --log-format json --log-level DEBUG` as a real process, whose one INFO
line per order outcome carries the ids of the order's server span, and whose DEBUG
output has none of the grpc library's own lines."""

from __future__ import annotations

import io
import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace

from execgw.client import ExecutionClient, market
from execgw.server.telemetry import scope as scopes
from execgw.server.telemetry.logs import JsonFormatter, TextFormatter, TraceContextFilter

if TYPE_CHECKING:
    from tests.e2e_helpers import INFY, TCS, publish
    from tests.telemetry_helpers import recorder
    from tests.test_cli_serve import Served, execgw_command, free_port, wait_serving
else:
    from e2e_helpers import INFY, TCS, publish
    from telemetry_helpers import recorder
    from test_cli_serve import Served, execgw_command, free_port, wait_serving

SESSION = "logs-1"


def _captured(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.telemetry.logs.{id(out)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger, out


def test_a_line_inside_a_span_names_its_trace_span_and_session() -> None:
    recorder()  # an SDK provider, so spans have ids
    tracer = trace.get_tracer("test")
    logger, out = _captured(JsonFormatter())
    text_logger, text_out = _captured(TextFormatter())
    token = otel_context.attach(scopes.in_scope(scopes.Scope(SESSION, "paper", False)))
    try:
        with tracer.start_as_current_span("work") as span:
            logger.info("order %s", "O1", extra={"execgw": {"order_id": "O1"}})
            text_logger.info("order O1")
    finally:
        otel_context.detach(token)
    logger.info("outside")
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    ids = span.get_span_context()
    assert inside["trace_id"] == f"{ids.trace_id:032x}"
    assert inside["span_id"] == f"{ids.span_id:016x}"
    assert inside["session_id"] == SESSION
    assert inside["fields"] == {"order_id": "O1"}
    assert (inside["message"], inside["level"]) == ("order O1", "INFO")
    assert "trace_id" not in outside
    assert "session_id" not in outside
    assert (
        text_out.getvalue()
        .rstrip()
        .endswith(
            f"order O1 [trace_id={ids.trace_id:032x} span_id={ids.span_id:016x} session={SESSION}]"
        )
    )


@pytest.fixture
def served_json(tmp_path: Path) -> Iterator[tuple[Served, Path]]:
    spans = tmp_path / "traces.jsonl"
    config = tmp_path / "execgw.yaml"
    config.write_text(
        "mode: paper\n"
        f"journal:\n  path: {tmp_path / 'journal.db'}\n"
        "market_data:\n  source: external\n"
        "trading_day:\n  mis_square_off: null\n"
        "server:\n  shutdown_grace_s: 2.0\n"
        f"telemetry:\n  exporter: jsonl\n  path: {spans}\n  session_id: {SESSION}\n",
        encoding="utf-8",
    )
    port = free_port()
    stdout, stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            [
                *execgw_command(),
                "--log-level",
                "DEBUG",
                "serve",
                "--config",
                str(config),
                "--listen",
                f"127.0.0.1:{port}",
                "--log-format",
                "json",
            ],
            stdout=out,
            stderr=err,
            cwd=tmp_path,
        )
    served = Served(proc, port, stdout, stderr)
    try:
        wait_serving(served)
        yield served, spans
    finally:
        served.stop()


def test_the_order_outcome_lines_carry_the_ids_of_the_orders_server_span(
    served_json: tuple[Served, Path],
) -> None:
    served, span_file = served_json
    tracer = trace.get_tracer("strategy")
    recorder()
    with ExecutionClient(served.target, timeout=10.0) as client:
        publish(client, INFY, 1500.0)
        with tracer.start_as_current_span("strategy.decide") as strategy:
            filled = client.submit(market(INFY, "BUY", 3, strategy_code="L", product="NRML"))
        rejected = client.submit(market(TCS, "BUY", 1, strategy_code="L", product="NRML"))
    served.stop()
    assert served.proc.returncode == 0, served.output()
    lines = [json.loads(line) for line in served.stderr.read_text("utf-8").splitlines()]
    # DEBUG is on (a line per call), yet none of the grpc library's own DEBUG lines.
    assert [e for e in lines if e["level"] == "DEBUG" and e["logger"] == "execgw.server.rpc"]
    assert not [e for e in lines if e["logger"].startswith(("grpc", "asyncio"))], lines
    outcomes = {e["fields"]["order_id"]: e for e in lines if e["logger"] == "execgw.server.orders"}
    assert set(outcomes) == {filled.order_id, rejected.order_id}
    written = [json.loads(line) for line in span_file.read_text("utf-8").splitlines()]
    servers = {
        span["attributes"]["execgw.order_id"]: span
        for span in written
        if span["name"] == "execgw.v1.ExecutionGateway/SubmitOrder"
    }
    # The gateway made the process's provider: its sampler stamps every span.
    for each in written:
        assert each["attributes"]["execgw.session_id"] == SESSION, each["name"]
        assert each["attributes"]["execgw.mode"] == "paper", each["name"]
    assert {"execgw.order", "execgw.journal.commit"} <= {each["name"] for each in written}
    for order_id, entry in outcomes.items():
        span: dict[str, Any] = servers[order_id]
        assert entry["level"] == "INFO"
        assert entry["trace_id"] == span["context"]["trace_id"][2:]
        assert entry["span_id"] == span["context"]["span_id"][2:]
        assert entry["session_id"] == SESSION
    assert outcomes[filled.order_id]["trace_id"] == f"{strategy.get_span_context().trace_id:032x}"
    good, bad = outcomes[filled.order_id], outcomes[rejected.order_id]
    assert good["fields"]["status"] == "FILLED"
    assert good["fields"]["avg_price"] == "1500.75"
    assert good["message"].startswith(f"order {filled.order_id} FILLED: BUY 3 {INFY}")
    assert bad["fields"]["reject_reason"] == "NO_MARKET_DATA"
    assert f"order {rejected.order_id} REJECTED NO_MARKET_DATA" in bad["message"]
