"""The README's strategy example really runs against `execgw serve` on paper defaults."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "quickstart.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    target = f"127.0.0.1:{_free_port()}"
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"listen: {target}\njournal:\n  path: {tmp_path / 'journal.db'}\n"
        "market_data:\n  synthetic:\n    interval_ms: 60000\n",  # one quote: a steady LTP
        # The trading day as `make run` has it: the example trades CNC, which the MIS
        # square-off (15:20 on the wall clock) does not refuse, so it runs at any hour.
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "execgw.server.cli", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=20)
            health = health_pb2_grpc.HealthStub(channel)
            # Watch, not poll: the first message is the current status.
            for reply in health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=20):
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
        yield target
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out


def test_readme_block_is_the_example_file() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(.*?)```", readme, re.S)
    assert block is not None
    example = EXAMPLE.read_text(encoding="utf-8")
    for line in block.group(1).splitlines():
        if line.startswith("with ExecutionClient"):
            continue
        assert line in example, f"README line not in {EXAMPLE.name}: {line!r}"


def test_quickstart_runs_against_paper_gateway(served: str) -> None:
    run = subprocess.run(
        [sys.executable, str(EXAMPLE), served],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = run.stdout.splitlines()
    buy = re.fullmatch(r"BUY ORDER_STATUS_FILLED 10 @ ([\d.]+) ltp ([\d.]+)", lines[0])
    assert buy is not None, run.stdout
    fill, ltp = float(buy.group(1)), float(buy.group(2))
    # 5 bps against the buyer, snapped up to the 0.05 tick.
    assert fill >= ltp * 1.0005 - 1e-9
    assert fill - ltp * 1.0005 < 0.05
    assert re.fullmatch(r"SELL ORDER_STATUS_PLACED resting at [\d.]+", lines[1]), run.stdout
    assert lines[2].startswith(f"NSE:INFY 10 avg {fill} unrealized "), run.stdout
    assert lines[3] == "cancel: ORDER_STATUS_CANCELLED"
