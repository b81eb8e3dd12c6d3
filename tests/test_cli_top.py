"""`execgw tail` and `execgw top` against a missing gateway, and `top` in a
pseudo-terminal against a real one."""

from __future__ import annotations

import fcntl
import io
import os
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from rich.console import Console

from execgw.client import ExecutionClient, Quote, limit, market
from execgw.server.cli_top import TopState, render_top
from execgw.server.clock import ManualClock
from execgw.v1 import gateway_pb2, orders_pb2

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.durability_helpers import RELAXED_EXECUTION, execgw_command, free_port, run_cli
    from tests.stream_helpers import INFY, TIMEOUT_S
else:
    from conftest import RunningGateway, make_config
    from durability_helpers import RELAXED_EXECUTION, execgw_command, free_port, run_cli
    from stream_helpers import INFY, TIMEOUT_S


def test_tail_without_a_gateway_says_connecting_and_gives_up_with_exit_4() -> None:
    target = f"127.0.0.1:{free_port()}"
    result = run_cli("tail", "--target", target, "--give-up-after", "1", timeout=20)
    assert result.returncode == 4, result.stderr
    assert f"connecting to {target}" in result.stderr
    assert "gave up" in result.stderr
    assert "Traceback" not in result.stderr


def _strip(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    return _ANSI.sub("", text)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")


class Pty:
    """`execgw ARGS` on a pseudo-terminal of 120x60; reads what it draws."""

    def __init__(self, *args: str) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 140, 0, 0))
        self.process = subprocess.Popen(
            [*execgw_command(), *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            # COLUMNS/LINES (pytest-xdist's workers set 80x24) would override the size
            # of the terminal itself, which is what top must draw for.
            env={
                **{k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")},
                "PYTHONDONTWRITEBYTECODE": "1",
                "TERM": "xterm-256color",
            },
            close_fds=True,
        )
        os.close(slave)
        self.raw = b""

    def read_until(self, predicate: Callable[[str], bool], within: float) -> str:
        """Read until the last full frame satisfies predicate; fails at the deadline."""
        deadline = time.monotonic() + within
        while not predicate(self.screen()):
            left = deadline - time.monotonic()
            assert left > 0, f"screen never matched; last output:\n{self.screen()}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    chunk = b""
                assert chunk, f"top ended; last output:\n{self.screen()}"
                self.raw += chunk
        return self.screen()

    def read_raw_until(self, predicate: Callable[[str], bool], within: float) -> str:
        """Read until all the output so far (ANSI stripped) satisfies predicate."""
        deadline = time.monotonic() + within
        while not predicate(_strip(self.raw)):
            left = deadline - time.monotonic()
            assert left > 0, f"output never matched:\n{_strip(self.raw)}"
            if select.select([self.master], [], [], left)[0]:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    chunk = b""
                assert chunk, f"the command ended:\n{_strip(self.raw)}"
                self.raw += chunk
        return _strip(self.raw)

    def screen(self) -> str:
        """The last complete frame drawn (rich redraws each from the home position; a
        frame is complete once its footer line is there)."""
        frames = [_strip(f) for f in self.raw.split(b"\x1b[H")]
        done = [f for f in frames if "q quit" in f or "y/N" in f]
        return done[-1] if done else ""

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        os.close(self.master)


def test_top_shows_a_breaker_trip_within_one_refresh(tmp_path: Path, clock: ManualClock) -> None:
    execution = {
        **RELAXED_EXECUTION,
        "slippage_bps": 0.0,
        "circuit_breakers": {
            **RELAXED_EXECUTION["circuit_breakers"],
            "max_daily_loss_rupees": 50.0,
        },
    }
    running = RunningGateway(make_config(tmp_path, execution=execution), clock)
    top = Pty("top", "--target", running.target, "--give-up-after", "5")
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as client:
            assert client.publish_quotes([Quote(symbol=INFY, ltp=1500.0)]) == 1
            client.submit(limit(INFY, "SELL", 1, 1600.5, strategy_code="deskB"))
            top.read_until(lambda text: "open orders" in text and "1600.5" in text, TIMEOUT_S)
            assert "TRIPPED" not in top.screen()
            client.submit(market(INFY, "BUY", 10, strategy_code="deskA"))
            assert client.publish_quotes([Quote(symbol=INFY, ltp=1490.0)]) == 1
            client.submit(market(INFY, "SELL", 10, strategy_code="deskA"))
            # the sale realises a 100-rupee loss against a 50-rupee limit: the risk event
            # that trips max_daily_loss_rupees is the refresh that must show it
            top.read_until(lambda text: "TRIPPED" in text and "-100.00" in text, TIMEOUT_S)
        screen = top.screen()
        print("\n--- execgw top, captured ---\n" + screen)
        loss = next(row for row in screen.splitlines() if "max_daily_loss_rupees" in row)
        assert "TRIPPED \N{RIGHTWARDS ARROW} REDUCING" in loss
        assert "\N{FULL BLOCK}" * 20 in loss  # 100 of 50 rupees: the bar is full
        assert "ACCOUNT REDUCING" in screen

        top.send("h")
        top.read_until(lambda text: "halt the account? y/N" in text, TIMEOUT_S)
        top.send("n")  # anything but y: nothing happens
        top.read_until(lambda text: "q quit" in text and "y/N" not in text, TIMEOUT_S)
        top.send("h")
        top.read_until(lambda text: "halt the account? y/N" in text, TIMEOUT_S)
        top.send("y")
        top.read_until(lambda text: "ACCOUNT HALTED" in text, TIMEOUT_S)
        top.send("q")
        assert top.process.wait(timeout=TIMEOUT_S) == 0
    finally:
        top.close()
        running.stop()


def test_top_without_a_gateway_gives_up_with_exit_4() -> None:
    target = f"127.0.0.1:{free_port()}"
    top = Pty("top", "--target", target, "--give-up-after", "1")
    try:
        top.read_until(lambda text: f"connecting to {target}" in text, TIMEOUT_S)
        assert top.process.wait(timeout=TIMEOUT_S) == 4
        while select.select([top.master], [], [], 0)[0]:
            try:
                chunk = os.read(top.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            top.raw += chunk
        assert f"gave up: {target} unreachable for 1s" in _strip(top.raw)
    finally:
        top.close()


def test_render_top_is_a_pure_function_of_the_state() -> None:
    risk = gateway_pb2.GetRiskStateResponse(
        state=orders_pb2.TRADING_STATE_ACTIVE, trading_day="2026-11-27", trades_today=4
    )
    risk.breakers.add(
        name="max_daily_loss_rupees", value_decimal="40", limit_decimal="50", tripped=False
    )
    state = TopState(target="gw:1", risk=risk, status="reconnecting\N{HORIZONTAL ELLIPSIS}")
    console = Console(width=120, record=True, file=io.StringIO(), color_system=None)
    console.print(render_top(state, ZoneInfo("Asia/Kolkata")))
    text = console.export_text()
    row = next(line for line in text.splitlines() if "max_daily_loss_rupees" in line)
    assert "\N{FULL BLOCK}" * 16 + "\N{LIGHT SHADE}" * 4 in row  # 40 of 50: 16 of 20 cells
    assert "40.00" in row
    assert "50.00" in row
    assert row.rstrip(" \N{BOX DRAWINGS LIGHT VERTICAL}").endswith("ok")
    assert "ACCOUNT ACTIVE" in text
    assert "trades 4" in text
    assert "reconnecting" in text
    assert "h halt" in text


def test_tail_reconnects_to_a_restarted_gateway_and_resumes_after_the_last_sequence(
    tmp_path: Path, clock: ManualClock
) -> None:
    port = free_port()
    config = make_config(
        tmp_path,
        listen=f"127.0.0.1:{port}",
        execution={**RELAXED_EXECUTION, "slippage_bps": 0.0},
    )
    running = RunningGateway(config, clock)
    tail = Pty("tail", "--target", running.target, "--give-up-after", "20", "--from-sequence", "1")
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as client:
            client.publish_quotes([Quote(symbol=INFY, ltp=1500.0)])
            client.submit(market(INFY, "BUY", 1, strategy_code="deskA"))
        first = tail.read_raw_until(lambda text: "BUY" in text, TIMEOUT_S)
        last = max(int(m) for m in re.findall(r"^\s*(\d+) ", first, re.MULTILINE))
        running.stop()
        tail.read_raw_until(lambda text: "reconnecting" in text, TIMEOUT_S)
        running = RunningGateway(config, clock)
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as client:
            client.publish_quotes([Quote(symbol=INFY, ltp=1500.0)])
            client.submit(market(INFY, "SELL", 1, strategy_code="deskA"))
        text = tail.read_raw_until(lambda text: "SELL" in text, TIMEOUT_S)
        print("\n--- execgw tail across a restart ---\n" + text)
        assert f"resuming from sequence {last + 1}" in text
        assert text.count(" FILL ") == 2  # one fill each side of the restart
        shown = [int(m) for m in re.findall(r"^\s*(\d+) ", text, re.MULTILINE)]
        assert shown == sorted(set(shown))  # nothing twice, nothing out of order
        assert "Traceback" not in text
    finally:
        tail.close()
        running.stop()
