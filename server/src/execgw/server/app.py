"""Assembles a gateway from its config and runs it as a grpc.aio server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from decimal import Decimal
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from execgw.server.anchors import HeadAnchorRecorder
from execgw.server.api import reflection_v1
from execgw.server.api.auth import AuthInterceptor
from execgw.server.api.execution import ExecutionGatewayServicer
from execgw.server.api.market_data import MarketDataServicer
from execgw.server.api.request_decoding import RequestDecodingInterceptor
from execgw.server.api.stream_limit import StreamLimitInterceptor
from execgw.server.bus import EventBus
from execgw.server.chain import chain_from_env
from execgw.server.clock import Clock, SystemClock
from execgw.server.config import GatewayConfig
from execgw.server.core import CoreSettings, GatewayCore
from execgw.server.instruments import InstrumentRegistry, load_kite_instruments
from execgw.server.journal import Journal
from execgw.server.listen import bind, check_bindable
from execgw.server.marketdata import SyntheticFeed
from execgw.server.quotes import quote_book
from execgw.server.risk import RiskEngine
from execgw.server.simulator import SmartFillSimulator
from execgw.server.telemetry.gateway import GatewayTelemetry
from execgw.server.trading_calendar import TradingCalendar
from execgw.server.transport import TlsMaterial, check_exposure, insecure_warning, load_tls
from execgw.v1 import gateway_pb2, gateway_pb2_grpc, market_data_pb2, market_data_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    gateway_pb2.DESCRIPTOR.services_by_name["ExecutionGateway"].full_name,
    market_data_pb2.DESCRIPTOR.services_by_name["MarketData"].full_name,
)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def build_instruments(config: GatewayConfig) -> InstrumentRegistry:
    section = config.instruments
    loaded = load_kite_instruments(Path(section.csv)) if section.csv else []
    return InstrumentRegistry(
        loaded,
        default_tick=Decimal(repr(section.default_tick_size)),
        default_lot=section.default_lot_size,
    )


class Gateway:
    """One running gateway: core, feed and gRPC server, started and stopped together."""

    def __init__(self, config: GatewayConfig, *, clock: Clock | None = None) -> None:
        if config.mode != "paper":
            raise NotImplementedError("live mode is not available yet; use mode: paper")
        # Before anything is opened: exposure and TLS files are config mistakes.
        # What server.insecure let a non-loopback address go without, if anything.
        self.insecure_gaps = check_exposure(config)
        self.tls: TlsMaterial | None = (
            None if config.server.tls is None else load_tls(config.server.tls)
        )
        self.config = config
        self.clock = clock or SystemClock()
        self.telemetry = GatewayTelemetry(config)
        self.instruments = build_instruments(config)
        self.health = health.aio.HealthServicer()
        self.chain = chain_from_env(config.journal.hmac_key_env)
        self.journal = Journal(Path(config.journal.path), chain=self.chain)
        try:
            # Before recovery, which can take a while on a long journal; after the journal
            # lock, so a second start of the same config names the process that runs it.
            check_bindable(config.listen)
            self.core = GatewayCore(
                clock=self.clock,
                journal=self.journal,
                quotes=quote_book(config.market_data, self.instruments),
                simulator=SmartFillSimulator(
                    slippage_bps=Decimal(repr(config.execution.slippage_bps)),
                    instruments=self.instruments,
                ),
                risk=RiskEngine(config.execution, TradingCalendar(config.trading_day)),
                bus=EventBus(queue_size=config.stream.queue_size),
                settings=CoreSettings(
                    max_batch=config.journal.max_batch,
                    snapshot_every=config.journal.snapshot_every,
                    probe_interval_s=config.journal.probe_interval_s,
                    retain_events=config.journal.retain_events,
                ),
                on_health=self._health_changed,
            )
            anchor = config.journal.anchor
            self._anchors = (
                None
                if anchor is None
                else HeadAnchorRecorder(
                    self.journal, Path(anchor.path), anchor.interval_s, self.clock
                )
            )
        except BaseException:
            self.journal.close()
            raise
        self._server: grpc.aio.Server | None = None
        # The server being started, bound or not; _server once it serves.
        self._starting: grpc.aio.Server | None = None
        self._bound = False
        self._feed_task: asyncio.Task[None] | None = None
        self._health_tasks: set[asyncio.Future[None]] = set()
        self._stopping = False
        self.port = 0

    async def start(self) -> int:
        """Start serving; returns the bound port (useful with port 0).

        A start that fails releases what it took (port, anchor task, core, journal and
        its lock) before raising, so the same process can start a gateway again."""
        try:
            # The tasks it starts (core, timer, feed) work in the configured session.
            with self.telemetry.entered():
                return await self._start()
        except BaseException:
            await self._abort_start()
            raise

    async def _abort_start(self) -> None:
        self._stopping = True
        if self._feed_task is not None:
            self._feed_task.cancel()
            with contextlib.suppress(BaseException):
                await self._feed_task
        server = self._starting
        if server is not None:
            with contextlib.suppress(Exception):
                if self._server is None and self._bound:
                    # grpc.aio lets go of a bound port only when a started server stops.
                    await server.start()
                await server.stop(0)
        with contextlib.suppress(Exception):
            await self.core.stop()
        with contextlib.suppress(Exception):
            await self.telemetry.stop()
        if self._anchors is not None:
            with contextlib.suppress(Exception):
                await self._anchors.abort()
        self._server = self._starting = None
        self.journal.close()

    async def _start(self) -> int:
        if self._anchors is not None:
            # First: an unwritable anchor path is a config mistake, found before binding.
            await self._anchors.start()
        await self.telemetry.start(self.core)
        limits = self.config.server
        # Outermost first: a caller without a valid token is refused before anything else,
        # a call over the stream cap before any parsing.
        interceptors: list[grpc.aio.ServerInterceptor] = [
            StreamLimitInterceptor(limits.max_streams),
            RequestDecodingInterceptor(),
        ]
        auth = self.config.auth
        if auth is not None:
            interceptors.insert(0, AuthInterceptor(auth, self.core, self.clock))
        # Outermost: its span covers every refusal too.
        interceptors.insert(0, self.telemetry.interceptor)
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.keepalive_time_ms", _ms(limits.keepalive_time_s)),
                ("grpc.keepalive_timeout_ms", _ms(limits.keepalive_timeout_s)),
                # Since gRPC 1.60 this, not keepalive_timeout_ms, is how long a ping may go
                # unanswered (default 60 s).
                ("grpc.http2.ping_timeout_ms", _ms(limits.keepalive_timeout_s)),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.max_concurrent_streams", limits.max_streams_per_connection),
                ("grpc.max_allowed_incoming_connections", limits.max_connections),
                ("grpc.server_handshake_timeout_ms", _ms(limits.handshake_timeout_s)),
                ("grpc.max_send_message_length", limits.max_send_message_bytes),
                ("grpc.max_receive_message_length", limits.max_receive_message_bytes),
                # grpcio sets SO_REUSEPORT by default, so a second gateway on this port
                # would start and take half the orders with its own order ids.
                ("grpc.so_reuseport", 0),
            ],
            # grpc.aio answers RESOURCE_EXHAUSTED itself once this many calls are running.
            maximum_concurrent_rpcs=limits.max_concurrent_rpcs,
        )
        gateway_pb2_grpc.add_ExecutionGatewayServicer_to_server(
            ExecutionGatewayServicer(
                self.core,
                self.instruments,
                lambda: Journal(Path(self.config.journal.path), read_only=True, chain=self.chain),
                require_client_order_id=self.config.execution.require_client_order_id,
            ),
            server,
        )
        market_data_pb2_grpc.add_MarketDataServicer_to_server(
            MarketDataServicer(
                self.core,
                self.clock,
                self.instruments,
                takes_quotes=self.config.market_data.source != "synthetic",
            ),
            server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        # Both reflection versions, each listing both: tools ask for v1 first.
        reflected = (
            *SERVICE_NAMES,
            health.SERVICE_NAME,
            reflection.SERVICE_NAME,
            reflection_v1.SERVICE_NAME,
        )
        reflection.enable_server_reflection(reflected, server)
        reflection_v1.enable_v1(server, reflected)
        self._starting = server
        # Health and reflection share the port, and so its TLS.
        credentials = None if self.tls is None else self.tls.server_credentials()
        self.port = bind(server, self.config.listen, credentials)
        self._bound = True
        self._log_auth()
        address = f"{self.config.listen.rpartition(':')[0]}:{self.port}"
        if self.insecure_gaps is not None:
            log.warning(insecure_warning(address, self.insecure_gaps))
        self.journal.record_listen_address(address)
        self.core.start(tick_interval_s=self.config.trading_day.tick_interval_s)
        await self.telemetry.started(self.core)
        await server.start()
        self._server = server
        if self.config.market_data.source == "synthetic":
            feed_config = self.config.market_data.synthetic
            # A restart continues the walk from the journaled marks, not from the seed
            # prices: the price band would refuse a jump back, and positions would show
            # a gain or loss that never happened.
            marks = self.core.durable_marks()
            start = {
                symbol: float(marks[symbol]) if symbol in marks else price
                for symbol, price in feed_config.symbols.items()
            }
            feed = SyntheticFeed(
                start_prices=start,
                instruments=self.instruments,
                clock=self.clock,
                seed=feed_config.seed,
                volatility_bps=feed_config.volatility_bps,
            )
            self._feed_task = asyncio.create_task(
                feed.run(self.core.apply_quotes, feed_config.interval_ms / 1000), name="feed"
            )
        await self._set_serving(self.core.healthy)
        return self.port

    def _log_auth(self) -> None:
        auth = self.config.auth
        if auth is None:
            log.warning(
                "authentication is OFF (the config has no auth section): any process that "
                "can reach port %d may trade as any strategy, cancel, halt, resume and "
                "publish quotes",
                self.port,
            )
        else:
            log.info(
                "authentication is on: %d tokens (%s)",
                len(auth.tokens),
                ", ".join(f"{t.name} ({t.role})" for t in auth.tokens),
            )

    async def _set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    def _health_changed(self, healthy: bool) -> None:
        if self._server is not None and not self._stopping:
            task = asyncio.ensure_future(self._set_serving(healthy))
            self._health_tasks.add(task)
            task.add_done_callback(self._health_tasks.discard)

    async def stop(self, grace: float | None = None) -> None:
        """Drain: report NOT_SERVING, let in-flight RPCs finish, then stop the core."""
        self._stopping = True
        await self.health.enter_graceful_shutdown()
        if self._feed_task is not None:
            self._feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed_task
        if self._server is not None:
            # Streams end when the bus closes; unary calls get the grace period.
            stopping = asyncio.create_task(
                self._server.stop(self.config.server.shutdown_grace_s if grace is None else grace)
            )
            await self.core.stop()
            await stopping
        else:
            await self.core.stop()
        await self.telemetry.stop()
        if self._anchors is not None:
            await self._anchors.stop()
        self.journal.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve(config: GatewayConfig) -> None:
    gateway = Gateway(config)
    port = await gateway.start()
    host = config.listen.rpartition(":")[0]
    transport = "off" if gateway.tls is None else "mtls" if gateway.tls.mutual else "on"
    log.info("execgw serving on %s:%d (mode=%s, tls=%s)", host, port, config.mode, transport)
    insecure = "" if gateway.insecure_gaps is None else " INSECURE"
    print(
        f"execgw listening on {host}:{port} mode={config.mode} tls={transport}{insecure}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await gateway.stop()
    print("execgw stopped", flush=True)
