"""`make bench`: gateway throughput as ratios against an echo server of the same shape.

Everything is measured in the same run on the same machine, so the ratios mean
something even where absolute numbers are noisy. Servers run as subprocesses; the
load comes from this process through the real asyncio client.

  1. echo:              an echo gateway (EchoGateway): grpc.aio serving our services,
                        parsing our requests and answering with a result of the shape
                        of a filled order, called through the same asyncio client as
                        the gateway rows; nothing behind it (no risk, no journal)
  2. submit (group):    SubmitOrder, durable group commit (journal.max_batch 512);
                        its row is the median of all its runs, two per repetition
                        (the telemetry-off runs of 5.)
  3. submit (1 fsync):  SubmitOrder, one durable commit per order (journal.max_batch 1)
  4. fan-out:           StreamFills event delivery to 1, 10 and 100 subscribers
  4b. SubmitOrders:     n orders over one bidirectional stream (the asyncio client),
                        against the echo gateway's SubmitOrders through the same client
  5. telemetry:         SubmitOrder, group commit, with traces (jsonl, batch processor)
                        and metrics (Prometheus endpoint) on, against the same with
                        telemetry off (2.): what telemetry costs, at most 15%. Each
                        repetition starts the three gateways (off, on, OTLP) together
                        and runs off, on, OTLP, OTLP, on, off back to back, each run
                        followed by a wait until its gateway and export process are
                        idle; its ratio is the sum of its on runs over the sum of its
                        off runs. Each run also reports the CPU its gateway and export
                        process used per order, and the summary the on / off ratio of
                        that too: less swayed than a rate by the machine's other load
  5b. telemetry (OTLP): the same with traces going over OTLP/gRPC to a collector that
                        takes them and drops them (an OTLP sink, a process of its own;
                        metrics go there too, every 60 s): what
                        the exporter operators use in production costs (reported, no
                        target); the run fails if the sink died or received no span
  6. latency:           one caller: the echo's p50 and p99; the echo's p50 when each
                        call first commits one row the way the journal commits (SQLite
                        WAL, synchronous=FULL, on a worker thread): about the least a
                        gateway that commits as ours does can take; SubmitOrder's with no
                        subscriber and with 500 receiving every event (order updates
                        included); the 500 run in a process of their own, as
                        strategies would (in the caller's process their receiving
                        would be timed as the caller's latency), and the row says how
                        many events they received during the calls

Each measurement is printed as it is taken; then the medians, their ratios and issue
15's targets (met or not), all written to bench/results.json with the machine's core
count, Python and the date. --quick (`make bench-quick`, under 30 s) measures fewer
calls once and leaves out 3., 5., the 500 subscribers and fan-out to 1 and 10; it writes
bench/results-quick.json. --day N writes bench/results-day.json.

With --secure (`make bench BENCH_SECURE=1`) it measures what the security of the
transport costs instead: SubmitOrder over TLS, and over mTLS, each call carrying a
bearer token (`authorization` metadata), as ratios to the same calls in plaintext
without a token, all through the same raw stub; and the bare echo server over TLS
with the token against plaintext, which isolates gRPC's own TLS cost per call.
Certificates are made for the run (tests/tls_helpers.py). The gateways' configs hold
the tokens' hashes, so where the auth interceptor is built in the ratios include
checking them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import hashlib
import itertools
import json
import os
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc
import grpc.aio
from google.protobuf import timestamp_pb2

from execgw.client import AsyncExecutionClient, market
from execgw.server.telemetry.tracing import EXPORT_DELAY_S
from execgw.v1 import (
    gateway_pb2,
    gateway_pb2_grpc,
    market_data_pb2,
    market_data_pb2_grpc,
    orders_pb2,
)

if TYPE_CHECKING:
    from tests.tls_helpers import Pki

ECHO_METHOD = "/bench.Echo/Echo"
ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
# Bearer tokens of the --secure runs: made for the run, their sha256 in the config.
STRATEGY_TOKEN = os.urandom(24).hex()
FEED_TOKEN = os.urandom(24).hex()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def echo_server(
    port: int, tls: tuple[bytes, bytes] | None = None, journal: Path | None = None
) -> None:
    """The echo server on `port` (over TLS with `tls`). With `journal`, each SubmitOrder
    first commits one row there the way the gateway's journal commits (durable_commit, on
    a worker thread): about the least a gateway that commits as ours does can take, on
    this machine and disk."""

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(
                echo, request_deserializer=None, response_serializer=None
            ),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    # The baseline of the gateway rows: our services and messages, parsed and built like
    # ours and called through the same client, with no gateway behind them.
    # Only the methods the bench calls (the stubs declare every method abstract).
    commit = None if journal is None else durable_commit(journal)
    echo_gateway, echo_market = cast(Any, EchoGateway)(commit), cast(Any, EchoMarketData)()
    gateway_pb2_grpc.add_ExecutionGatewayServicer_to_server(echo_gateway, server)
    market_data_pb2_grpc.add_MarketDataServicer_to_server(echo_market, server)
    if tls is not None:
        cert, key = tls
        server.add_secure_port(f"127.0.0.1:{port}", grpc.ssl_server_credentials([(key, cert)]))
    else:
        server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def echo_result(intent: orders_pb2.OrderIntent, client_order_id: str, n: int) -> Any:
    """An answer of the shape a filled MARKET order gets from the gateway."""
    now = timestamp_pb2.Timestamp(seconds=1_764_000_000 + n)
    return orders_pb2.ExecutionResult(
        order_id=f"O{n:010d}",
        client_order_id=client_order_id,
        status=orders_pb2.ORDER_STATUS_FILLED,
        symbol=intent.symbol,
        side=intent.side,
        qty=intent.qty,
        filled_qty=intent.qty,
        avg_price=1500.0,
        avg_price_decimal="1500.00",
        strategy_code=intent.strategy_code,
        order_type=intent.order_type,
        product=intent.product,
        validity=intent.validity or orders_pb2.VALIDITY_DAY,
        timestamp=now,
        created_at=now,
    )


def durable_commit(path: Path) -> Callable[[bytes], None]:
    """Commits one row per call to a SQLite file as the journal commits its rows (WAL,
    synchronous=FULL, BEGIN IMMEDIATE), one transaction at a time: for one caller's
    latency, not a floor under the rows with many in flight (no group commit)."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        raise RuntimeError(f"{path}: journal_mode is {mode}, not wal")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS calls (id INTEGER PRIMARY KEY, body BLOB)")
    lock = threading.Lock()

    def commit(body: bytes) -> None:
        with lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT INTO calls (body) VALUES (?)", (body,))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    return commit


class EchoGateway(gateway_pb2_grpc.ExecutionGatewayServicer):
    """SubmitOrder and SubmitOrders answered at once from the request (SubmitOrder after
    `commit`, when given, has made it durable)."""

    def __init__(self, commit: Callable[[bytes], None] | None = None) -> None:
        self._orders = itertools.count(1)
        self._commit = commit

    async def SubmitOrder(  # noqa: N802
        self, request: gateway_pb2.SubmitOrderRequest, context: object
    ) -> gateway_pb2.SubmitOrderResponse:
        if self._commit is not None:
            await asyncio.to_thread(self._commit, request.SerializeToString())
        result = echo_result(request.intent, request.client_order_id, next(self._orders))
        return gateway_pb2.SubmitOrderResponse(result=result)

    async def SubmitOrders(  # noqa: N802
        self, requests: AsyncIterator[gateway_pb2.SubmitOrdersRequest], context: object
    ) -> AsyncIterator[gateway_pb2.SubmitOrdersResponse]:
        async for request in requests:
            result = echo_result(request.intent, request.client_order_id, next(self._orders))
            yield gateway_pb2.SubmitOrdersResponse(
                client_order_id=request.client_order_id, result=result
            )


class EchoMarketData(market_data_pb2_grpc.MarketDataServicer):
    async def PublishQuotes(  # noqa: N802
        self, requests: AsyncIterator[market_data_pb2.PublishQuotesRequest], context: object
    ) -> market_data_pb2.PublishQuotesResponse:
        accepted = 0
        async for request in requests:
            accepted += len(request.quotes)
        return market_data_pb2.PublishQuotesResponse(accepted=accepted)


@contextlib.contextmanager
def gateway(
    tmp: Path, name: str, max_batch: int, queue_size: int = 4096, extra: str = ""
) -> Iterator[str]:
    with gateway_process(tmp, name, max_batch, queue_size, extra) as (target, _):
        yield target


@contextlib.contextmanager
def gateway_process(
    tmp: Path, name: str, max_batch: int, queue_size: int = 4096, extra: str = ""
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A gateway subprocess on journal `name` (reused if it exists): its target and process."""
    port = free_port()
    config = tmp / f"{name}.yaml"
    config.write_text(
        f"listen: 127.0.0.1:{port}\n"
        f"journal:\n  path: {tmp / name}.db\n  max_batch: {max_batch}\n"
        "market_data:\n  source: external\n"
        "trading_day:\n  mis_square_off: null\n"  # MIS orders on the wall clock, any hour
        "stream:\n"
        f"  queue_size: {queue_size}\n"
        "execution:\n  circuit_breakers:\n    max_trades_per_day: 100000000\n"
        "    max_trades_per_strategy_per_day: 100000000\n"
        "  pre_trade:\n    orders_per_second: 100000000.0\n    order_burst: 100000000\n" + extra,
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "execgw.server.cli",
            # ERROR: the "authentication is OFF" warning of a loopback bench gateway is
            # expected, and would interleave with the table.
            "--log-level",
            "ERROR",
            "serve",
            "--config",
            str(config),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# /proc's unit of CPU time, per second.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_tree_cpu_s(pid: int) -> float | None:
    """CPU seconds used so far by process `pid` and its running children (a gateway and
    its span export process, which a worker thread may have restarted); None where
    /proc cannot tell (no such process, or no children lists: it would leave the export
    process out)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    children: list[str] = []
    listed = False
    for task in tasks:
        try:
            children += Path(f"/proc/{pid}/task/{task}/children").read_text().split()
            listed = True
        except OSError:
            continue  # a thread gone meanwhile
    if not listed:
        return None
    total = None
    for each in (pid, *map(int, children)):
        try:
            stat = Path(f"/proc/{each}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        total = (total or 0.0) + (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


async def settled(
    pid: int,
    *,
    first_s: float = EXPORT_DELAY_S + 0.2,
    quiet_s: float = 0.2,
    most_s: float = 5.0,
) -> None:
    """Wait until process `pid` and its children are idle: first `first_s` (past a batch
    processor's export delay, after which it exports a last partial batch), then until
    a `quiet_s` spell in which they used at most one clock tick of CPU; about `most_s`
    at most. Where /proc cannot tell, only the first wait."""
    deadline = time.monotonic() + most_s
    await asyncio.sleep(first_s)
    used = process_tree_cpu_s(pid)
    while used is not None and time.monotonic() < deadline:
        await asyncio.sleep(quiet_s)
        now = process_tree_cpu_s(pid)
        # Whole ticks: /proc counts in them, so a fraction of one means nothing.
        if now is None or round((now - used) * CLOCK_TICKS) <= 1:
            return
        used = now


async def wait_until_ready(target: str) -> None:
    async with AsyncExecutionClient(target, timeout=30) as client:
        await client.wait_ready(20)


def telemetry_extra(tmp: Path, rep: int | str) -> str:
    """Traces to a jsonl file through the batch processor, metrics on a Prometheus
    endpoint (collected only when scraped, as in production)."""
    return (
        "telemetry:\n  exporter: jsonl\n"
        f"  path: {tmp / f'traces{rep}.jsonl'}\n  session_id: bench-{rep}\n"
        f"  prometheus_listen: 127.0.0.1:{free_port()}\n"
    )


def otlp_sink(port: int) -> None:
    """An OTLP/gRPC collector that accepts every export and keeps nothing; at SIGTERM
    it prints how many spans it received."""
    from concurrent import futures

    from opentelemetry.proto.collector.metrics.v1 import (
        metrics_service_pb2,
        metrics_service_pb2_grpc,
    )
    from opentelemetry.proto.collector.trace.v1 import (
        trace_service_pb2,
        trace_service_pb2_grpc,
    )

    received = [0]

    class Traces(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802
            received[0] += sum(
                len(scope.spans) for spans in request.resource_spans for scope in spans.scope_spans
            )
            return trace_service_pb2.ExportTraceServiceResponse()

    class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802
            return metrics_service_pb2.ExportMetricsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)  # type: ignore[no-untyped-call]
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"127.0.0.1:{port}")
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    server.start()
    stopped.wait()
    server.stop(grace=None)
    print(received[0], flush=True)


@contextlib.contextmanager
def otlp_sink_process() -> Iterator[dict[str, str]]:
    """An OTLP sink running; the environment a gateway needs to export to it."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--otlp-sink", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        yield {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
        }
    finally:
        alive = proc.poll() is None
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    # A sink that was not there would have measured a gateway whose exports all fail.
    if not alive or not out.strip().isdigit() or int(out) == 0:
        raise RuntimeError(f"the OTLP sink died or received no span (it said {out!r})")


def otlp_extra(rep: int | str) -> str:
    """Traces and metrics over OTLP (to the sink the environment names), metrics also
    on a Prometheus endpoint, as telemetry_extra has them."""
    return (
        "telemetry:\n  exporter: otlp\n"
        f"  session_id: bench-{rep}\n"
        f"  prometheus_listen: 127.0.0.1:{free_port()}\n"
    )


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """These variables set while inside (for the processes started meanwhile)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def echo_process(
    tls_files: tuple[Path, Path] | None = None, journal: Path | None = None
) -> Iterator[str]:
    port = free_port()
    tls = [] if tls_files is None else ["--echo-tls", *map(str, tls_files)]
    durable = [] if journal is None else ["--echo-journal", str(journal)]
    proc = subprocess.Popen([sys.executable, __file__, "--echo-server", str(port), *tls, *durable])
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def request_bytes(i: int) -> bytes:
    intent = market("NSE:INFY", "BUY" if i % 2 else "SELL", 1, strategy_code=f"S{i % 8}")
    return gateway_pb2.SubmitOrderRequest(
        intent=intent, client_order_id=f"b{i}"
    ).SerializeToString()


async def run_concurrently(
    n: int, concurrency: int, call: Callable[[int], Awaitable[None]]
) -> float:
    counter = iter(range(n))
    started = time.perf_counter()

    async def worker() -> None:
        for i in counter:
            await call(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


async def echo_rate(
    target: str,
    n: int,
    concurrency: int,
    credentials: grpc.ChannelCredentials | None = None,
    metadata: list[tuple[str, str]] | None = None,
) -> float:
    channel = (
        grpc.aio.insecure_channel(target)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials)
    )
    async with channel:
        await asyncio.wait_for(channel.channel_ready(), 20)
        method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(ECHO_METHOD)
        payloads = [request_bytes(i) for i in range(n)]

        async def call(i: int) -> None:
            await method(payloads[i], metadata=metadata, timeout=10)

        await run_concurrently(min(n, WARM_CALLS), concurrency, call)  # warm-up
        return await run_concurrently(n, concurrency, call)


def stream_request(i: int, run: str = "echo") -> gateway_pb2.SubmitOrdersRequest:
    intent = market("NSE:INFY", "BUY" if i % 2 else "SELL", 1, strategy_code=f"S{i % 8}")
    return gateway_pb2.SubmitOrdersRequest(intent=intent, client_order_id=f"{run}-{i}")


async def submit_stream_rate(target: str, n: int) -> float:
    """SubmitOrders through the asyncio client: n orders over one stream."""
    async with AsyncExecutionClient(target, timeout=30) as client:
        await client.wait_ready(20)
        await publish_quote(client)

        async def run(count: int) -> float:
            key = os.urandom(4).hex()
            orders = [(stream_request(i).intent, f"{key}-{i}") for i in range(count)]
            started = time.perf_counter()
            seen = 0
            async for answer in client.submit_orders(orders, timeout=120):
                assert answer.result.status, answer
                seen += 1
            assert seen == count
            return count / (time.perf_counter() - started)

        await run(min(n, WARM_CALLS))  # warm-up
        return await run(n)


async def publish_quote(client: AsyncExecutionClient) -> None:
    await client.publish_quotes([market_data_pb2.Quote(symbol="NSE:INFY", ltp=1500.0)])


# Calls a rate measurement makes before the measured ones (fewer when it measures fewer).
WARM_CALLS = 200


async def submit_rate(target: str, n: int, concurrency: int) -> float:
    async with AsyncExecutionClient(target, timeout=30) as client:
        await client.wait_ready(20)
        await publish_quote(client)
        run = os.urandom(4).hex()

        async def call(i: int) -> None:
            intent = market("NSE:INFY", "BUY" if i % 2 else "SELL", 1, strategy_code=f"S{i % 8}")
            result = await client.submit(intent, f"{run}-{i}")
            assert result.status, result

        # Warm-up keys follow the measured ones: a measured call is never an idempotent repeat.
        await run_concurrently(min(n, WARM_CALLS), concurrency, lambda i: call(n + i))
        return await run_concurrently(n, concurrency, call)


async def fanout_rate(target: str, subscribers: int, orders: int) -> tuple[float, float]:
    """Events per second seen by each subscriber, and in total across subscribers."""
    async with AsyncExecutionClient(target, timeout=30) as client:
        await client.wait_ready(20)
        await publish_quote(client)
        expected = orders * 2  # accepted + filled for each MARKET order
        ready = asyncio.Barrier(subscribers + 1)

        async def subscribe() -> float:
            stream = client.stream_fills(
                include_order_updates=True, heartbeats=True, reconnect=False
            )
            seen = 0
            live = False
            async with contextlib.aclosing(stream):
                async for event in stream:
                    if event.HasField("heartbeat"):
                        if not live:  # the first heartbeat: this stream is live
                            live = True
                            await ready.wait()
                        continue
                    seen += 1
                    if seen == expected:
                        return time.perf_counter()
            raise RuntimeError("stream ended early")

        tasks = [asyncio.create_task(subscribe()) for _ in range(subscribers)]
        await ready.wait()
        started = time.perf_counter()
        run = os.urandom(4).hex()

        async def call(i: int) -> None:
            intent = market("NSE:INFY", "BUY" if i % 2 else "SELL", 1, strategy_code=f"S{i % 8}")
            await client.submit(intent, f"{run}-{i}")

        await run_concurrently(orders, 16, call)
        finished = await asyncio.wait_for(asyncio.gather(*tasks), 120)
        elapsed = max(finished) - started
        per_subscriber = expected / elapsed
        return per_subscriber, per_subscriber * subscribers


class Report:
    """Every figure of one run, printed as it is measured, and written to a JSON file
    (bench/results.json, results-quick.json or results-day.json) at the end: each
    measurement, the medians and their ratios to the echo of the same run, the issue's
    targets with met or not met, and the machine it ran on."""

    def __init__(self, kind: str, path: Path, settings: dict[str, object]) -> None:
        self.kind = kind
        self.path = path
        self.settings = settings
        self.started = time.perf_counter()
        self.machine = machine_info()
        self.measurements: list[dict[str, object]] = []
        self.rows: list[dict[str, object]] = []
        self.targets: list[dict[str, object]] = []

    def measured(
        self,
        measure: str,
        value: float,
        unit: str,
        seconds: float,
        run: int | None = None,
        position: int | None = None,
    ) -> None:
        """One measurement, printed now. `position`: its place among the repetition's
        runs, where a measure is taken more than once in one."""
        entry: dict[str, Any] = {
            "measure": measure,
            "run": run,
            "value": value,
            "unit": unit,
            "seconds": seconds,
        }
        if position is not None:
            entry["position"] = position
        self.measurements.append(entry)
        label = measure if run is None else f"{measure} [run {run}]"
        print(f"  {label:<58}{value:>12.2f} {unit:<10}({seconds:.1f} s)", flush=True)

    def row(
        self, measure: str, value: float, unit: str, vs: str | None = None, ratio: float = 1.0
    ) -> None:
        """A summary row: a median, and its ratio to `vs` (a row of the same run)."""
        self.rows.append(
            {"measure": measure, "value": value, "unit": unit, "vs": vs, "ratio": ratio}
        )
        against = "" if vs is None else f"  vs {vs}"
        print(f"{measure:<46}{value:>12.2f} {unit:<10}{ratio:>8.3f}{against}", flush=True)

    def target(
        self, name: str, description: str, measured: float | None, op: str, limit: float | None
    ) -> None:
        """An issue-15 target (op ">=", "<=", or "reported": a figure with no limit);
        measured None: not measured by this kind of run."""
        met = (
            None
            if measured is None or limit is None
            else measured >= limit
            if op == ">="
            else measured <= limit
        )
        self.targets.append(
            {
                "target": name,
                "description": description,
                "measured": measured,
                "op": op,
                "limit": limit,
                "met": met,
            }
        )

    def finish(self) -> None:
        print(f"{'target (issue 15)':<34}{'measured':>10}  {'needs':<10}{'':>2}")
        for t in self.targets:
            value = t["measured"]
            shown = "-" if not isinstance(value, float) else f"{value:.3f}"
            verdict = {True: "met", False: "NOT MET", None: "not measured here"}[
                cast("bool | None", t["met"])
            ]
            needs = f"{t['op']} {t['limit']}"
            if t["limit"] is None:
                verdict, needs = ("reported" if value is not None else verdict), "reported"
            print(f"{t['target']:<34}{shown:>10}  {needs:<10}  {verdict}  ({t['description']})")
        elapsed = time.perf_counter() - self.started
        document = {
            "kind": self.kind,
            "machine": self.machine,
            "settings": self.settings,
            "elapsed_s": round(elapsed, 1),
            "measurements": self.measurements,
            "rows": self.rows,
            "targets": self.targets,
        }
        self.path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"{elapsed:.0f} s; written to {self.path.relative_to(ROOT)}", flush=True)


def machine_info() -> dict[str, object]:
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "grpcio": grpc.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_average": os.getloadavg(),
        "commit": commit,
        # Where the journals go: on tmpfs an fsync does nothing, and every durable row
        # (and the durable echo) measures memory, not the disk.
        "journal_filesystem": filesystem_of(Path(tempfile.gettempdir())),
    }


# How /proc/self/mountinfo writes these characters of a mount point (the backslash last).
MOUNTINFO_ESCAPES = (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\"))


def filesystem_of(path: Path) -> str | None:
    """The type of the filesystem `path` is on (ext4, tmpfs, ...), from the longest mount
    point above it in /proc/self/mountinfo; None where that cannot be read."""
    try:
        lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    found: tuple[int, str] | None = None
    for line in lines:
        fields = line.split()
        if "-" not in fields:
            continue
        mount = fields[4]
        for escaped, plain in MOUNTINFO_ESCAPES:
            mount = mount.replace(escaped, plain)
        kind = fields[fields.index("-") + 1]
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and (found is None or len(mount) > found[0]):
            found = (len(mount), kind)
    return None if found is None else found[1]


async def timed(coroutine: Awaitable[T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = await coroutine
    return value, time.perf_counter() - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def rss_mib(pid: int) -> float:
    """A process's resident memory (Linux /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# Issue 15's targets that only a day of orders measures (bench/run.py --day N).
DAY_TARGETS: list[tuple[str, str, str, float | None]] = [
    ("history", "ratio to the echo over the day's last 5,000 / its first 5,000", ">=", 0.9),
    ("tail latency", "slowest SubmitOrder per 5,000 at 16 in flight, snapshots on, ms", "<=", 200),
    ("memory", "server RSS at the day's end, MiB", "reported", None),
    (
        "restart",
        "restart on the day's journal until it answers, s (its size: the rows above)",
        "reported",
        None,
    ),
]


def journal_size(path: Path) -> tuple[int, int, int]:
    """A stopped gateway's journal: its head sequence (every event the day journaled),
    the events it still holds (the rest pruned behind a snapshot), its snapshots."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        head, kept = db.execute("SELECT coalesce(max(seq), 0), count(*) FROM events").fetchone()
        (snapshots,) = db.execute("SELECT count(*) FROM snapshots").fetchone()
    return int(head), int(kept), int(snapshots)


async def day_main(args: argparse.Namespace) -> None:
    """`--day N`: one gateway through a day of N orders at 16 in flight, snapshots on
    (journal.snapshot_every at its default). Per 5,000 orders: the rate, its ratio to the
    echo gateway, the slowest SubmitOrder, and the server's RSS. The echo is measured
    before the first 5,000 and again before the last, so that the history (the last
    ratio over the first) compares the gateway with the machine as it was at each end
    of the day, not with the machine at the start. Then the time a restart on that
    journal takes until it answers. Written to bench/results-day.json."""
    chunk = 5_000
    report = Report(
        "day", ROOT / "bench" / "results-day.json", {"orders": args.day, "concurrency": 16}
    )
    chunks: list[tuple[float, float]] = []  # (ratio to the echo, slowest ms) per chunk
    rss = 0.0
    with tempfile.TemporaryDirectory() as tmp_dir, echo_process() as echo_target:
        tmp = Path(tmp_dir)
        echoes: list[float] = []

        async def measure_echo() -> float:
            """The echo's rate, with the gateway up and idle, as at either end of the day."""
            rate, took = await timed(submit_rate(echo_target, 3000, 16))
            report.measured(
                "echo gateway SubmitOrder, 16 in flight",
                rate,
                "calls/s",
                took,
                position=len(echoes),
            )
            echoes.append(rate)
            return rate

        with gateway_process(tmp, "day", 512) as (target, proc):
            async with AsyncExecutionClient(target, timeout=60) as client:
                await client.wait_ready(20)
                await publish_quote(client)
                echo = await measure_echo()
                print(
                    f"{'orders in the day':<20}{'per second':>12}{'vs echo':>10}{'max ms':>10}"
                    f"{'RSS MiB':>10}"
                )
                rss = rss_mib(proc.pid)
                report.rows.append({"measure": "server RSS, 0 orders", "value": rss, "unit": "MiB"})
                print(f"{0:<20}{'':>12}{'':>10}{'':>10}{rss:>10.0f}")
                run = os.urandom(4).hex()
                done = 0
                while done < args.day:
                    size = min(chunk, args.day - done)
                    slowest = 0.0
                    if done and done + size >= args.day:  # the last 5,000: the echo again
                        echo = await measure_echo()

                    async def call(i: int, base: int = done) -> None:
                        nonlocal slowest
                        side = "BUY" if i % 2 else "SELL"
                        intent = market("NSE:INFY", side, 1, strategy_code=f"S{i % 8}")
                        started = time.perf_counter()
                        await client.submit(intent, f"{run}-{base + i}")
                        slowest = max(slowest, time.perf_counter() - started)

                    rate = await run_concurrently(size, 16, call)
                    done += size
                    rss = rss_mib(proc.pid)
                    chunks.append((rate / echo, slowest * 1e3))
                    report.rows.append(
                        {
                            "measure": f"orders {done - size}-{done}",
                            "orders_in_day": done,
                            "value": rate,
                            "unit": "calls/s",
                            "vs": "echo gateway SubmitOrder, 16 in flight",
                            "vs_position": len(echoes) - 1,
                            "ratio": rate / echo,
                            "slowest_ms": slowest * 1e3,
                            "rss_mib": rss,
                        }
                    )
                    print(
                        f"{done:<20}{rate:>12.0f}{rate / echo:>10.3f}{slowest * 1e3:>10.0f}"
                        f"{rss:>10.0f}",
                        flush=True,
                    )
        sequence, kept, snapshots = journal_size(tmp / "day.db")
        report.measured("events journaled in the day (head sequence)", sequence, "events", 0)
        report.measured("events still in the journal (older ones pruned)", kept, "events", 0)
        report.measured(
            "snapshots kept in the journal (a new one replaces the older)",
            snapshots,
            "snapshots",
            0,
        )
        restart = None
        for label in ("restart on that journal", "start on an empty journal"):
            name = "day" if label.startswith("restart") else "empty"
            started = time.perf_counter()
            with gateway_process(tmp, name, 512) as (target, proc):
                async with AsyncExecutionClient(target, timeout=60) as client:
                    await client.wait_ready(600)
                    await client.risk_state()
                    took = time.perf_counter() - started
                    report.measured(label, took, "s", took)
                    report.measured(f"{label}, server RSS", rss_mib(proc.pid), "MiB", took)
                    restart = took if restart is None else restart
    history = chunks[-1][0] / chunks[0][0] if len(chunks) > 1 else None
    measured = [history, max(slowest for _, slowest in chunks), rss, restart]
    for (name, description, op, limit), value in zip(DAY_TARGETS, measured, strict=True):
        report.target(name, description, value, op, limit)
    report.finish()


# Room for 500 subscribers on one connection (the defaults allow 160 streams).
MANY_STREAMS = (
    "server:\n  max_concurrent_rpcs: 2048\n  max_streams: 1000\n"
    "  max_streams_per_connection: 1000\n"
)


async def latencies_with_subscribers(target: str, subscribers: int, n: int) -> list[float]:
    """SubmitOrder's latencies (ms) from one caller, past the warm-up, while `subscribers`
    StreamFills subscribers (order updates included) are connected and receiving every
    event.

    The subscribers run in a process of their own (`--subscribers`), as strategies
    would: in the caller's process, on its event loop, their receiving would be measured
    as the caller's latency. The caller starts once every stream is live; afterwards the
    subscriber process says how many events its streams received."""
    subscriber_process = None
    received = b""
    if subscribers:
        subscriber_process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--subscribers",
            str(subscribers),
            "--target",
            target,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
    try:
        if subscriber_process is not None:
            assert subscriber_process.stdout is not None
            line = await asyncio.wait_for(subscriber_process.stdout.readline(), 120)
            if line.strip() != b"live":
                raise RuntimeError(f"the subscriber process did not go live: {line!r}")
        async with AsyncExecutionClient(target, timeout=30) as client:
            await client.wait_ready(20)
            await publish_quote(client)
            run = os.urandom(4).hex()
            latencies = []
            for i in range(n):
                side = "BUY" if i % 2 else "SELL"
                intent = market("NSE:INFY", side, 1, strategy_code=f"S{i % 8}")
                started = time.perf_counter()
                await client.submit(intent, f"{run}-{i}")
                latencies.append(time.perf_counter() - started)
    finally:
        if subscriber_process is not None:
            assert subscriber_process.stdin is not None
            assert subscriber_process.stdout is not None
            subscriber_process.stdin.close()  # the subscribers stop and say what they got
            try:
                received = await asyncio.wait_for(subscriber_process.stdout.read(), 60)
            finally:
                if subscriber_process.returncode is None:
                    subscriber_process.kill()
                await subscriber_process.wait()
    if subscriber_process is not None:
        print(
            f"    ({subscribers} subscribers in their own process received "
            f"{received.decode().strip() or '?'} events during the {n} calls)",
            flush=True,
        )
    return [x * 1e3 for x in latencies[min(50, n // 10) :]]  # past the warm-up


async def subscribers_main(target: str, subscribers: int) -> None:
    """`--subscribers N --target T`: N StreamFills subscribers (order updates included)
    on one channel, receiving every event. Prints `live` once every stream is live, and
    when its stdin closes the number of events they received, then exits. The streams do
    not reconnect, so one cut off for falling behind shows as a stream that ended early."""
    received = 0
    async with AsyncExecutionClient(target, timeout=30) as client:
        await client.wait_ready(20)
        ready = asyncio.Barrier(subscribers + 1)

        async def subscribe() -> None:
            nonlocal received
            stream = client.stream_fills(
                include_order_updates=True, heartbeats=True, reconnect=False
            )
            live = False
            async with contextlib.aclosing(stream):
                async for event in stream:
                    if event.HasField("heartbeat"):
                        if not live:
                            live = True
                            await ready.wait()
                        continue
                    received += 1

        tasks = [asyncio.create_task(subscribe()) for _ in range(subscribers)]
        await asyncio.wait_for(ready.wait(), 120)
        print("live", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the bench closes our stdin
        ended = [task for task in tasks if task.done()]  # cut off (overflow) or failed
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    lost = f", {len(ended)} of the streams ended early" if ended else ""
    print(f"{received}{lost}", flush=True)


def make_bench_pki(directory: Path) -> Pki:
    # tests/ is not a package: its helpers are imported the way pytest imports them.
    sys.path.insert(0, str(ROOT / "tests"))
    if TYPE_CHECKING:
        from tests.tls_helpers import make_pki
    else:
        from tls_helpers import make_pki
    return make_pki(directory)


def secure_extra(pki: Pki, *, mutual: bool) -> str:
    """The server.tls and auth sections of a --secure gateway."""
    tls = pki.server_tls(mutual=mutual)
    return "".join(
        [
            "server:\n  tls:\n",
            *(f"    {key}: {value}\n" for key, value in tls.items()),
            "auth:\n  tokens:\n",
            f"    - name: bench\n      sha256: {sha256_hex(STRATEGY_TOKEN)}\n",
            "      role: strategy\n",
            f"      strategies: [{', '.join(f'S{i}' for i in range(8))}]\n",
            f"    - name: feed\n      sha256: {sha256_hex(FEED_TOKEN)}\n",
            "      role: market_data\n",
        ]
    )


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def secure_credentials(pki: Pki, *, mutual: bool) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.cert_pem,
        private_key=pki.client.key_pem if mutual else None,
        certificate_chain=pki.client.cert_pem if mutual else None,
    )


async def raw_submit_rate(
    target: str,
    n: int,
    concurrency: int,
    credentials: grpc.ChannelCredentials | None,
) -> float:
    """SubmitOrder through a bare stub: the same client code with and without security."""
    secure = credentials is not None
    channel = (
        grpc.aio.secure_channel(target, credentials)
        if credentials is not None
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        await asyncio.wait_for(channel.channel_ready(), 20)
        feed = [("authorization", f"Bearer {FEED_TOKEN}")] if secure else None
        quote = market_data_pb2.Quote(symbol="NSE:INFY", ltp=1500.0)
        await market_data_pb2_grpc.MarketDataStub(channel).PublishQuotes(
            iter([market_data_pb2.PublishQuotesRequest(quotes=[quote])]), metadata=feed, timeout=10
        )
        submit = gateway_pb2_grpc.ExecutionGatewayStub(channel).SubmitOrder
        metadata = [("authorization", f"Bearer {STRATEGY_TOKEN}")] if secure else None
        run = os.urandom(4).hex()

        async def call(i: int) -> None:
            intent = market("NSE:INFY", "BUY" if i % 2 else "SELL", 1, strategy_code=f"S{i % 8}")
            request = gateway_pb2.SubmitOrderRequest(intent=intent, client_order_id=f"{run}-{i}")
            response = await submit(request, metadata=metadata, timeout=30)
            assert response.result.status, response

        # Warm-up keys follow the measured ones: a measured call is never an idempotent repeat.
        await run_concurrently(min(n, WARM_CALLS), concurrency, lambda i: call(n + i))
        return await run_concurrently(n, concurrency, call)


async def secure_main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        pki = make_bench_pki(tmp / "pki")
        tls_extra = secure_extra(pki, mutual=False)
        mtls_extra = secure_extra(pki, mutual=True)
        tls_credentials = secure_credentials(pki, mutual=False)
        mtls_credentials = secure_credentials(pki, mutual=True)
        plains: list[float] = []
        tlss: list[float] = []
        mtlss: list[float] = []
        echo_plains: list[float] = []
        echo_tlss: list[float] = []
        token = [("authorization", f"Bearer {STRATEGY_TOKEN}")]
        runs: list[tuple[str, str, grpc.ChannelCredentials | None, list[float]]] = [
            ("plain", "", None, plains),
            ("tls", tls_extra, tls_credentials, tlss),
            ("mtls", mtls_extra, mtls_credentials, mtlss),
        ]
        for rep in range(args.repeats):
            # Each repetition starts with another of the three, so that whatever the
            # previous run leaves behind (journal writeback) does not favour one.
            order = runs[rep % 3 :] + runs[: rep % 3]
            for name, extra, credentials, rates in order:
                progress(f"run {rep + 1}/{args.repeats}: SubmitOrder, {name}")
                with gateway(tmp, f"{name}{rep}", 512, extra=extra) as target:
                    rates.append(
                        await raw_submit_rate(target, args.n, args.concurrency, credentials)
                    )
            echoes = [(None, None, echo_plains), (tls_credentials, token, echo_tlss)]
            for credentials, metadata, rates in echoes if rep % 2 == 0 else echoes[::-1]:
                files = None if credentials is None else (pki.server.cert_file, pki.server.key_file)
                with echo_process(files) as target:
                    rates.append(
                        await echo_rate(target, args.n, args.concurrency, credentials, metadata)
                    )
        plain, tls, mtls = (statistics.median(x) for x in (plains, tlss, mtlss))
        print(f"medians of {args.repeats} interleaved runs, {args.concurrency} calls in flight")
        print(
            "ratios: median over the repetitions of each one's ratio to its plaintext run, "
            "and their range"
        )
        print(f"{'SubmitOrder (group commit)':<30}{'per second':>12}{'vs plain':>10}  range")
        print(f"{'plaintext, no token':<30}{plain:>12.0f}{1.0:>10.3f}")
        for label, rates, rate in (
            ("TLS + bearer token", tlss, tls),
            ("mTLS + bearer token", mtlss, mtls),
        ):
            print_ratio(label, rate, rates, plains)
        echo_plain, echo_tls = (statistics.median(x) for x in (echo_plains, echo_tlss))
        print(f"{'bare gRPC echo (unary)':<30}{'per second':>12}{'vs plain':>10}  range")
        print(f"{'plaintext, no token':<30}{echo_plain:>12.0f}{1.0:>10.3f}")
        print_ratio("TLS + bearer token", echo_tls, echo_tlss, echo_plains)
        added_us = (1 / echo_tls - 1 / echo_plain) * 1e6
        print(
            f"TLS + token: +{added_us:.0f} us per echo call "
            f"(client and server share {os.cpu_count()} cores)"
        )


def print_ratio(label: str, rate: float, rates: list[float], baselines: list[float]) -> None:
    ratios = [r / b for r, b in zip(rates, baselines, strict=True)]
    print(
        f"{label:<30}{rate:>12.0f}{statistics.median(ratios):>10.3f}  "
        f"{min(ratios):.3f}-{max(ratios):.3f}"
    )


def progress(text: str) -> None:
    """A line on stderr as each measurement starts, so a long bench is never silent."""
    print(f"  measuring {text} ...", file=sys.stderr, flush=True)


async def main(args: argparse.Namespace) -> None:
    """`make bench` (and `make bench-quick`, args.quick: one repetition of fewer calls,
    without the one-fsync-per-order, telemetry and 500-subscriber rows, fan-out to 100
    subscribers only). Each measurement is printed as it is taken, the medians, ratios
    and targets at the end, and all of it written to bench/results(-quick).json."""
    quick = args.quick
    c = args.concurrency
    report = Report(
        "quick" if quick else "full",
        ROOT / "bench" / ("results-quick.json" if quick else "results.json"),
        {
            "calls": args.n,
            "concurrency": c,
            "repeats": args.repeats,
            "latency_calls": args.latency_calls,
            "fanout_orders": args.fanout_orders,
        },
    )
    print(
        f"{report.kind} bench: {args.repeats} interleaved run(s) of {args.n} calls, "
        f"{c} in flight; {report.machine['cpu_count']} cores, Python "
        f"{report.machine['python']}; journals on {report.machine['journal_filesystem']}",
        flush=True,
    )
    if report.machine["journal_filesystem"] == "tmpfs":
        print(
            "warning: the journals are on tmpfs, where fsync does nothing: the durable rows "
            "measure memory, not a disk (set TMPDIR to a directory on a disk)",
            flush=True,
        )
    echo_unary = f"echo gateway SubmitOrder, {c} in flight"
    echo_stream = "echo gateway SubmitOrders (one stream)"
    stream_row = "SubmitOrders, one stream"
    group_row = f"SubmitOrder, group commit, {c} in flight"
    single_row = f"SubmitOrder, one fsync per order, {c} in flight"
    traced_row = f"SubmitOrder, group commit, telemetry on, {c} in flight"
    otlp_row = f"SubmitOrder, group commit, telemetry on (OTLP), {c} in flight"
    durable_echo_row = "echo + one durable commit, one caller, p50"
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        # Interleaved repeats, reporting medians: machine noise hits every measure alike.
        echoes: list[float] = []
        groups: list[float] = []
        singles: list[float] = []
        traced: list[float] = []
        # Each repetition's telemetry on / off, with jsonl and with OTLP.
        telemetry_ratios: list[float] = []
        # The same repetitions' gateway CPU per order, on / off (jsonl, OTLP).
        cpu_ratios: dict[str, list[float]] = {"traced": [], "otlp": []}
        otlp: list[float] = []
        otlp_ratios: list[float] = []
        stream_echoes: list[float] = []
        streams: list[float] = []
        for rep in range(1, args.repeats + 1):
            with echo_process() as target:
                rate, took = await timed(submit_rate(target, args.n, c))
                report.measured(echo_unary, rate, "calls/s", took, rep)
                echoes.append(rate)
                rate, took = await timed(submit_stream_rate(target, args.n))
                report.measured(echo_stream, rate, "msgs/s", took, rep)
                stream_echoes.append(rate)
            with gateway(tmp, f"stream{rep}", 512) as target:
                rate, took = await timed(submit_stream_rate(target, args.n))
                report.measured(stream_row, rate, "msgs/s", took, rep)
                streams.append(rate)
            # Telemetry's cost is a ratio of runs made back to back, in the order off, on,
            # OTLP, OTLP, on, off: the machine's drift (a slow spell, a neighbour's load)
            # falls on both sides alike instead of on whichever ran first.
            runs: dict[str, list[float]] = {"group": [], "traced": [], "otlp": []}
            cpu_runs: dict[str, list[float]] = {"group": [], "traced": [], "otlp": []}
            order = (
                ["group", "traced", "otlp", "otlp", "traced", "group"] if not quick else ["group"]
            )
            sink_running: contextlib.AbstractContextManager[dict[str, str]] = (
                contextlib.nullcontext({}) if quick else otlp_sink_process()
            )
            with sink_running as sink, contextlib.ExitStack() as running:
                # One gateway per kind, all started before the first run, each running
                # both of its runs: the six runs follow each other with no start-up in
                # between, so drift has less time to fall on one side.
                started: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
                for which in dict.fromkeys(order):
                    extra = ""
                    if which == "traced":
                        extra = telemetry_extra(tmp, rep)
                    elif which == "otlp":
                        extra = otlp_extra(rep)
                    with environment(sink if which == "otlp" else {}):
                        started[which] = running.enter_context(
                            gateway_process(tmp, f"{which}{rep}", 512, extra=extra)
                        )
                # All up and idle before the first run: one still starting (its export
                # process too) would slow the runs of the others.
                for target, _ in started.values():
                    await wait_until_ready(target)
                for _, proc in started.values():
                    await settled(proc.pid, first_s=0.0)
                for index, which in enumerate(order):
                    target, proc = started[which]
                    cpu_before = process_tree_cpu_s(proc.pid)
                    rate, took = await timed(submit_rate(target, args.n, c))
                    row = {"group": group_row, "traced": traced_row, "otlp": otlp_row}[which]
                    report.measured(row, rate, "calls/s", took, rep, position=index)
                    runs[which].append(rate)
                    # What a run left to do (its last spans, exported up to a second
                    # later) is done before the next run, not charged to it.
                    await settled(proc.pid)
                    cpu_after = process_tree_cpu_s(proc.pid)
                    if cpu_before is not None and cpu_after is not None:
                        # The gateway's and its export process's CPU for the run's
                        # orders (its warm-up calls included; and its client's connecting
                        # and the wait until idle, when it is all but idle): less swayed
                        # than a rate by what else the machine runs meanwhile.
                        calls = args.n + min(args.n, WARM_CALLS)
                        per_order_us = (cpu_after - cpu_before) / calls * 1e6
                        report.measured(
                            f"{row}: gateway CPU per order",
                            per_order_us,
                            "us",
                            took,
                            rep,
                            position=index,
                        )
                        cpu_runs[which].append(per_order_us)
            groups.extend(runs["group"])
            if not quick:
                traced.extend(runs["traced"])
                telemetry_ratios.append(sum(runs["traced"]) / sum(runs["group"]))
                for kind, ratios in cpu_ratios.items():
                    if cpu_runs["group"] and cpu_runs[kind]:
                        ratios.append(sum(cpu_runs[kind]) / sum(cpu_runs["group"]))
                otlp.extend(runs["otlp"])
                otlp_ratios.append(sum(runs["otlp"]) / sum(runs["group"]))
            if not quick:
                with gateway(tmp, f"single{rep}", 1) as target:
                    rate, took = await timed(submit_rate(target, args.n, c))
                    report.measured(single_row, rate, "calls/s", took, rep)
                    singles.append(rate)

        # One caller: the echo's latency, the durable echo's, then SubmitOrder's with no
        # subscriber and with 500 receiving every event.
        with echo_process() as target:
            echo_ms, took = await timed(latencies_with_subscribers(target, 0, args.latency_calls))
        echo_p50, echo_p99 = percentile(echo_ms, 0.5), percentile(echo_ms, 0.99)
        report.measured("echo gateway SubmitOrder, one caller, p50", echo_p50, "ms", took)
        report.measured("echo gateway SubmitOrder, one caller, p99", echo_p99, "ms", took)
        # A reference for the p50 target: the echo answering only after one SQLite commit
        # made durable the way the journal makes it. A gateway that commits as ours does
        # pays at least about this much; one that commits otherwise (on the event loop,
        # to another store) could pay less. Measured once, right before SubmitOrder's
        # p50, on the same disk: noise can still put that p50 below it.
        with echo_process(journal=tmp / "durable-echo.db") as target:
            floor_ms, took = await timed(latencies_with_subscribers(target, 0, args.latency_calls))
        floor_p50 = percentile(floor_ms, 0.5)
        report.measured(durable_echo_row, floor_p50, "ms", took)
        latency: dict[int, list[float]] = {}
        for subscribers in (0,) if quick else (0, 500):
            with gateway(tmp, f"subs{subscribers}", 512, extra=MANY_STREAMS) as target:
                # Fewer calls with 500: each of them adds 1,000 events to catch up on.
                calls = args.latency_calls if subscribers == 0 else min(args.latency_calls, 150)
                latency[subscribers], took = await timed(
                    latencies_with_subscribers(target, subscribers, calls)
                )
            for q in (0.5, 0.99):
                report.measured(
                    f"SubmitOrder, one caller, {subscribers} subscribers, p{q * 100:.0f}",
                    percentile(latency[subscribers], q),
                    "ms",
                    took,
                )
        fanout: dict[int, float] = {}
        for subscribers in (100,) if quick else (1, 10, 100):
            with gateway(tmp, f"fanout{subscribers}", 512, queue_size=100_000) as target:
                (_each, total), took = await timed(
                    fanout_rate(target, subscribers, args.fanout_orders)
                )
            report.measured(
                f"fan-out to {subscribers} subscriber(s), total", total, "events/s", took
            )
            fanout[subscribers] = total

    median = statistics.median
    print(f"\nmedians of {args.repeats} interleaved run(s); ratios against this run's echo")
    echo = median(echoes)
    report.row(echo_unary, echo, "calls/s")
    group = median(groups)
    report.row(group_row, group, "calls/s", echo_unary, group / echo)
    if singles:
        single = median(singles)
        report.row(single_row, single, "calls/s", echo_unary, single / echo)
    for row, rates, ratios, cost_row in (
        (traced_row, traced, telemetry_ratios, "telemetry on / off"),
        (otlp_row, otlp, otlp_ratios, "telemetry on (OTLP) / off"),
    ):
        if not rates:
            continue  # --quick
        on = median(rates)
        report.row(row, on, "calls/s", echo_unary, on / echo)
        # Telemetry's cost: the median of each repetition's on / off.
        cost = median(ratios)
        report.row(
            f"{cost_row} (median of the repetitions' ratios)", cost, "ratio", group_row, cost
        )
        print(f"{'':<4}each repetition's: " + ", ".join(f"{r:.3f}" for r in ratios), flush=True)
    for kind, label in (("traced", "telemetry on"), ("otlp", "telemetry on (OTLP)")):
        ratios = cpu_ratios[kind]
        if not ratios:
            continue
        cpu_cost = median(ratios)
        report.row(
            f"gateway CPU per order, {label} / off (median)", cpu_cost, "ratio", None, cpu_cost
        )
        print(f"{'':<4}each repetition's: " + ", ".join(f"{r:.3f}" for r in ratios), flush=True)
    stream_echo, stream = median(stream_echoes), median(streams)
    report.row(echo_stream, stream_echo, "msgs/s")
    report.row(stream_row, stream, "msgs/s", echo_stream, stream / stream_echo)
    echo_p50_row, echo_p99_row = (
        "echo gateway SubmitOrder, one caller, p50",
        "echo gateway SubmitOrder, one caller, p99",
    )
    report.row(echo_p50_row, echo_p50, "ms")
    report.row(echo_p99_row, echo_p99, "ms")
    report.row(durable_echo_row, floor_p50, "ms", echo_p50_row, floor_p50 / echo_p50)
    quiet = latency[0]
    quiet_p50, quiet_p99 = percentile(quiet, 0.5), percentile(quiet, 0.99)
    quiet_row = "SubmitOrder, one caller, p50"
    report.row(quiet_row, quiet_p50, "ms", echo_p50_row, quiet_p50 / echo_p50)
    report.row("SubmitOrder, one caller, p99", quiet_p99, "ms", echo_p99_row, quiet_p99 / echo_p99)
    loud_ratio = None
    if 500 in latency:
        loud_p50 = percentile(latency[500], 0.5)
        loud_ratio = loud_p50 / quiet_p50
        report.row(
            "SubmitOrder, one caller, p50, 500 subscribers", loud_p50, "ms", quiet_row, loud_ratio
        )
    for subscribers, total in fanout.items():
        report.row(f"fan-out to {subscribers} subscriber(s), total", total, "events/s")

    report.target(
        "throughput",
        f"SubmitOrder / echo, {c} in flight" + ("" if c == 16 else " (the target is at 16)"),
        group / echo,
        ">=",
        0.7,
    )
    report.target(
        "latency p50",
        "SubmitOrder / echo p50, one caller; durable echo / echo p50: "
        f"{floor_p50 / echo_p50:.2f}, SubmitOrder / durable echo p50: "
        f"{quiet_p50 / floor_p50:.2f}",
        quiet_p50 / echo_p50,
        "<=",
        1.5,
    )
    report.target(
        "latency p99", "SubmitOrder / echo p99, one caller", quiet_p99 / echo_p99, "<=", 3.0
    )
    report.target(
        "streaming submit", "SubmitOrders / streaming echo", stream / stream_echo, ">=", 0.7
    )
    report.target("fan-out latency", "p50 with 500 subscribers / with none", loud_ratio, "<=", 2.0)
    report.target("fan-out rate", "events/s in total to 100 subscribers", fanout[100], ">=", 20_000)
    for name, description, op, limit in DAY_TARGETS:
        report.target(name, f"{description} (bench/run.py --day 100000)", None, op, limit)
    report.finish()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, help="calls per measurement (3000; quick 1000)")
    # 16: the concurrency of issue 15's throughput target.
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--fanout-orders", type=int, help="orders per fan-out run (500; quick 200)")
    parser.add_argument("--repeats", type=int, help="interleaved repetitions (3; quick 1)")
    parser.add_argument("--latency-calls", type=int, help="one caller's calls (500; quick 200)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="`make bench-quick`: fewer calls, one repetition, the slow rows left out; "
        "writes bench/results-quick.json",
    )
    parser.add_argument(
        "--secure", action="store_true", help="measure the cost of TLS/mTLS and a bearer token"
    )
    parser.add_argument(
        "--day", type=int, default=0, help="a day of this many orders: tail latency, RSS, restart"
    )
    parser.add_argument("--echo-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--subscribers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--echo-tls", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--echo-journal", help=argparse.SUPPRESS)
    parser.add_argument("--otlp-sink", type=int, help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    # The gateways measured here export where the bench says: none of the user's own
    # OpenTelemetry settings (an endpoint, a protocol, a sampler) apply.
    for name in [name for name in os.environ if name.startswith("OTEL_")]:
        del os.environ[name]
    for name, full, quick in (
        ("n", 3000, 1000),
        ("fanout_orders", 500, 200),
        ("repeats", 3, 1),
        ("latency_calls", 500, 200),
    ):
        if getattr(parsed, name) is None:
            setattr(parsed, name, quick if parsed.quick else full)
    if parsed.subscribers:
        asyncio.run(subscribers_main(parsed.target, parsed.subscribers))
    elif parsed.otlp_sink:
        otlp_sink(parsed.otlp_sink)
    elif parsed.echo_server:
        tls_pems = None
        if parsed.echo_tls:
            cert_file, key_file = parsed.echo_tls
            tls_pems = (Path(cert_file).read_bytes(), Path(key_file).read_bytes())
        journal = None if parsed.echo_journal is None else Path(parsed.echo_journal)
        asyncio.run(echo_server(parsed.echo_server, tls_pems, journal))
    elif parsed.day:
        asyncio.run(day_main(parsed))
    elif parsed.secure:
        asyncio.run(secure_main(parsed))
    else:
        asyncio.run(main(parsed))
