"""Identity and per-caller rules with authentication on: who placed, halted and resumed
comes from the token; a strategy token sees only its own; refusals are journaled at a
bounded rate; each token has its own stream cap and order rate; the clients send the
token on every call, retries and reconnects included."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import logging
from collections.abc import Callable, Iterator
from concurrent import futures
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from execgw.client import (
    AlreadyExists,
    AsyncExecutionClient,
    ExecutionClient,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    Quote,
    RejectReason,
    ResourceExhausted,
    Unauthenticated,
    limit,
    market,
)
from execgw.server import audit
from execgw.server.clock import ManualClock
from execgw.server.events import AccessDenied, OrderAccepted, OrderRejected, TradingHalted
from execgw.server.journal import Journal
from execgw.v1 import gateway_pb2, market_data_pb2, orders_pb2

if TYPE_CHECKING:
    from tests.auth_helpers import (
        INFY,
        TOKENS,
        auth_section,
        bearer,
        client,
        head,
        place_book,
        records_after,
        start_gateway,
        stubs,
    )
    from tests.conftest import RunningGateway, make_config
else:
    from auth_helpers import (
        INFY,
        TOKENS,
        auth_section,
        bearer,
        client,
        head,
        place_book,
        records_after,
        start_gateway,
        stubs,
    )
    from conftest import RunningGateway, make_config

TIMEOUT_S = 10.0


TCS = "NSE:TCS"


@pytest.fixture
def running(tmp_path: Path, clock: ManualClock) -> Iterator[RunningGateway]:
    gateway = start_gateway(tmp_path, clock)
    try:
        yield gateway
    finally:
        gateway.stop()


def _journal(running: RunningGateway) -> Path:
    return Path(running.config.journal.path)


def _events(running: RunningGateway, after: int = 0) -> list[Any]:
    return [r.event for r in records_after(_journal(running), after)]


# -- identity ------------------------------------------------------------------------


def test_halt_and_resume_are_journaled_under_the_tokens_name(running: RunningGateway) -> None:
    place_book(running.target)
    with client(running.target, "ops") as ops:
        ops.halt("end of day")  # no actor: the gateway knows who this is
        ops.resume("morning", actor="ops")  # the token's own name is accepted
    halted, resumed = [e for e in _events(running) if type(e).__name__.startswith("Trading")]
    assert isinstance(halted, TradingHalted)
    assert (halted.actor, resumed.actor) == ("ops", "ops")


def test_an_actor_that_is_not_the_token_is_refused_and_nothing_is_halted(
    running: RunningGateway,
) -> None:
    place_book(running.target)
    before = head(_journal(running))
    with client(running.target, "ops") as ops:
        with pytest.raises(PermissionDenied, match="actor 'alice' is not this token's name"):
            ops.halt("impersonation", actor="alice")
        assert ops.risk_state().state == 1  # TRADING_STATE_ACTIVE
        assert len(ops.list_orders()) == 3  # nothing cancelled by a halt
    (denial,) = _events(running, before)
    assert isinstance(denial, AccessDenied)
    assert (denial.principal, denial.rpc) == ("ops", "HaltTrading")


def test_orders_record_the_token_that_placed_them(running: RunningGateway) -> None:
    place_book(running.target)
    with client(running.target, "strat-a") as a:
        a.submit(market("NSE:TCS", "BUY", 1, strategy_code="A"))  # no quote: rejected
    placed = [e for e in _events(running) if isinstance(e, OrderAccepted | OrderRejected)]
    assert [(e.intent.strategy_code, e.placed_by) for e in placed] == [
        ("A", "strat-a"),
        ("B", "strat-b"),
        ("A", "strat-a"),
        ("A", "strat-a"),
    ]
    assert isinstance(placed[-1], OrderRejected)
    ledger = running.gateway.core._engine.state.ledger  # the order as the core holds it
    assert {o.placed_by for o in ledger.orders()} == {"strat-a", "strat-b"}


def test_with_auth_off_orders_name_nobody_and_the_actor_is_the_requests(
    tmp_path: Path, clock: ManualClock
) -> None:
    running = RunningGateway(make_config(tmp_path), clock)
    try:
        with ExecutionClient(running.target) as open_client:
            open_client.publish_quotes([Quote(symbol=INFY, ltp=1500.0)])
            open_client.submit(market(INFY, "BUY", 1, strategy_code="A"))
            open_client.halt("test", actor="someone")
            open_client.halt("test")
    finally:
        running.stop()
    events = _events(running)
    assert [e.placed_by for e in events if isinstance(e, OrderAccepted)] == [""]
    actors = [e.actor for e in events if isinstance(e, TradingHalted)]
    assert actors[0] == "someone"
    assert actors[1].startswith("ipv4:127.0.0.1:")  # the peer, as before authentication


# -- a strategy token sees only its own ------------------------------------------------


def test_another_strategys_order_and_a_missing_one_get_the_same_answer(
    running: RunningGateway,
) -> None:
    book = place_book(running.target)
    missing = "O9999999999"
    answers = []
    with client(running.target, "strat-a") as a:
        for order_id in (book.order_b, missing):
            for call in (a.cancel, a.get_order):
                with pytest.raises(PermissionDenied) as refused:
                    call(order_id)
                answers.append(refused.value.details.replace(order_id, "<id>"))
    assert answers[0] == answers[1] == answers[2] == answers[3]
    assert "not an order of this caller's strategies (A)" in answers[0]
    with client(running.target, "ops") as ops:
        assert ops.get_order(book.order_b).status == 1  # still resting: PLACED
        with pytest.raises(NotFound):
            ops.get_order(missing)  # an operator may tell the two apart


@pytest.mark.parametrize("rpc", ["ListOrders", "GetPositions", "GetRiskState", "StreamFills"])
def test_an_empty_strategy_filter_is_refused_to_a_strategy_token(
    running: RunningGateway, rpc: str
) -> None:
    """Empty means every strategy: refused, not narrowed, even for a single-strategy token."""
    md = bearer("strat-a")
    with stubs(running.target) as s:
        calls: dict[str, Callable[[], object]] = {
            "ListOrders": lambda: s.gateway.ListOrders(
                gateway_pb2.ListOrdersRequest(), metadata=md
            ),
            "GetPositions": lambda: s.gateway.GetPositions(
                gateway_pb2.GetPositionsRequest(), metadata=md
            ),
            "GetRiskState": lambda: s.gateway.GetRiskState(
                gateway_pb2.GetRiskStateRequest(), metadata=md
            ),
            "StreamFills": lambda: next(
                s.gateway.StreamFills(gateway_pb2.StreamFillsRequest(), metadata=md)
            ),
        }
        with pytest.raises(grpc.RpcError) as refused:
            calls[rpc]()
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "empty means every strategy" in (refused.value.details() or "")


def test_a_stream_filter_naming_one_foreign_strategy_is_refused(running: RunningGateway) -> None:
    request = gateway_pb2.StreamFillsRequest(strategy_codes=["A", "B"])
    with stubs(running.target) as s, pytest.raises(grpc.RpcError) as refused:
        next(s.gateway.StreamFills(request, metadata=bearer("strat-a")))
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "strategy_codes[1]: strategy 'B'" in (refused.value.details() or "")


def test_a_strategy_reads_its_own_risk_rows_and_the_accounts(running: RunningGateway) -> None:
    place_book(running.target)
    with client(running.target, "strat-a") as a, client(running.target, "ops") as ops:
        own = {(b.name, b.strategy_code) for b in a.risk_state("A").breakers}
        every = {(b.name, b.strategy_code) for b in ops.risk_state("A").breakers}
        assert [s.strategy_code for s in a.risk_state("A").strategies] == ["A"]
    assert {code for _, code in every} == {"", "A", "B"}
    assert own == {(name, code) for name, code in every if code in ("", "A")}


# -- refusals are journaled, at a bounded rate ---------------------------------------


def test_refusals_are_journaled_at_a_bounded_rate_with_a_count_of_the_rest(
    running: RunningGateway, clock: ManualClock
) -> None:
    before = head(_journal(running))
    with client(running.target, "strat-a") as a:
        for _ in range(25):
            with pytest.raises(PermissionDenied):
                a.positions("B")
        clock.advance(timedelta(seconds=1))
        with pytest.raises(PermissionDenied):
            a.positions("B")
    denials = _events(running, before)
    assert all(isinstance(d, AccessDenied) for d in denials)
    assert len(denials) == 21  # a burst of 20, then one per second
    assert [d.suppressed for d in denials] == [0] * 20 + [5]
    assert {(d.principal, d.rpc) for d in denials} == {("strat-a", "GetPositions")}


def test_unauthenticated_calls_are_logged_at_a_bounded_rate_and_not_journaled(
    running: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    before = head(_journal(running))
    caplog.set_level(logging.WARNING, logger="execgw.server.api.auth")
    with ExecutionClient(running.target, retries=0) as anonymous:
        for _ in range(30):
            with pytest.raises(Unauthenticated, match="no authorization metadata"):
                anonymous.get_quote(INFY)
    lines = [r for r in caplog.records if "unauthenticated call to GetQuote" in r.getMessage()]
    assert len(lines) == 20
    assert head(_journal(running)) == before


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("Basic dXNlcjpwYXNz", "is not 'Bearer <token>'"),
        ("Bearer", "is not 'Bearer <token>'"),
        ("Bearer  two-spaces", "is not 'Bearer <token>'"),
        (None, "the token is not valid"),  # the right token, in another case and scheme
    ],
)
def test_malformed_authorization_is_unauthenticated(
    running: RunningGateway, value: str | None, says: str
) -> None:
    header = value if value is not None else f"bearer {TOKENS['ops'].upper()}"
    with stubs(running.target) as s, pytest.raises(grpc.RpcError) as refused:
        s.market.GetQuote(
            market_data_pb2.GetQuoteRequest(symbol=INFY), metadata=(("authorization", header),)
        )
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert says in (refused.value.details() or "")


def test_two_authorization_entries_are_unauthenticated(running: RunningGateway) -> None:
    metadata = (*bearer("ops"), *bearer("strat-a"))
    with stubs(running.target) as s, pytest.raises(grpc.RpcError) as refused:
        s.market.GetQuote(market_data_pb2.GetQuoteRequest(symbol=INFY), metadata=metadata)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_health_and_reflection_stay_open(running: RunningGateway) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(running.target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT_S
        )
        names = {s.name for s in next(reflect).list_services_response.service}
    assert "execgw.v1.ExecutionGateway" in names


# -- per-token limits -----------------------------------------------------------------


def test_each_token_has_its_own_stream_cap(tmp_path: Path, clock: ManualClock) -> None:
    auth = auth_section()
    auth["tokens"][0]["max_streams"] = 2  # strat-a
    running = start_gateway(tmp_path, clock, auth=auth)
    calls = []
    try:
        with stubs(running.target) as s:
            request = gateway_pb2.StreamFillsRequest(strategy_codes=["A"])
            for _ in range(2):
                call = s.gateway.StreamFills(request, metadata=bearer("strat-a"))
                calls.append(call)
                assert next(call).event.HasField("heartbeat")  # open on the server
            third = s.gateway.StreamFills(request, metadata=bearer("strat-a"))
            with pytest.raises(grpc.RpcError) as refused:
                next(third)
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "token 'strat-a' already has 2 streams open" in (refused.value.details() or "")
            other = s.gateway.StreamFills(
                gateway_pb2.StreamFillsRequest(strategy_codes=["B"]), metadata=bearer("strat-b")
            )
            calls.append(other)
            assert next(other).event.HasField("heartbeat")
            with client(running.target, "strat-a") as a:
                stream = a.stream_fills(strategy_codes=["A"], reconnect=False)
                with pytest.raises(ResourceExhausted):
                    next(stream)
    finally:
        for call in calls:
            call.cancel()
        running.stop()


def test_each_token_has_its_own_order_rate_on_top_of_the_strategies(
    tmp_path: Path, clock: ManualClock
) -> None:
    auth = auth_section()
    auth["tokens"][0].update(strategies=["A", "A2"], orders_per_second=1.0, order_burst=2)
    running = start_gateway(tmp_path, clock, auth=auth)
    try:
        place_book(running.target)  # strat-a placed 2 orders: its bucket is empty
        with client(running.target, "strat-a") as a, client(running.target, "strat-b") as b:
            first = a.submit(market(INFY, "BUY", 1, strategy_code="A2"), "k-1")
            assert first.reject_reason == RejectReason.REJECT_REASON_ORDER_RATE
            assert first.message == "orders_per_second 1.0 exceeded for token strat-a"
            preview = a.preview(market(INFY, "BUY", 1, strategy_code="A2"))
            assert preview.reject_reason == RejectReason.REJECT_REASON_ORDER_RATE
            # Another token is not held to strat-a's bucket.
            assert b.submit(market(INFY, "BUY", 1, strategy_code="B")).reject_reason == 0
            clock.advance(timedelta(seconds=1))
            again = a.submit(market(INFY, "BUY", 1, strategy_code="A2"), "k-2")
            assert again.reject_reason == 0
            # A retry returns the stored result without taking a token.
            assert a.submit(market(INFY, "BUY", 1, strategy_code="A2"), "k-2") == again
    finally:
        running.stop()


# -- PublishQuotes while quotes are synthetic -----------------------------------------


@pytest.mark.parametrize("auth_on", [True, False], ids=["auth-on", "auth-off"])
def test_publish_quotes_is_refused_while_the_source_is_synthetic(
    tmp_path: Path, clock: ManualClock, auth_on: bool
) -> None:
    synthetic = {"source": "synthetic", "synthetic": {"interval_ms": 60_000}}
    overrides: dict[str, Any] = {"market_data": synthetic}
    if auth_on:
        overrides["auth"] = auth_section()
    running = RunningGateway(make_config(tmp_path, **overrides), clock)
    token = TOKENS["feed"] if auth_on else None
    try:
        with ExecutionClient(running.target, auth=token, retries=0) as feed:
            before = feed.get_quote(INFY)
            with pytest.raises(FailedPrecondition, match=r"market_data\.source is synthetic"):
                feed.publish_quotes([Quote(symbol=INFY, ltp=1.0)])
            assert feed.get_quote(INFY) == before
    finally:
        running.stop()


# -- start-up ------------------------------------------------------------------------


def test_the_server_warns_at_start_up_when_auth_is_off(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="execgw.server.app")
    for auth in (None, auth_section()):
        caplog.clear()
        directory = tmp_path / ("off" if auth is None else "on")
        directory.mkdir()
        overrides = {} if auth is None else {"auth": auth}
        running = RunningGateway(make_config(directory, **overrides), clock)
        running.stop()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        off = [r for r in warnings if "authentication is OFF" in r.getMessage()]
        if auth is None:
            assert len(off) == 1
            assert f"port {running.port}" in off[0].getMessage()
        else:
            assert off == []
            assert any(
                "authentication is on: 4 tokens (strat-a (strategy)" in r.getMessage()
                for r in caplog.records
            )


# -- the clients send the token on every call ----------------------------------------


class _Recorder:
    """Fails each kind of call once with UNAVAILABLE, then answers; records the metadata."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []

    def _record(self, name: str, context: grpc.ServicerContext) -> bool:
        values = [v for k, v in context.invocation_metadata() if k == "authorization"]
        self.seen.append((name, values[0] if len(values) == 1 else None))
        return sum(1 for n, _ in self.seen if n == name) == 1

    def get_order(self, request: Any, context: grpc.ServicerContext) -> Any:
        if self._record("GetOrder", context):
            context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return gateway_pb2.GetOrderResponse()

    def stream_fills(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        if self._record("StreamFills", context):
            context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        event = orders_pb2.ExecutionEvent(sequence=1, fill=orders_pb2.Fill(qty=1))
        yield gateway_pb2.StreamFillsResponse(event=event)

    def publish_quotes(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        self._record("PublishQuotes", context)
        return market_data_pb2.PublishQuotesResponse(accepted=sum(len(r.quotes) for r in requests))

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        gateway: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "GetOrder": grpc.unary_unary_rpc_method_handler(
                self.get_order,
                gateway_pb2.GetOrderRequest.FromString,
                gateway_pb2.GetOrderResponse.SerializeToString,
            ),
            "StreamFills": grpc.unary_stream_rpc_method_handler(
                self.stream_fills,
                gateway_pb2.StreamFillsRequest.FromString,
                gateway_pb2.StreamFillsResponse.SerializeToString,
            ),
        }
        market = {
            "PublishQuotes": grpc.stream_unary_rpc_method_handler(
                self.publish_quotes,
                market_data_pb2.PublishQuotesRequest.FromString,
                market_data_pb2.PublishQuotesResponse.SerializeToString,
            ),
        }
        return [
            grpc.method_handlers_generic_handler("execgw.v1.ExecutionGateway", gateway),
            grpc.method_handlers_generic_handler("execgw.v1.MarketData", market),
        ]


@pytest.fixture
def recorder() -> Iterator[tuple[str, _Recorder]]:
    servicer = _Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers(servicer.handlers())
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(0)


SECRET = "s3cr3t-t0ken-value_ABC"
EXPECTED = [
    ("GetOrder", f"Bearer {SECRET}"),
    ("GetOrder", f"Bearer {SECRET}"),
    ("StreamFills", f"Bearer {SECRET}"),
    ("StreamFills", f"Bearer {SECRET}"),
    ("PublishQuotes", f"Bearer {SECRET}"),
]


def test_the_sync_client_sends_the_token_on_retries_and_reconnects(
    recorder: tuple[str, _Recorder],
) -> None:
    target, servicer = recorder
    with ExecutionClient(target, auth=SECRET, sleep=lambda s: None) as gw:
        gw.get_order("O1")
        assert next(iter(gw.stream_fills())).fill.qty == 1
        assert gw.publish_quotes([Quote(symbol=INFY, ltp=1.0)]) == 1
        assert SECRET not in repr(gw)
    assert servicer.seen == EXPECTED


def test_the_async_client_sends_the_token_on_retries_and_reconnects(
    recorder: tuple[str, _Recorder],
) -> None:
    target, servicer = recorder

    async def no_wait(seconds: float) -> None:
        return None

    async def run() -> None:
        async with AsyncExecutionClient(target, auth=SECRET, sleep=no_wait) as gw:
            await gw.get_order("O1")
            async for event in gw.stream_fills():
                assert event.fill.qty == 1
                break
            assert await gw.publish_quotes([Quote(symbol=INFY, ltp=1.0)]) == 1
            assert SECRET not in repr(gw)

    asyncio.run(run())
    assert servicer.seen == EXPECTED


@pytest.mark.parametrize("bad", ["", "two words", "tab\there", "ünïcode"])
def test_a_malformed_token_is_refused_by_the_client_without_showing_it(bad: str) -> None:
    with pytest.raises(ValueError, match="auth must be the bearer token") as refused:
        ExecutionClient("127.0.0.1:1", auth=bad)
    assert bad not in str(refused.value) or not bad
    with pytest.raises(ValueError, match="auth must be the bearer token"):
        AsyncExecutionClient("127.0.0.1:1", auth=bad)


def test_without_auth_the_clients_send_no_authorization(recorder: tuple[str, _Recorder]) -> None:
    target, servicer = recorder
    with ExecutionClient(target, sleep=lambda s: None) as gw:
        gw.get_order("O1")
    assert servicer.seen == [("GetOrder", None), ("GetOrder", None)]


def test_a_resting_order_of_the_token_can_be_cancelled(running: RunningGateway) -> None:
    place_book(running.target)
    with client(running.target, "strat-a") as a:
        resting = a.submit(limit(INFY, "SELL", 1, 1550.0, strategy_code="A", product="NRML"))
        assert a.cancel(resting.order_id).status == 5  # ORDER_STATUS_CANCELLED


def test_a_caller_without_a_token_is_refused_before_its_request_is_read(
    running: RunningGateway,
) -> None:
    """A request over the size limit: read, it would be RESOURCE_EXHAUSTED; refused from
    the headers, it is UNAUTHENTICATED. So an unknown caller holds no request memory."""
    oversized = gateway_pb2.SubmitOrderRequest(client_order_id="x" * (5 * 1024 * 1024))
    codes = []
    with stubs(running.target) as s:
        for metadata in ((), bearer("strat-a")):
            with pytest.raises(grpc.RpcError) as refused:
                s.gateway.SubmitOrder(oversized, metadata=metadata, timeout=TIMEOUT_S)
            codes.append(refused.value.code())
    assert codes == [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED]


def test_the_csv_export_names_who_placed_halted_or_was_refused(running: RunningGateway) -> None:
    place_book(running.target)
    with client(running.target, "ops") as ops, client(running.target, "strat-b") as b:
        ops.halt("audit")
        with pytest.raises(PermissionDenied):
            b.positions("A")
    reader = Journal(_journal(running), read_only=True)
    try:
        out = io.StringIO()
        audit.export(reader, out, "csv")
    finally:
        reader.close()
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    who = [(r["kind"], r["actor"]) for r in rows if r["actor"]]
    assert ("OrderAccepted", "strat-a") in who
    assert ("OrderAccepted", "strat-b") in who
    assert ("TradingHalted", "ops") in who
    assert who[-1] == ("AccessDenied", "strat-b")
    bookkeeping = {"DayRolledOver", "MarksRecorded", "EquityPeak"}
    assert {r["kind"] for r in rows if not r["actor"]} <= bookkeeping


def test_client_order_ids_are_each_strategys_own(running: RunningGateway) -> None:
    """Another strategy's key neither blocks an order nor tells whether it was used."""
    place_book(running.target)
    with client(running.target, "strat-a") as a, client(running.target, "strat-b") as b:
        mine = a.submit(market(INFY, "BUY", 1, strategy_code="A", product="NRML"), "shared-key")
        # B using A's key first (or after) is B's own order, not a conflict with A's.
        theirs = b.submit(market(INFY, "BUY", 1, strategy_code="B", product="NRML"), "shared-key")
        assert theirs.order_id != mine.order_id
        assert (
            a.submit(
                market(INFY, "BUY", 1, strategy_code="A", product="NRML"), "shared-key"
            ).order_id
            == mine.order_id
        )
        with pytest.raises(AlreadyExists) as own:
            a.submit(market(INFY, "BUY", 2, strategy_code="A", product="NRML"), "shared-key")
        assert mine.order_id in own.value.details


def test_who_placed_an_order_survives_a_restart_from_events_and_from_a_snapshot(
    tmp_path: Path, clock: ManualClock
) -> None:
    for snapshot_every in (10_000, 1):
        directory = tmp_path / str(snapshot_every)
        directory.mkdir()
        journal = {"snapshot_every": snapshot_every}
        first = start_gateway(directory, clock, journal=journal)
        try:
            book = place_book(first.target)
            with client(first.target, "strat-a") as a, pytest.raises(PermissionDenied):
                a.get_order(book.order_b)
        finally:
            first.stop()
        again = start_gateway(directory, clock, journal=journal)
        try:
            ledger = again.gateway.core._engine.state.ledger
            placed_by = {o.order_id: o.placed_by for o in ledger.orders()}
            assert placed_by[book.order_a] == "strat-a"
            assert placed_by[book.order_b] == "strat-b"
            with client(again.target, "strat-b") as b:
                assert b.get_order(book.order_b).order_id == book.order_b
        finally:
            again.stop()


def test_a_page_token_never_carries_another_strategys_order_id(
    running: RunningGateway,
) -> None:
    """Page tokens are plain text: their cursor must be one of the caller's own orders."""
    book = place_book(running.target)
    with client(running.target, "feed") as feed:
        assert feed.publish_quotes([Quote(symbol=TCS, ltp=4000.0)]) == 1
    with client(running.target, "strat-a") as a:
        # More of A's orders elsewhere than orders in INFY: a listing of A's INFY orders
        # could walk INFY's orders, B's among them, and stop on one.
        for _ in range(4):
            a.submit(limit(TCS, "BUY", 1, 3900.0, strategy_code="A", product="NRML"))
        token = ""
        seen: list[str] = []
        while True:
            page = a.list_orders_page(strategy_code="A", symbol=INFY, page_size=1, page_token=token)
            seen.extend(o.order_id for o in page.results)
            token = page.next_page_token
            if not token:
                break
            cursor = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            assert cursor["after"] != book.order_b
            assert cursor["after"] in seen
    assert book.order_b not in seen


@pytest.mark.parametrize("target", ["10.1.2.3:50051", "gw.example.com:443", "0.0.0.0:50051"])
def test_a_client_never_sends_its_token_in_plaintext_across_a_network(target: str) -> None:
    with pytest.raises(ValueError, match="plaintext") as info:
        ExecutionClient(target, auth="s3cret-token-value")
    assert "s3cret" not in str(info.value)
    for local in ("127.0.0.1:50051", "localhost:50051", "[::1]:50051", "unix:/tmp/gw.sock"):
        ExecutionClient(local, auth="s3cret-token-value").close()
