"""`make bench-live`: what the live path adds to SubmitOrder, against the Kite stand-in.

In one run on one machine:

  1. paper:   SubmitOrder of a resting LIMIT to a paper gateway (the simulator answers
              in the same journal commit);
  2. live:    the same to a live gateway whose broker is the Kite stand-in
              (tests/kite_standin.py, rate limits off, fill_market off so a LIMIT rests
              and Kite's ack is its first answer), with broker.kite.ack_wait_s so that
              SubmitOrder returns once the ack is journaled: the outbox commit, the
              kiteconnect SDK's HTTP POST, and the ack's commit;
  3. SDK:     kiteconnect's place_order straight to the stand-in from this process: the
              HTTP round trip alone, to tell the gateway's share of (2) from the wire's.

One caller, one order at a time, paced (--rate, default 50/s) under the live gateway's
own rate shaping (broker.kite.orders_per_second at its maximum, 100), so the numbers are
latency, never time spent queued. Warm-up orders first. Gateways run as subprocesses
(`execgw serve`); the stand-in runs in this process, on its own threads.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kiteconnect import KiteConnect

from execgw.client import ExecutionClient, OrderStatus, limit
from execgw.v1 import market_data_pb2

if TYPE_CHECKING:
    from tests.kite_standin import KiteStandIn

ROOT = Path(__file__).resolve().parent.parent
SYMBOL = "NSE:INFY"
LTP = 1500.0
PLACED = OrderStatus.Value("ORDER_STATUS_PLACED")
# ERROR: the "authentication is OFF" warning of a loopback bench gateway is expected.
GATEWAY_COMMAND = (sys.executable, "-m", "execgw.server.cli", "--log-level", "ERROR", "serve")
# Risk limits far above a bench's load (the bench is about latency, not breakers).
RELAXED: dict[str, Any] = {
    "circuit_breakers": {
        "max_trades_per_day": 100_000_000,
        "max_trades_per_strategy_per_day": 100_000_000,
    },
    "pre_trade": {"orders_per_second": 1e8, "order_burst": 100_000_000},
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_serving(target: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"bench-live: the gateway exited with {proc.returncode}")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"bench-live: the gateway at {target} did not serve")
            time.sleep(0.05)


@contextlib.contextmanager
def gateway(tmp: Path, name: str, extra: dict[str, Any], env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    data: dict[str, Any] = {
        "listen": f"127.0.0.1:{port}",
        "journal": {"path": str(tmp / f"{name}.db")},
        "market_data": {"source": "external"},
        "trading_day": {"mis_square_off": None},  # MIS on the wall clock, any hour
        "execution": RELAXED,
        **extra,
    }
    config = tmp / f"{name}.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    proc = subprocess.Popen(
        [*GATEWAY_COMMAND, "--config", str(config)],
        stdout=subprocess.DEVNULL,
        env={**os.environ, **env},
    )
    target = f"127.0.0.1:{port}"
    try:
        wait_serving(target, proc)
        yield target
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def paced(n: int, interval_s: float, call: Callable[[int], None]) -> list[float]:
    """Latencies (seconds) of n calls made one at a time, started at most every interval_s."""
    latencies = []
    next_start = time.perf_counter()
    for i in range(n):
        now = time.perf_counter()
        if now < next_start:
            time.sleep(next_start - now)
        started = time.perf_counter()
        call(i)
        latencies.append(time.perf_counter() - started)
        next_start = started + interval_s
    return latencies


def submit_latencies(target: str, run: str, warmup: int, n: int, interval_s: float) -> list[float]:
    with ExecutionClient(target, timeout=30) as client:
        client.wait_ready(20)
        client.publish_quotes([market_data_pb2.Quote(symbol=SYMBOL, ltp=LTP)])

        def call(i: int) -> None:
            # Below the market: rests at the simulator, and at the stand-in.
            intent = limit(SYMBOL, "BUY", 1, Decimal("1490.00"), strategy_code="BENCH")
            result = client.submit(intent, f"{run}-{i}")
            if result.status != PLACED:
                raise SystemExit(f"bench-live: order {i} is {OrderStatus.Name(result.status)}")

        paced(warmup, interval_s, lambda i: call(-1 - i))
        return paced(n, interval_s, call)


def sdk_latencies(kite: Any, warmup: int, n: int, interval_s: float) -> list[float]:
    def call(i: int) -> None:
        kite.place_order(
            variety="regular",
            exchange="NSE",
            tradingsymbol="INFY",
            transaction_type="BUY",
            quantity=1,
            product="MIS",
            order_type="LIMIT",
            validity="DAY",
            price="1490.00",
            tag=f"SDK{i % 1_000_000}",
        )

    paced(warmup, interval_s, call)
    return paced(n, interval_s, call)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(label: str, latencies: list[float]) -> tuple[float, float]:
    p50, p99 = quantile(latencies, 0.50), quantile(latencies, 0.99)
    mean = statistics.fmean(latencies)
    print(f"{label:<44}{p50 * 1e3:>9.2f}{p99 * 1e3:>9.2f}{mean * 1e3:>9.2f}")
    return p50, p99


def progress(text: str) -> None:
    print(f"  measuring {text} ...", file=sys.stderr, flush=True)


def main(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    if TYPE_CHECKING:
        from tests.kite_standin import KiteStandIn as StandIn
    else:
        from kite_standin import KiteStandIn as StandIn

    interval_s = 1.0 / args.rate
    standin: KiteStandIn = StandIn(
        fill_market=False, enforce_rate_limits=False, market_prices={SYMBOL: Decimal("1500")}
    )
    standin.start()
    try:
        credentials = {"KITE_API_KEY": standin.api_key, "KITE_ACCESS_TOKEN": standin.access_token}
        live_extra: dict[str, Any] = {
            "mode": "live",
            "broker": {
                "kite": {
                    "root": standin.url,
                    # Polls of Kite's order book (all the resting orders) meanwhile.
                    "poll_interval_s": args.poll_interval,
                    # SubmitOrder answers once Kite's ack is journaled.
                    "ack_wait_s": 10.0,
                    # The shaper's ceilings: the pacing stays under them, so no order
                    # waits in it and the numbers are latency only.
                    "orders_per_second": 100,
                    "orders_per_minute": 10_000,
                    "orders_per_day": 1_000_000,
                }
            },
        }
        run = os.urandom(3).hex()
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir)
            progress(f"paper SubmitOrder, {args.warmup} + {args.n} orders at {args.rate}/s")
            with gateway(tmp, "paper", {"mode": "paper"}, {}) as target:
                paper = submit_latencies(target, run, args.warmup, args.n, interval_s)
            placed_before = len(standin.order_calls())
            progress(f"live SubmitOrder to the stand-in's ack, {args.warmup} + {args.n} orders")
            with gateway(tmp, "live", live_extra, credentials) as target:
                live = submit_latencies(target, run, args.warmup, args.n, interval_s)
            sent = len(standin.order_calls()) - placed_before
            if sent != args.warmup + args.n:
                raise SystemExit(f"bench-live: the stand-in saw {sent} order calls")
            progress(f"kiteconnect place_order straight to the stand-in, {args.n} calls")
            kite = KiteConnect(standin.api_key, access_token=standin.access_token, root=standin.url)
            sdk = sdk_latencies(kite, args.warmup, args.n, interval_s)
    finally:
        standin.stop()

    sys.stderr.flush()
    print(
        f"SubmitOrder latency, one caller, {args.n} orders each after {args.warmup} warm-up, "
        f"paced at {args.rate}/s; live polls Kite's order book every {args.poll_interval}s"
    )
    print(f"{'':<44}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
    paper_p50, paper_p99 = row("paper (simulator)", paper)
    live_p50, live_p99 = row("live, to the broker's ack (Kite stand-in)", live)
    sdk_p50, _ = row("  of which: SDK place_order round trip", sdk)
    print(
        f"added by the live path (live - paper):      p50 {1e3 * (live_p50 - paper_p50):+.2f} ms"
        f"   p99 {1e3 * (live_p99 - paper_p99):+.2f} ms"
    )
    print(
        f"  beyond the HTTP round trip (live - paper - SDK): p50 "
        f"{1e3 * (live_p50 - paper_p50 - sdk_p50):+.2f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300, help="measured orders per path")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument(
        "--rate", type=float, default=50.0, help="orders per second at most (under 100)"
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        help="the live gateway's broker.kite.poll_interval_s (default 1.0, the config's)",
    )
    main(parser.parse_args())
