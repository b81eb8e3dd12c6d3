"""Helpers for the end-to-end tests: they drive the real client against a real gateway.

Nothing here sleeps on wall time. A test that needs to know that a StreamFills call
is live on the server waits on `StreamSubscriptions` (a semaphore released by the
server's event bus when the call subscribes); events are read from blocking
iterators through queues with a timeout that only guards against a hang.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from execgw.client import ExecgwError, ExecutionClient, ExecutionEvent, Quote
from execgw.v1 import orders_pb2

# pytest puts tests/ on sys.path (so `conftest` imports); mypy sees tests/ as a package.
if TYPE_CHECKING:
    from tests.conftest import RunningGateway
else:
    from conftest import RunningGateway

INFY = "NSE:INFY"
TCS = "NSE:TCS"
SBIN = "NSE:SBIN"
# A hand-written F&O row in Kite's instrument-dump format: lot 50, tick 0.05.
NIFTY_FUT = "NFO:NIFTY26DECFUT"
NIFTY_LOT = 50

# Guards against a hang; never a way to wait for something to happen.
TIMEOUT_S = 10.0

_KITE_HEADER = (
    "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,"
    "tick_size,lot_size,instrument_type,segment,exchange"
)


def write_fo_instruments(directory: Path) -> Path:
    """A small Kite-format instrument dump with a lot-50 future and a 0.01-tick ETF."""
    path = directory / "instruments_fo.csv"
    path.write_text(
        "\n".join(
            [
                _KITE_HEADER,
                "13238786,51714,NIFTY26DECFUT,NIFTY,0.0,2026-12-29,0.0,0.05,50,FUT,NFO-FUT,NFO",
                "2928385,11439,BANKBEES,RELIANCE ETF BANK BEES,0.0,,0.0,0.01,1,EQ,NSE,NSE",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    return path


def quote(
    symbol: str,
    ltp: float,
    *,
    bid: float = 0.0,
    ask: float = 0.0,
    volume: int = 0,
    timestamp: datetime | None = None,
) -> Quote:
    msg = Quote(symbol=symbol, ltp=ltp, bid=bid, ask=ask, volume=volume)
    if timestamp is not None:
        msg.timestamp.FromDatetime(timestamp)
    return msg


def publish(client: ExecutionClient, symbol: str, *ltps: float) -> None:
    """Publish LTPs in order and check that every one was applied."""
    assert client.publish_quotes([quote(symbol, ltp) for ltp in ltps]) == len(ltps)


def raw_intent(**fields: Any) -> orders_pb2.OrderIntent:
    """A well-formed MARKET BUY intent with `fields` replaced, built without the builders."""
    values: dict[str, Any] = {
        "symbol": INFY,
        "strategy_code": "val",
        "side": orders_pb2.SIDE_BUY,
        "qty": 10,
        "order_type": orders_pb2.ORDER_TYPE_MARKET,
        "product": orders_pb2.PRODUCT_MIS,
        "validity": orders_pb2.VALIDITY_DAY,
    }
    values.update(fields)
    return orders_pb2.OrderIntent(**{k: v for k, v in values.items() if v is not None})


def paged(client: ExecutionClient, page_size: int) -> list[bytes]:
    """Every order ListOrders returns, followed page by page through its tokens, each
    serialized for comparison."""
    out: list[bytes] = []
    page = client.list_orders_page(page_size=page_size)
    while True:
        out += [o.SerializeToString(deterministic=True) for o in page.results]
        if not page.next_page_token:
            return out
        page = client.list_orders_page(page_size=page_size, page_token=page.next_page_token)


def snapshot(client: ExecutionClient) -> tuple[list[bytes], list[bytes]]:
    """The whole order book and every position, serialized, for before/after comparisons."""
    orders = [o.SerializeToString(deterministic=True) for o in client.list_orders()]
    positions = [p.SerializeToString(deterministic=True) for p in client.positions()]
    return orders, positions


class StreamSubscriptions:
    """Released once per StreamFills subscription the gateway's event bus registers.

    It wraps the bus's `subscribe`, so a test knows the stream is live before it
    makes the event happen, without sleeping and without polling.
    """

    def __init__(self, gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> None:
        bus = gateway.gateway.core.bus
        original: Callable[..., Any] = bus.subscribe
        self._registered = threading.Semaphore(0)

        def subscribe(*args: Any, **kwargs: Any) -> Any:
            subscription = original(*args, **kwargs)
            self._registered.release()
            return subscription

        monkeypatch.setattr(bus, "subscribe", subscribe)

    def wait(self, count: int = 1, timeout: float = TIMEOUT_S) -> None:
        for _ in range(count):
            assert self._registered.acquire(timeout=timeout), "StreamFills never subscribed"


class StreamReader:
    """Runs the blocking client's stream_fills in a thread and hands events over a queue."""

    def __init__(
        self,
        target: str,
        *,
        strategy_codes: Iterable[str] = (),
        symbols: Iterable[str] = (),
        include_order_updates: bool = False,
        include_risk_events: bool = False,
        reconnect: bool = True,
    ) -> None:
        self._client = ExecutionClient(target, timeout=TIMEOUT_S)
        self._iterator = self._client.stream_fills(
            strategy_codes=list(strategy_codes),
            symbols=list(symbols),
            include_order_updates=include_order_updates,
            include_risk_events=include_risk_events,
            reconnect=reconnect,
        )
        self._events: queue.Queue[ExecutionEvent | BaseException | None] = queue.Queue()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._iterator:
                self._events.put(event)
        except ExecgwError as e:
            if not self._closing.is_set():
                self._events.put(e)
        except BaseException as e:  # surfaced to the test thread
            self._events.put(e)
        self._events.put(None)

    def next(self, timeout: float = TIMEOUT_S) -> ExecutionEvent:
        try:
            item = self._events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no stream event within {timeout}s") from None
        if item is None:
            raise AssertionError("the stream ended")
        if isinstance(item, BaseException):
            raise AssertionError(f"the stream failed: {item!r}") from item
        return item

    def until_order(self, order_id: str, timeout: float = TIMEOUT_S) -> list[ExecutionEvent]:
        """Every event up to and including the first one about `order_id`."""
        seen: list[ExecutionEvent] = []
        while True:
            event = self.next(timeout)
            seen.append(event)
            if event_order_id(event) == order_id:
                return seen

    def end(self, timeout: float = TIMEOUT_S) -> tuple[list[ExecutionEvent], ExecgwError | None]:
        """Events until the stream ends, and the error it ended with (None for OK)."""
        seen: list[ExecutionEvent] = []
        while True:
            try:
                item = self._events.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"the stream did not end within {timeout}s") from None
            if item is None:
                return seen, None
            if isinstance(item, ExecgwError):
                assert self._events.get(timeout=timeout) is None
                return seen, item
            if isinstance(item, BaseException):
                raise AssertionError(f"the stream failed: {item!r}") from item
            seen.append(item)

    def close(self) -> None:
        self._closing.set()
        self._client.close()
        self._thread.join(timeout=TIMEOUT_S)


@contextmanager
def stream_reader(
    gateway: RunningGateway,
    subscriptions: StreamSubscriptions,
    **kwargs: Any,
) -> Iterator[StreamReader]:
    """A StreamReader whose subscription is live on the server when the block starts."""
    reader = StreamReader(gateway.target, **kwargs)
    try:
        subscriptions.wait()
        yield reader
    finally:
        reader.close()


def event_order_id(event: ExecutionEvent) -> str:
    kind = event.WhichOneof("payload")
    if kind == "fill":
        return event.fill.order_id
    if kind == "order_update":
        return event.order_update.order_id
    return ""
