"""The auth matrix: every RPC of both services, unary and streaming, called with no
token, a bad token, the wrong role, the right role for another strategy, and the right
role, through a real gateway on loopback with raw stubs.

Each case gets its status, and a refused call leaves no effect: the order book,
positions, quotes and risk state are as before, and the journal holds nothing new but
the AccessDenied record of a refused authenticated caller (nothing at all for a caller
with no valid token).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from execgw.client import Quote
from execgw.server.api.auth import PERMISSIONS
from execgw.server.clock import ManualClock
from execgw.server.events import AccessDenied
from execgw.server.tokens import new_token
from execgw.v1 import gateway_pb2, market_data_pb2, orders_pb2

if TYPE_CHECKING:
    from tests.auth_helpers import (
        INFY,
        Book,
        Metadata,
        Stubs,
        bearer,
        client,
        head,
        place_book,
        records_after,
        start_gateway,
        stubs,
    )
    from tests.conftest import RunningGateway
else:
    from auth_helpers import (
        INFY,
        Book,
        Metadata,
        Stubs,
        bearer,
        client,
        head,
        place_book,
        records_after,
        start_gateway,
        stubs,
    )
    from conftest import RunningGateway

OK = grpc.StatusCode.OK
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
TIMEOUT_S = 10.0

# A call: the stubs, the metadata, the book, and the strategy code the request names.
Call = Callable[[Stubs, Metadata, Book, str], None]


def _intent(code: str) -> orders_pb2.OrderIntent:
    return orders_pb2.OrderIntent(
        symbol=INFY,
        strategy_code=code,
        side=orders_pb2.SIDE_BUY,
        qty=1,
        order_type=orders_pb2.ORDER_TYPE_MARKET,
        product=orders_pb2.PRODUCT_NRML,
        validity=orders_pb2.VALIDITY_DAY,
    )


def _own_order(book: Book, code: str) -> str:
    return book.order_a if code == "A" else book.order_b


def submit(s: Stubs, md: Metadata, book: Book, code: str) -> None:
    request = gateway_pb2.SubmitOrderRequest(intent=_intent(code), client_order_id="m-1")
    s.gateway.SubmitOrder(request, metadata=md, timeout=TIMEOUT_S)


class RequestRefused(grpc.RpcError):
    """One SubmitOrders request's error, as the status SubmitOrder would have ended with."""

    def __init__(self, answer: gateway_pb2.SubmitOrdersResponse) -> None:
        self._answer = answer

    def code(self) -> grpc.StatusCode:
        return next(c for c in grpc.StatusCode if c.value[0] == self._answer.error_code)

    def details(self) -> str:
        return self._answer.error_message


def submit_orders(s: Stubs, md: Metadata, book: Book, code: str) -> None:
    request = gateway_pb2.SubmitOrdersRequest(intent=_intent(code), client_order_id="m-1")
    (answer,) = s.gateway.SubmitOrders(iter([request]), metadata=md, timeout=TIMEOUT_S)
    if answer.error_code:
        raise RequestRefused(answer)


def cancel(s: Stubs, md: Metadata, book: Book, code: str) -> None:
    request = gateway_pb2.CancelOrderRequest(order_id=_own_order(book, code))
    s.gateway.CancelOrder(request, metadata=md, timeout=TIMEOUT_S)


def get_order(s: Stubs, md: Metadata, book: Book, code: str) -> None:
    request = gateway_pb2.GetOrderRequest(order_id=_own_order(book, code))
    s.gateway.GetOrder(request, metadata=md, timeout=TIMEOUT_S)


def list_orders(s: Stubs, md: Metadata, book: Book, code: str) -> None:
    request = gateway_pb2.ListOrdersRequest(strategy_code=code)
    s.gateway.ListOrders(request, metadata=md, timeout=TIMEOUT_S)


def get_positions(s: Stubs, md: Metadata, book: Book, code: str) -> None:
    request = gateway_pb2.GetPositionsRequest(strategy_code=code)
    s.gateway.GetPositions(request, metadata=md, timeout=TIMEOUT_S)


def stream_fills(s: Stubs, md: Metadata, book: Book, code: str) -> None:
    request = gateway_pb2.StreamFillsRequest(strategy_codes=[code] if code else [])
    call = s.gateway.StreamFills(request, metadata=md, timeout=TIMEOUT_S)
    try:
        first = next(iter(call))  # a live stream opens with a heartbeat
        assert first.event.HasField("heartbeat")
    finally:
        call.cancel()


def get_risk_state(s: Stubs, md: Metadata, book: Book, code: str) -> None:
    request = gateway_pb2.GetRiskStateRequest(strategy_code=code)
    s.gateway.GetRiskState(request, metadata=md, timeout=TIMEOUT_S)


def halt(s: Stubs, md: Metadata, book: Book, code: str) -> None:
    request = gateway_pb2.HaltTradingRequest(reason="matrix", strategy_code=code)
    s.gateway.HaltTrading(request, metadata=md, timeout=TIMEOUT_S)


def resume(s: Stubs, md: Metadata, book: Book, code: str) -> None:
    request = gateway_pb2.ResumeTradingRequest(reason="matrix", strategy_code=code)
    s.gateway.ResumeTrading(request, metadata=md, timeout=TIMEOUT_S)


def preview(s: Stubs, md: Metadata, book: Book, code: str) -> None:
    request = gateway_pb2.PreviewOrderRequest(intent=_intent(code))
    s.gateway.PreviewOrder(request, metadata=md, timeout=TIMEOUT_S)


def publish_quotes(s: Stubs, md: Metadata, book: Book, code: str) -> None:
    # Within the price band: applied, were the call let through.
    quotes = [market_data_pb2.PublishQuotesRequest(quotes=[Quote(symbol=INFY, ltp=1501.0)])]
    s.market.PublishQuotes(iter(quotes), metadata=md, timeout=TIMEOUT_S)


def get_quote(s: Stubs, md: Metadata, book: Book, code: str) -> None:
    s.market.GetQuote(market_data_pb2.GetQuoteRequest(symbol=INFY), metadata=md, timeout=TIMEOUT_S)


@dataclass(frozen=True)
class Rpc:
    call: Call
    # Who calls in each case: a token name and the strategy code the request names.
    wrong_role: str | None
    wrong_strategy: tuple[str, str] | None
    right: tuple[tuple[str, str], ...]


# None: the case does not exist for this RPC (every role may get a quote; halting,
# resuming and publishing name no strategy of the caller's).
RPCS: dict[str, Rpc] = {
    "SubmitOrder": Rpc(submit, "ops", ("strat-a", "B"), (("strat-a", "A"),)),
    "SubmitOrders": Rpc(submit_orders, "ops", ("strat-a", "B"), (("strat-a", "A"),)),
    "CancelOrder": Rpc(cancel, "ops", ("strat-a", "B"), (("strat-a", "A"),)),
    "GetOrder": Rpc(get_order, "feed", ("strat-a", "B"), (("strat-a", "A"), ("ops", "B"))),
    "ListOrders": Rpc(list_orders, "feed", ("strat-a", "B"), (("strat-a", "A"), ("ops", ""))),
    "GetPositions": Rpc(get_positions, "feed", ("strat-a", "B"), (("strat-a", "A"), ("ops", ""))),
    "StreamFills": Rpc(stream_fills, "feed", ("strat-a", "B"), (("strat-a", "A"), ("ops", ""))),
    "GetRiskState": Rpc(get_risk_state, "feed", ("strat-a", "B"), (("strat-a", "A"), ("ops", ""))),
    "HaltTrading": Rpc(halt, "strat-a", None, (("ops", ""),)),
    "ResumeTrading": Rpc(resume, "strat-a", None, (("ops", ""),)),
    "PreviewOrder": Rpc(preview, "feed", ("strat-a", "B"), (("strat-a", "A"), ("ops", "B"))),
    "PublishQuotes": Rpc(publish_quotes, "strat-a", None, (("feed", ""),)),
    "GetQuote": Rpc(get_quote, None, None, (("strat-a", ""), ("ops", ""), ("feed", ""))),
}


@dataclass(frozen=True)
class Case:
    rpc: str
    kind: str
    caller: str | None  # None: no token; "?": a token the gateway does not know
    code: str
    expected: grpc.StatusCode

    @property
    def id(self) -> str:
        return f"{self.rpc}-{self.kind}" + (f"-{self.caller}" if self.kind == "right" else "")


def _cases() -> Iterator[Case]:
    for name, rpc in RPCS.items():
        right_code = rpc.right[0][1]
        yield Case(name, "no-token", None, right_code, UNAUTHENTICATED)
        yield Case(name, "bad-token", "?", right_code, UNAUTHENTICATED)
        if rpc.wrong_role is not None:
            yield Case(name, "wrong-role", rpc.wrong_role, right_code, DENIED)
        if rpc.wrong_strategy is not None:
            caller, code = rpc.wrong_strategy
            yield Case(name, "wrong-strategy", caller, code, DENIED)
        for caller, code in rpc.right:
            yield Case(name, "right", caller, code, OK)


CASES = list(_cases())


def test_the_matrix_covers_every_rpc_of_both_services() -> None:
    services = [
        gateway_pb2.DESCRIPTOR.services_by_name["ExecutionGateway"],
        market_data_pb2.DESCRIPTOR.services_by_name["MarketData"],
    ]
    methods = {f"/{s.full_name}/{m.name}" for s in services for m in s.methods}
    assert set(PERMISSIONS) == methods
    assert {
        f"/{s.full_name}/{name}" for s in services for name in RPCS if name in s.methods_by_name
    } == methods


@pytest.fixture
def world(tmp_path: Path, clock: ManualClock) -> Iterator[tuple[RunningGateway, Book]]:
    running = start_gateway(tmp_path, clock)
    try:
        yield running, place_book(running.target)
    finally:
        running.stop()


def _effects(target: str) -> tuple[object, ...]:
    """Everything a call could change, read as the operator."""
    with client(target, "ops") as ops:
        orders = [o.SerializeToString(deterministic=True) for o in ops.list_orders()]
        positions = [p.SerializeToString(deterministic=True) for p in ops.positions()]
        risk = ops.risk_state().SerializeToString(deterministic=True)
        quote = ops.get_quote(INFY).SerializeToString(deterministic=True)
    return orders, positions, risk, quote


def _metadata(caller: str | None) -> Metadata:
    if caller is None:
        return ()
    if caller == "?":
        return (("authorization", f"Bearer {new_token()}"),)
    return bearer(caller)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_auth_matrix(case: Case, world: tuple[RunningGateway, Book]) -> None:
    running, book = world
    journal = Path(running.config.journal.path)
    before_head = head(journal)
    before = _effects(running.target)
    with stubs(running.target) as s:
        try:
            RPCS[case.rpc].call(s, _metadata(case.caller), book, case.code)
            code = OK
            details = ""
        except grpc.RpcError as e:
            code = e.code()
            details = e.details() or ""
    assert code == case.expected, details
    if code == OK:
        return
    assert _effects(running.target) == before
    new = [r.event for r in records_after(journal, before_head)]
    if code == UNAUTHENTICATED:
        assert new == []
    else:
        assert len(new) == 1, new
        denial = new[0]
        assert isinstance(denial, AccessDenied)
        assert (denial.principal, denial.rpc, denial.reason) == (case.caller, case.rpc, details)
