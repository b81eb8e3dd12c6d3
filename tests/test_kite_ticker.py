"""market_data.source: kite, through a real gateway reading the local ticker stand-in.

Waiting is polling with a deadline; the reconnect backoff's sleeps are injected and
recorded, so no test waits for a backoff to pass on the wall clock.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from execgw.client import ExecutionClient, FailedPrecondition, exact, limit, market
from execgw.server.app import Gateway
from execgw.server.clock import ManualClock
from execgw.server.config import ConfigError, GatewayConfig
from execgw.v1 import orders_pb2

if TYPE_CHECKING:
    from tests.conftest import FIXTURES, RunningGateway, make_config
    from tests.e2e_helpers import TIMEOUT_S, quote
    from tests.kite_ticker_standin import (
        INFY_TOKEN,
        SENSEX_TOKEN,
        TCS_TOKEN,
        USDINR_CDS_TOKEN,
        KiteTickerStandIn,
        Level,
        malformed_frame,
        tick_from_fixture,
    )
else:
    from conftest import FIXTURES, RunningGateway, make_config
    from e2e_helpers import TIMEOUT_S, quote
    from kite_ticker_standin import (
        INFY_TOKEN,
        SENSEX_TOKEN,
        TCS_TOKEN,
        USDINR_CDS_TOKEN,
        KiteTickerStandIn,
        Level,
        malformed_frame,
        tick_from_fixture,
    )

D = Decimal
T = TypeVar("T")
INFY = "NSE:INFY"
TCS = "NSE:TCS"
SENSEX = "BSE:SENSEX"
USDINR = "CDS:USDINR26DECFUT"
API_KEY = "kitekey7x2q9"
ACCESS_TOKEN = "kiteaccess5m8r3w1z"
FEED_ENTRY = "execgw.market_data"

EXTRA_ROWS = [
    f"{INFY_TOKEN},1594,INFY,INFOSYS,0.0,,0.0,0.05,1,EQ,NSE,NSE",
    f"{TCS_TOKEN},11536,TCS,TATA CONSULTANCY SERV LT,0.0,,0.0,0.05,1,EQ,NSE,NSE",
    f"{SENSEX_TOKEN},1,SENSEX,SENSEX,0.0,,0.0,0.0,0,EQ,INDICES,BSE",
    f"{USDINR_CDS_TOKEN},1612,USDINR26DECFUT,USDINR,0.0,2026-12-29,0.0,0.0025,1,FUT,CDS-FUT,CDS",
]


def write_instruments(directory: Path) -> Path:
    """The published NSE sample dump plus the rows these tests trade (not in the sample)."""
    path = directory / "instruments.csv"
    shutil.copy(FIXTURES / "instruments_nse.csv", path)
    with path.open("a", encoding="utf-8") as f:
        f.write("\n".join(EXTRA_ROWS) + "\n")
    return path


class Sleeps:
    """The feed's backoff sleep: records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


class KiteGateway(RunningGateway):
    def __init__(self, config: GatewayConfig, clock: ManualClock, sleeps: Sleeps) -> None:
        self.sleeps = sleeps
        super().__init__(config, clock)

    async def _build(self) -> Gateway:
        return Gateway(self.config, clock=self.clock, ticker_sleep=self.sleeps)

    def stop(self) -> None:
        """Idempotent: a test may stop one early, the fixture stops every one at the end."""
        if not getattr(self, "stopped", False):
            self.stopped = True
            super().stop()


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KITE_API_KEY", API_KEY)
    monkeypatch.setenv("KITE_ACCESS_TOKEN", ACCESS_TOKEN)


@pytest.fixture
def standin() -> Iterator[KiteTickerStandIn]:
    server = KiteTickerStandIn(api_key=API_KEY, access_token=ACCESS_TOKEN)
    try:
        yield server
    finally:
        server.stop()


def kite_config(
    tmp_path: Path, standin: KiteTickerStandIn, symbols: list[str], **kite: Any
) -> GatewayConfig:
    return make_config(
        tmp_path,
        market_data={
            "source": "kite",
            "kite": {"ws_root": standin.url, "symbols": symbols, **kite},
        },
        instruments={"csv": str(write_instruments(tmp_path))},
    )


@pytest.fixture
def start(
    tmp_path: Path, clock: ManualClock, standin: KiteTickerStandIn
) -> Iterator[Callable[..., KiteGateway]]:
    started: list[KiteGateway] = []

    def run(symbols: list[str], **kite: Any) -> KiteGateway:
        gateway = KiteGateway(kite_config(tmp_path, standin, symbols, **kite), clock, Sleeps())
        started.append(gateway)
        return gateway

    yield run
    for gateway in started:
        gateway.stop()


def poll(what: str, read: Callable[[], T], done: Callable[[T], bool]) -> T:
    """Read until `done` holds; fail naming `what` after TIMEOUT_S."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {value!r}")
        time.sleep(0.005)


def quote_of(client: ExecutionClient, symbol: str) -> Any:
    try:
        return client.get_quote(symbol)
    except Exception:
        return None


def wait_ltp(client: ExecutionClient, symbol: str, ltp: str) -> Any:
    return poll(
        f"{symbol} at {ltp}",
        lambda: quote_of(client, symbol),
        lambda q: q is not None and exact(q.ltp_decimal) == D(ltp),
    )


def health_list(target: str) -> dict[str, int]:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=5)
        return {name: status.status for name, status in reply.statuses.items()}


# -- prices ---------------------------------------------------------------------


def test_known_packets_give_exact_quotes(
    start: Callable[..., KiteGateway], standin: KiteTickerStandIn
) -> None:
    gw = start([INFY, SENSEX, USDINR])
    standin.wait_subscribed([INFY_TOKEN, SENSEX_TOKEN, USDINR_CDS_TOKEN], connection=1)
    usdinr = tick_from_fixture(
        "full",
        token=USDINR_CDS_TOKEN,
        last_price=D("84.1225"),
        average_price=D("84.1"),
        open=D("84"),
        high=D("84.2"),
        low=D("83.9"),
        close=D("84.05"),
        buy=(Level(D("84.1200"), 300, 3),),
        sell=(Level(D("84.1250"), 125, 2),),
    )
    sensex = tick_from_fixture(
        "full", token=SENSEX_TOKEN, last_price=D("81234.56"), buy=(), sell=()
    )
    assert standin.send(tick_from_fixture("full"), sensex, usdinr) == 3
    with ExecutionClient(gw.target, timeout=TIMEOUT_S) as client:
        infy = wait_ltp(client, INFY, "1573.7")
        assert (exact(infy.bid_decimal), infy.bid_qty) == (D("1573.4"), 5)
        assert (exact(infy.ask_decimal), infy.ask_qty) == (D("1573.7"), 172)
        assert infy.volume == 1192471
        assert infy.timestamp.ToJsonString() == "2021-07-05T05:11:27Z"  # the exchange's time
        index = wait_ltp(client, SENSEX, "81234.56")
        assert (index.bid, index.ask, index.volume) == (0, 0, 0)
        fx = wait_ltp(client, USDINR, "84.1225")  # CDS: units of 1e-7 rupee
        assert (exact(fx.bid_decimal), exact(fx.ask_decimal)) == (D("84.12"), D("84.125"))
        # The gateway makes its own quotes: a publisher cannot move them.
        with pytest.raises(FailedPrecondition, match=r"market_data\.source is kite"):
            client.publish_quotes([quote(INFY, 1600.0)])


def test_a_resting_limit_is_filled_by_a_streamed_tick(
    start: Callable[..., KiteGateway], standin: KiteTickerStandIn
) -> None:
    gw = start([INFY])
    standin.wait_subscribed([INFY_TOKEN], connection=1)
    standin.send(tick_from_fixture("full"))
    with ExecutionClient(gw.target, timeout=TIMEOUT_S) as client:
        wait_ltp(client, INFY, "1573.7")
        order = client.submit(limit(INFY, "BUY", 10, D("1570.05"), strategy_code="kt"))
        assert order.status == orders_pb2.ORDER_STATUS_PLACED
        standin.send(tick_from_fixture("full", last_price=D("1571.00")))
        wait_ltp(client, INFY, "1571.00")
        assert client.get_order(order.order_id).status == orders_pb2.ORDER_STATUS_PLACED
        standin.send(tick_from_fixture("full", last_price=D("1569.95")))
        filled = poll(
            "the limit to fill",
            lambda: client.get_order(order.order_id),
            lambda o: o.status == orders_pb2.ORDER_STATUS_FILLED,
        )
        assert (filled.filled_qty, exact(filled.avg_price_decimal)) == (10, D("1570.05"))
        (position,) = client.positions("kt")
        assert exact(position.last_price_decimal) == D("1569.95")


# -- staleness ------------------------------------------------------------------


def test_a_stale_quote_rejects_orders_and_is_reported(
    start: Callable[..., KiteGateway], standin: KiteTickerStandIn, clock: ManualClock
) -> None:
    gw = start([INFY, TCS])  # stale_after_s defaults to 5 s with source kite
    standin.wait_subscribed([INFY_TOKEN, TCS_TOKEN], connection=1)
    standin.send(tick_from_fixture("full"), tick_from_fixture("full", token=TCS_TOKEN))
    with ExecutionClient(gw.target, timeout=TIMEOUT_S) as client:
        wait_ltp(client, INFY, "1573.7")
        wait_ltp(client, TCS, "1573.7")
        assert client.risk_state().stale_symbols == []
        clock.advance(timedelta(seconds=4))
        standin.send(tick_from_fixture("full", token=TCS_TOKEN, last_price=D("1574.00")))
        wait_ltp(client, TCS, "1574.00")
        clock.advance(timedelta(seconds=1.5))  # INFY 5.5 s without a tick, TCS 1.5 s

        for intent in (
            market(INFY, "BUY", 1, strategy_code="kt"),
            limit(INFY, "BUY", 1, D("1570"), strategy_code="kt"),
        ):
            rejected = client.submit(intent)
            assert rejected.status == orders_pb2.ORDER_STATUS_REJECTED
            assert rejected.reject_reason == orders_pb2.REJECT_REASON_STALE_QUOTE
            assert rejected.message == (
                "the quote of NSE:INFY is stale: no tick for 5.5s (market_data.stale_after_s 5)"
            )
        assert client.submit(market(TCS, "BUY", 1, strategy_code="kt")).status == (
            orders_pb2.ORDER_STATUS_FILLED
        )
        assert list(client.risk_state().stale_symbols) == [INFY]
        statuses = poll(
            "health to report NSE:INFY stale",
            lambda: health_list(gw.target),
            lambda s: s.get(f"{FEED_ENTRY}/{INFY}") == health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        assert statuses[f"{FEED_ENTRY}/{TCS}"] == health_pb2.HealthCheckResponse.SERVING
        assert statuses[FEED_ENTRY] == health_pb2.HealthCheckResponse.NOT_SERVING
        # A stale symbol does not take the gateway out of service.
        assert statuses[""] == health_pb2.HealthCheckResponse.SERVING

        standin.send(tick_from_fixture("full", last_price=D("1573.00")))
        wait_ltp(client, INFY, "1573.00")
        assert client.submit(market(INFY, "BUY", 1, strategy_code="kt")).status == (
            orders_pb2.ORDER_STATUS_FILLED
        )
        assert client.risk_state().stale_symbols == []
        poll(
            "health to report the feed fresh",
            lambda: health_list(gw.target),
            lambda s: s.get(FEED_ENTRY) == health_pb2.HealthCheckResponse.SERVING,
        )


def test_an_external_source_has_staleness_only_when_configured(
    tmp_path: Path, clock: ManualClock
) -> None:
    for stale_after, expected in ((None, orders_pb2.ORDER_STATUS_FILLED), (2.0, None)):
        folder = tmp_path / f"stale-{stale_after}"
        folder.mkdir()
        gw = RunningGateway(make_config(folder, market_data={"stale_after_s": stale_after}), clock)
        try:
            with ExecutionClient(gw.target, timeout=TIMEOUT_S) as client:
                client.publish_quotes([quote(INFY, 1500.0)])
                clock.advance(timedelta(seconds=3))
                result = client.submit(market(INFY, "BUY", 1, strategy_code="ext"))
                if expected is None:
                    assert result.reject_reason == orders_pb2.REJECT_REASON_STALE_QUOTE
                    # No feed symbols: a symbol is watched once it is held.
                    assert client.risk_state().stale_symbols == []
                else:
                    assert result.status == expected
                    assert client.risk_state().stale_symbols == []
        finally:
            gw.stop()


# -- resilience -------------------------------------------------------------------


def test_reconnects_with_capped_backoff_and_resubscribes(
    start: Callable[..., KiteGateway],
    standin: KiteTickerStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    gw = start([INFY, TCS], reconnect_initial_s=0.5, reconnect_max_s=2.0)
    standin.wait_subscribed([INFY_TOKEN, TCS_TOKEN], connection=1)
    standin.send(tick_from_fixture("full"))
    with ExecutionClient(gw.target, timeout=TIMEOUT_S) as client:
        wait_ltp(client, INFY, "1573.7")
        standin.refuse_next(4)
        standin.drop()
        # Four refused handshakes, then the fifth attempt connects and resubscribes.
        standin.wait_subscribed([INFY_TOKEN, TCS_TOKEN], connection=2)
        assert standin.refused == 4
        # The first connection delivered a frame, so the backoff started over.
        assert gw.sleeps.delays == [0.5, 1.0, 2.0, 2.0, 2.0]
        assert standin.connections[1].messages == [
            {"a": "subscribe", "v": [INFY_TOKEN, TCS_TOKEN]},
            {"a": "mode", "v": ["full", [INFY_TOKEN, TCS_TOKEN]]},
        ]
        standin.send(tick_from_fixture("full", last_price=D("1580.25")))
        wait_ltp(client, INFY, "1580.25")
    # Everything the gateway logged (the stand-in's own server logs the request line).
    text = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith("websockets.server")
    )
    assert "Kite ticker connection lost" in text
    assert "HTTP 503" in text
    assert API_KEY not in text
    assert ACCESS_TOKEN not in text


def test_a_silent_connection_is_dropped_and_reopened(
    start: Callable[..., KiteGateway], standin: KiteTickerStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    gw = start([INFY], silence_timeout_s=0.2)
    standin.wait_subscribed([INFY_TOKEN], connection=1)
    standin.send(tick_from_fixture("ltp"))
    standin.go_silent()
    standin.wait_subscribed([INFY_TOKEN], connection=2)
    standin.send(tick_from_fixture("ltp", last_price=D("1574.35")))
    with ExecutionClient(gw.target, timeout=TIMEOUT_S) as client:
        wait_ltp(client, INFY, "1574.35")
    assert "nothing received for 0.2s" in caplog.text


def test_a_malformed_frame_is_logged_and_skipped(
    start: Callable[..., KiteGateway], standin: KiteTickerStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    gw = start([INFY])
    standin.wait_subscribed([INFY_TOKEN], connection=1)
    standin.send(tick_from_fixture("full"))
    standin.send_raw(malformed_frame())
    standin.send(tick_from_fixture("full", last_price=D("1575.55")))
    with ExecutionClient(gw.target, timeout=TIMEOUT_S) as client:
        wait_ltp(client, INFY, "1575.55")
    feed = gw.gateway.kite_feed
    assert feed is not None
    assert (feed.stats.malformed_frames, feed.stats.connections) == (1, 1)
    assert "malformed frame skipped (1 so far): packet 1 of 2 declares 44 bytes" in caplog.text


# -- subscription -----------------------------------------------------------------


def test_open_positions_are_streamed_beyond_the_configured_symbols(
    start: Callable[..., KiteGateway], standin: KiteTickerStandIn, clock: ManualClock
) -> None:
    first = start([INFY, TCS])
    standin.wait_subscribed([INFY_TOKEN, TCS_TOKEN], connection=1)
    standin.send(tick_from_fixture("full", token=TCS_TOKEN))
    with ExecutionClient(first.target, timeout=TIMEOUT_S) as client:
        wait_ltp(client, TCS, "1573.7")
        bought = client.submit(market(TCS, "BUY", 5, strategy_code="kt"))
        assert bought.status == orders_pb2.ORDER_STATUS_FILLED
    first.stop()

    second = start([INFY])  # TCS is no longer configured, but it is held
    standin.wait_subscribed([INFY_TOKEN, TCS_TOKEN], connection=2)
    standin.send(tick_from_fixture("full", token=TCS_TOKEN, last_price=D("1580.00")))
    with ExecutionClient(second.target, timeout=TIMEOUT_S) as client:
        wait_ltp(client, TCS, "1580.00")
        clock.advance(timedelta(seconds=6))
        assert list(client.risk_state().stale_symbols) == [INFY, TCS]


def test_a_configured_symbol_without_a_token_stops_start_up(
    tmp_path: Path, standin: KiteTickerStandIn, clock: ManualClock
) -> None:
    config = kite_config(tmp_path, standin, [INFY, "NSE:NOSUCHCO", "NFO:GONE26JANFUT"])
    with pytest.raises(
        ConfigError, match=r"no instrument token for NSE:NOSUCHCO, NFO:GONE26JANFUT"
    ):
        Gateway(config, clock=clock)


def test_missing_credentials_stop_start_up(
    tmp_path: Path, standin: KiteTickerStandIn, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KITE_ACCESS_TOKEN")
    with pytest.raises(ConfigError, match="needs KITE_ACCESS_TOKEN in the environment"):
        Gateway(kite_config(tmp_path, standin, [INFY]), clock=clock)
