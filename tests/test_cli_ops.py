"""The operator's desk: the client subcommands run as real subprocesses against a
real gateway; their tables, --json lines, exit codes and behaviour on a closed pipe."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from execgw.client import ExecutionClient, Quote, limit, market
from execgw.server.clock import ManualClock

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
