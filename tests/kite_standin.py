"""A local stand-in of Zerodha Kite Connect's REST API (v3) for the real `kiteconnect` SDK.

    with KiteStandIn() as kite_api:
        kite = KiteConnect("standin_key", access_token="standin_token", root=kite_api.url)
        order_id = kite.place_order(variety="regular", exchange="NSE", tradingsymbol="INFY", ...)
        kite_api.fill(order_id, qty=1)

Or by hand (prints its URL, serves until SIGINT/SIGTERM):

    python tests/kite_standin.py --port 8765 [--postback-url URL] [--api-key K
        --access-token T --api-secret S] [--fill-market | --no-fill-market]
        [--market-price NSE:INFY=1500.5 ...] [--no-rate-limits] [--verbose]

It keeps a real order book: it validates orders as Kite does (market_protection, tag
length, tick and lot sizes, ...), enforces the order rate limits, walks orders through
Kite's statuses, records every request, sends postbacks with Kite's checksum, and can be
told to fail in the ways the live API fails (`inject`). Standard library only; the
response bodies follow Zerodha's published mocks (tests/fixtures/kite/).

By hand, the test-side controls are also served as unauthenticated form POSTs under
/_standin/ (fill, reject, status, expire_token, inject, market_price), e.g.
`curl -d order_id=... -d quantity=1 URL/_standin/fill`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import hashlib
import io
import json
import queue
import re
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

FIXTURES = Path(__file__).resolve().parent / "fixtures"
KITE_FIXTURES = FIXTURES / "kite"
IST = timezone(timedelta(hours=5, minutes=30), "IST")

# Faults `inject` knows; each applies to the next order placement (POST /orders/{variety}).
FAULTS = (
    "timeout_after_accept",  # created, then the answer is held `hold_s` seconds
    "drop_after_accept",  # created, then the connection is closed without an answer
    "reject_after_accept",  # created and answered, then REJECTED by the RMS (funds)
    "429",
    "500",
    "503",
    "token",
    "insufficient_funds",
    "input",
)
INSUFFICIENT_FUNDS = (
    "Insufficient funds. Required margin is 95417.84 but available margin is 74251.80. "
    "Check the orderbook for open orders."
)
INSUFFICIENT_FUNDS_RAW = (
    "RMS:Margin Exceeds,Required:95417.84, Available:74251.80 for entity account-XXXXX "
    "across exchange across segment across product "
)
TOKEN_MESSAGE = "Incorrect `api_key` or `access_token`."
ORDER_NOT_FOUND = "Couldn't find that `order_id`."
CANNOT_CANCEL = "Order cannot be cancelled as it is being processed. Try later."
CANNOT_MODIFY = "Order cannot be modified as it is being processed. Try later."
MARKET_PROTECTION_REQUIRED = (
    "Market orders without market protection are not allowed via the API. "
    "Set `market_protection` (-1 or 1 to 100) or place a limit order."
)
_ERROR_FAULTS: dict[str, tuple[int, str, str]] = {
    "429": (429, "NetworkException", "Too many requests"),
    "500": (500, "GeneralException", "Something went wrong. Please try again later."),
    "503": (503, "NetworkException", "Service unavailable. Please try again later."),
    "token": (403, "TokenException", TOKEN_MESSAGE),
    "insufficient_funds": (400, "OrderException", INSUFFICIENT_FUNDS),
    "input": (400, "InputException", "Invalid `price`."),
}

FINAL_STATUSES = frozenset({"COMPLETE", "CANCELLED", "REJECTED"})
# Statuses an order passes through on its way somewhere; no postback is sent for them.
_QUIET_STATUSES = frozenset(
    {
        "PUT ORDER REQ RECEIVED",
        "VALIDATION PENDING",
        "OPEN PENDING",
        "MODIFY VALIDATION PENDING",
        "MODIFY PENDING",
        "MODIFIED",
        "CANCEL PENDING",
    }
)
EXCHANGES = frozenset({"NSE", "BSE", "NFO", "CDS", "BFO", "MCX", "BCD"})
PRODUCTS = frozenset({"MIS", "NRML", "CNC"})
ORDER_TYPES = frozenset({"MARKET", "LIMIT", "SL", "SL-M"})
VALIDITIES = frozenset({"DAY", "IOC"})
MAX_MODIFICATIONS = 25
_TAG = re.compile(r"[A-Za-z0-9 ]{1,20}")
# Rows the sample dump lacks; same columns as tests/fixtures/instruments_nse.csv.
EXTRA_INSTRUMENT_ROWS = (
    "408065,1594,INFY,INFOSYS,0.0,,0.0,0.05,1,EQ,NSE,NSE",
    "738561,2885,RELIANCE,RELIANCE INDUSTRIES,0.0,,0.0,0.05,1,EQ,NSE,NSE",
    "2953217,11536,TCS,TATA CONSULTANCY SERV LT,0.0,,0.0,0.05,1,EQ,NSE,NSE",
)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    form: dict[str, str]
    query: dict[str, str]
    headers: dict[str, str]


@dataclass(frozen=True)
class _Instrument:
    token: int
    tick: Decimal
    lot: int


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    delay_s: float = 0.0
    drop: bool = False
    fault: str | None = None


@dataclass
class _Params:
    exchange: str
    tradingsymbol: str
    instrument: _Instrument
    transaction_type: str
    quantity: int
    product: str
    order_type: str
    validity: str
    price: Decimal
    trigger_price: Decimal
    market_protection: Decimal
    disclosed_quantity: int
    tag: str | None


@dataclass
class _Order:
    order_id: str
    variety: str
    params: _Params
    order_timestamp: datetime
    guid: str
    status: str = ""
    status_message: str | None = None
    status_message_raw: str | None = None
    exchange_order_id: str | None = None
    exchange_timestamp: datetime | None = None
    exchange_update_timestamp: datetime | None = None
    modified: bool = False
    modifications: int = 0
    filled_quantity: int = 0
    filled_value: Decimal = Decimal(0)
    pending_quantity: int = 0
    cancelled_quantity: int = 0
    tags: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def symbol(self) -> str:
        return f"{self.params.exchange}:{self.params.tradingsymbol}"


class StandInError(Exception):
    """A kite-side answer of the stand-in's test controls (unknown order, bad fill)."""


def _num(value: Decimal) -> int | float:
    """A JSON number as Kite sends it: 72, 109.4 (a Go float64)."""
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def _fmt(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S")


def _decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def _error(status: int, error_type: str, message: str) -> _Response:
    body = {"status": "error", "message": message, "data": None, "error_type": error_type}
    return _Response(status, json.dumps(body).encode())


def _success(data: Any) -> _Response:
    return _Response(200, json.dumps({"status": "success", "data": data}).encode())


def _load_fixture(name: str) -> Any:
    return json.loads((KITE_FIXTURES / name).read_text(encoding="utf-8"))


def default_instruments_csv() -> bytes:
    """tests/fixtures/instruments_nse.csv plus NSE INFY, RELIANCE and TCS."""
    text = (FIXTURES / "instruments_nse.csv").read_text(encoding="utf-8")
    newline = "\r\n" if "\r\n" in text else "\n"
    if not text.endswith(newline):
        text += newline
    return (text + newline.join(EXTRA_INSTRUMENT_ROWS) + newline).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], standin: KiteStandIn) -> None:
        super().__init__(address, _Handler)
        self.standin = standin
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def track(self, conn: socket.socket, open_: bool) -> None:
        with self.connections_lock:
            if open_:
                self.connections.add(conn)
            else:
                self.connections.discard(conn)

    def close_connections(self) -> None:
        """Cut kept-alive connections, so a stopped stand-in answers nobody."""
        with self.connections_lock:
            conns = list(self.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60.0
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle's algorithm and the
        # client's delayed ACK hold each answer ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def version_string(self) -> str:
        return "kite-standin"

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.standin.log_requests:
            sys.stderr.write(f"kite-standin: {format % args}\n")

    def _handle(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            response = _error(400, "InputException", "Bad Content-Length.")
            self.close_connection = True
        else:
            body = self.rfile.read(length) if length else b""
            response = self.server.standin._dispatch(
                self.command, self.path, dict(self.headers.items()), body
            )
        if response.delay_s > 0:
            time.sleep(response.delay_s)
        if response.drop:
            self.close_connection = True
            return
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            if response.fault:
                self.send_header("X-Standin-Fault", response.fault)
            self.end_headers()
            self.wfile.write(response.body)
            self.wfile.flush()
        except OSError:  # the client gave up (timeout_after_accept) or went away
            self.close_connection = True


class KiteStandIn:
    """A Kite Connect REST API on 127.0.0.1, with an order book tests can drive."""

    def __init__(
        self,
        *,
        api_key: str = "standin_key",
        access_token: str = "standin_token",
        api_secret: str = "standin_secret",
        postback_url: str | None = None,
        fill_market: bool = True,
        market_prices: dict[str, Decimal] | None = None,
        instruments_csv: bytes | None = None,
        clock: Callable[[], datetime] | None = None,
        enforce_rate_limits: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.postback_url = postback_url
        self.fill_market = fill_market
        self.enforce_rate_limits = enforce_rate_limits
        # Kite's documented order placement limits (per api_key); lower them to test a
        # client's shaping quickly.
        self.orders_per_second = 10
        self.orders_per_minute = 400
        self.orders_per_day = 5000
        self.hold_s = 3.0  # how long timeout_after_accept holds the answer
        self.duplicate_postbacks = False
        # Like Kite, show a protected MARKET order as a LIMIT at its protection price,
        # echo market_protection as 0 and tag it "mktp".
        self.protect_market_as_limit = False
        self.postback_timeout_s = 5.0
        self.user_id = "AB1234"
        self.app_id = 1234
        self.log_requests = False
        self.rate_limited = 0
        self.postbacks_sent = 0
        self.postback_failures = 0

        self._base_token = access_token
        self._access_token = access_token
        self._token_valid = True
        self._token_generation = 1
        self._used_request_tokens: set[str] = set()
        self._market_prices: dict[str, Decimal] = dict(market_prices or {})
        self._instruments_csv = (
            instruments_csv if instruments_csv is not None else default_instruments_csv()
        )
        self._instruments = self._index_instruments(self._instruments_csv)
        self._clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self._monotonic = monotonic
        self._session_data: dict[str, Any] = _load_fixture("generate_session.json")["data"]
        self._profile: dict[str, Any] = _load_fixture("profile.json")["data"]

        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._orders: dict[str, _Order] = {}
        self._trades: list[dict[str, Any]] = []
        self._faults: deque[str] = deque()
        self._order_seq = 0
        self._last_order_id = 0
        self._trade_seq = 10_000_000
        self._second_window: deque[float] = deque()
        self._minute_window: deque[float] = deque()
        self._day: date | None = None
        self._day_count = 0

        self._postbacks: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._postbacks_pending = 0
        self._postbacks_idle = threading.Condition(self._lock)
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------

    def start(self, port: int = 0) -> None:
        """Serve on 127.0.0.1:`port` (0: a free port) from background threads."""
        if self._server is not None:
            raise RuntimeError("already started")
        self._server = _Server(("127.0.0.1", port), self)
        server = self._server
        self._threads = [
            threading.Thread(
                target=server.serve_forever, args=(0.05,), name="kite-standin", daemon=True
            ),
            threading.Thread(target=self._deliver, name="kite-standin-postbacks", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        self._postbacks.put(None)
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads = []

    def __enter__(self) -> KiteStandIn:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def access_token(self) -> str:
        """The token authenticated requests must carry now (it changes after a new login
        that follows expire_token)."""
        with self._lock:
            return self._access_token

    # -- what was asked ------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request to the Kite API, in arrival order (a copy)."""
        return self.recorded()

    def recorded(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_recorded(self) -> None:
        with self._lock:
            self._requests.clear()

    def order_calls(self) -> list[RecordedRequest]:
        """Order placements, modifications and cancellations (POST/PUT/DELETE /orders/...)."""
        return [
            r
            for r in self.recorded()
            if r.method in ("POST", "PUT", "DELETE") and r.path.startswith("/orders/")
        ]

    # -- the order book ------------------------------------------------------------

    def orders(self) -> list[dict[str, Any]]:
        """The order book as GET /orders answers it, oldest first."""
        with self._lock:
            return [self._view(o) for o in self._orders.values()]

    def order(self, order_id: str) -> dict[str, Any]:
        with self._lock:
            return self._view(self._get(order_id))

    def history(self, order_id: str) -> list[dict[str, Any]]:
        """The order's states, oldest first, as GET /orders/{order_id} answers them."""
        with self._lock:
            return copy.deepcopy(self._get(order_id).history)

    def trades_of(self, order_id: str) -> list[dict[str, Any]]:
        with self._lock:
            self._get(order_id)
            return [dict(t) for t in self._trades if t["order_id"] == order_id]

    def trades(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(t) for t in self._trades]

    def average_price_of(self, order_id: str) -> Decimal:
        """The exact volume-weighted fill price (0 before any fill)."""
        with self._lock:
            o = self._get(order_id)
            return o.filled_value / o.filled_quantity if o.filled_quantity else Decimal(0)

    def set_market_price(self, symbol: str, price: Decimal) -> None:
        """The price MARKET orders of "EXCHANGE:SYMBOL" fill at (default 100)."""
        with self._lock:
            self._market_prices[symbol] = price

    # -- broker-side events --------------------------------------------------------

    def fill(self, order_id: str, qty: int | None = None, price: Decimal | None = None) -> str:
        """A trade of `qty` (default: all that is pending) at `price` (default: the order's
        price, or the market price for MARKET and SL-M); returns the trade_id."""
        with self._lock:
            o = self._get(order_id)
            if o.status in FINAL_STATUSES:
                raise StandInError(f"order {order_id} is {o.status}")
            pending = o.params.quantity - o.filled_quantity
            qty = pending if qty is None else qty
            if not 0 < qty <= pending:
                raise StandInError(f"fill of {qty} but {pending} pending on {order_id}")
            if price is None:
                price = o.params.price if o.params.price > 0 else self._market_price(o)
            if price <= 0:
                raise StandInError(f"fill price {price} must be > 0")
            return self._fill(o, qty, price)

    def reject(self, order_id: str, message: str) -> None:
        """A rejection after acceptance (RMS or exchange): REJECTED with status_message."""
        with self._lock:
            o = self._get(order_id)
            if o.status in FINAL_STATUSES:
                raise StandInError(f"order {order_id} is {o.status}")
            self._reject(o, message, message)

    def set_status(self, order_id: str, status: str) -> None:
        """Put the order in `status` (e.g. "TRIGGER PENDING", "OPEN PENDING"), with a
        postback."""
        with self._lock:
            o = self._get(order_id)
            if status == "REJECTED":
                o.pending_quantity = 0
            elif status == "CANCELLED":
                o.cancelled_quantity = o.params.quantity - o.filled_quantity
            self._set_status(o, status, postback=True)

    def expire_token(self) -> None:
        """Every later authenticated request answers 403 TokenException (until a new
        login through POST /session/token, which issues a new access_token)."""
        with self._lock:
            self._token_valid = False

    def inject(self, fault: str, count: int = 1) -> None:
        """Apply `fault` (one of FAULTS) to the next `count` order placements."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._faults.extend([fault] * count)

    # -- postbacks -----------------------------------------------------------------

    def checksum(self, order_id: str, order_timestamp: str) -> str:
        raw = order_id + order_timestamp + self.api_secret
        return hashlib.sha256(raw.encode()).hexdigest()

    def send_postback(self, order_id: str, *, checksum: str | None = None) -> int:
        """POST the order's current state to postback_url now (with `checksum` instead of
        the right one when given); the receiver's HTTP status, or 0 if unreachable."""
        with self._lock:
            url = self.postback_url
            if url is None:
                raise StandInError("no postback_url")
            payload = self._postback_payload(self._view(self._get(order_id)), checksum)
        return self._post_json(url, payload)

    def wait_postbacks(self, timeout: float = 10.0) -> bool:
        """Wait until every queued postback was delivered (or failed); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._postbacks_idle:
            while self._postbacks_pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._postbacks_idle.wait(left)
            return True

    def _deliver(self) -> None:
        while True:
            item = self._postbacks.get()
            if item is None:
                return
            status = self._post_json(*item)
            with self._lock:
                if 200 <= status < 300:
                    self.postbacks_sent += 1
                else:
                    self.postback_failures += 1
                self._postbacks_pending -= 1
                self._postbacks_idle.notify_all()

    def _post_json(self, url: str, payload: dict[str, Any]) -> int:
        request = urllib.request.Request(
            url,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "kite-standin"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.postback_timeout_s) as r:
                r.read()
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except (OSError, ValueError):
            return 0

    def _postback_payload(self, view: dict[str, Any], checksum: str | None) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "unfilled_quantity": view["quantity"] - view["filled_quantity"],
            "app_id": self.app_id,
            "checksum": checksum or self.checksum(view["order_id"], view["order_timestamp"]),
            **view,
        }

    def _queue_postback(self, view: dict[str, Any]) -> None:
        if self.postback_url is None or self._server is None:
            return
        for _ in range(2 if self.duplicate_postbacks else 1):
            payload = self._postback_payload(copy.deepcopy(view), None)
            self._postbacks_pending += 1
            self._postbacks.put((self.postback_url, payload))

    # -- HTTP ----------------------------------------------------------------------

    def _dispatch(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> _Response:
        split = urlsplit(raw_path)
        path = split.path
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        lower = {k.lower(): v for k, v in headers.items()}
        form: dict[str, str] = {}
        if body and "json" not in lower.get("content-type", ""):
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if path.startswith("/_standin/"):
            return self._control(method, path, form)
        with self._lock:
            self._requests.append(RecordedRequest(method, path, form, query, dict(headers)))
            return self._route(method, path, form, query, lower)

    def _route(
        self,
        method: str,
        path: str,
        form: dict[str, str],
        query: dict[str, str],
        headers: dict[str, str],
    ) -> _Response:
        parts = [p for p in path.split("/") if p]
        if parts == ["session", "token"] and method == "POST":
            return self._generate_session(form)
        known = self._allowed_methods(parts)
        if not known:
            return _error(404, "GeneralException", "Route not found")
        if method not in known:
            return _error(405, "GeneralException", "Method not allowed")
        expected = f"token {self.api_key}:{self._access_token}"
        if not self._token_valid or headers.get("authorization") != expected:
            return _error(403, "TokenException", TOKEN_MESSAGE)
        if parts == ["session", "token"]:  # DELETE: log out
            self._token_valid = False
            return _success(True)
        if parts == ["user", "profile"]:
            return _success({**self._profile, "user_id": self.user_id})
        if parts[0] == "instruments":
            return self._instruments_response(parts[1] if len(parts) == 2 else None)
        if parts == ["trades"]:
            return _success([dict(t) for t in self._trades])
        if parts == ["orders"]:
            return _success([self._view(o) for o in self._orders.values()])
        if method == "POST":
            return self._place(parts[1], form)
        if method == "GET":
            order = self._orders.get(parts[1])
            if order is None:
                return _error(400, "InputException", ORDER_NOT_FOUND)
            if len(parts) == 2:
                return _success(copy.deepcopy(order.history))
            return _success([dict(t) for t in self._trades if t["order_id"] == parts[1]])
        if method == "PUT":
            return self._modify(parts[1], parts[2], form)
        return self._cancel(parts[1], parts[2])

    @staticmethod
    def _allowed_methods(parts: list[str]) -> tuple[str, ...]:
        match parts:
            case ["session", "token"]:
                return ("POST", "DELETE")
            case ["user", "profile"] | ["trades"] | ["instruments"] | ["instruments", _]:
                return ("GET",)
            case ["orders"]:
                return ("GET",)
            case ["orders", _]:
                return ("GET", "POST")
            case ["orders", _, "trades"]:
                return ("GET", "PUT", "DELETE")
            case ["orders", _, _]:
                return ("PUT", "DELETE")
        return ()

    def _generate_session(self, form: dict[str, str]) -> _Response:
        for name in ("api_key", "request_token", "checksum"):
            if not form.get(name):
                return _error(400, "InputException", f"Missing `{name}`.")
        if form["api_key"] != self.api_key:
            return _error(403, "TokenException", "Invalid `api_key`.")
        raw = self.api_key + form["request_token"] + self.api_secret
        if form["checksum"] != hashlib.sha256(raw.encode()).hexdigest():
            return _error(403, "TokenException", "Invalid `checksum`.")
        if form["request_token"] in self._used_request_tokens:
            return _error(403, "TokenException", "Token is invalid or has expired.")
        self._used_request_tokens.add(form["request_token"])
        if not self._token_valid:  # a new login after expiry gets a new access token
            self._token_generation += 1
            self._access_token = f"{self._base_token}{self._token_generation}"
            self._token_valid = True
        data = {
            **self._session_data,
            "user_id": self.user_id,
            "api_key": self.api_key,
            "access_token": self._access_token,
            "public_token": hashlib.sha256(self._access_token.encode()).hexdigest()[:32],
            "enctoken": hashlib.sha256(form["request_token"].encode()).hexdigest(),
            "login_time": _fmt(self._now()),
        }
        return _success(data)

    def _instruments_response(self, exchange: str | None) -> _Response:
        body = self._instruments_csv
        if exchange is not None:
            text = body.decode("utf-8")
            lines = text.splitlines(keepends=True)
            kept = lines[:1]
            for line in lines[1:]:
                row = next(csv.reader([line]), [])
                if row and row[-1] == exchange:
                    kept.append(line)
            body = "".join(kept).encode()
        return _Response(200, body, content_type="text/csv")

    @staticmethod
    def _index_instruments(data: bytes) -> dict[str, _Instrument]:
        index: dict[str, _Instrument] = {}
        for row in csv.DictReader(io.StringIO(data.decode("utf-8"))):
            try:
                index[f"{row['exchange']}:{row['tradingsymbol']}"] = _Instrument(
                    int(row["instrument_token"]), Decimal(row["tick_size"]), int(row["lot_size"])
                )
            except (KeyError, ValueError, InvalidOperation):
                continue
        return index

    # -- orders --------------------------------------------------------------------

    def _place(self, variety: str, form: dict[str, str]) -> _Response:
        if self.enforce_rate_limits and not self._admit_placement():
            self.rate_limited += 1
            return _error(429, "NetworkException", "Too many requests")
        fault = self._faults.popleft() if self._faults else None
        if fault in _ERROR_FAULTS:
            status, error_type, message = _ERROR_FAULTS[fault]
            if status == 429:
                self.rate_limited += 1
            response = _error(status, error_type, message)
            response.fault = fault
            return response
        if variety != "regular":
            return _error(400, "InputException", "Invalid `variety`.")
        params = self._parse(form, None)
        if isinstance(params, str):
            return _error(400, "InputException", params)
        order = self._create(variety, params, rms_reject=fault == "reject_after_accept")
        response = _success({"order_id": order.order_id})
        response.fault = fault
        if fault == "timeout_after_accept":
            response.delay_s = self.hold_s
        elif fault == "drop_after_accept":
            response.drop = True
        return response

    def _admit_placement(self) -> bool:
        now = self._monotonic()
        today = self._now().date()
        while self._second_window and now - self._second_window[0] >= 1.0:
            self._second_window.popleft()
        while self._minute_window and now - self._minute_window[0] >= 60.0:
            self._minute_window.popleft()
        if self._day != today:
            self._day, self._day_count = today, 0
        if (
            len(self._second_window) >= self.orders_per_second
            or len(self._minute_window) >= self.orders_per_minute
            or self._day_count >= self.orders_per_day
        ):
            return False
        self._second_window.append(now)
        self._minute_window.append(now)
        self._day_count += 1
        return True

    def _parse(self, form: dict[str, str], current: _Params | None) -> _Params | str:
        """The order's parameters, or Kite's InputException message. With `current`, a
        modification: fields absent from `form` keep their current values."""

        def text(name: str) -> str:
            return form.get(name, "").strip()

        if current is None:
            required = ("exchange", "tradingsymbol", "transaction_type", "quantity", "product")
            for name in (*required, "order_type"):
                if not text(name):
                    return f"Missing `{name}`."
            exchange, symbol = text("exchange"), text("tradingsymbol")
            if exchange not in EXCHANGES:
                return "Invalid `exchange`."
            instrument = self._instruments.get(f"{exchange}:{symbol}")
            if instrument is None:
                return "Invalid `tradingsymbol`."
            side, product = text("transaction_type"), text("product")
            if side not in ("BUY", "SELL"):
                return "Invalid `transaction_type`."
            if product not in PRODUCTS:
                return "Invalid `product`."
            tag: str | None = text("tag") or None
            if tag is not None and not _TAG.fullmatch(tag):
                return "Invalid `tag`: at most 20 letters, digits or spaces."
        else:
            exchange, symbol = current.exchange, current.tradingsymbol
            instrument, side, product, tag = (
                current.instrument,
                current.transaction_type,
                current.product,
                current.tag,
            )

        def number(name: str, default: Decimal) -> Decimal | None:
            raw = text(name)
            return default if not raw else _decimal(raw)

        order_type = text("order_type") or (current.order_type if current else "")
        if order_type not in ORDER_TYPES:
            return "Invalid `order_type`."
        validity = text("validity") or (current.validity if current else "DAY")
        if validity not in VALIDITIES:
            return "Invalid `validity`."
        raw_qty = text("quantity")
        if raw_qty:
            if not raw_qty.isdigit() or int(raw_qty) <= 0:
                return "Invalid `quantity`."
            quantity = int(raw_qty)
        else:
            quantity = current.quantity if current else 0
        if quantity % instrument.lot != 0:
            return f"Quantity should be a multiple of the lot size ({instrument.lot})."
        raw_disclosed = text("disclosed_quantity")
        if raw_disclosed and not raw_disclosed.isdigit():
            return "Invalid `disclosed_quantity`."
        disclosed = (
            int(raw_disclosed) if raw_disclosed else (current.disclosed_quantity if current else 0)
        )
        if disclosed > quantity:
            return "Invalid `disclosed_quantity`."

        zero = Decimal(0)
        price = number("price", current.price if current else zero)
        trigger = number("trigger_price", current.trigger_price if current else zero)
        protection = number("market_protection", current.market_protection if current else zero)
        if price is None or price < 0:
            return "Invalid `price`."
        if trigger is None or trigger < 0:
            return "Invalid `trigger_price`."
        if protection is None:
            return "Invalid `market_protection`."
        if order_type in ("LIMIT", "SL") and price <= 0:
            return "Invalid `price`."
        if order_type in ("MARKET", "SL-M"):
            price = zero
        if order_type in ("SL", "SL-M") and trigger <= 0:
            return "Invalid `trigger_price`."
        if order_type in ("MARKET", "LIMIT"):
            trigger = zero
        if order_type == "SL" and side == "BUY" and trigger > price:
            return "Trigger price for stoploss buy orders should be less than the limit price."
        if order_type == "SL" and side == "SELL" and trigger < price:
            return "Trigger price for stoploss sell orders should be higher than the limit price."
        if order_type in ("MARKET", "SL-M"):
            if not (protection == -1 or 1 <= protection <= 100):
                return MARKET_PROTECTION_REQUIRED
        elif not (protection == -1 or 0 <= protection <= 100):
            return "Invalid `market_protection`."
        for name, value in (("price", price), ("trigger price", trigger)):
            if value % instrument.tick != 0:
                return (
                    f"Tick size for this script is {instrument.tick}. Kindly enter {name} "
                    "in the multiple of tick size for this script."
                )
        return _Params(
            exchange=exchange,
            tradingsymbol=symbol,
            instrument=instrument,
            transaction_type=side,
            quantity=quantity,
            product=product,
            order_type=order_type,
            validity=validity,
            price=price,
            trigger_price=trigger,
            market_protection=protection,
            disclosed_quantity=disclosed,
            tag=tag,
        )

    def _create(self, variety: str, params: _Params, *, rms_reject: bool) -> _Order:
        now = self._now()
        self._order_seq += 1
        candidate = int(f"{now:%y%m%d}{self._order_seq:09d}")
        self._last_order_id = max(candidate, self._last_order_id + 1)
        order_id = str(self._last_order_id)
        order = _Order(
            order_id=order_id,
            variety=variety,
            params=params,
            order_timestamp=now,
            guid=f"{self._order_seq:06d}standin{order_id[-6:]}",
            pending_quantity=params.quantity,
            tags=[params.tag] if params.tag else [],
        )
        self._orders[order_id] = order
        self._set_status(order, "PUT ORDER REQ RECEIVED")
        self._set_status(order, "VALIDATION PENDING")
        if rms_reject:  # the RMS refuses it before it reaches the exchange
            self._reject(order, INSUFFICIENT_FUNDS, INSUFFICIENT_FUNDS_RAW)
            return order
        self._set_status(order, "OPEN PENDING")
        order.exchange_order_id = str(1_300_000_000_000_000 + self._order_seq)
        order.exchange_timestamp = order.exchange_update_timestamp = now
        if params.order_type == "MARKET" and self.protect_market_as_limit:
            self._protect_as_limit(order)
            self._work(order, market=True)
        else:
            self._work(order, market=params.order_type == "MARKET")
        return order

    def _protect_as_limit(self, order: _Order) -> None:
        p = order.params
        pct = Decimal(2) if p.market_protection == -1 else p.market_protection
        market = self._market_price(order)
        if p.transaction_type == "BUY":
            raw, rounding = market * (1 + pct / 100), ROUND_FLOOR
        else:
            raw, rounding = market * (1 - pct / 100), ROUND_CEILING
        ticks = (raw / p.instrument.tick).to_integral_value(rounding=rounding)
        p.price = ticks * p.instrument.tick
        p.order_type = "LIMIT"
        p.market_protection = Decimal(0)
        order.tags += ["mktp", f"mktp:{pct:.2f}"]

    def _work(self, order: _Order, *, market: bool) -> None:
        """The order as it reaches the exchange (placement or modification)."""
        p = order.params
        pending = p.quantity - order.filled_quantity
        if market and self.fill_market:
            self._fill(order, pending, self._market_price(order))
        elif p.order_type in ("SL", "SL-M"):
            self._set_status(order, "TRIGGER PENDING")
        elif p.validity == "IOC":
            if self.fill_market and p.order_type == "LIMIT" and self._marketable(order):
                self._fill(order, pending, self._market_price(order))
            else:
                order.cancelled_quantity = pending
                self._set_status(order, "CANCELLED")
        else:
            self._set_status(order, "OPEN")

    def _marketable(self, order: _Order) -> bool:
        market, p = self._market_price(order), order.params
        return market <= p.price if p.transaction_type == "BUY" else market >= p.price

    def _modify(self, variety: str, order_id: str, form: dict[str, str]) -> _Response:
        order = self._orders.get(order_id)
        if order is None:
            return _error(400, "InputException", ORDER_NOT_FOUND)
        if variety != order.variety:
            return _error(400, "InputException", "Invalid `variety`.")
        if order.status in FINAL_STATUSES:
            return _error(400, "InputException", CANNOT_MODIFY)
        if order.modifications >= MAX_MODIFICATIONS:
            return _error(400, "InputException", "Maximum allowed order modifications exceeded.")
        params = self._parse(form, order.params)
        if isinstance(params, str):
            return _error(400, "InputException", params)
        if params.quantity <= order.filled_quantity:
            return _error(400, "InputException", "Invalid `quantity`.")
        now = self._now()
        order.params = params
        order.modifications += 1
        order.modified = True
        order.order_timestamp = now
        order.pending_quantity = params.quantity - order.filled_quantity
        for status in ("MODIFY VALIDATION PENDING", "MODIFY PENDING"):
            self._set_status(order, status)
        order.exchange_timestamp = order.exchange_update_timestamp = now
        self._set_status(order, "MODIFIED")
        self._work(order, market=params.order_type == "MARKET")
        return _success({"order_id": order_id})

    def _cancel(self, variety: str, order_id: str) -> _Response:
        order = self._orders.get(order_id)
        if order is None:
            return _error(400, "InputException", ORDER_NOT_FOUND)
        if variety != order.variety:
            return _error(400, "InputException", "Invalid `variety`.")
        if order.status in FINAL_STATUSES:
            return _error(400, "InputException", CANNOT_CANCEL)
        self._set_status(order, "CANCEL PENDING")
        # As in Kite's order book, pending_quantity keeps the unfilled rest.
        order.cancelled_quantity = order.params.quantity - order.filled_quantity
        order.exchange_update_timestamp = self._now()
        self._set_status(order, "CANCELLED")
        return _success({"order_id": order_id})

    def _fill(self, order: _Order, qty: int, price: Decimal) -> str:
        now = self._now()
        self._trade_seq += 1
        trade_id = str(self._trade_seq)
        order.filled_quantity += qty
        order.filled_value += price * qty
        order.pending_quantity = order.params.quantity - order.filled_quantity
        order.exchange_update_timestamp = now
        if order.exchange_order_id is None:
            order.exchange_order_id = str(1_300_000_000_000_000 + self._order_seq)
            order.exchange_timestamp = now
        p = order.params
        self._trades.append(
            {
                "trade_id": trade_id,
                "order_id": order.order_id,
                "exchange": p.exchange,
                "tradingsymbol": p.tradingsymbol,
                "instrument_token": p.instrument.token,
                "product": p.product,
                "average_price": _num(price),
                "quantity": qty,
                "exchange_order_id": order.exchange_order_id,
                "transaction_type": p.transaction_type,
                "fill_timestamp": _fmt(now),
                "order_timestamp": now.astimezone(IST).strftime("%H:%M:%S"),
                "exchange_timestamp": _fmt(now),
            }
        )
        self._set_status(order, "COMPLETE" if order.pending_quantity == 0 else "OPEN")
        return trade_id

    def _reject(self, order: _Order, message: str, raw: str) -> None:
        order.status_message, order.status_message_raw = message, raw
        order.pending_quantity = 0
        order.exchange_update_timestamp = self._now()
        self._set_status(order, "REJECTED")

    def _set_status(self, order: _Order, status: str, *, postback: bool | None = None) -> None:
        order.status = status
        view = self._view(order)
        order.history.append(view)
        if postback if postback is not None else status not in _QUIET_STATUSES:
            self._queue_postback(view)

    def _view(self, o: _Order) -> dict[str, Any]:
        """The order as Kite's order book shows it (an item of orders.json)."""
        p = o.params
        view: dict[str, Any] = {
            "account_id": self.user_id,
            "placed_by": self.user_id,
            "order_id": o.order_id,
            "exchange_order_id": o.exchange_order_id,
            "parent_order_id": None,
            "status": o.status,
            "status_message": o.status_message,
            "status_message_raw": o.status_message_raw,
            "order_timestamp": _fmt(o.order_timestamp),
            "exchange_update_timestamp": _fmt(o.exchange_update_timestamp),
            "exchange_timestamp": _fmt(o.exchange_timestamp),
            "variety": o.variety,
            "modified": o.modified,
            "exchange": p.exchange,
            "tradingsymbol": p.tradingsymbol,
            "instrument_token": p.instrument.token,
            "order_type": p.order_type,
            "transaction_type": p.transaction_type,
            "validity": p.validity,
            "validity_ttl": 0,
            "product": p.product,
            "quantity": p.quantity,
            "disclosed_quantity": p.disclosed_quantity,
            "price": _num(p.price),
            "trigger_price": _num(p.trigger_price),
            "average_price": self._average_number(o),
            "filled_quantity": o.filled_quantity,
            "pending_quantity": o.pending_quantity,
            "cancelled_quantity": o.cancelled_quantity,
            "market_protection": _num(p.market_protection),
            "meta": {},
            "tag": p.tag,
            "guid": o.guid,
        }
        if o.tags:
            view["tags"] = list(o.tags)
        return view

    @staticmethod
    def _average_number(o: _Order) -> int | float:
        if not o.filled_quantity:
            return 0
        places = max(2, -int(o.params.instrument.tick.normalize().as_tuple().exponent))
        exact = o.filled_value / o.filled_quantity
        return _num(exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))

    def _market_price(self, order: _Order) -> Decimal:
        return self._market_prices.get(order.symbol, Decimal(100))

    def _get(self, order_id: str) -> _Order:
        order = self._orders.get(order_id)
        if order is None:
            raise StandInError(f"no order {order_id}")
        return order

    def _now(self) -> datetime:
        moment = self._clock()
        if moment.tzinfo is None:  # naive: taken as IST wall time
            moment = moment.replace(tzinfo=IST)
        return moment.astimezone(IST)

    # -- the by-hand controls (/_standin/...) -------------------------------------

    def _control(self, method: str, path: str, form: dict[str, str]) -> _Response:
        if method != "POST":
            return _error(405, "GeneralException", "Method not allowed")
        action = path.removeprefix("/_standin/")
        try:
            if action == "fill":
                qty = int(form["quantity"]) if form.get("quantity") else None
                price = _decimal(form["price"]) if form.get("price") else None
                return _success({"trade_id": self.fill(form["order_id"], qty, price)})
            if action == "reject":
                self.reject(form["order_id"], form.get("message") or INSUFFICIENT_FUNDS)
            elif action == "status":
                self.set_status(form["order_id"], form["status"])
            elif action == "expire_token":
                self.expire_token()
            elif action == "inject":
                self.inject(form["fault"], int(form.get("count") or 1))
            elif action == "market_price":
                price = _decimal(form["price"])
                if price is None or price <= 0:
                    raise ValueError("bad price")
                self.set_market_price(form["symbol"], price)
            else:
                return _error(404, "GeneralException", "Route not found")
        except KeyError as e:
            return _error(400, "InputException", f"Missing `{e.args[0]}`.")
        except (StandInError, ValueError) as e:
            return _error(400, "InputException", str(e))
        return _success(True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local stand-in of the Kite Connect REST API.")
    parser.add_argument("--port", type=int, default=8765, help="0: a free port")
    parser.add_argument("--postback-url", help="where order updates are POSTed")
    parser.add_argument("--api-key", default="standin_key")
    parser.add_argument("--access-token", default="standin_token")
    parser.add_argument("--api-secret", default="standin_secret")
    parser.add_argument(
        "--fill-market",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fill MARKET orders at once at the market price (default: yes)",
    )
    parser.add_argument(
        "--market-price",
        action="append",
        default=[],
        metavar="EXCHANGE:SYMBOL=PRICE",
        help="the price MARKET orders fill at (default 100); repeatable",
    )
    parser.add_argument("--no-rate-limits", action="store_true")
    parser.add_argument("--verbose", "-v", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    prices: dict[str, Decimal] = {}
    for item in args.market_price:
        symbol, _, raw = item.partition("=")
        price = _decimal(raw)
        if not symbol or price is None or price <= 0:
            parser.error(f"--market-price wants EXCHANGE:SYMBOL=PRICE, got {item!r}")
        prices[symbol] = price
    standin = KiteStandIn(
        api_key=args.api_key,
        access_token=args.access_token,
        api_secret=args.api_secret,
        postback_url=args.postback_url,
        fill_market=args.fill_market,
        market_prices=prices,
        enforce_rate_limits=not args.no_rate_limits,
    )
    standin.log_requests = args.verbose
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    standin.start(port=args.port)
    print(standin.url, flush=True)
    print(
        f"kite-standin: KiteConnect({args.api_key!r}, access_token={args.access_token!r}, "
        f"root={standin.url!r}); controls: POST {standin.url}/_standin/"
        "{fill,reject,status,expire_token,inject,market_price}",
        file=sys.stderr,
        flush=True,
    )
    while not stopping.wait(0.5):
        pass
    standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
