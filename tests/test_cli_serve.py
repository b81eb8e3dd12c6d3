"""`execgw serve` as a real process: health, reflection, an order, SIGTERM, bad config.

The process uses the wall clock, so orders here use product NRML: MIS entries are
refused after the 15:20 IST square-off, and this test must pass at any hour.
Waiting is bounded and event-driven: the health Watch stream with wait_for_ready,
and Popen.wait with a timeout.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from execgw.client import ExecutionClient, OrderStatus, market

if TYPE_CHECKING:
    from tests.e2e_helpers import INFY, publish
else:
    from e2e_helpers import INFY, publish

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
# Reconnect quickly while the process is still binding its port.
FAST_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 200)]


def execgw_command() -> list[str]:
    script = Path(sys.executable).with_name("execgw")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "execgw.server.cli"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def write_config(directory: Path, extra: str = "") -> Path:
    path = directory / "execgw.yaml"
    path.write_text(
        "mode: paper\n"
        "listen: 127.0.0.1:1   # overridden by --listen\n"
        "journal:\n"
        f"  path: {directory / 'journal.db'}\n"
        "market_data:\n"
        "  source: external\n"
        "server:\n"
        "  shutdown_grace_s: 2.0\n" + extra,
        encoding="utf-8",
    )
    return path


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    stdout: Path
    stderr: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        out = self.stdout.read_text(encoding="utf-8", errors="replace")
        err = self.stderr.read_text(encoding="utf-8", errors="replace")
        return f"--- stdout ---\n{out}\n--- stderr ---\n{err}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)


def start_serve(directory: Path) -> Served:
    port = free_port()
    config = write_config(directory)
    stdout, stderr = directory / "stdout.txt", directory / "stderr.txt"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            [*execgw_command(), "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
            stdout=out,
            stderr=err,
            cwd=directory,
        )
    served = Served(proc, port, stdout, stderr)
    try:
        wait_serving(served)
    except BaseException:
        served.stop()
        raise
    return served


def wait_serving(served: Served) -> None:
    """Block on the health Watch stream until SERVING; bounded by its deadline."""
    with grpc.insecure_channel(served.target, options=FAST_RECONNECT) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        watch = stub.Watch(
            health_pb2.HealthCheckRequest(service=""),
            timeout=START_TIMEOUT_S,
            wait_for_ready=True,
        )
        try:
            for response in watch:
                if response.status == SERVING:
                    return
        except grpc.RpcError as e:
            raise AssertionError(f"never SERVING: {e!r}\n{served.output()}") from e
        finally:
            watch.cancel()
    raise AssertionError(f"health stream ended before SERVING\n{served.output()}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    running = start_serve(tmp_path_factory.mktemp("serve"))
    try:
        yield running
    finally:
        running.stop()


def test_health_reports_serving_for_every_service(served: Served) -> None:
    with grpc.insecure_channel(served.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "execgw.v1.ExecutionGateway", "execgw.v1.MarketData"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert response.status == SERVING, service


def test_reflection_lists_the_gateway_services(served: Served) -> None:
    with grpc.insecure_channel(served.target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {
            "execgw.v1.ExecutionGateway",
            "execgw.v1.MarketData",
            "grpc.health.v1.Health",
        } <= services
        pool = DescriptorPool(database)
        gateway = pool.FindServiceByName("execgw.v1.ExecutionGateway")
        methods = {m.name for m in gateway.methods}
        assert {"SubmitOrder", "CancelOrder", "GetOrder", "ListOrders", "StreamFills"} <= methods
        submit = gateway.methods_by_name["SubmitOrder"]
        assert submit.input_type.full_name == "execgw.v1.SubmitOrderRequest"


def test_order_through_the_served_gateway(served: Served) -> None:
    with ExecutionClient(served.target, timeout=10.0) as client:
        publish(client, INFY, 1500.00)
        result = client.submit(market(INFY, "BUY", 10, strategy_code="cli", product="NRML"))
        assert result.status == OrderStatus.ORDER_STATUS_FILLED, result
        assert result.avg_price == 1500.75  # 1500.00 x 1.0005
        [position] = client.positions("cli")
        assert (position.net_qty, position.avg_price) == (10, 1500.75)


def test_sigterm_drains_and_exits_zero(tmp_path: Path) -> None:
    served = start_serve(tmp_path)
    try:
        with ExecutionClient(served.target, timeout=10.0) as client:
            publish(client, INFY, 1500.00)
            placed = client.submit(market(INFY, "SELL", 4, strategy_code="cli", product="NRML"))
            assert placed.avg_price == 1499.25  # 1500.00 x 0.9995

        with grpc.insecure_channel(served.target) as channel:
            watch: Any = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service="execgw.v1.ExecutionGateway"),
                timeout=STOP_TIMEOUT_S,
            )
            assert next(watch).status == SERVING
            served.proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            # Draining: the gateway says NOT_SERVING before it goes away.
            assert next(watch).status == NOT_SERVING
            watch.cancel()
            code = served.proc.wait(timeout=STOP_TIMEOUT_S)
            elapsed = time.monotonic() - started
        assert code == 0, served.output()
        # shutdown_grace_s is 2.0 and nothing is in flight: well within grace + margin.
        assert elapsed < 6.0, f"took {elapsed:.1f}s to stop"
        assert "execgw stopped" in served.stdout.read_text(encoding="utf-8")
        assert not port_open(served.port)
    finally:
        served.stop()


def _run_serve(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*execgw_command(), "serve", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_unknown_config_key_exits_nonzero_naming_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, "execution:\n  slipage_bps: 5.0\n")
    done = _run_serve(config, "--listen", f"127.0.0.1:{free_port()}")
    assert done.returncode != 0
    assert "execution.slipage_bps" in done.stderr
    assert "unknown key" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_listen_override_exits_nonzero_naming_it(tmp_path: Path) -> None:
    done = _run_serve(write_config(tmp_path), "--listen", "nowhere")
    assert done.returncode != 0
    assert "listen" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_reader_that_closed_stdout_does_not_turn_a_clean_stop_into_a_failure(
    tmp_path: Path,
) -> None:
    """`execgw serve | head -1`: the pipe is gone when "execgw stopped" is printed."""
    port = free_port()
    config = write_config(tmp_path)
    proc = subprocess.Popen(
        [*execgw_command(), "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"execgw listening on")
        proc.stdout.close()  # the reader goes away, as head does after one line
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=STOP_TIMEOUT_S)
        assert proc.stderr is not None
        errors = proc.stderr.read().decode()
        assert code == 0, errors
        assert "cannot start" not in errors
        assert "Broken pipe" not in errors
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
