"""Instrument tokens for the Kite ticker from the SDK's `instruments()`: fetched from
broker.kite.root once per trading day and cached beside the journal."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from execgw.client import ExecutionClient
from execgw.server.app import Gateway
from execgw.server.clock import ManualClock
from execgw.server.config import GatewayConfig
from execgw.server.marketdata.kite_instruments import InstrumentsUnavailable

if TYPE_CHECKING:
    from tests.conftest import FIXTURES, RunningGateway, make_config
    from tests.e2e_helpers import TIMEOUT_S
    from tests.kite_ticker_standin import INFY_TOKEN, KiteTickerStandIn, tick_from_fixture
    from tests.test_kite_ticker import ACCESS_TOKEN, API_KEY, EXTRA_ROWS, wait_ltp
else:
    from conftest import FIXTURES, RunningGateway, make_config
    from e2e_helpers import TIMEOUT_S
    from kite_ticker_standin import INFY_TOKEN, KiteTickerStandIn, tick_from_fixture
    from test_kite_ticker import ACCESS_TOKEN, API_KEY, EXTRA_ROWS, wait_ltp

INFY = "NSE:INFY"
# A 0.01-tick ETF of the published sample: its tick must come from the fetched dump.
BANKBEES = "NSE:SETFNN50-BL"
DUMP = (FIXTURES / "instruments_nse.csv").read_text(encoding="utf-8").rstrip("\n") + "\n"
DUMP += "\n".join(EXTRA_ROWS) + "\n"


class KiteRest:
    """Kite's REST root, as much of it as `instruments()` needs."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.refuse = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append({"path": self.path, **dict(self.headers)})
                if owner.refuse:
                    body = b'{"status":"error","message":"Incorrect api_key or access_token.",'
                    body += b'"error_type":"TokenException"}'
                    self._reply(403, "application/json", body)
                elif self.path == "/instruments":
                    self._reply(200, "text/csv", DUMP.encode())
                else:
                    self._reply(404, "application/json", b'{"status":"error"}')

            def _reply(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.root = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def rest() -> Iterator[KiteRest]:
    server = KiteRest()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[KiteTickerStandIn]:
    monkeypatch.setenv("KITE_API_KEY", API_KEY)
    monkeypatch.setenv("KITE_ACCESS_TOKEN", ACCESS_TOKEN)
    server = KiteTickerStandIn(api_key=API_KEY, access_token=ACCESS_TOKEN)
    try:
        yield server
    finally:
        server.stop()


def config(tmp_path: Path, standin: KiteTickerStandIn, rest: KiteRest) -> GatewayConfig:
    return make_config(
        tmp_path,
        market_data={"source": "kite", "kite": {"ws_root": standin.url, "symbols": [INFY]}},
        broker={"kite": {"root": rest.root}},
    )


def test_the_dump_is_fetched_once_per_trading_day_and_gives_ticks_too(
    tmp_path: Path, clock: ManualClock, standin: KiteTickerStandIn, rest: KiteRest
) -> None:
    gw = RunningGateway(config(tmp_path, standin, rest), clock)
    try:
        standin.wait_subscribed([INFY_TOKEN], connection=1)
        standin.send(tick_from_fixture("full"))
        with ExecutionClient(gw.target, timeout=TIMEOUT_S) as client:
            wait_ltp(client, INFY, "1573.7")
        # No instruments.csv: the ticks and lots came from the fetched dump.
        assert gw.gateway.instruments.get(BANKBEES).tick_size == Decimal("0.01")
    finally:
        gw.stop()
    (request,) = rest.requests
    assert request["path"] == "/instruments"
    assert request["Authorization"] == f"token {API_KEY}:{ACCESS_TOKEN}"
    cached = tmp_path / "kite-instruments-2026-11-27.csv"
    assert cached.exists()
    assert ACCESS_TOKEN not in cached.read_text(encoding="utf-8")

    # The same trading day: the cache, no second fetch; the registry has the 0.01 tick.
    again = Gateway(config(tmp_path, standin, rest), clock=clock)
    try:
        assert len(rest.requests) == 1
        assert again.instruments.get(BANKBEES).tick_size == Decimal("0.01")
    finally:
        again.journal.close()

    # The next trading day: fetched again, yesterday's copy removed.
    clock.advance(timedelta(days=1))
    later = Gateway(config(tmp_path, standin, rest), clock=clock)
    later.journal.close()
    assert len(rest.requests) == 2
    assert sorted(p.name for p in tmp_path.glob("kite-instruments-*")) == [
        "kite-instruments-2026-11-28.csv"
    ]


def test_a_refused_fetch_stops_start_up_without_the_credentials(
    tmp_path: Path, clock: ManualClock, standin: KiteTickerStandIn, rest: KiteRest
) -> None:
    rest.refuse = True
    with pytest.raises(InstrumentsUnavailable) as info:
        Gateway(config(tmp_path, standin, rest), clock=clock)
    message = str(info.value)
    assert message.startswith(f"cannot fetch Kite's instrument dump from {rest.root}: ")
    assert "TokenException" in message
    assert API_KEY not in message
    assert ACCESS_TOKEN not in message
