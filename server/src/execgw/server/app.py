"""Assembles a gateway from its config and runs it as a grpc.aio server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from execgw.server.anchors import HeadAnchorRecorder
from execgw.server.api import reflection_v1
from execgw.server.api.auth import AuthInterceptor
from execgw.server.api.execution import ExecutionGatewayServicer
from execgw.server.api.health import HealthServicer
from execgw.server.api.market_data import MarketDataServicer
from execgw.server.api.request_decoding import RequestDecodingInterceptor
from execgw.server.api.stream_limit import StreamLimitInterceptor
from execgw.server.bus import EventBus
from execgw.server.chain import chain_from_env
from execgw.server.clock import Clock, SystemClock
from execgw.server.config import ConfigError, GatewayConfig
from execgw.server.core import CoreSettings, GatewayCore
from execgw.server.domain import Order
from execgw.server.heap import freeze_long_lived
from execgw.server.instruments import InstrumentRegistry, load_kite_instruments
from execgw.server.journal import Journal, JournalRecord
from execgw.server.listen import bind, check_bindable
from execgw.server.marketdata import SyntheticFeed
from execgw.server.marketdata.kite_feed import KiteTickerFeed, Sleep
from execgw.server.marketdata.kite_setup import KiteSetup, prepare_kite
from execgw.server.quotes import quote_book
from execgw.server.risk import RiskEngine
from execgw.server.telemetry.gateway import GatewayTelemetry
from execgw.server.trading_calendar import TradingCalendar
from execgw.server.transport import TlsMaterial, check_exposure, insecure_warning, load_tls
from execgw.server.venues.factory import build_venue
from execgw.server.venues.factory import describe as describe_venue
from execgw.server.venues.factory import venue_name as build_venue_name
from execgw.server.venues.kite.credentials import KiteCredentials, MissingCredentials
from execgw.server.venues.kite.postback import PostbackServer
from execgw.v1 import gateway_pb2, gateway_pb2_grpc, market_data_pb2, market_data_pb2_grpc

if TYPE_CHECKING:
    from execgw.server.venues.kite.link import KiteLink

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    gateway_pb2.DESCRIPTOR.services_by_name["ExecutionGateway"].full_name,
    market_data_pb2.DESCRIPTOR.services_by_name["MarketData"].full_name,
)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


# How often the market-data health entries are brought up to date (wall time).
QUOTE_HEALTH_INTERVAL_S = 0.25


def build_instruments(config: GatewayConfig, kite: KiteSetup | None = None) -> InstrumentRegistry:
    section = config.instruments
    if section.csv:
        loaded = load_kite_instruments(Path(section.csv))
    else:
        # With the Kite ticker and no CSV, the dump fetched for its tokens has the ticks.
        loaded = [] if kite is None else kite.directory.tradable_instruments()
    return InstrumentRegistry(
        loaded,
        default_tick=Decimal(repr(section.default_tick_size)),
        default_lot=section.default_lot_size,
        freeze_qty=section.freeze_qty,
    )


class Gateway:
    """One running gateway: core, feed and gRPC server, started and stopped together."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock: Clock | None = None,
        ticker_sleep: Sleep | None = None,
    ) -> None:
        """`ticker_sleep`: how the Kite ticker waits between reconnects (tests inject it)."""
        # Before anything is opened: live mode without credentials is a config mistake
        # (a dry run needs none: it never reaches the broker).
        self.credentials = _live_credentials(config)
        # Before anything is opened: exposure and TLS files are config mistakes.
        # What server.insecure let a non-loopback address go without, if anything.
        self.insecure_gaps = check_exposure(config)
        self.tls: TlsMaterial | None = (
            None if config.server.tls is None else load_tls(config.server.tls)
        )
        self.config = config
        self.clock = clock or SystemClock()
        self.kite = (
            prepare_kite(config, self.clock) if config.market_data.source == "kite" else None
        )
        self.kite_feed: KiteTickerFeed | None = None
        self._ticker_sleep = ticker_sleep or asyncio.sleep
        self.telemetry = GatewayTelemetry(config)
        self.instruments = build_instruments(config, self.kite)
        self.health = HealthServicer()
        self.chain = chain_from_env(config.journal.hmac_key_env)
        self.journal = Journal(Path(config.journal.path), chain=self.chain)
        try:
            # Before recovery, which can take a while on a long journal; after the journal
            # lock, so a second start of the same config names the process that runs it.
            check_bindable(config.listen)
            self.core = GatewayCore(
                clock=self.clock,
                journal=self.journal,
                quotes=quote_book(config.market_data, self.instruments, self.clock),
                venue=build_venue(config, self.instruments),
                risk=RiskEngine(config.execution, TradingCalendar(config.trading_day)),
                bus=EventBus(queue_size=config.stream.queue_size),
                settings=CoreSettings(
                    max_batch=config.journal.max_batch,
                    snapshot_every=config.journal.snapshot_every,
                    probe_interval_s=config.journal.probe_interval_s,
                    retain_events=config.journal.retain_events,
                    record_quotes=config.journal.record_quotes,
                ),
                on_health=self._health_changed,
                on_committed=self._committed,
            )
            # Live only: the broker's I/O, fed by the core's committed records.
            self.link: KiteLink | None = None
            self._postbacks: PostbackServer | None = None
            _check_open_orders_venue(self.core.open_orders(), config)
            if self.credentials is not None:
                self.link, self._postbacks = self._build_link(self.credentials)
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
        self._quote_health_task: asyncio.Task[None] | None = None
        self._health_tasks: set[asyncio.Future[None]] = set()
        self._stopping = False
        # Why the broker cannot take orders (an expired access token); None: it can.
        self.broker_problem: str | None = None
        self.port = 0

    def _build_link(self, credentials: KiteCredentials) -> tuple[KiteLink, PostbackServer | None]:
        # Imported only for a live broker: the kiteconnect package loads its ticker,
        # which imports Twisted and installs its reactor (~0.2 s of every start).
        from kiteconnect import KiteConnect

        from execgw.server.venues.kite.link import KiteLink

        settings = self.config.broker.kite
        kite = KiteConnect(
            credentials.api_key,
            access_token=credentials.access_token,
            root=settings.root,
            timeout=settings.timeout_s,
            pool={"pool_connections": 2, "pool_maxsize": settings.max_in_flight},
        )
        link = KiteLink(
            kite=kite,
            settings=settings,
            report=self.core.apply_venue_reports,
            clock=self.clock,
            today=lambda: self.core.trading_day_of(self.clock.now()),
            on_session_lost=self._broker_session_lost,
        )
        postbacks = None
        if settings.postback_listen is not None:
            postbacks = PostbackServer(
                listen=settings.postback_listen,
                api_secret=credentials.api_secret,
                handler=link.on_postback,
            )
        return link, postbacks

    def _committed(self, records: Sequence[JournalRecord]) -> None:
        if self.link is not None:
            self.link.committed(records)

    def _broker_session_lost(self, message: str) -> None:
        self.broker_problem = (
            "the broker refused the access token: a new one is needed (run `execgw kite "
            "session --request-token ...`, export KITE_ACCESS_TOKEN, restart); nothing was sent"
        )
        log.error("%s (%s)", self.broker_problem, message)
        self._health_changed(self.core.healthy)

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
        for task in (self._feed_task, self._quote_health_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        server = self._starting
        if server is not None:
            with contextlib.suppress(Exception):
                if self._server is None and self._bound:
                    # grpc.aio lets go of a bound port only when a started server stops.
                    await server.start()
                await server.stop(0)
        for part in (self._postbacks, self.link):
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.stop()
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
                venue_unavailable=lambda: self.broker_problem,
                venue_ack_wait_s=self.config.broker.kite.ack_wait_s,
            ),
            server,
        )
        market_data_pb2_grpc.add_MarketDataServicer_to_server(
            MarketDataServicer(
                self.core,
                self.clock,
                self.instruments,
                source=self.config.market_data.source,
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
        # Taken before the core runs, so it is exactly what the journal holds.
        open_orders = self.core.open_orders()
        self.core.start(tick_interval_s=self.config.trading_day.tick_interval_s)
        await self.telemetry.started(self.core)
        if self._postbacks is not None:
            await self._postbacks.start()
        if self.link is not None:
            # Reconcile with the broker before taking orders.
            await self.link.start(open_orders)
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
        elif self.kite is not None:
            self._start_kite_feed(self.kite)
        await self._set_serving(self.core.healthy)
        if self.config.market_data.effective_stale_after_s() is not None:
            self._quote_health_task = asyncio.create_task(
                self._report_quote_health(), name="quote-health"
            )
        return self.port

    @property
    def postback_port(self) -> int | None:
        return None if self._postbacks is None else self._postbacks.port

    def _start_kite_feed(self, kite: KiteSetup) -> None:
        symbols = self.config.market_data.kite.symbols
        self.kite_feed = KiteTickerFeed(
            config=self.config.market_data.kite,
            credentials=kite.credentials,
            directory=kite.directory,
            # The configured symbols, and every one with an open position or resting order.
            wanted=lambda: (*symbols, *self.core.exposure_symbols()),
            publish=self.core.apply_quotes,
            clock=self.clock,
            sleep=self._ticker_sleep,
        )
        self._feed_task = asyncio.create_task(self.kite_feed.run(), name="feed")

    async def _report_quote_health(self) -> None:
        """Keep the market-data health entries (api/health.py) up to date."""
        while True:
            try:
                watched, stale = self.core.quote_freshness()
                feed_up = self.kite_feed is None or self.kite_feed.connected
                await self.health.report_market_data(feed_up=feed_up, watched=watched, stale=stale)
            except Exception:  # health reporting must outlive any one failure
                log.exception("market-data health could not be updated")
            await asyncio.sleep(QUOTE_HEALTH_INTERVAL_S)

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
        serving = serving and self.broker_problem is None
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
        for task in (self._quote_health_task, self._feed_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.health.enter_graceful_shutdown()
        if self._postbacks is not None:
            await self._postbacks.stop()
        if self._server is not None:
            # Streams end when the bus closes; unary calls get the grace period.
            stopping = asyncio.create_task(
                self._server.stop(self.config.server.shutdown_grace_s if grace is None else grace)
            )
            await self.core.stop()
            await stopping
        else:
            await self.core.stop()
        # Last: orders the core committed while draining still go out (their answers,
        # which the stopped core cannot take, are found by tag at the next start).
        if self.link is not None:
            await self.link.stop()
        await self.telemetry.stop()
        if self._anchors is not None:
            await self._anchors.stop()
        self.journal.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


def _check_open_orders_venue(open_orders: list[Order], config: GatewayConfig) -> None:
    """Open orders belong to the venue that took them: a restart on another venue (paper
    to live, live to dry run) would cancel or fill them where they are not, and no one
    would follow them where they are."""
    venue = build_venue_name(config)
    foreign = sorted({o.venue or "paper" for o in open_orders if (o.venue or "paper") != venue})
    if foreign:
        count = sum(1 for o in open_orders if (o.venue or "paper") != venue)
        raise ConfigError(
            f"the journal has {count} open orders at venue {', '.join(foreign)}, but this "
            f"config routes to {venue}: restart with the config that placed them until they "
            "are closed (cancel them there), or start on a new journal"
        )


def _live_credentials(config: GatewayConfig) -> KiteCredentials | None:
    """The broker credentials live mode needs; None for paper and dry runs, which never
    call the broker and so never read them."""
    if config.mode != "live" or config.execution.dry_run:
        return None
    try:
        return KiteCredentials.from_env(need_secret=config.broker.kite.postback_listen is not None)
    except MissingCredentials as e:
        raise ConfigError(str(e)) from None


async def serve(config: GatewayConfig) -> None:
    gateway = Gateway(config)  # recovers the day from the journal
    # Recovered, not yet taking calls: the day's heap leaves the full collections' walks
    # (heap.py), and the one full collection this takes delays no call.
    freeze_long_lived()
    # Before anything can report the gateway up (health, the line below): a SIGTERM sent
    # as soon as it is seen up must drain the gateway, not kill it. While it starts, a
    # signal aborts the start (which releases what it took), as Ctrl-C always did.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    starting = asyncio.current_task()

    def on_signal() -> None:
        # Once: a second signal must not cut short the cleanup the first one started.
        if starting is not None and not started and not stop.is_set():
            starting.cancel()
        stop.set()

    started = False
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        port = await gateway.start()
    except asyncio.CancelledError:
        if not stop.is_set():
            raise
        log.info("stopped while starting")
        _say("execgw stopped")
        return
    started = True
    host = config.listen.rpartition(":")[0]
    transport = "off" if gateway.tls is None else "mtls" if gateway.tls.mutual else "on"
    venue = describe_venue(config)
    log.info(
        "execgw serving on %s:%d (mode=%s, venue=%s, tls=%s)",
        host,
        port,
        config.mode,
        venue,
        transport,
    )
    insecure = "" if gateway.insecure_gaps is None else " INSECURE"
    dry = " dry_run=true" if config.mode == "live" and config.execution.dry_run else ""
    _say(f"execgw listening on {host}:{port} mode={config.mode}{dry} tls={transport}{insecure}")
    await stop.wait()
    log.info("shutting down")
    await gateway.stop()
    _say("execgw stopped")


def _say(line: str) -> None:
    """A line on stdout for whoever started the gateway. A reader that went away (`serve |
    head -1`) is no failure of the gateway: stdout goes to /dev/null from then on."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
