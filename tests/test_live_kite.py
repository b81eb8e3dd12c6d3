"""The live path against a local Kite stand-in, through the real client, a real gateway
and the real kiteconnect SDK: the calls Kite sees, the statuses and fills that come
back, and every way a broker call can fail."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from execgw.client import ExecutionClient, FailedPrecondition, Unavailable, builders
from execgw.server.clock import ManualClock
from execgw.server.config import GatewayConfig
from execgw.server.venues.kite.mapping import order_tag
from execgw.v1 import orders_pb2

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.e2e_helpers import INFY, TIMEOUT_S, StreamSubscriptions, publish, stream_reader
    from tests.kite_standin import KiteStandIn
else:
    from conftest import RunningGateway, make_config
    from e2e_helpers import INFY, TIMEOUT_S, StreamSubscriptions, publish, stream_reader
    from kite_standin import KiteStandIn

S = orders_pb2
D = Decimal


def live_config(tmp_path: Path, standin: KiteStandIn, **kite: Any) -> GatewayConfig:
    settings: dict[str, Any] = {
        "root": standin.url,
        "poll_interval_s": 0.05,
        "timeout_s": 1.0,
        "ack_wait_s": 5.0,
        "unresolved_grace_s": 0.5,
    }
    settings.update(kite)
    return make_config(tmp_path, mode="live", broker={"kite": settings})


@pytest.fixture
def standin() -> Iterator[KiteStandIn]:
    kite = KiteStandIn(market_prices={INFY: D("1500.00")})
    kite.start()
    try:
        yield kite
    finally:
        kite.stop()


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch, standin: KiteStandIn) -> None:
    monkeypatch.setenv("KITE_API_KEY", "standin_key")
    monkeypatch.setenv("KITE_ACCESS_TOKEN", standin.access_token)
    monkeypatch.setenv("KITE_API_SECRET", "standin_secret")


def start_live(
    tmp_path: Path, clock: ManualClock, standin: KiteStandIn, **kite: Any
) -> RunningGateway:
    running = RunningGateway(live_config(tmp_path, standin, **kite), clock)
    with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
        publish(c, INFY, 1500.0)
    return running


@pytest.fixture
def live(
    tmp_path: Path, clock: ManualClock, standin: KiteStandIn, credentials: None
) -> Iterator[RunningGateway]:
    running = start_live(tmp_path, clock, standin)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def client(live: RunningGateway) -> Iterator[ExecutionClient]:
    with ExecutionClient(live.target, timeout=TIMEOUT_S) as c:
        yield c


def until(read: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = TIMEOUT_S) -> Any:
    """Poll `read` until `ok` holds (the gateway's own timers do the work)."""
    pause = threading.Event()
    deadline = threading.Event()
    timer = threading.Timer(timeout, deadline.set)
    timer.start()
    try:
        while True:
            value = read()
            if ok(value):
                return value
            if deadline.is_set():
                raise AssertionError(f"not reached within {timeout}s; last: {value}")
            pause.wait(0.01)
    finally:
        timer.cancel()


def status_is(*wanted: int) -> Callable[[Any], bool]:
    return lambda result: result.status in wanted


def kite_status(result: Any) -> str:
    """Kite's own status string in a result's raw, "" before Kite's record arrived."""
    return str(result.raw["status"]) if "status" in result.raw else ""


def placements(standin: KiteStandIn) -> list[dict[str, str]]:
    return [r.form for r in standin.order_calls() if r.method == "POST"]


# -- what Kite sees ----------------------------------------------------------------


def test_each_order_type_reaches_kite_with_exactly_these_form_fields(
    client: ExecutionClient, standin: KiteStandIn
) -> None:
    intents = [
        builders.market(INFY, "BUY", 10, strategy_code="s1"),
        builders.limit(INFY, "SELL", 5, D("1510.05"), strategy_code="s1", product="CNC"),
        builders.stop(INFY, "BUY", 3, D("1520.00"), price=D("1521.50"), strategy_code="s1"),
        builders.stop(
            INFY, "SELL", 2, D("1490.10"), strategy_code="s1", product="NRML", validity="DAY"
        ),
        builders.limit(INFY, "BUY", 1, D("1400"), strategy_code="s1", validity="IOC"),
    ]
    keys = [f"form-{n}" for n in range(len(intents))]
    for intent, key in zip(intents, keys, strict=True):
        client.submit(intent, key)
    tags = [order_tag("s1", key) for key in keys]
    common = {"variety": "regular", "exchange": "NSE", "tradingsymbol": "INFY"}
    assert placements(standin) == [
        {
            **common,
            "transaction_type": "BUY",
            "quantity": "10",
            "product": "MIS",
            "order_type": "MARKET",
            "validity": "DAY",
            "tag": tags[0],
            "market_protection": "-1",
        },
        {
            **common,
            "transaction_type": "SELL",
            "quantity": "5",
            "product": "CNC",
            "order_type": "LIMIT",
            "validity": "DAY",
            "tag": tags[1],
            "price": "1510.05",
        },
        {
            **common,
            "transaction_type": "BUY",
            "quantity": "3",
            "product": "MIS",
            "order_type": "SL",
            "validity": "DAY",
            "tag": tags[2],
            "price": "1521.50",
            "trigger_price": "1520.00",
        },
        {
            **common,
            "transaction_type": "SELL",
            "quantity": "2",
            "product": "NRML",
            "order_type": "SL-M",
            "validity": "DAY",
            "tag": tags[3],
            "trigger_price": "1490.10",
            "market_protection": "-1",
        },
        {
            **common,
            "transaction_type": "BUY",
            "quantity": "1",
            "product": "MIS",
            "order_type": "LIMIT",
            "validity": "IOC",
            "tag": tags[4],
            "price": "1400",
        },
    ]
    assert all(r.path == "/orders/regular" for r in standin.order_calls())
    assert all(len(tag) == 20 and tag.isalnum() for tag in tags)


def test_kite_statuses_map_onto_ours_with_kites_order_in_raw(
    client: ExecutionClient, standin: KiteStandIn
) -> None:
    filled = client.submit(builders.market(INFY, "BUY", 10, strategy_code="s1"), "st-1")
    resting = client.submit(builders.limit(INFY, "BUY", 5, D("1490"), strategy_code="s1"), "st-2")
    stop = client.submit(builders.stop(INFY, "BUY", 3, D("1520"), strategy_code="s1"), "st-3")
    ioc = client.submit(
        builders.limit(INFY, "BUY", 1, D("1400"), strategy_code="s1", validity="IOC"), "st-4"
    )
    kite_ids = [o["order_id"] for o in standin.orders()]
    filled = until(lambda: client.get_order(filled.order_id), status_is(S.ORDER_STATUS_FILLED))
    assert filled.venue_order_id == kite_ids[0]
    assert filled.avg_price_decimal == "1500.00"
    assert filled.filled_qty == 10
    assert filled.raw["status"] == "COMPLETE"
    resting = until(lambda: client.get_order(resting.order_id), lambda r: kite_status(r) == "OPEN")
    assert resting.status == S.ORDER_STATUS_PLACED
    assert resting.venue_order_id == kite_ids[1]
    assert resting.raw["tag"] == order_tag("s1", "st-2")
    stop = until(
        lambda: client.get_order(stop.order_id), lambda r: kite_status(r) == "TRIGGER PENDING"
    )
    assert stop.status == S.ORDER_STATUS_PLACED
    ioc = until(lambda: client.get_order(ioc.order_id), status_is(S.ORDER_STATUS_CANCELLED))
    assert ioc.venue_order_id == kite_ids[3]
    standin.reject(kite_ids[1], "RMS:Margin Exceeds")
    resting = until(lambda: client.get_order(resting.order_id), status_is(S.ORDER_STATUS_REJECTED))
    assert resting.reject_reason == S.REJECT_REASON_BROKER
    assert resting.message == "RMS:Margin Exceeds"


def test_a_partial_fill_then_the_rest_with_exact_prices_and_each_trade_applied_once(
    live: RunningGateway,
    client: ExecutionClient,
    standin: KiteStandIn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    standin.duplicate_postbacks = True
    subscriptions = StreamSubscriptions(live, monkeypatch)
    with stream_reader(live, subscriptions) as reader:
        order = client.submit(
            builders.limit(INFY, "BUY", 10, D("1499.95"), strategy_code="s1"), "pf-1"
        )
        assert order.status == S.ORDER_STATUS_PLACED
        kite_id = order.venue_order_id
        first = standin.fill(kite_id, 4, D("1499.90"))
        order = until(lambda: client.get_order(order.order_id), lambda r: r.filled_qty == 4)
        assert order.status == S.ORDER_STATUS_PARTIAL
        second = standin.fill(kite_id, 6, D("1499.95"))
        order = until(lambda: client.get_order(order.order_id), status_is(S.ORDER_STATUS_FILLED))
        # (4 * 1499.90 + 6 * 1499.95) / 10, exactly.
        assert order.avg_price_decimal == "1499.93"
        fills: list[orders_pb2.Fill] = []
        while len(fills) < 2:
            event = reader.next()
            if event.HasField("fill"):
                fills.append(event.fill)
        assert [(f.venue_trade_id, f.qty, f.price_decimal) for f in fills] == [
            (first, 4, "1499.90"),
            (second, 6, "1499.95"),
        ]
        # Polls and postbacks (each sent twice) told of each trade several times.
        position = client.positions("s1")[0]
        assert position.net_qty == 10


# -- postbacks ------------------------------------------------------------------------


def test_postbacks_with_a_good_checksum_update_orders_and_a_bad_one_is_refused(
    tmp_path: Path,
    clock: ManualClock,
    standin: KiteStandIn,
    credentials: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Polls far apart: what changes here, postbacks changed.
    running = start_live(
        tmp_path, clock, standin, poll_interval_s=60.0, postback_listen="127.0.0.1:0"
    )
    try:
        standin.postback_url = f"http://127.0.0.1:{running.gateway.postback_port}/"
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            order = c.submit(builders.limit(INFY, "BUY", 10, D("1499"), strategy_code="s1"), "pb")
            kite_id = order.venue_order_id
            forged = standin.order(kite_id)
            standin.fill(kite_id, 10, D("1499"))
            # A forged postback first would claim the order cancelled: it changes nothing.
            assert standin.send_postback(kite_id, checksum="0" * 64) == 403
            assert any("bad checksum" in r.getMessage() for r in caplog.records)
            filled = until(lambda: c.get_order(order.order_id), status_is(S.ORDER_STATUS_FILLED))
            assert filled.filled_qty == 10
            assert forged["status"] == "OPEN"
    finally:
        running.stop()


# -- when the broker call goes wrong --------------------------------------------------


def test_a_timeout_after_kite_accepted_is_ambiguous_then_found_by_tag_with_one_order(
    tmp_path: Path, clock: ManualClock, standin: KiteStandIn, credentials: None
) -> None:
    running = start_live(tmp_path, clock, standin, timeout_s=0.3)
    standin.hold_s = 1.0
    standin.inject("timeout_after_accept")
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as c:
            order = c.submit(builders.limit(INFY, "BUY", 5, D("1490"), strategy_code="s1"), "to")
            assert order.status == S.ORDER_STATUS_AMBIGUOUS
            assert "looking the order up by its tag" in order.message
            order = until(lambda: c.get_order(order.order_id), status_is(S.ORDER_STATUS_PLACED))
            assert order.venue_order_id == standin.orders()[0]["order_id"]
            # The same key again is the same order, not a second placement.
            again = c.submit(builders.limit(INFY, "BUY", 5, D("1490"), strategy_code="s1"), "to")
            assert again.order_id == order.order_id
        assert len(placements(standin)) == 1
        assert len(standin.orders()) == 1
    finally:
        running.stop()


def test_a_5xx_without_an_order_is_ambiguous_then_rejected_never_resent(
    client: ExecutionClient, standin: KiteStandIn
) -> None:
    standin.inject("500")
    order = client.submit(builders.limit(INFY, "BUY", 5, D("1490"), strategy_code="s1"), "5xx")
    assert order.status == S.ORDER_STATUS_AMBIGUOUS
    order = until(lambda: client.get_order(order.order_id), status_is(S.ORDER_STATUS_REJECTED))
    assert order.reject_reason == S.REJECT_REASON_BROKER
    assert "never placed" in order.message
    assert "not sent again" in order.message
    assert len(placements(standin)) == 1
    assert standin.orders() == []


def test_a_burst_of_50_orders_is_shaped_so_kite_never_answers_429(
    client: ExecutionClient, standin: KiteStandIn
) -> None:
    intents = [
        builders.limit(INFY, "BUY", 1, D("1400") + n * D("0.05"), strategy_code="s1")
        for n in range(50)
    ]
    with ThreadPoolExecutor(16) as pool:
        results = list(
            pool.map(lambda n: client.submit(intents[n], f"burst-{n}", timeout=30), range(50))
        )
    assert standin.rate_limited == 0
    assert len(standin.orders()) == 50
    settled = [
        until(functools.partial(client.get_order, r.order_id), status_is(S.ORDER_STATUS_PLACED))
        for r in results
    ]
    assert len({r.venue_order_id for r in settled}) == 50


def test_a_429_from_kite_is_retried_because_nothing_was_placed(
    client: ExecutionClient, standin: KiteStandIn
) -> None:
    standin.inject("429")
    order = client.submit(builders.limit(INFY, "BUY", 5, D("1490"), strategy_code="s1"), "429")
    assert order.status == S.ORDER_STATUS_PLACED
    assert len(placements(standin)) == 2
    assert len(standin.orders()) == 1


@pytest.mark.parametrize(
    ("fault", "text"),
    [("insufficient_funds", "Insufficient funds"), ("input", "")],
)
def test_kite_refusals_are_rejected_results_with_the_brokers_text(
    client: ExecutionClient, standin: KiteStandIn, fault: str, text: str
) -> None:
    standin.inject(fault)
    order = client.submit(builders.limit(INFY, "BUY", 5, D("1490"), strategy_code="s1"), fault)
    assert order.status == S.ORDER_STATUS_REJECTED
    assert order.reject_reason == S.REJECT_REASON_BROKER
    assert text in order.message
    assert order.message
    assert standin.orders() == []


def test_an_expired_token_rejects_the_order_turns_health_not_serving_and_refuses_more(
    live: RunningGateway, client: ExecutionClient, standin: KiteStandIn
) -> None:
    standin.expire_token()
    order = client.submit(builders.limit(INFY, "BUY", 5, D("1490"), strategy_code="s1"), "tok")
    assert order.status == S.ORDER_STATUS_REJECTED
    assert order.reject_reason == S.REJECT_REASON_BROKER
    with grpc.insecure_channel(live.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        until(
            lambda: health.Check(health_pb2.HealthCheckRequest(service="")).status,
            lambda s: s == health_pb2.HealthCheckResponse.NOT_SERVING,
        )
    with pytest.raises(Unavailable, match="new one is needed"):
        client.submit(builders.limit(INFY, "BUY", 5, D("1490"), strategy_code="s1"), "tok-2")
    assert len(placements(standin)) == 1
    assert "standin_token" not in str(order)


# -- cancel ---------------------------------------------------------------------------


def test_cancel_goes_to_kite_and_the_order_is_pending_cancel_until_kite_confirms(
    client: ExecutionClient, standin: KiteStandIn
) -> None:
    order = client.submit(builders.limit(INFY, "BUY", 5, D("1490"), strategy_code="s1"), "cx")
    answer = client.cancel(order.order_id)
    assert answer.status in (S.ORDER_STATUS_PENDING_CANCEL, S.ORDER_STATUS_CANCELLED)
    # A retry while the cancel is on its way sends nothing more; once Kite confirmed,
    # the order is final and a cancel is refused as such.
    try:
        again = client.cancel(order.order_id)
    except FailedPrecondition:
        pass
    else:
        assert again.status == S.ORDER_STATUS_PENDING_CANCEL
    done = until(lambda: client.get_order(order.order_id), status_is(S.ORDER_STATUS_CANCELLED))
    assert done.raw["status"] == "CANCELLED"
    cancels = [r for r in standin.order_calls() if r.method == "DELETE"]
    assert [r.path for r in cancels] == [f"/orders/regular/{order.venue_order_id}"]
    assert standin.order(order.venue_order_id)["status"] == "CANCELLED"
