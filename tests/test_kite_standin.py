"""The Kite Connect stand-in (tests/kite_standin.py), driven by the real kiteconnect SDK."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex

if TYPE_CHECKING:
    from tests.kite_standin import FAULTS, KiteStandIn, StandInError
else:
    from kite_standin import FAULTS, KiteStandIn, StandInError

KITE_FIXTURES = Path(__file__).parent / "fixtures" / "kite"
API_KEY, TOKEN, SECRET = "standin_key", "standin_token", "standin_secret"
# 10:00 IST on a Friday.
START = datetime(2026, 11, 27, 4, 30, tzinfo=UTC)


def fixture(name: str) -> Any:
    return json.loads((KITE_FIXTURES / name).read_text(encoding="utf-8"))


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class Monotonic:
    """A monotonic clock that moves only when told, so rate windows are exact."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def mono() -> Monotonic:
    return Monotonic()


@pytest.fixture
def standin(clock: Clock, mono: Monotonic) -> Iterator[KiteStandIn]:
    with KiteStandIn(clock=clock, monotonic=mono) as s:
        yield s


def client(standin: KiteStandIn, **kwargs: Any) -> Any:
    kwargs.setdefault("access_token", standin.access_token)
    return KiteConnect(API_KEY, root=standin.url, **kwargs)


@pytest.fixture
def kite(standin: KiteStandIn) -> Any:
    return client(standin)


def place(kite: Any, **overrides: Any) -> str:
    params: dict[str, Any] = {
        "variety": "regular",
        "exchange": "NSE",
        "tradingsymbol": "INFY",
        "transaction_type": "BUY",
        "quantity": 10,
        "product": "CNC",
        "order_type": "LIMIT",
        "price": 1450.05,
    }
    params.update(overrides)
    order_id: str = kite.place_order(**{k: v for k, v in params.items() if v is not None})
    return order_id


def statuses(history: list[dict[str, Any]]) -> list[str]:
    return [h["status"] for h in history]


class Receiver:
    """A postback endpoint: collects JSON bodies; answers `status`, or 400 to a body whose
    checksum is not Kite's; waits for `gate` before answering when given one."""

    def __init__(self, *, status: int = 200, gate: threading.Event | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.content_types: list[str] = []
        self.status = status
        self.gate = gate
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.arrived:
                    receiver.bodies.append(body)
                    receiver.content_types.append(self.headers["Content-Type"])
                    receiver.arrived.notify_all()
                if receiver.gate is not None:
                    receiver.gate.wait(10)
                good = body["checksum"] == kite_checksum(body)
                self.send_response(receiver.status if good else 400)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/postback"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.bodies) >= count, timeout), self.bodies
            return list(self.bodies)

    def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.server.shutdown()
        self.server.server_close()


def kite_checksum(body: dict[str, Any]) -> str:
    raw = body["order_id"] + body["order_timestamp"] + SECRET
    return hashlib.sha256(raw.encode()).hexdigest()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


# -- orders, trades, history ---------------------------------------------------------


def test_a_limit_order_rests_open_in_kites_shape(standin: KiteStandIn, kite: Any) -> None:
    order_id = place(kite, tag="strat1 A7")
    assert len(order_id) == 15
    assert order_id.isdigit()
    assert order_id.startswith("261127")

    [order] = kite.orders()
    expected_keys = set(fixture("orders.json")["data"][7])  # a regular order of 2025
    assert expected_keys <= set(order)
    assert order["order_id"] == order_id
    assert order["status"] == "OPEN"
    assert order["order_timestamp"] == datetime(2026, 11, 27, 10, 0, 0)  # IST, naive
    assert order["price"] == 1450.05
    assert order["trigger_price"] == 0
    assert order["quantity"] == 10
    assert order["pending_quantity"] == 10
    assert order["filled_quantity"] == 0
    assert order["average_price"] == 0
    assert order["instrument_token"] == 408065
    assert order["validity"] == "DAY"
    assert order["tag"] == "strat1 A7"
    assert order["tags"] == ["strat1 A7"]
    assert len(order["exchange_order_id"]) == 16

    history = kite.order_history(order_id)
    kite_history = fixture("order_info.json")["data"]
    assert statuses(history) == statuses(kite_history[:4])
    assert history[0]["exchange_order_id"] is None
    assert history[-1] == order
    assert kite.order_trades(order_id) == []
    assert kite.trades() == []

    [call] = standin.order_calls()
    assert (call.method, call.path) == ("POST", "/orders/regular")
    assert call.form["tradingsymbol"] == "INFY"
    assert call.form["price"] == "1450.05"
    assert call.headers["Authorization"] == f"token {API_KEY}:{TOKEN}"
    assert call.headers["X-Kite-Version"] == "3"
    assert [r.path for r in standin.requests][-4:] == [
        "/orders",
        f"/orders/{order_id}",
        f"/orders/{order_id}/trades",
        "/trades",
    ]


def test_order_ids_increase(kite: Any) -> None:
    ids = [place(kite) for _ in range(3)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    assert [o["order_id"] for o in kite.orders()] == ids


def test_a_market_order_fills_at_once_at_the_market_price(clock: Clock) -> None:
    prices = {"NSE:INFY": Decimal("1500.25")}
    with KiteStandIn(clock=clock, market_prices=prices) as standin:
        kite = client(standin)
        order_id = place(kite, order_type="MARKET", price=None, market_protection=-1)
        [order] = kite.orders()
        assert order["status"] == "COMPLETE"
        assert order["order_type"] == "MARKET"
        assert order["average_price"] == 1500.25
        assert order["price"] == 0
        assert order["filled_quantity"] == 10
        assert order["pending_quantity"] == 0
        assert order["market_protection"] == -1
        assert statuses(kite.order_history(order_id))[-1] == "COMPLETE"
        [trade] = kite.order_trades(order_id)
        assert set(trade) == set(fixture("order_trades.json")["data"][0])
        assert trade["quantity"] == 10
        assert trade["average_price"] == 1500.25
        assert trade["fill_timestamp"] == datetime(2026, 11, 27, 10, 0, 0)
        assert trade["order_timestamp"] == "10:00:00"
        assert kite.trades() == [trade]
        assert set(kite.trades()[0]) == set(fixture("trades.json")["data"][0])


def test_without_fill_market_a_market_order_rests_until_filled(clock: Clock) -> None:
    with KiteStandIn(clock=clock, fill_market=False) as standin:
        kite = client(standin)
        standin.set_market_price("NSE:INFY", Decimal("1499.95"))
        order_id = place(kite, order_type="MARKET", price=None, market_protection=5)
        assert kite.orders()[0]["status"] == "OPEN"
        standin.fill(order_id)
        [order] = kite.orders()
        assert order["status"] == "COMPLETE"
        assert order["average_price"] == 1499.95


def test_partial_then_complete_fills_average_exactly(standin: KiteStandIn, kite: Any) -> None:
    order_id = place(kite, quantity=3, price=100.1)
    first = standin.fill(order_id, 1, Decimal("100.05"))
    order = kite.orders()[0]
    assert order["status"] == "OPEN"
    assert (order["filled_quantity"], order["pending_quantity"]) == (1, 2)
    assert order["average_price"] == 100.05

    second = standin.fill(order_id, 2)  # at the order's price, 100.10
    assert int(second) > int(first)
    order = kite.orders()[0]
    assert order["status"] == "COMPLETE"
    assert (order["filled_quantity"], order["pending_quantity"]) == (3, 0)
    assert order["average_price"] == 100.08  # 300.25 / 3 = 100.0833...
    assert standin.average_price_of(order_id) == Decimal("300.25") / 3
    trades = kite.order_trades(order_id)
    assert [(t["trade_id"], t["quantity"], t["average_price"]) for t in trades] == [
        (first, 1, 100.05),
        (second, 2, 100.1),
    ]
    assert standin.trades_of(order_id) == [
        {**t, "fill_timestamp": "2026-11-27 10:00:00", "exchange_timestamp": "2026-11-27 10:00:00"}
        for t in trades
    ]
    assert statuses(kite.order_history(order_id))[-2:] == ["OPEN", "COMPLETE"]
    with pytest.raises(StandInError):
        standin.fill(order_id, 1)


def test_a_fill_beyond_the_pending_quantity_is_refused(standin: KiteStandIn, kite: Any) -> None:
    order_id = place(kite, quantity=2)
    with pytest.raises(StandInError):
        standin.fill(order_id, 3)
    with pytest.raises(StandInError):
        standin.fill("999", 1)
    assert kite.orders()[0]["filled_quantity"] == 0


def test_modify_an_open_order(standin: KiteStandIn, kite: Any, clock: Clock) -> None:
    order_id = place(kite)
    clock.now = START + timedelta(minutes=1, seconds=24)
    assert kite.modify_order("regular", order_id, price=1451, quantity=12) == order_id
    [order] = kite.orders()
    assert order["price"] == 1451
    assert isinstance(order["price"], int)
    assert order["quantity"] == 12
    assert order["pending_quantity"] == 12
    assert order["modified"] is True
    assert order["status"] == "OPEN"
    # Kite's order_timestamp is the time of the last modification.
    assert order["order_timestamp"] == datetime(2026, 11, 27, 10, 1, 24)
    assert statuses(kite.order_history(order_id))[-4:] == statuses(
        fixture("order_info.json")["data"][-4:]
    )
    assert [(c.method, c.path) for c in standin.order_calls()] == [
        ("POST", "/orders/regular"),
        ("PUT", f"/orders/regular/{order_id}"),
    ]
    assert standin.order_calls()[1].form == {
        "variety": "regular",
        "order_id": order_id,
        "quantity": "12",
        "price": "1451",
    }


def test_modify_to_market_needs_market_protection(kite: Any) -> None:
    order_id = place(kite)
    with pytest.raises(kex.InputException, match="market protection"):
        kite.modify_order("regular", order_id, order_type="MARKET")
    kite.modify_order("regular", order_id, order_type="MARKET", market_protection=-1)
    [order] = kite.orders()
    assert order["status"] == "COMPLETE"
    assert order["average_price"] == 100


def test_a_stop_loss_order_waits_for_its_trigger(standin: KiteStandIn, kite: Any) -> None:
    order_id = place(kite, order_type="SL", price=1450, trigger_price=1449.5)
    assert kite.orders()[0]["status"] == "TRIGGER PENDING"
    kite.modify_order("regular", order_id, trigger_price=1449)
    assert kite.orders()[0]["trigger_price"] == 1449
    assert kite.orders()[0]["status"] == "TRIGGER PENDING"
    standin.set_status(order_id, "OPEN")
    assert kite.orders()[0]["status"] == "OPEN"
    standin.fill(order_id)
    assert kite.orders()[0]["average_price"] == 1450

    slm = place(kite, order_type="SL-M", price=None, trigger_price=1460, market_protection=3)
    assert standin.order(slm)["status"] == "TRIGGER PENDING"
    standin.fill(slm)
    assert standin.order(slm)["average_price"] == 100  # the market price


def test_cancel_an_open_order_and_not_a_finished_one(standin: KiteStandIn, kite: Any) -> None:
    order_id = place(kite)
    standin.fill(order_id, 4, Decimal("1450"))
    assert kite.cancel_order("regular", order_id) == order_id
    [order] = kite.orders()
    assert order["status"] == "CANCELLED"
    assert order["filled_quantity"] == 4
    assert order["cancelled_quantity"] == 6
    assert order["pending_quantity"] == 6  # as in Kite's order book (orders.json)
    assert statuses(kite.order_history(order_id))[-2:] == ["CANCEL PENDING", "CANCELLED"]
    with pytest.raises(kex.InputException, match="cannot be cancelled") as e:
        kite.cancel_order("regular", order_id)
    assert e.value.code == 400
    with pytest.raises(kex.InputException, match="cannot be modified"):
        kite.modify_order("regular", order_id, price=1451)
    call = standin.order_calls()[1]
    assert (call.method, call.path, call.form, call.query) == (
        "DELETE",
        f"/orders/regular/{order_id}",
        {},
        {},
    )


def test_unknown_order_ids(kite: Any) -> None:
    calls: list[Callable[[], Any]] = [
        lambda: kite.order_history("261127000000999"),
        lambda: kite.order_trades("261127000000999"),
        lambda: kite.cancel_order("regular", "261127000000999"),
        lambda: kite.modify_order("regular", "261127000000999", price=1),
    ]
    for call in calls:
        with pytest.raises(kex.InputException, match="Couldn't find that `order_id`") as e:
            call()
        assert e.value.code == 400


def test_ioc_limit_fills_or_is_cancelled(clock: Clock) -> None:
    with KiteStandIn(clock=clock, market_prices={"NSE:INFY": Decimal("1450")}) as standin:
        kite = client(standin)
        away = place(kite, validity="IOC", price=1449.95)
        order = standin.order(away)
        assert order["status"] == "CANCELLED"
        assert order["cancelled_quantity"] == 10
        marketable = place(kite, validity="IOC", price=1450.5)
        order = standin.order(marketable)
        assert order["status"] == "COMPLETE"
        assert order["average_price"] == 1450


# -- validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tag": "a" * 21}, "tag"),
        ({"tag": "has-dash"}, "tag"),
        ({"order_type": "MARKET", "price": None}, "market protection"),
        ({"order_type": "MARKET", "price": None, "market_protection": 0}, "market protection"),
        ({"order_type": "MARKET", "price": None, "market_protection": 101}, "market protection"),
        ({"order_type": "SL-M", "price": None, "trigger_price": 1460}, "market protection"),
        ({"price": None}, "price"),
        ({"price": 1450.03}, "Tick size for this script is 0.05"),
        ({"order_type": "SL"}, "trigger_price"),
        ({"order_type": "SL", "trigger_price": 1460}, "stoploss buy"),
        ({"quantity": 0}, "quantity"),
        ({"quantity": -1}, "quantity"),
        ({"product": "MTF"}, "product"),
        ({"order_type": "STOP"}, "order_type"),
        ({"transaction_type": "HOLD"}, "transaction_type"),
        ({"validity": "GTC"}, "validity"),
        ({"tradingsymbol": "NOSUCH"}, "tradingsymbol"),
        ({"exchange": "NYSE"}, "exchange"),
        ({"variety": "amo"}, "variety"),
        ({"tradingsymbol": ""}, "Missing `tradingsymbol`"),
    ],
)
def test_kite_rejects_bad_orders_and_creates_nothing(
    standin: KiteStandIn, kite: Any, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(kex.InputException, match=message) as e:
        place(kite, **overrides)
    assert e.value.code == 400
    assert standin.orders() == []


def test_a_tag_of_twenty_characters_is_accepted(kite: Any) -> None:
    order_id = place(kite, tag="A" * 20)
    assert kite.order_history(order_id)[-1]["tag"] == "A" * 20


# -- faults ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "exception", "code"),
    [
        ("429", kex.NetworkException, 429),
        ("500", kex.GeneralException, 500),
        ("503", kex.NetworkException, 503),
        ("token", kex.TokenException, 403),
        ("insufficient_funds", kex.OrderException, 400),
        ("input", kex.InputException, 400),
    ],
)
def test_injected_errors_create_nothing(
    standin: KiteStandIn, kite: Any, fault: str, exception: Any, code: int
) -> None:
    standin.inject(fault, count=2)
    for _ in range(2):
        with pytest.raises(exception) as e:
            place(kite)
        assert type(e.value) is exception
        assert e.value.code == code
    assert standin.orders() == []
    assert standin.rate_limited == (2 if fault == "429" else 0)
    place(kite)  # the fault is spent
    assert len(standin.orders()) == 1
    kite.orders()  # faults touch placements only


def test_timeout_after_accept_creates_the_order(standin: KiteStandIn) -> None:
    standin.hold_s = 1.0
    impatient = client(standin, timeout=0.3)
    standin.inject("timeout_after_accept")
    with pytest.raises(requests.exceptions.ReadTimeout):
        place(impatient, tag="amb1")
    # The order exists, and the stand-in answers others while that answer is held.
    [order] = client(standin).orders()
    assert order["tag"] == "amb1"
    assert order["status"] == "OPEN"
    assert len(standin.order_calls()) == 1


def test_drop_after_accept_creates_the_order(standin: KiteStandIn, kite: Any) -> None:
    standin.inject("drop_after_accept")
    with pytest.raises(requests.exceptions.ConnectionError):
        place(kite, tag="amb2")
    [order] = kite.orders()
    assert order["tag"] == "amb2"
    assert order["status"] == "OPEN"


def test_reject_after_accept_and_reject(standin: KiteStandIn, kite: Any) -> None:
    standin.inject("reject_after_accept")
    order_id = place(kite)
    order = kite.orders()[0]
    assert order["status"] == "REJECTED"
    assert order["exchange_order_id"] is None
    assert order["status_message"].startswith("Insufficient funds")
    assert statuses(kite.order_history(order_id)) == [
        "PUT ORDER REQ RECEIVED",
        "VALIDATION PENDING",
        "REJECTED",
    ]

    other = place(kite)
    standin.reject(other, "Price is beyond the circuit limit")
    order = standin.order(other)
    assert order["status"] == "REJECTED"
    assert order["pending_quantity"] == 0
    assert order["status_message"] == "Price is beyond the circuit limit"
    with pytest.raises(StandInError):
        standin.reject(other, "again")


def test_inject_knows_its_faults(standin: KiteStandIn) -> None:
    assert set(FAULTS) >= {"timeout_after_accept", "drop_after_accept", "429", "500", "503"}
    with pytest.raises(ValueError, match="unknown fault"):
        standin.inject("meteor")


# -- rate limits ----------------------------------------------------------------------


def test_the_eleventh_order_in_a_second_is_refused(
    standin: KiteStandIn, kite: Any, mono: Monotonic
) -> None:
    for _ in range(10):
        place(kite)
        mono.t += 0.05
    with pytest.raises(kex.NetworkException, match="Too many requests") as e:
        place(kite)
    assert e.value.code == 429
    assert len(standin.orders()) == 10
    assert standin.rate_limited == 1
    mono.t += 0.55  # the first placement leaves the window
    place(kite)
    assert len(standin.orders()) == 11
    assert len(standin.order_calls()) == 12


def test_the_per_minute_and_per_day_limits(
    standin: KiteStandIn, kite: Any, mono: Monotonic, clock: Clock
) -> None:
    standin.orders_per_minute = 12
    standin.orders_per_day = 15
    for _ in range(12):
        place(kite)
        mono.t += 0.5
    with pytest.raises(kex.NetworkException):
        place(kite)
    mono.t += 55.0  # the first placements leave the minute
    for _ in range(3):
        place(kite)
    mono.t += 120.0
    with pytest.raises(kex.NetworkException):  # 15 today
        place(kite)
    assert standin.rate_limited == 2
    clock.now += timedelta(days=1)
    place(kite)
    assert len(standin.orders()) == 16


def test_rate_limits_can_be_off(clock: Clock, mono: Monotonic) -> None:
    with KiteStandIn(clock=clock, monotonic=mono, enforce_rate_limits=False) as standin:
        kite = client(standin)
        for _ in range(11):
            place(kite)
        assert len(standin.orders()) == 11
        assert standin.rate_limited == 0


# -- sessions and tokens --------------------------------------------------------------


def test_generate_session(standin: KiteStandIn) -> None:
    kite = KiteConnect(API_KEY, root=standin.url)
    session = kite.generate_session("request-1", api_secret=SECRET)
    assert set(fixture("generate_session.json")["data"]) <= set(session)
    assert session["access_token"] == TOKEN
    assert session["api_key"] == API_KEY
    assert session["user_id"] == "AB1234"
    assert session["login_time"] == datetime(2026, 11, 27, 10, 0, 0)
    assert kite.profile()["user_id"] == "AB1234"
    assert set(fixture("profile.json")["data"]) <= set(kite.profile())
    with pytest.raises(kex.TokenException, match="expired"):
        kite.generate_session("request-1", api_secret=SECRET)  # a request token is single-use


def test_generate_session_with_a_bad_checksum(standin: KiteStandIn) -> None:
    kite = KiteConnect(API_KEY, root=standin.url)
    with pytest.raises(kex.TokenException, match="checksum") as e:
        kite.generate_session("request-2", api_secret="not the secret")
    assert e.value.code == 403
    with pytest.raises(kex.TokenException):
        kite.profile()  # no session


def test_requests_need_the_right_token(standin: KiteStandIn) -> None:
    for bad in (KiteConnect(API_KEY, root=standin.url), client(standin, access_token="nope")):
        with pytest.raises(kex.TokenException, match="Incorrect `api_key` or `access_token`"):
            bad.orders()
        with pytest.raises(kex.TokenException):
            place(bad)
    assert standin.orders() == []
    assert standin.order_calls()[0].headers.get("Authorization") is None


def test_an_expired_token(standin: KiteStandIn, kite: Any) -> None:
    place(kite)
    expired = threading.Event()
    kite.set_session_expiry_hook(expired.set)
    standin.expire_token()
    with pytest.raises(kex.TokenException) as e:
        kite.orders()
    assert e.value.code == 403
    assert expired.is_set()
    with pytest.raises(kex.TokenException):
        place(kite)
    session = kite.generate_session("request-3", api_secret=SECRET)  # a new login
    assert session["access_token"] != TOKEN
    assert kite.access_token == standin.access_token != TOKEN
    assert len(kite.orders()) == 1


def test_unimplemented_endpoints_answer_404(kite: Any) -> None:
    with pytest.raises(kex.GeneralException) as e:
        kite.positions()
    assert e.value.code == 404


# -- instruments ----------------------------------------------------------------------


def test_instruments(kite: Any) -> None:
    nse = kite.instruments("NSE")
    by_symbol = {i["tradingsymbol"]: i for i in nse}
    infy = by_symbol["INFY"]
    assert (infy["instrument_token"], infy["tick_size"], infy["lot_size"]) == (408065, 0.05, 1)
    assert by_symbol["RELIANCE"]["instrument_token"] == 738561
    assert by_symbol["TCS"]["instrument_token"] == 2953217
    assert len(nse) == 102 == len(kite.instruments())
    assert kite.instruments("BSE") == []


def test_instruments_from_a_given_csv(clock: Clock) -> None:
    csv_ = (
        b"instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,"
        b"tick_size,lot_size,instrument_type,segment,exchange\n"
        b"779521,3045,SBIN,STATE BANK OF INDIA,0.0,,0.0,0.05,1,EQ,NSE,NSE\n"
        b"10189826,39804,NIFTY2580724400CE,NIFTY,0.0,2025-08-07,24400.0,0.05,75,CE,NFO-OPT,NFO\n"
    )
    with KiteStandIn(clock=clock, instruments_csv=csv_) as standin:
        kite = client(standin)
        assert [i["tradingsymbol"] for i in kite.instruments()] == ["SBIN", "NIFTY2580724400CE"]
        with pytest.raises(kex.InputException, match="tradingsymbol"):
            place(kite)  # no INFY in this dump
        with pytest.raises(kex.InputException, match="lot size"):
            place(kite, exchange="NFO", tradingsymbol="NIFTY2580724400CE", product="NRML")
        place(kite, exchange="NFO", tradingsymbol="NIFTY2580724400CE", product="NRML", quantity=75)


# -- postbacks ------------------------------------------------------------------------


def test_postbacks_follow_the_order(clock: Clock, receiver: Receiver) -> None:
    with KiteStandIn(clock=clock, postback_url=receiver.url, api_secret=SECRET) as standin:
        kite = client(standin)
        order_id = place(kite)
        standin.fill(order_id, 4, Decimal("1450"))
        standin.fill(order_id, 6, Decimal("1449.95"))
        bodies = receiver.wait_for(3)
        assert standin.wait_postbacks()
        assert standin.postbacks_sent == 3
        assert standin.postback_failures == 0
    assert [b["status"] for b in bodies] == ["OPEN", "OPEN", "COMPLETE"]
    assert [b["filled_quantity"] for b in bodies] == [0, 4, 10]
    assert [b["unfilled_quantity"] for b in bodies] == [10, 6, 0]
    assert bodies[-1]["average_price"] == 1449.97
    assert receiver.content_types == ["application/json"] * 3
    for body in bodies:
        assert set(fixture("postback.json")) <= set(body)
        assert body["order_id"] == order_id
        assert body["user_id"] == "AB1234"
        assert body["checksum"] == kite_checksum(body)


def test_duplicate_postbacks(clock: Clock, receiver: Receiver) -> None:
    with KiteStandIn(clock=clock, postback_url=receiver.url) as standin:
        standin.duplicate_postbacks = True
        kite = client(standin)
        order_id = place(kite)
        kite.cancel_order("regular", order_id)
        bodies = receiver.wait_for(4)
    assert [b["status"] for b in bodies] == ["OPEN", "OPEN", "CANCELLED", "CANCELLED"]
    assert bodies[0] == bodies[1]
    assert bodies[2] == bodies[3]


def test_send_postback_now_with_a_bad_checksum(clock: Clock, receiver: Receiver) -> None:
    with KiteStandIn(clock=clock, fill_market=False) as standin:
        order_id = place(client(standin))
        standin.postback_url = receiver.url
        assert standin.send_postback(order_id, checksum="0" * 64) == 400
        assert standin.send_postback(order_id) == 200
        bad, good = receiver.wait_for(2)
    assert bad["checksum"] == "0" * 64
    assert good["checksum"] == kite_checksum(good)
    assert good["status"] == "OPEN"


def test_postbacks_never_block_and_failures_are_counted(clock: Clock) -> None:
    gate = threading.Event()
    slow = Receiver(status=500, gate=gate)
    try:
        with KiteStandIn(clock=clock, postback_url=slow.url) as standin:
            kite = client(standin, timeout=5)
            order_id = place(kite)  # its postback is held by the receiver
            slow.wait_for(1)
            kite.cancel_order("regular", order_id)
            assert standin.postback_failures == 0
            gate.set()
            assert standin.wait_postbacks()
            assert standin.postback_failures == 2
            assert standin.postbacks_sent == 0
            standin.postback_url = "http://127.0.0.1:1/nobody"
            place(kite)
            assert standin.wait_postbacks()
            assert standin.postback_failures == 3
            assert standin.send_postback(order_id) == 0
    finally:
        slow.close()


# -- more of Kite ---------------------------------------------------------------------


def test_a_protected_market_order_shows_as_limit(clock: Clock) -> None:
    with KiteStandIn(clock=clock, market_prices={"NSE:INFY": Decimal("156.7")}) as standin:
        standin.protect_market_as_limit = True
        kite = client(standin)
        place(kite, order_type="MARKET", price=None, market_protection=-1)
        [order] = kite.orders()
    assert order["order_type"] == "LIMIT"
    assert order["price"] == 159.8
    assert order["market_protection"] == 0
    assert order["tags"] == ["mktp", "mktp:2.00"]
    assert order["status"] == "COMPLETE"
    assert order["average_price"] == 156.7


def test_a_stopped_stand_in_answers_nobody(clock: Clock) -> None:
    standin = KiteStandIn(clock=clock)
    standin.start()
    kite = client(standin)
    kite.orders()  # a kept-alive connection
    standin.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        kite.orders()
    with pytest.raises(RuntimeError):
        _ = standin.url


def test_the_by_hand_controls(standin: KiteStandIn, kite: Any) -> None:
    order_id = place(kite)

    def control(action: str, **form: str) -> dict[str, Any]:
        data = urllib.parse.urlencode(form).encode()
        with urllib.request.urlopen(f"{standin.url}/_standin/{action}", data, timeout=5) as r:
            answer: dict[str, Any] = json.loads(r.read())
            return answer

    before = len(standin.requests)
    trade = control("fill", order_id=order_id, quantity="3", price="1450")
    assert trade["data"]["trade_id"] == standin.trades_of(order_id)[0]["trade_id"]
    control("market_price", symbol="NSE:TCS", price="4000.5")
    control("inject", fault="500")
    assert len(standin.requests) == before  # not Kite traffic
    with pytest.raises(kex.GeneralException):
        place(kite)
    place(kite, tradingsymbol="TCS", order_type="MARKET", price=None, market_protection=-1)
    orders = kite.orders()
    assert orders[0]["filled_quantity"] == 3
    assert orders[1]["average_price"] == 4000.5
    control("expire_token")
    with pytest.raises(kex.TokenException):
        kite.orders()


def test_run_by_hand(tmp_path: Path) -> None:
    script = Path(__file__).parent / "kite_standin.py"
    args = ["--port", "0", "--api-key", "k1", "--access-token", "t1", "--api-secret", "s1"]
    args += ["--market-price", "NSE:INFY=1500.5", "--no-rate-limits"]
    proc = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        kite = KiteConnect("k1", access_token="t1", root=url)
        place(kite, order_type="MARKET", price=None, market_protection=-1)
        assert kite.orders()[0]["average_price"] == 1500.5
        proc.terminate()  # SIGTERM
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
