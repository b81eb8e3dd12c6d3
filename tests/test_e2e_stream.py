"""StreamFills end to end, through the blocking client (in a thread) and the asyncio one.

No test sleeps: each waits until the server has registered the subscription (see
e2e_helpers.StreamSubscriptions), makes something happen, then blocks on the next
event with a timeout that only guards against a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from execgw.client import (
    AsyncExecutionClient,
    ExecutionClient,
    ExecutionEvent,
    OrderStatus,
    RejectReason,
    Side,
    Unavailable,
    limit,
    market,
    stop,
)
from execgw.server.clock import ManualClock

if TYPE_CHECKING:
    from tests.conftest import MARKET_OPEN, RunningGateway, make_config
    from tests.e2e_helpers import (
        INFY,
        TCS,
        TIMEOUT_S,
        StreamReader,
        StreamSubscriptions,
        publish,
        quote,
        stream_reader,
    )
else:
    from conftest import MARKET_OPEN, RunningGateway, make_config
    from e2e_helpers import (
        INFY,
        TCS,
        TIMEOUT_S,
        StreamReader,
        StreamSubscriptions,
        publish,
        quote,
        stream_reader,
    )

PLACED = OrderStatus.ORDER_STATUS_PLACED
FILLED = OrderStatus.ORDER_STATUS_FILLED
CANCELLED = OrderStatus.ORDER_STATUS_CANCELLED
REJECTED = OrderStatus.ORDER_STATUS_REJECTED


@pytest.fixture
def client(gateway: RunningGateway) -> Iterator[ExecutionClient]:
    with ExecutionClient(gateway.target, timeout=TIMEOUT_S) as c:
        publish(c, INFY, 1500.00)
        yield c


@pytest.fixture
def subscriptions(gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> StreamSubscriptions:
    return StreamSubscriptions(gateway, monkeypatch)


def utc(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def test_fill_of_resting_limit_reaches_a_subscriber(
    gateway: RunningGateway,
    client: ExecutionClient,
    subscriptions: StreamSubscriptions,
    clock: ManualClock,
) -> None:
    with stream_reader(gateway, subscriptions) as reader:
        placed = client.submit(
            limit(INFY, "BUY", 10, 1495.00, strategy_code="strm"), client_order_id="strm-1"
        )
        assert placed.status == PLACED
        clock.advance(timedelta(seconds=30))
        publish(client, INFY, 1494.50)  # crosses 1495.00: fills at the limit

        event = reader.next()
        # Fills only: the PLACED update was not sent, so the fill is the first event.
        assert event.WhichOneof("payload") == "fill"
        fill = event.fill
        assert fill.order_id == placed.order_id
        assert fill.client_order_id == "strm-1"
        assert (fill.strategy_code, fill.symbol, fill.side) == ("strm", INFY, Side.SIDE_BUY)
        assert fill.qty == 10
        assert fill.price == 1495.00
        assert fill.fill_id
        later = MARKET_OPEN + timedelta(seconds=30)
        assert utc(fill.timestamp) == later
        assert utc(event.timestamp) == later
        # The order as this fill left it.
        assert event.order.order_id == placed.order_id
        assert event.order.status == FILLED
        assert event.order.filled_qty == 10
        assert event.order.avg_price == 1495.00

        second = client.submit(limit(INFY, "SELL", 4, 1500.00, strategy_code="strm"))
        publish(client, INFY, 1500.00)  # reaches the SELL limit
        next_event = reader.next()
        assert next_event.fill.order_id == second.order_id
        assert (next_event.fill.qty, next_event.fill.price) == (4, 1500.00)
        assert next_event.fill.fill_id != fill.fill_id
        assert next_event.sequence > event.sequence
        # Left out by the filter: both orders' acceptances, and marks journaled once the
        # clock moved past market_data.marks_every_s if the background ticker saw the
        # clock move before the fill (whose own quote then already is INFY's mark).
        assert event.filtered + next_event.filtered in (2, 3)
        assert_accounted_for([event, next_event])


def test_order_updates_and_fills_in_sequence(
    gateway: RunningGateway, client: ExecutionClient, subscriptions: StreamSubscriptions
) -> None:
    with stream_reader(
        gateway, subscriptions, include_order_updates=True, include_risk_events=True
    ) as reader:
        resting = client.submit(limit(INFY, "BUY", 10, 1495.00, strategy_code="upd"))
        placed_event = reader.next()
        assert placed_event.WhichOneof("payload") == "order_update"
        assert placed_event.order_update.order_id == resting.order_id
        assert placed_event.order_update.status == PLACED
        assert placed_event.order_update.filled_qty == 0

        publish(client, INFY, 1494.00)
        fill_event = reader.next()
        assert fill_event.WhichOneof("payload") == "fill"
        assert fill_event.fill.order_id == resting.order_id
        assert (fill_event.fill.qty, fill_event.fill.price) == (10, 1495.00)
        assert fill_event.order.status == FILLED

        ioc = client.submit(limit(INFY, "BUY", 5, 1480.00, strategy_code="upd", validity="IOC"))
        assert ioc.status == CANCELLED
        ioc_events = reader.until_order(ioc.order_id)
        ioc_events.append(reader.next())
        assert [e.order_update.status for e in ioc_events] == [PLACED, CANCELLED]

        rejected = client.submit(market(TCS, "BUY", 1, strategy_code="upd"))
        rejected_event = reader.next()
        assert rejected_event.order_update.order_id == rejected.order_id
        assert rejected_event.order_update.status == REJECTED
        assert (
            rejected_event.order_update.reject_reason == RejectReason.REJECT_REASON_NO_MARKET_DATA
        )

        cancelled = client.submit(limit(INFY, "SELL", 3, 1510.00, strategy_code="upd"))
        client.cancel(cancelled.order_id)
        cancel_events = [reader.next(), reader.next()]
        assert [e.order_update.order_id for e in cancel_events] == [cancelled.order_id] * 2
        assert [e.order_update.status for e in cancel_events] == [PLACED, CANCELLED]

    everything = [placed_event, fill_event, *ioc_events, rejected_event, *cancel_events]
    sequences = [e.sequence for e in everything]
    # Every event of the gateway was delivered (all kinds subscribed): gap-free, increasing.
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    assert [e.filtered for e in everything[1:]] == [0] * (len(everything) - 1)


def test_stop_order_updates_then_fill(
    gateway: RunningGateway, client: ExecutionClient, subscriptions: StreamSubscriptions
) -> None:
    with stream_reader(gateway, subscriptions, include_order_updates=True) as reader:
        order = client.submit(stop(INFY, "SELL", 10, 1490.00, strategy_code="stp"))
        accepted = reader.next()
        assert accepted.order_update.status == PLACED
        publish(client, INFY, 1489.00)
        # 1489.00 x 0.9995 = 1488.2555 -> down 1488.25
        events = reader.until_order(order.order_id)
        while events[-1].WhichOneof("payload") != "fill":
            events.append(reader.next())
        fill = events[-1]
        assert fill.fill.price == 1488.25
        assert fill.order.status == FILLED
        assert all(e.sequence > accepted.sequence for e in events)


def _fill_keys(events: list[ExecutionEvent]) -> list[tuple[str, str]]:
    assert all(e.WhichOneof("payload") == "fill" for e in events)
    assert_accounted_for(events)
    return [(e.fill.strategy_code, e.fill.symbol) for e in events]


def assert_accounted_for(events: list[ExecutionEvent]) -> None:
    """Each event says how many its stream's filters skipped since the previous one."""
    for previous, event in pairwise(events):
        assert event.sequence == previous.sequence + event.filtered + 1, (previous, event)


def test_filters_by_strategy_and_symbol(
    gateway: RunningGateway, client: ExecutionClient, subscriptions: StreamSubscriptions
) -> None:
    publish(client, TCS, 4100.00)
    with contextlib.ExitStack() as stack:
        everything = stack.enter_context(stream_reader(gateway, subscriptions))
        alpha = stack.enter_context(stream_reader(gateway, subscriptions, strategy_codes=["alpha"]))
        tcs = stack.enter_context(stream_reader(gateway, subscriptions, symbols=[TCS]))
        alpha_tcs = stack.enter_context(
            stream_reader(gateway, subscriptions, strategy_codes=["alpha"], symbols=[TCS])
        )
        beta_gamma = stack.enter_context(
            stream_reader(gateway, subscriptions, strategy_codes=["beta", "gamma"])
        )
        ids = [
            client.submit(market(symbol, "BUY", 1, strategy_code=code)).order_id
            for code, symbol in [
                ("alpha", INFY),
                ("beta", INFY),
                ("gamma", TCS),
                ("beta", TCS),
                ("alpha", TCS),
            ]
        ]
        last = ids[-1]
        assert _fill_keys(everything.until_order(last)) == [
            ("alpha", INFY),
            ("beta", INFY),
            ("gamma", TCS),
            ("beta", TCS),
            ("alpha", TCS),
        ]
        assert _fill_keys(alpha.until_order(last)) == [("alpha", INFY), ("alpha", TCS)]
        assert _fill_keys(tcs.until_order(last)) == [
            ("gamma", TCS),
            ("beta", TCS),
            ("alpha", TCS),
        ]
        assert _fill_keys(alpha_tcs.until_order(last)) == [("alpha", TCS)]
        assert _fill_keys(beta_gamma.until_order(ids[3])) == [
            ("beta", INFY),
            ("gamma", TCS),
            ("beta", TCS),
        ]


async def _next(stream: AsyncIterator[ExecutionEvent]) -> ExecutionEvent:
    return await anext(stream)


async def test_async_client_receives_updates_and_fill(
    gateway: RunningGateway, subscriptions: StreamSubscriptions
) -> None:
    async with AsyncExecutionClient(gateway.target, timeout=TIMEOUT_S) as client:
        assert await client.publish_quotes([quote(INFY, 1500.00)]) == 1
        stream = client.stream_fills(strategy_codes=["async"], include_order_updates=True)
        async with contextlib.aclosing(stream):
            first = asyncio.create_task(_next(stream))  # starts the call
            await asyncio.to_thread(subscriptions.wait)
            # Another strategy's order must not show up.
            await client.submit(market(INFY, "BUY", 1, strategy_code="other"))
            placed = await client.submit(limit(INFY, "SELL", 5, 1505.00, strategy_code="async"))
            assert placed.status == PLACED

            update = await asyncio.wait_for(first, TIMEOUT_S)
            assert update.order_update.order_id == placed.order_id
            assert update.order_update.status == PLACED

            assert await client.publish_quotes([quote(INFY, 1506.00)]) == 1
            event = await asyncio.wait_for(_next(stream), TIMEOUT_S)
            assert event.WhichOneof("payload") == "fill"
            assert event.fill.order_id == placed.order_id
            assert (event.fill.qty, event.fill.price) == (5, 1505.00)
            assert event.fill.side == Side.SIDE_SELL
            assert event.order.status == FILLED
            assert event.order.avg_price == 1505.00
            assert event.sequence > update.sequence


def test_shutdown_ends_the_stream_with_unavailable_and_the_resume_point(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = RunningGateway(make_config(tmp_path), clock)
    stopped = False
    try:
        subscriptions = StreamSubscriptions(running, monkeypatch)
        # Without reconnecting, so the end the server sends is what the reader sees.
        reader = StreamReader(running.target, include_order_updates=True, reconnect=False)
        try:
            subscriptions.wait()
            with ExecutionClient(running.target, timeout=TIMEOUT_S) as client:
                publish(client, INFY, 1500.00)
                order = client.submit(market(INFY, "BUY", 1, strategy_code="bye"))
            running.stop()
            stopped = True
            events, error = reader.end()
        finally:
            reader.close()
        # Everything published before the stop was delivered...
        assert [e.WhichOneof("payload") for e in events] == ["order_update", "fill"]
        assert events[1].fill.order_id == order.order_id
        assert events[1].fill.price == 1500.75  # 1500.00 x 1.0005
        # ...then UNAVAILABLE (so a follower reconnects) naming where to resume.
        assert isinstance(error, Unavailable), error
        assert f"from_sequence={events[-1].sequence + 1}" in error.details
    finally:
        if not stopped:
            running.stop()
