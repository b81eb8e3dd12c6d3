"""ListOrders comes in pages, so no response grows with the day (issue 8, defect 6).

The page token names where the next page starts; it stays valid while orders arrive
and only works with the filters it was issued for. The clients and `execgw orders`
follow every page.
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
from execgw.server.clock import ManualClock
from execgw.v1 import gateway_pb2, gateway_pb2_grpc, orders_pb2

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.durability_helpers import run_cli
else:
    from conftest import RunningGateway, make_config
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

    cli = run_cli("orders", "--target", running.target, timeout=TIMEOUT_S * 3)
    assert cli.returncode == 0, cli.stderr
    printed = [json.loads(line)["orderId"] for line in cli.stdout.splitlines()]
    assert printed == ids
