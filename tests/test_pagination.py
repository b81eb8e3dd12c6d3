"""ListOrders comes in pages, so no response grows with the day (issue 8, defect 6).

The page token names where the next page starts; it stays valid while orders arrive
and only works with the filters it was issued for. A page looks at a bounded number of
orders, so a filter that matches little cannot make it scan the day in the single
writer: such a page is short or empty, and its token goes on from where it stopped.
The clients and `execgw orders` follow every page.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from execgw.client import AsyncExecutionClient, ExecutionClient, Quote, limit, market
from execgw.client.errors import InvalidArgument
from execgw.server import ledger as ledger_module
from execgw.server.clock import ManualClock
from execgw.server.closed_orders import ClosedOrder
from execgw.server.domain import (
    Order,
    OrderIntent,
    OrderType,
    Product,
    RejectReason,
    Side,
    Validity,
)
from execgw.server.events import DayRolledOver, OrderAccepted, OrderCancelled, OrderRejected
from execgw.server.ledger import Ledger
from execgw.v1 import gateway_pb2, gateway_pb2_grpc, orders_pb2

if TYPE_CHECKING:
    from tests.conftest import MARKET_OPEN, RunningGateway, make_config
    from tests.durability_helpers import run_cli
else:
    from conftest import MARKET_OPEN, RunningGateway, make_config
    from durability_helpers import run_cli

TIMEOUT_S = 10.0
ORDERS = 250
DEFAULT_PAGE = 100
MAX_PAGE = 1000
INFY, TCS = "NSE:INFY", "NSE:TCS"


def _place(client: ExecutionClient, first: int, count: int) -> list[str]:
    """Resting LIMIT orders (5% below the quotes) and filled MARKET orders, two
    strategies, two symbols."""
    ids = []
    for i in range(first, first + count):
        strategy, symbol, below = ("alpha", INFY, 1425.0) if i % 2 else ("beta", TCS, 3895.0)
        intent = (
            limit(symbol, "BUY", 1, below, strategy_code=strategy, product="NRML")
            if i % 3
            else market(symbol, "BUY", 1, strategy_code=strategy, product="NRML")
        )
        ids.append(client.submit(intent, f"page-{i}").order_id)
    return ids


@pytest.fixture
def book(tmp_path: Path, clock: ManualClock) -> Iterator[tuple[RunningGateway, list[str]]]:
    running = RunningGateway(make_config(tmp_path), clock)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S) as client:
            quotes = [Quote(symbol=INFY, ltp=1500.0), Quote(symbol=TCS, ltp=4100.0)]
            assert client.publish_quotes(quotes) == 2
            ids = _place(client, 0, ORDERS)
        yield running, ids
    finally:
        running.stop()


@pytest.fixture
def stub(book: tuple[RunningGateway, list[str]]) -> Iterator[gateway_pb2_grpc.ExecutionGatewayStub]:
    with grpc.insecure_channel(book[0].target) as channel:
        yield gateway_pb2_grpc.ExecutionGatewayStub(channel)


def _pages(
    stub: gateway_pb2_grpc.ExecutionGatewayStub, **filters: Any
) -> list[gateway_pb2.ListOrdersResponse]:
    pages = []
    token = ""
    while True:
        request = gateway_pb2.ListOrdersRequest(page_token=token, **filters)
        page = stub.ListOrders(request, timeout=TIMEOUT_S)
        pages.append(page)
        token = page.next_page_token
        if not token:
            return pages
        assert len(pages) <= ORDERS, "the tokens never end"


def _ids(pages: list[gateway_pb2.ListOrdersResponse]) -> list[str]:
    return [r.order_id for p in pages for r in p.results]


def _invalid(error: grpc.RpcError) -> str:
    call: Any = error
    assert call.code() == grpc.StatusCode.INVALID_ARGUMENT, call.details()
    return str(call.details())


def test_pages_cover_the_book_once_oldest_first(
    book: tuple[RunningGateway, list[str]], stub: gateway_pb2_grpc.ExecutionGatewayStub
) -> None:
    _, ids = book
    pages = _pages(stub)
    assert [len(p.results) for p in pages] == [DEFAULT_PAGE, DEFAULT_PAGE, ORDERS - 200]
    assert _ids(pages) == ids
    assert all(p.next_page_token for p in pages[:-1])

    assert [len(p.results) for p in _pages(stub, page_size=7)][:3] == [7, 7, 7]
    assert _ids(_pages(stub, page_size=7)) == ids
    # Above the maximum is lowered to it, not refused (AIP-158): all 250 fit in one page.
    (whole,) = _pages(stub, page_size=50_000)
    assert [r.order_id for r in whole.results] == ids
    assert whole.next_page_token == ""
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListOrders(gateway_pb2.ListOrdersRequest(page_size=-1), timeout=TIMEOUT_S)
    assert _invalid(caught.value).startswith("page_size: ")


def test_pages_of_a_filtered_listing_hold_only_matching_orders(
    book: tuple[RunningGateway, list[str]], stub: gateway_pb2_grpc.ExecutionGatewayStub
) -> None:
    _, ids = book
    everything = {r.order_id: r for r in _pages(stub, page_size=MAX_PAGE)[0].results}
    resting = [
        i
        for i in ids
        if everything[i].strategy_code == "alpha"
        and everything[i].status == orders_pb2.ORDER_STATUS_PLACED
    ]
    assert 0 < len(resting) < ORDERS // 2
    pages = _pages(stub, strategy_code="alpha", status=orders_pb2.ORDER_STATUS_PLACED, page_size=10)
    assert _ids(pages) == resting
    assert all(len(p.results) == 10 for p in pages[:-1])


def test_a_page_token_stays_valid_while_orders_arrive(
    book: tuple[RunningGateway, list[str]], stub: gateway_pb2_grpc.ExecutionGatewayStub
) -> None:
    running, ids = book
    first = stub.ListOrders(gateway_pb2.ListOrdersRequest(), timeout=TIMEOUT_S)
    assert [r.order_id for r in first.results] == ids[:DEFAULT_PAGE]
    with ExecutionClient(running.target, timeout=TIMEOUT_S) as client:
        later = _place(client, ORDERS, 30)
    rest: list[str] = []
    token = first.next_page_token
    while token:
        page = stub.ListOrders(gateway_pb2.ListOrdersRequest(page_token=token), timeout=TIMEOUT_S)
        rest.extend(r.order_id for r in page.results)
        token = page.next_page_token
    # Nothing seen twice, nothing skipped; what arrived meanwhile comes last.
    assert rest == ids[DEFAULT_PAGE:] + later


def test_a_bad_page_token_is_invalid_argument_naming_page_token(
    stub: gateway_pb2_grpc.ExecutionGatewayStub,
) -> None:
    def forged(body: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(body).encode()).decode()

    bad_tokens = [
        "nope",
        "!!!!",
        "x" * 10_000,
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        forged([1, 2]),
        forged({"v": 99, "after": "O0000000001", "f": ""}),
        forged({"v": 1, "after": "", "f": ""}),
    ]
    for token in bad_tokens:
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListOrders(gateway_pb2.ListOrdersRequest(page_token=token), timeout=TIMEOUT_S)
        assert _invalid(caught.value).startswith("page_token: "), token

    # A real token, replayed with other filters.
    token = stub.ListOrders(
        gateway_pb2.ListOrdersRequest(strategy_code="alpha", page_size=5), timeout=TIMEOUT_S
    ).next_page_token
    for other in (
        gateway_pb2.ListOrdersRequest(strategy_code="beta", page_token=token),
        gateway_pb2.ListOrdersRequest(page_token=token),
        gateway_pb2.ListOrdersRequest(
            strategy_code="alpha", status=orders_pb2.ORDER_STATUS_FILLED, page_token=token
        ),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListOrders(other, timeout=TIMEOUT_S)
        assert _invalid(caught.value).startswith("page_token: was issued for other filters")


async def test_clients_and_the_cli_follow_every_page(
    book: tuple[RunningGateway, list[str]],
) -> None:
    running, ids = book
    with ExecutionClient(running.target, timeout=TIMEOUT_S) as client:
        assert [r.order_id for r in client.list_orders()] == ids
        assert [r.order_id for r in client.list_orders(page_size=33)] == ids
        page = client.list_orders_page(strategy_code="beta", page_size=4)
        assert len(page.results) == 4
        assert page.next_page_token
        following = client.list_orders_page(
            strategy_code="beta", page_size=4, page_token=page.next_page_token
        )
        assert following.results[0].order_id > page.results[-1].order_id
        with pytest.raises(InvalidArgument, match=r"page_token: is not a page token"):
            client.list_orders_page(page_token="garbage")
        with pytest.raises(ValueError, match="page_size"):
            client.list_orders_page(page_size=-3)
    async with AsyncExecutionClient(running.target, timeout=TIMEOUT_S) as aclient:
        assert [r.order_id for r in await aclient.list_orders()] == ids
        first = await aclient.list_orders_page()
        assert len(first.results) == DEFAULT_PAGE

    cli = run_cli("orders", "--json", "--target", running.target, timeout=TIMEOUT_S * 3)
    assert cli.returncode == 0, cli.stderr
    printed = [json.loads(line)["order_id"] for line in cli.stdout.splitlines()]
    assert printed == ids


@pytest.fixture
def looked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many orders the ledger handed to each ListOrders scan (a probe on its index:
    the scan takes one more than it looks at when it stops early)."""
    counts: list[int] = []
    orders_after = Ledger.orders_after

    def counting(
        self: Ledger, after: str, *, strategy_code: str = "", symbol: str = ""
    ) -> Iterator[Order | ClosedOrder]:
        handed = 0
        try:
            for order in orders_after(self, after, strategy_code=strategy_code, symbol=symbol):
                handed += 1
                yield order
        finally:
            counts.append(handed)

    monkeypatch.setattr(Ledger, "orders_after", counting)
    return counts


def test_a_page_looks_at_a_bounded_number_of_orders_and_may_be_short(
    book: tuple[RunningGateway, list[str]],
    stub: gateway_pb2_grpc.ExecutionGatewayStub,
    looked: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running, ids = book
    everything = {r.order_id: r for r in _pages(stub, page_size=MAX_PAGE)[0].results}
    # With the real bound (2000) the 250 orders fit in one look: one empty page, the last.
    (nothing,) = _pages(stub, status=orders_pb2.ORDER_STATUS_CANCELLED)
    assert not nothing.results
    assert nothing.next_page_token == ""

    budget = 40
    monkeypatch.setattr(ledger_module, "MAX_ORDERS_EXAMINED", budget)
    looked.clear()
    # No order matches: every page is empty, yet carries a token until the day is looked
    # through, 40 orders a page, never more.
    pages = _pages(stub, status=orders_pb2.ORDER_STATUS_CANCELLED)
    assert [len(p.results) for p in pages] == [0] * -(-ORDERS // budget)
    assert all(p.next_page_token for p in pages[:-1])
    assert max(looked) <= budget + 1, looked
    assert sum(looked) <= ORDERS + len(pages), looked

    # Unfiltered, a page of 100 is cut at 40 orders looked at; nothing is lost or doubled.
    looked.clear()
    pages = _pages(stub)
    assert [len(p.results) for p in pages][:3] == [budget] * 3
    assert _ids(pages) == ids
    # Each page starts at its token: the orders before it are not looked at again.
    assert max(looked) <= budget + 1, looked

    # The filters that have an index look only at their own orders: alpha's resting
    # orders (2 in 3 of alpha's 125) in pages of 30, cut at 40 looked at, all there, in
    # order.
    resting = [
        i
        for i in ids
        if everything[i].strategy_code == "alpha"
        and everything[i].status == orders_pb2.ORDER_STATUS_PLACED
    ]
    looked.clear()
    pages = _pages(stub, strategy_code="alpha", status=orders_pb2.ORDER_STATUS_PLACED, page_size=30)
    assert _ids(pages) == resting
    assert any(len(p.results) < 30 for p in pages[:-1]), "no page was cut short"
    assert sum(looked) <= ORDERS // 2 + len(pages), looked
    looked.clear()
    (none,) = _pages(stub, strategy_code="nomatch", symbol="NSE:NOPE")
    assert not none.results
    assert none.next_page_token == ""
    assert looked == [0]

    # The clients follow short and empty pages to the end.
    filled = [i for i in ids if everything[i].status == orders_pb2.ORDER_STATUS_FILLED]
    with ExecutionClient(running.target, timeout=TIMEOUT_S) as client:
        assert [r.order_id for r in client.list_orders(status="FILLED")] == filled


def test_the_ledger_index_follows_placements_rollovers_and_restores() -> None:
    """The index a listing starts from: ids above the cursor, ascending, all of a
    strategy's or a symbol's; kept through a rollover (which drops the finished orders)
    and a restore from a snapshot."""
    when = MARKET_OPEN
    placed: dict[str, tuple[str, str]] = {}  # order id: strategy, symbol

    def place(
        ledger: Ledger, n: int, strategy: str, symbol: str, *, rejected: bool = False
    ) -> None:
        order_id = f"O{n:010d}"
        intent = OrderIntent(
            symbol, strategy, Side.BUY, 1, OrderType.MARKET, Product.NRML, Validity.DAY
        )
        if rejected:
            ledger.apply(
                OrderRejected(order_id, "", intent, when, RejectReason.MAX_ORDER_QTY, "too big")
            )
        else:
            ledger.apply(OrderAccepted(order_id, f"c-{n}", intent, when))
        placed[order_id] = (strategy, symbol)

    def check(ledger: Ledger) -> None:
        for after in ("", "O0000000004", "O0000000099"):
            for strategy in ("", "alpha", "beta", "gamma"):
                for symbol in ("", INFY, TCS):
                    expected = [
                        i
                        for i, (s, y) in sorted(placed.items())
                        if i > after and strategy in ("", s) and symbol in ("", y)
                    ]
                    listed = [
                        o.order_id
                        for o in ledger.orders_after(after, strategy_code=strategy, symbol=symbol)
                        if strategy in ("", o.intent.strategy_code)
                        and symbol in ("", o.intent.symbol)
                    ]
                    assert listed == expected, (after, strategy, symbol)

    ledger = Ledger()
    for n in range(1, 13):
        place(ledger, n, "alpha" if n % 2 else "beta", INFY if n % 3 else TCS, rejected=n == 5)
    check(ledger)
    # A rollover drops what finished (cancelled and rejected orders), keeps what is open.
    for order_id in ("O0000000002", "O0000000007"):
        ledger.apply(OrderCancelled(order_id, when, "cancelled"))
    ledger.apply(DayRolledOver(when.date(), when))
    for order_id in ("O0000000002", "O0000000005", "O0000000007"):
        del placed[order_id]
    check(ledger)
    restored = Ledger.restore(*ledger.export())
    check(restored)
    place(restored, 13, "alpha", TCS)
    check(restored)
