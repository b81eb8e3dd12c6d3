"""Shared machinery of the durability tests: `execgw` as a real subprocess, health
waits that watch state instead of sleeping, the CLI, and an independent Decimal
replay of fills to check positions against."""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from execgw.server import audit
from execgw.server.journal import Journal
from execgw.v1.market_data_pb2 import Quote
from execgw.v1.orders_pb2 import Position

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
STATUS_NAMES = {
    health_pb2.HealthCheckResponse.UNKNOWN: "UNKNOWN",
    SERVING: "SERVING",
    NOT_SERVING: "NOT_SERVING",
    health_pb2.HealthCheckResponse.SERVICE_UNKNOWN: "SERVICE_UNKNOWN",
}


def execgw_command() -> list[str]:
    """The `execgw` console script of the interpreter running the tests."""
    script = Path(sys.executable).with_name("execgw")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "execgw.server.cli"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# Risk limits far beyond anything these tests do, so that durability scenarios are
# never turned into ORDER_RATE or breaker rejects (the ManualClock never refills a
# rate bucket). Kept in one place: these keys belong to the risk engine's config.
RELAXED_EXECUTION: dict[str, Any] = {
    "circuit_breakers": {
        "max_daily_loss_rupees": 1e12,
        "max_daily_drawdown_pct": 1.0,
        "max_trades_per_day": 10_000_000,
        "max_trades_per_strategy_per_day": 10_000_000,
        "max_loss_streak": 1_000_000,
    },
    "pre_trade": {"orders_per_second": 1e6, "order_burst": 1_000_000},
}


def write_config(
    directory: Path,
    journal: Path,
    port: int,
    *,
    journal_options: Mapping[str, Any] | None = None,
    server_options: Mapping[str, Any] | None = None,
    name: str = "execgw.yaml",
) -> Path:
    """A config YAML for a paper gateway on loopback with external quotes only."""
    data: dict[str, Any] = {
        "mode": "paper",
        "listen": f"127.0.0.1:{port}",
        "journal": {"path": str(journal), **(journal_options or {})},
        "market_data": {"source": "external"},
        "execution": RELAXED_EXECUTION,
        "server": {"shutdown_grace_s": 1.0, **(server_options or {})},
    }
    path = directory / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def quote(symbol: str, ltp: float) -> Quote:
    return Quote(symbol=symbol, ltp=ltp)


# -- health ------------------------------------------------------------------


def health_check(target: str, service: str = "", timeout: float = 1.0) -> int:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        status: int = response.status
        return status


def wait_for_health(target: str, want: int, timeout: float, service: str = "") -> list[int]:
    """Follow the health Watch stream until it reports `want`; returns what it saw.

    Raises AssertionError if `want` is not reported within `timeout` seconds.
    """
    seen: list[int] = []
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        stream = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        try:
            for response in stream:
                seen.append(response.status)
                if response.status == want:
                    stream.cancel()
                    return seen
        except grpc.RpcError as e:
            if e.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
    names = [STATUS_NAMES.get(s, str(s)) for s in seen]
    raise AssertionError(
        f"health of {service!r} at {target} never became {STATUS_NAMES[want]} within "
        f"{timeout}s; saw {names}"
    )


# -- the server as a subprocess ------------------------------------------------


def _limit_file_size(limit: int) -> Callable[[], None]:
    def preexec() -> None:
        # Ignored SIGXFSZ turns "file too large" into a plain EFBIG write error,
        # which is what a full disk looks like to SQLite, instead of killing us.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        # Soft limit only: the test raises it again with prlimit to "free space".
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return preexec


class ServerProcess:
    """`execgw serve` as a child process, its stdout and stderr drained by threads
    (pipes, not files, so a file-size limit never hits the log)."""

    def __init__(
        self,
        config: Path,
        port: int,
        *,
        file_size_limit: int | None = None,
        log_level: str = "INFO",
    ) -> None:
        self.target = f"127.0.0.1:{port}"
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [*execgw_command(), "--log-level", log_level, "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=None if file_size_limit is None else _limit_file_size(file_size_limit),
        )
        self._drains = [
            threading.Thread(target=self._drain, args=(stream,), daemon=True)
            for stream in (self.proc.stdout, self.proc.stderr)
        ]
        for thread in self._drains:
            thread.start()

    def _drain(self, stream: Any) -> None:
        for line in stream:
            with self._lock:
                self._lines.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def output(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_serving(self, timeout: float = 20.0) -> float:
        """Poll Check with a short deadline until SERVING; returns seconds taken."""
        start = time.monotonic()
        deadline = start + timeout
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.proc.poll() is not None:
                    self.join_output()
                    raise AssertionError(
                        f"execgw exited with {self.proc.returncode} before serving:\n{self.output}"
                    )
                try:
                    response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.25)
                    if response.status == SERVING:
                        return time.monotonic() - start
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"execgw not SERVING after {timeout}s:\n{self.output}")
                # Bounds the poll rate while the port is not yet bound (Check fails fast).
                time.sleep(0.02)

    def join_output(self) -> None:
        for thread in self._drains:
            thread.join(timeout=5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.join_output()

    def terminate(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.join_output()
        return code

    def raise_file_size_limit(self) -> None:
        """Lift the child's RLIMIT_FSIZE from outside: the disk has room again."""
        inf = resource.RLIM_INFINITY
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (inf, inf))

    def close(self) -> None:
        """Idempotent cleanup for finally blocks: kill only our own child."""
        if self.proc.poll() is None:
            self.kill()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def run_server_to_exit(config: Path, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """`execgw serve` that is expected to refuse to start."""
    return subprocess.run(
        [*execgw_command(), "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- the journal CLI ------------------------------------------------------------


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*execgw_command(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def export_jsonl(journal: Path) -> list[dict[str, Any]]:
    """`execgw journal export --format jsonl`, parsed."""
    result = run_cli("journal", "export", "--journal", str(journal), "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def read_events(journal: Path) -> list[dict[str, Any]]:
    """The same export in-process (no interpreter start-up), read-only, safe while a
    gateway has the journal open."""
    reader = Journal(journal, read_only=True)
    try:
        out = io.StringIO()
        audit.export(reader, out, "jsonl")
    finally:
        reader.close()
    return [json.loads(line) for line in out.getvalue().splitlines()]


def journal_head(journal: Path) -> int:
    reader = Journal(journal, read_only=True)
    try:
        return reader.head_sequence
    finally:
        reader.close()


# -- independent position replay --------------------------------------------------


@dataclass(slots=True)
class ReplayedPosition:
    """Position accounting re-derived in the test: open cost, never an average."""

    net_qty: int = 0
    open_cost: Decimal = Decimal(0)
    realized: Decimal = Decimal(0)
    buy_qty: int = 0
    sell_qty: int = 0
    fills: list[tuple[int, Decimal]] = field(default_factory=list)

    def apply(self, signed_qty: int, price: Decimal) -> None:
        self.fills.append((signed_qty, price))
        if signed_qty > 0:
            self.buy_qty += signed_qty
        else:
            self.sell_qty += -signed_qty
        same_direction = self.net_qty == 0 or (self.net_qty > 0) == (signed_qty > 0)
        if same_direction:
            self.net_qty += signed_qty
            self.open_cost += price * signed_qty
            return
        held = abs(self.net_qty)
        closing = min(abs(signed_qty), held)
        direction = 1 if self.net_qty > 0 else -1
        cost_closed = self.open_cost if closing == held else self.open_cost * closing / held
        self.realized += price * closing * direction - cost_closed
        self.open_cost -= cost_closed
        self.net_qty -= closing * direction
        rest = abs(signed_qty) - closing
        if rest:
            self.net_qty = -direction * rest
            self.open_cost = price * self.net_qty


PositionKey = tuple[str, str, str]


def replay_fills(events: Iterable[Mapping[str, Any]]) -> dict[PositionKey, ReplayedPosition]:
    """Positions from the OrderFilled events of a journal export, in sequence order."""
    positions: dict[PositionKey, ReplayedPosition] = {}
    for event in sorted(events, key=lambda e: int(e["sequence"])):
        if event["kind"] != "OrderFilled":
            continue
        fill = event["event"]["fill"]
        sign = 1 if fill["side"] == "BUY" else -1
        key = (fill["strategy_code"], fill["symbol"], fill["product"])
        positions.setdefault(key, ReplayedPosition()).apply(
            sign * int(fill["qty"]), Decimal(fill["price"])
        )
    return positions


PRODUCT_NAMES = {1: "MIS", 2: "NRML", 3: "CNC"}


def position_key(p: Position) -> PositionKey:
    return (p.strategy_code, p.symbol, PRODUCT_NAMES[p.product])


def position_facts(positions: Sequence[Position]) -> dict[PositionKey, tuple[object, ...]]:
    """Everything a restart must not change about positions, exact strings included."""
    return {
        position_key(p): (
            p.net_qty,
            p.buy_qty,
            p.sell_qty,
            p.avg_price,
            p.realized_pnl_decimal,
            p.unrealized_pnl_decimal,
            p.last_price if p.HasField("last_price") else None,
        )
        for p in positions
    }
