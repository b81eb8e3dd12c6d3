"""The operator's desk: the client subcommands run as real subprocesses against a
real gateway; their tables, --json lines, exit codes and behaviour on a closed pipe."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from execgw.client import ExecutionClient, Quote, limit, market
from execgw.server.clock import ManualClock
from execgw.server.events import TradingHalted
from execgw.server.journal import Journal, JournalRecord

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.durability_helpers import RELAXED_EXECUTION, execgw_command, run_cli
    from tests.stream_helpers import INFY, TIMEOUT_S
else:
    from conftest import RunningGateway, make_config
    from durability_helpers import RELAXED_EXECUTION, execgw_command, run_cli
    from stream_helpers import INFY, TIMEOUT_S


@pytest.fixture
def desk(tmp_path: Path, clock: ManualClock) -> Iterator[tuple[RunningGateway, dict[str, str]]]:
    """A gateway with a fill, a resting order and a rejected one."""
    running = RunningGateway(
        make_config(tmp_path, execution={**RELAXED_EXECUTION, "slippage_bps": 0.0}), clock
    )
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as client:
            assert client.publish_quotes([Quote(symbol=INFY, ltp=1500.0)]) == 1
            ids = {
                "filled": client.submit(market(INFY, "BUY", 3, strategy_code="deskA")).order_id,
                "resting": client.submit(
                    limit(INFY, "SELL", 1, 1600.5, strategy_code="deskB")
                ).order_id,
                "rejected": client.submit(
                    market("NSE:TCS", "BUY", 1, strategy_code="deskA")
                ).order_id,
            }
        yield running, ids
    finally:
        running.stop()


def cli(target: str, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(command, "--target", target, *args, timeout=TIMEOUT_S * 3)


def test_a_rejected_submit_exits_3_with_the_reason(
    desk: tuple[RunningGateway, dict[str, str]],
) -> None:
    running, _ = desk
    result = cli(running.target, "submit", "NSE:TCS", "BUY", "1", "--strategy", "deskA")
    assert result.returncode == 3, result.stderr
    assert "REJECTED: NO_MARKET_DATA: " in result.stderr
    assert "Traceback" not in result.stderr

    accepted = cli(running.target, "submit", INFY, "BUY", "1", "--strategy", "deskA")
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stderr == ""


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*execgw_command(), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def _quiet_on_closed_pipe(process: subprocess.Popen[bytes]) -> None:
    assert process.stderr is not None
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=TIMEOUT_S * 3) == 141, stderr
    assert "Traceback" not in stderr
    assert "BrokenPipe" not in stderr


def test_tail_dies_quietly_when_its_reader_closes_the_pipe(
    desk: tuple[RunningGateway, dict[str, str]],
) -> None:
    running, _ = desk
    process = _spawn(["tail", "--target", running.target, "--from-sequence", "1"])
    assert process.stdout is not None
    assert process.stdout.readline()  # the reader takes one line and goes away
    process.stdout.close()
    # The next event is written to a pipe nobody reads.
    with ExecutionClient(running.target, timeout=TIMEOUT_S) as client:
        client.submit(market(INFY, "BUY", 1, strategy_code="deskA"))
    _quiet_on_closed_pipe(process)


@pytest.mark.parametrize("command", ["orders", "positions", "risk", "journal"])
def test_every_command_dies_quietly_on_a_closed_pipe(
    desk: tuple[RunningGateway, dict[str, str]], command: str
) -> None:
    running, _ = desk
    if command == "journal":
        args = ["journal", "export", "--journal", str(running.config.journal.path)]
    else:
        args = [command, "--target", running.target]
    read, write = os.pipe()
    os.close(read)  # no reader at all: the first write fails
    try:
        process = subprocess.Popen(
            [*execgw_command(), *args],
            stdout=write,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
    finally:
        os.close(write)
    _quiet_on_closed_pipe(process)


IST = re.compile(r"\b2026-11-27 10:00:00 \+05:30\b")


def rows_of(text: str) -> tuple[list[str], list[list[str]]]:
    """A table's header and rows, split on runs of two or more spaces (cells hold single
    spaces only); the rule under the header is skipped."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = re.split(r"\s{2,}", lines[0].strip())
    assert set(lines[1].strip()) <= set("─-"), text
    return header, [re.split(r"\s{2,}", line.strip()) for line in lines[2:]]


def test_orders_prints_an_aligned_table_in_ist(
    desk: tuple[RunningGateway, dict[str, str]],
) -> None:
    running, ids = desk
    result = cli(running.target, "orders")
    assert result.returncode == 0, result.stderr
    header, rows = rows_of(result.stdout)
    assert header[:8] == [
        "ORDER",
        "CREATED",
        "STRATEGY",
        "SYMBOL",
        "SIDE",
        "TYPE",
        "PRODUCT",
        "QTY",
    ]
    assert {"FILLED", "PRICE", "AVG PRICE", "STATUS", "REASON"} <= set(header)
    by_id = {row[0]: row for row in rows}
    assert set(by_id) == set(ids.values())
    assert all(IST.fullmatch(row[1]) for row in rows), result.stdout
    filled = by_id[ids["filled"]]
    assert filled[2:4] == ["deskA", INFY]
    assert "1500.00" in filled
    assert "FILLED" in filled
    assert "1600.50" in by_id[ids["resting"]]  # the price to the tick
    assert "NO_MARKET_DATA" in by_id[ids["rejected"]]
    # Columns line up: every row's ORDER and CREATED cells start where their headers do.
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    at = lines[0].index("CREATED")
    assert all(IST.match(line[at:]) for line in lines[2:]), result.stdout

    other = cli(running.target, "orders", "--timezone", "UTC")
    assert "2026-11-27 04:30:00 +00:00" in other.stdout


def test_json_gives_one_object_per_line_with_exact_decimals(
    desk: tuple[RunningGateway, dict[str, str]],
) -> None:
    running, ids = desk
    result = cli(running.target, "orders", "--json")
    assert result.returncode == 0, result.stderr
    orders: list[dict[str, Any]] = [json.loads(line) for line in result.stdout.splitlines()]
    assert {o["order_id"] for o in orders} == set(ids.values())
    by_id = {o["order_id"]: o for o in orders}
    filled, resting = by_id[ids["filled"]], by_id[ids["resting"]]
    assert filled["avg_price"] == "1500.00"  # the gateway's exact decimal text
    assert resting["price"] == "1600.5"
    assert resting["avg_price"] is None
    assert filled["created_at"] == "2026-11-27T10:00:00+05:30"
    assert filled["status"] == "ORDER_STATUS_FILLED"
    assert "raw" not in filled
    assert not any(key.endswith("_decimal") for o in orders for key in o)

    positions = cli(running.target, "positions", "--json")
    [position] = [json.loads(line) for line in positions.stdout.splitlines()]
    assert position["strategy_code"] == "deskA"
    assert all(isinstance(position[k], str) for k in ("avg_price", "realized_pnl"))

    risk = cli(running.target, "risk", "--json")
    [state] = [json.loads(line) for line in risk.stdout.splitlines()]
    assert isinstance(state["drawdown_pct"], str)
    assert {b["name"] for b in state["breakers"]} >= {"max_daily_loss_rupees"}
    assert all(isinstance(b["value"], str) for b in state["breakers"])


def test_positions_risk_halt_resume_tables(
    desk: tuple[RunningGateway, dict[str, str]],
) -> None:
    running, _ = desk
    positions = cli(running.target, "positions")
    header, rows = rows_of(positions.stdout)
    assert header == [
        "STRATEGY",
        "SYMBOL",
        "PRODUCT",
        "NET QTY",
        "BUY QTY",
        "SELL QTY",
        "AVG PRICE",
        "LAST",
        "REALIZED",
        "UNREALIZED",
    ]
    assert rows == [["deskA", INFY, "MIS", "3", "3", "0", "1500.00", "1500.00", "0.00", "0.00"]]

    risk = cli(running.target, "risk")
    assert risk.returncode == 0, risk.stderr
    for title in ("account", "breakers", "strategies"):
        assert re.search(rf"^{title}\s*$", risk.stdout, re.M), risk.stdout
    assert "max_daily_loss_rupees" in risk.stdout
    assert re.search(r"^ACTIVE\s+2026-11-27\s", risk.stdout, re.M), risk.stdout

    halted = cli(running.target, "halt", "--reason", "desk test")
    assert halted.returncode == 0, halted.stderr
    assert rows_of(halted.stdout) == (
        ["SCOPE", "STATE", "CANCELLED ORDERS"],
        [["account", "HALTED", "1"]],
    )
    resumed = cli(running.target, "resume", "--reason", "done", "--json")
    assert json.loads(resumed.stdout)["state"] == "TRADING_STATE_ACTIVE"


def test_an_empty_result_says_so_in_one_line(gateway: RunningGateway) -> None:
    assert cli(gateway.target, "orders").stdout == "no orders\n"
    assert cli(gateway.target, "positions").stdout == "no positions\n"
    assert cli(gateway.target, "orders", "--json").stdout == ""


def test_version_names_both_distributions_and_the_contract() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout
    assert re.fullmatch(r"execgw-server \S+", lines[0])
    assert re.fullmatch(r"execgw-client \S+", lines[1])
    match = re.fullmatch(
        r"contract execgw\.v1 (v\d+\.\d+) \(descriptors sha256 [0-9a-f]{12}\)", lines[2]
    )
    assert match, lines[2]
    # The release named is the one `buf breaking` holds proto/ to.
    makefile = (Path(__file__).parent.parent / "Makefile").read_text(encoding="utf-8")
    released = re.search(r"^RELEASED_CONTRACT\s*:?=\s*proto/releases/(\S+)\.binpb", makefile, re.M)
    assert released, "RELEASED_CONTRACT not found in the Makefile"
    assert match[1] == released[1]


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "execution:\n  circuit_breakers:\n    max_daily_los_rupees: 5000\n",
            "execution.circuit_breakers.max_daily_los_rupees: unknown key "
            "'max_daily_los_rupees'; did you mean 'max_daily_loss_rupees'?",
        ),
        ("jornal:\n  path: x.db\n", "jornal: unknown key 'jornal'; did you mean 'journal'?"),
        (
            "execution:\n  pre_trade:\n    strategies:\n      A:\n        max_ordr_qty: 5\n",
            "execution.pre_trade.strategies.A.max_ordr_qty: unknown key 'max_ordr_qty'; "
            "did you mean 'max_order_qty'?",
        ),
        ("colour: blue\n", "colour: unknown key 'colour'\n"),
        ("listen: nonsense\n", "listen: must be HOST:PORT, got 'nonsense'"),
    ],
)
def test_config_errors_read_as_sentences(tmp_path: Path, yaml_text: str, expected: str) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(yaml_text, encoding="utf-8")
    result = run_cli("serve", "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Value error" not in result.stderr
    assert "Traceback" not in result.stderr


def test_relative_paths_in_a_config_file_are_relative_to_its_folder(tmp_path: Path) -> None:
    from execgw.server.config import load_config

    folder = tmp_path / "etc"
    folder.mkdir()
    config = folder / "gw.yaml"
    config.write_text(
        "journal:\n  path: data/journal.db\n  anchor:\n    path: /abs/anchors.jsonl\n"
        "telemetry:\n  path: ../traces.jsonl\n"
        "server:\n  tls:\n    cert_file: tls/cert.pem\n    key_file: tls/key.pem\n",
        encoding="utf-8",
    )
    loaded = load_config(config)
    assert Path(loaded.journal.path) == folder / "data" / "journal.db"
    assert loaded.journal.anchor is not None
    assert loaded.journal.anchor.path == "/abs/anchors.jsonl"  # absolute stays as it is
    assert Path(loaded.telemetry.path) == tmp_path / "traces.jsonl"
    assert loaded.server.tls is not None
    assert Path(loaded.server.tls.cert_file) == folder / "tls" / "cert.pem"
    assert Path(loaded.server.tls.key_file) == folder / "tls" / "key.pem"

    # `journal verify --config` from another folder finds the same journal.
    result = subprocess.run(
        [*execgw_command(), "journal", "verify", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert str(folder / "data" / "journal.db") in result.stderr + result.stdout


def test_journal_export_writes_times_in_the_trading_days_zone(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = Journal(path)
    try:
        when = datetime(2026, 11, 27, 4, 30, tzinfo=UTC)
        journal.append([JournalRecord(1, when, TradingHalted("S1", "ops", "test", when), None)])
    finally:
        journal.close()
    for fmt in ("csv", "jsonl"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "execgw.server.cli",
                "journal",
                "export",
                "--journal",
                str(path),
                "--format",
                fmt,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "2026-11-27T10:00:00+05:30" in done.stdout, done.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "execgw.server.cli",
            "journal",
            "export",
            "--journal",
            str(path),
            "--timezone",
            "Mars/Olympus",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "unknown time zone" in bad.stderr
    assert "Traceback" not in bad.stderr
