"""`execgw tail`: the operator's view of the stream, run as a real subprocess against
a gateway with a known history. What it should print is derived from the journal."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from execgw.client import ExecutionClient, Quote, limit, market
from execgw.server.clock import ManualClock

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.durability_helpers import RELAXED_EXECUTION, run_cli
    from tests.stream_helpers import EVERYTHING, INFY, TIMEOUT_S, StreamFilter, journal_rows
else:
    from conftest import RunningGateway, make_config
    from durability_helpers import RELAXED_EXECUTION, run_cli
    from stream_helpers import EVERYTHING, INFY, TIMEOUT_S, StreamFilter, journal_rows

# Times are in the trading day's zone (Asia/Kolkata) with its offset.
LINE = re.compile(
    r"^\s*(?P<seq>\d+) (?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \+05:30 "
    r"(?P<kind>FILL|ORDER|RISK) "
)
KIND_OF = {
    "OrderFilled": "FILL",
    "OrderAccepted": "ORDER",
    "OrderRejected": "ORDER",
    "OrderTriggered": "ORDER",
    "OrderCancelled": "ORDER",
    "BreakerTripped": "RISK",
    "TradingHalted": "RISK",
    "TradingResumed": "RISK",
    "DayRolledOver": "RISK",
    "MisSquareOffStarted": "RISK",
}


@pytest.fixture
def history(tmp_path: Path, clock: ManualClock) -> Iterator[tuple[RunningGateway, dict[str, str]]]:
    """A gateway with one of everything tail shows; yields it and the order ids."""
    running = RunningGateway(
        make_config(tmp_path, execution={**RELAXED_EXECUTION, "slippage_bps": 0.0}), clock
    )
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as client:
            assert client.publish_quotes([Quote(symbol=INFY, ltp=1500.0)]) == 1
            ids = {
                "filled": client.submit(market(INFY, "BUY", 10, strategy_code="tailA")).order_id,
                "resting": client.submit(
                    limit(INFY, "SELL", 5, 1600.0, strategy_code="tailB")
                ).order_id,
                "rejected": client.submit(
                    market("NSE:TCS", "BUY", 1, strategy_code="tailA")
                ).order_id,
            }
            client.cancel(ids["resting"])
            client.halt("maintenance", actor="ops")
            client.resume("done", actor="ops")
        yield running, ids
    finally:
        running.stop()


def tail(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("tail", "--target", target, *args, timeout=TIMEOUT_S * 3)


def expected_kinds(journal: Path, wanted: StreamFilter) -> list[tuple[int, str]]:
    return [
        (int(row["sequence"]), KIND_OF[row["kind"]])
        for row in journal_rows(journal)
        if wanted.wants(row)
    ]


def test_tail_prints_the_history_one_line_per_event(
    history: tuple[RunningGateway, dict[str, str]],
) -> None:
    running, ids = history
    expected = expected_kinds(Path(running.config.journal.path), EVERYTHING)
    assert [kind for _, kind in expected].count("FILL") == 1
    assert len(expected) >= 8

    result = tail(running.target, "--from-sequence", "1", "--limit", str(len(expected)))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(expected), result.stdout
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), result.stdout
    assert [(int(m["seq"]), m["kind"]) for m in parsed if m] == expected

    text = result.stdout
    fill = next(line for line in lines if " FILL " in line)
    assert f"tailA BUY 10 {INFY} @ 1500.00 order {ids['filled']}" in fill
    assert re.search(rf"ORDER {ids['resting']} tailB {INFY} PLACED", text)
    assert re.search(rf"ORDER {ids['resting']} tailB {INFY} CANCELLED cancelled by client", text)
    assert re.search(rf"ORDER {ids['rejected']} tailA NSE:TCS REJECTED NO_MARKET_DATA: ", text)
    assert "RISK  HALTED account kill_switch maintenance (by ops)" in text
    assert "RISK  RESUMED account kill_switch done (by ops)" in text

    # --limit smaller than the history: exactly that many, from the start.
    short = tail(running.target, "--from-sequence", "1", "--limit", "3")
    assert short.returncode == 0, short.stderr
    assert short.stdout.splitlines() == lines[:3]


def test_tail_json_prints_one_parseable_event_per_line(
    history: tuple[RunningGateway, dict[str, str]],
) -> None:
    running, ids = history
    expected = expected_kinds(Path(running.config.journal.path), EVERYTHING)
    result = tail(running.target, "--from-sequence", "1", "--limit", str(len(expected)), "--json")
    assert result.returncode == 0, result.stderr
    events: list[dict[str, Any]] = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(events) == len(expected)
    payload = {"fill": "FILL", "order_update": "ORDER", "risk_event": "RISK"}
    # The same shape as every --json: .proto field names, exact decimal strings.
    assert [(int(e["sequence"]), *[payload[k] for k in payload if k in e]) for e in events] == [
        (seq, kind) for seq, kind in expected
    ]
    fill = next(e for e in events if "fill" in e)
    assert fill["fill"]["order_id"] == ids["filled"]
    assert fill["fill"]["qty"] == "10"
    assert Decimal(fill["fill"]["price"]) == Decimal("1500")
    assert fill["order"]["status"] == "ORDER_STATUS_FILLED"
    rejected = next(
        e
        for e in events
        if "order_update" in e and e["order_update"]["order_id"] == ids["rejected"]
    )
    assert rejected["order_update"]["reject_reason"] == "REJECT_REASON_NO_MARKET_DATA"
    halted = next(
        e["risk_event"]
        for e in events
        if e.get("risk_event", {}).get("kind") == "RISK_EVENT_KIND_HALTED"
    )
    assert (halted["actor"], halted["message"]) == ("ops", "maintenance")


def test_tail_filters_and_refuses_history_it_does_not_have(
    history: tuple[RunningGateway, dict[str, str]],
) -> None:
    running, ids = history
    journal = Path(running.config.journal.path)
    fills_a = expected_kinds(journal, StreamFilter(strategy_codes=("tailA",)))
    assert fills_a
    assert all(kind == "FILL" for _, kind in fills_a)
    result = tail(
        running.target,
        "--from-sequence",
        "1",
        "--fills-only",
        "--strategy",
        "tailA",
        "--limit",
        str(len(fills_a)),
    )
    assert result.returncode == 0, result.stderr
    matches = [LINE.match(line) for line in result.stdout.splitlines()]
    assert [(int(m["seq"]), m["kind"]) for m in matches if m] == fills_a
    assert ids["filled"] in result.stdout

    head = max(int(row["sequence"]) for row in journal_rows(journal))
    beyond = tail(running.target, "--from-sequence", str(head + 2), "--limit", "1")
    assert beyond.returncode == 1
    assert "OUT_OF_RANGE" in beyond.stderr
    assert f"beyond the head sequence {head}" in beyond.stderr
