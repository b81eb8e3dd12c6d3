"""`execgw tail` and `execgw top` against a missing gateway, and `top` in a
pseudo-terminal against a real one."""

from __future__ import annotations

import fcntl
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

from execgw.client import ExecutionClient, Quote, limit, market
from execgw.server.clock import ManualClock

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
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TERM": "xterm-256color"},
            close_fds=True,
        )
        os.close(slave)
        self.raw = b""

    def read_until(self, predicate: Callable[[str], bool], within: float) -> str:
        """Read until the output since start satisfies predicate; fails at the deadline."""
        deadline = time.monotonic() + within
        while not predicate(_strip(self.raw)):
            left = deadline - time.monotonic()
            assert left > 0, f"screen never matched; last output:\n{self.screen()}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    chunk = b""
                if not chunk:
                    assert predicate(_strip(self.raw)), self.screen()
                    break
                self.raw += chunk
        return _strip(self.raw)

    def screen(self) -> str:
        """The last full frame drawn (rich redraws from the home position)."""
        frames = self.raw.split(b"\x1b[H")
        return _strip(frames[-1]) if frames else ""

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
            top.read_until(lambda text: "TRIPPED" in text, TIMEOUT_S)
        screen = top.screen()
        print("\n--- execgw top, captured ---\n" + screen)
        assert "max_daily_loss_rupees" in screen
        assert "TRIPPED" in screen
        top.send("q")
        assert top.process.wait(timeout=TIMEOUT_S) == 0
    finally:
        top.close()
        running.stop()
